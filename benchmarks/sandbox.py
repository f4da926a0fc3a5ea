"""What the run sandbox costs a run's way to its command: `benchmarks.dispatch`'s latency
(submission to the command's PROCESSING entry, runs of `true` one after another) on a private
embedded stack with DLAAS_SANDBOX=off and one with DLAAS_SANDBOX=bwrap, alternately, in one
run; and the spawn after it, `bash -c true` bare and inside the sandbox's argv.

    .venv/bin/python -m benchmarks.sandbox [--runs 100] [--rounds 2]

Prints each round's median and 95th percentile per variant, the medians' difference, and the
environment. (The log pump's side: `benchmarks.logs`, whose stack takes DLAAS_SANDBOX too.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from api.client import read_env_file
from benchmarks.dispatch import Bench, start_latency, wait_ended
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common.runstore import RunStore
from common.settings import Settings
from worker.runuser import run_user
from worker.sandbox import find_sandbox

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


def spawns(sandboxed: bool, count: int) -> list[float]:
    """`bash -c true` spawned and waited for here, bare or with the sandbox's argv (as a
    root worker builds it, switching to the first run user when there is one): the part of
    a run's start the dispatch figure does not hold (it ends at PROCESSING, written just
    before the spawn)."""
    home = Path(tempfile.mkdtemp(prefix="dlaas-bench-sandbox-spawn-"))
    try:
        settings = Settings(home=home, secret_key="x", sandbox="bwrap")
        user = run_user(settings.run_as) if os.geteuid() == 0 else None
        root = home / "run"
        root.mkdir()
        if user is not None:
            os.chown(root, user.uid, user.gid)
        argv = ["bash", "-c", "true"]
        if sandboxed:
            ids = (user.uid, user.gid) if user else None
            argv = find_sandbox(settings).wrap(argv, settings, root, root, (), [], ids)
        out = []
        for _ in range(count):
            began = time.perf_counter()
            subprocess.run(argv, env={"PATH": "/usr/bin:/bin"}, check=True)
            out.append(time.perf_counter() - began)
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


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
    bare, boxed = spawns(False, args.runs), spawns(True, args.runs)
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
    spawn_bare, spawn_boxed = statistics.median(bare), statistics.median(boxed)
    print(
        f"spawning `bash -c true` after PROCESSING: bare median {spawn_bare * 1000:.1f} ms, "
        f"sandboxed {spawn_boxed * 1000:.1f} ms (+{(spawn_boxed - spawn_bare) * 1000:.1f} ms)"
    )
    whole = added + (spawn_boxed - spawn_bare) * 1000
    print(f"the sandbox's whole cost to a run's start: {whole:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
