"""What the run sandbox costs a run's way to its command: `benchmarks.dispatch`'s latency
(submission to the command's start, runs of `true` one after another) on a private embedded
stack with DLAAS_SANDBOX=off and one with DLAAS_SANDBOX=bwrap, alternately, in one run.

    .venv/bin/python -m benchmarks.sandbox [--runs 100] [--rounds 2]

Prints each round's median and 95th percentile per variant, the medians' difference, and the
environment. (The log pump's side: `benchmarks.logs`, whose stack takes DLAAS_SANDBOX too.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys

import redis

from api.client import read_env_file
from benchmarks.dispatch import Bench, start_latency, wait_ended
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common.runstore import RunStore
from common.settings import Settings

VARIANTS = ("off", "bwrap")


def latencies(sandbox: str, runs: int) -> list[float]:
    with private_stack(f"dlaas-bench-sandbox-{sandbox}-", DLAAS_SANDBOX=sandbox) as (
        home,
        env,
        ports,
    ):
        said = (home / "logs" / "worker.log").read_text() if (home / "logs").is_dir() else ""
        if sandbox == "bwrap" and "sandbox: bubblewrap" not in said:
            print(f"note: the worker's log does not say it is sandboxed: {home}/logs")
        password = read_env_file(home / "config.env")["DLAAS_REDIS_PASSWORD"]
        settings = Settings.from_env(
            env, redis_url=f"redis://:{password}@127.0.0.1:{ports['redis']}/0", secret_key="x"
        )
        store = RunStore(redis.Redis.from_url(settings.redis_url, decode_responses=True))
        bench = Bench(home)
        wait_ended(store, bench.submit())  # warm up
        out = []
        for _ in range(runs):
            run_id = bench.submit()
            wait_ended(store, run_id)
            out.append(start_latency(store, run_id))
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        print("bubblewrap is not installed (make test installs it)", file=sys.stderr)
        return 2
    medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rows = []
    for round_number in range(1, args.rounds + 1):
        for variant in VARIANTS:
            found = latencies(variant, args.runs)
            medians[variant].append(statistics.median(found))
            rows.append((round_number, variant, statistics.median(found), percentile(found, 0.95)))
    print(f"sandbox benchmark: {args.runs} runs of `true` a variant a round, embedded stack")
    print(
        f"environment: {machine()}, PYTHONUNBUFFERED="
        f"{os.environ.get('PYTHONUNBUFFERED', '(unset)')}, runs get a clean environment"
    )
    for round_number, variant, median, p95 in rows:
        print(
            f"  round {round_number}  DLAAS_SANDBOX={variant:<6} "
            f"median {median * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms"
        )
    off, on = (statistics.median(medians[v]) for v in VARIANTS)
    added = 1000 * (on - off)
    print(f"the sandbox adds {added:+.1f} ms to dispatch (median of the rounds' medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
