#!/usr/bin/env python3
"""S3 in a moto server for tests/moto_s3.rs, with boto3 as any AWS client would.

Usage:
  read_s3.py ENDPOINT_URL create BUCKET REGION
      creates BUCKET in REGION; prints {"region": <the bucket's region as S3 reports it>}
  read_s3.py ENDPOINT_URL read BUCKET OUT_DIR
      writes every object of BUCKET to OUT_DIR/<n> and prints a list of
      {"key", "file", "size", "content_type", "acl_grants"} (acl_grants: the permissions granted)
"""
import json
import os
import sys

import boto3


def client(endpoint, region="us-east-1"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create(endpoint, bucket, region):
    s3 = client(endpoint, region)
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] or "us-east-1"
    return {"region": location}


def read(endpoint, bucket, out_dir):
    s3 = client(endpoint)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            path = os.path.join(out_dir, str(len(found)))
            answer = s3.get_object(Bucket=bucket, Key=key)
            with open(path, "wb") as f:
                for chunk in answer["Body"].iter_chunks(1 << 20):
                    f.write(chunk)
            grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
            found.append(
                {
                    "key": key,
                    "file": path,
                    "size": answer["ContentLength"],
                    "content_type": answer["ContentType"],
                    "acl_grants": sorted(g["Permission"] for g in grants),
                }
            )
    return found


def main():
    endpoint, action = sys.argv[1], sys.argv[2]
    if action == "create":
        result = create(endpoint, sys.argv[3], sys.argv[4])
    else:
        result = read(endpoint, sys.argv[3], sys.argv[4])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
