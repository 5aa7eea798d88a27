#!/usr/bin/env python3
"""Puts Parameter Store parameters into a moto server for tests/moto.rs, with boto3 as any AWS
client would, and prints what the server then holds.

Usage: put_parameters.py ENDPOINT_URL < parameters.json
where parameters.json is a list of {"name", "type", "value"}, put in order (a name given twice
gets a second version). Prints {name: {"type", "version", "value"}} for every name, read back
with GetParameters (at most ten names a call, as the service allows) and decryption.
"""
import json
import sys

import boto3


def main():
    endpoint = sys.argv[1]
    ssm = boto3.client(
        "ssm",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    names = []
    for p in json.load(sys.stdin):
        ssm.put_parameter(Name=p["name"], Type=p["type"], Value=p["value"], Overwrite=True)
        if p["name"] not in names:
            names.append(p["name"])
    held = {}
    for i in range(0, len(names), 10):
        answer = ssm.get_parameters(Names=names[i : i + 10], WithDecryption=True)
        for p in answer["Parameters"]:
            held[p["Name"]] = {"type": p["Type"], "version": p["Version"], "value": p["Value"]}
    json.dump(held, sys.stdout)


if __name__ == "__main__":
    main()
