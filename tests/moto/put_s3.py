#!/usr/bin/env python3
"""Objects into a moto server's S3 for tests/moto_remote_script.rs, with boto3.

Usage:
  put_s3.py ENDPOINT_URL BUCKET REGION < {"key": "text", ...}
      creates BUCKET in REGION and puts each key with its text; prints the keys boto3 then
      lists under the bucket, in order
"""
import json
import sys

import boto3


def main():
    endpoint, bucket, region = sys.argv[1:4]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    for key, text in json.load(sys.stdin).items():
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    json.dump(listed, sys.stdout)


if __name__ == "__main__":
    main()
