#!/usr/bin/env python3
"""Creates a CloudWatch Logs group in a moto server for tests/moto_session_logging.rs, with boto3.

Usage: create_log_group.py ENDPOINT_URL REGION GROUP
"""
import sys

import boto3


def main():
    endpoint, region, group = sys.argv[1:4]
    logs = boto3.client(
        "logs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    logs.create_log_group(logGroupName=group)


if __name__ == "__main__":
    main()
