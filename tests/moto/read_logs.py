#!/usr/bin/env python3
"""Reads back what a moto server holds in a CloudWatch Logs group for tests/moto_logs.rs, with
boto3's get_log_events as any AWS client would.

Usage: read_logs.py ENDPOINT_URL REGION GROUP
Prints {stream: [message, ...]} for every stream of GROUP, each stream's events oldest first
(all pages: get_log_events is read forward until its token stops changing).
"""
import json
import sys

import boto3


def events(logs, group, stream):
    messages, token = [], None
    while True:
        args = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            args["nextToken"] = token
        page = logs.get_log_events(**args)
        messages.extend(e["message"] for e in page["events"])
        if not page["events"] or page.get("nextForwardToken") in (None, token):
            return messages
        token = page["nextForwardToken"]


def main():
    endpoint, region, group = sys.argv[1:4]
    logs = boto3.client(
        "logs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    held = {}
    for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=group):
        for s in page["logStreams"]:
            held[s["logStreamName"]] = events(logs, group, s["logStreamName"])
    json.dump(held, sys.stdout)


if __name__ == "__main__":
    main()
