"""API latency of `GET /v3/models` with the per-token rate limit on and off, side by side.

    .venv/bin/python -m benchmarks.ratelimit [--requests 2000]

Starts a private Redis and two API processes (gunicorn, one worker each) on it: one with
DLAAS_REQUESTS_PER_MINUTE=0 (no limit: no Redis round trip for it) and one with a limit no
request reaches (every request is counted in Redis, none refused). The same token lists the
same 20 runs; requests alternate between the two APIs over kept-alive connections. Prints the
median and 95th percentile of each, and their ratio. Everything is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from benchmarks.figures import machine, percentile
from common.tokens import new_token, write_tokens_file
from deploy.ports import free_port
from deploy.processes import (
    api_argv,
    http_ok,
    port_open,
    redis_argv,
    spawn,
    stop_pid,
    wait_until,
)
from tests.conftest import make_zip, manifest_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per API")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dlaas-bench-rate-"))
    token = new_token()
    write_tokens_file(home / "tokens.json", {token: "bench"})
    redis_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env.update(
        DLAAS_HOME=str(home),
        DLAAS_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DLAAS_SECRET_KEY=Fernet.generate_key().decode(),
        DLAAS_MAX_QUEUED_PER_USER="0",
    )
    pids = []
    try:
        pids.append(spawn(redis_argv(redis_port, home / "redis", False), home / "redis.log"))
        wait_until(lambda: port_open(redis_port), 30, "redis")
        urls = {}
        for label, limit in (("off", "0"), ("on", str(10**9))):
            port = free_port()
            pids.append(
                spawn(
                    api_argv(BIN, port, workers=1),
                    home / f"api-{label}.log",
                    env=dict(env, DLAAS_REQUESTS_PER_MINUTE=limit),
                    cwd=ROOT,
                )
            )
            urls[label] = f"http://127.0.0.1:{port}"
            wait_until(lambda u=urls[label]: http_ok(u + "/health"), 60, f"api {label}")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        for _ in range(20):  # something to list (no worker: they stay PENDING)
            files = {
                "model_definition": ("m.zip", make_zip({"t.py": "pass\n"})),
                "manifest": ("m.yml", manifest_yaml("true")),
            }
            session.post(f"{urls['off']}/v3/models", files=files, timeout=10).raise_for_status()
        times = {"off": [], "on": []}
        for i in range(args.requests * 2 + 100):
            label = ("off", "on")[i % 2]
            began = time.perf_counter()
            answer = session.get(f"{urls[label]}/v3/models", timeout=10)
            took = time.perf_counter() - began
            answer.raise_for_status()
            if i >= 100:  # warm-up
                times[label].append(took)
    finally:
        for pid in reversed(pids):
            stop_pid(pid)

    print(f"rate limit benchmark: GET /v3/models (20 runs), {args.requests} requests per API")
    print(
        f"environment: {machine()}; gunicorn gthread, 1 worker per API; Redis and both APIs "
        f"on this machine (127.0.0.1); the caller's environment minus DLAAS_*"
    )
    for label in ("off", "on"):
        values = times[label]
        print(
            f"  rate limit {label:<3}: median {statistics.median(values) * 1000:6.2f} ms, "
            f"p95 {percentile(values, 0.95) * 1000:6.2f} ms"
        )
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    print(f"  ratio on / off (medians): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
