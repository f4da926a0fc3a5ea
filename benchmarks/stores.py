"""What opening a run's S3 store costs the worker: a boto3 client made from the process's one
session (common/storage/s3.py, what a run gets) against one made from a fresh boto3 session
(what each store cost before: the S3 model and endpoint rules read again, ~100 ms of JSON).
No server is needed: making a client sends no request.

    .venv/bin/python -m benchmarks.stores [--repeat 25]

Prints the median CPU milliseconds of each, measured alternately in this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import boto3

from benchmarks.figures import machine
from common.storage.s3 import S3Store
from deploy.swift import s3_client

ENDPOINT = "http://127.0.0.1:9"


def fresh_session_client() -> None:
    s3_client(ENDPOINT, session=boto3.session.Session())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    first = time.process_time()
    S3Store(ENDPOINT, "key", "secret")
    first = (time.process_time() - first) * 1e3
    shared, fresh = [], []
    for _ in range(args.repeat):
        for way, out in (
            (lambda: S3Store(ENDPOINT, "key", "secret"), shared),
            (fresh_session_client, fresh),
        ):
            began = time.process_time()
            way()
            out.append((time.process_time() - began) * 1e3)
    print(f"opening an S3 store, {args.repeat} times each, alternately")
    print(f"environment: {machine()}; boto3 {boto3.__version__}")
    print(f"  the process's first store (reads the model):  {first:6.1f} ms CPU")
    print(f"  a later store, from the shared session:      {statistics.median(shared):6.1f} ms CPU")
    print(f"  a client from a fresh boto3 session:         {statistics.median(fresh):6.1f} ms CPU")
    print(f"  ratio: {statistics.median(fresh) / statistics.median(shared):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
