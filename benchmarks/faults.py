"""Fault figures: how fast a lost node's run is failed, how fast a cancel ends every process,
and how much memory a worker holds while Redis is away and its command keeps printing.

    .venv/bin/python -m benchmarks.faults [--kills 5] [--cancels 5] [--outage 60]

Runs its own Redis (AOF), API and worker processes in a temporary folder, with the short
fault-detection settings the tests use (lease TTL 3 s, refresh 0.5 s, reconcile every
0.5 s, cancel grace 3 s); the time to fail a lost node scales with the lease TTL (the
defaults are 30 s and 10 s). Prints medians and ranges.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from benchmarks.figures import machine
from common.layout import TRAINING_LOG, TRAINING_LOG_KEY
from common.runstore import RunStore
from common.states import RunState
from tests.conftest import make_zip, manifest_yaml, new_stack, start_redis

GPUS = "4,5,6,7"


def submit(stack, command: str) -> str:
    answer = requests.post(
        f"{stack.api_url}/v3/models",
        files={
            "model_definition": ("m.zip", make_zip({"a": "b"})),
            "manifest": ("m.yml", manifest_yaml(command, resource="large")),
        },
        headers=stack.headers("alice"),
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["model_id"]


def halt(stack, run_id: str) -> requests.Response:
    return requests.patch(
        f"{stack.api_url}/v3/models/{run_id}",
        json={"status": "halt"},
        headers=stack.headers("alice"),
        timeout=10,
    )


def wait(store: RunStore, run_id: str, test, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get(run_id)
        if run is not None and test(run):
            return run
        time.sleep(0.02)
    raise RuntimeError(f"{run_id}: timed out")


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children():  # the pool child; the run's processes are its children
        if child.name() != "bash":
            total += child.memory_info().rss
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--cancels", type=int, default=5)
    parser.add_argument("--outage", type=float, default=60)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dlaas-faults-"))
    redis_server = start_redis(base / "redis", persist=True)
    (base / "home").mkdir()
    stack = new_stack(redis_server, base / "home")
    try:
        stack.bucket("data")
        stack.bucket("results")
        store = RunStore(redis_server.client())
        stack.start_api()
        stack.start_reconciler()
        deaths = []
        for i in range(args.kills):
            worker = stack.start_worker(f"victim-{i}@bench", GPUS)
            run_id = submit(stack, "sleep 300")
            run = wait(store, run_id, lambda r: r.process_id)
            os.killpg(worker, signal.SIGKILL)
            os.killpg(run.process_id, signal.SIGKILL)
            killed = time.monotonic()
            wait(store, run_id, lambda r: r.state is RunState.FAILED)
            deaths.append(time.monotonic() - killed)
            stack.stop(worker)

        worker = stack.start_worker("cancel@bench", GPUS)
        polite, stubborn = [], []
        for command, into in (
            ("sleep 300", polite),
            ("trap '' TERM; while true; do sleep 0.1; done", stubborn),
        ):
            for _ in range(args.cancels):
                run_id = submit(stack, command)
                wait(store, run_id, lambda r: r.process_id)
                time.sleep(0.3)
                halt(stack, run_id).raise_for_status()
                asked = time.monotonic()
                wait(store, run_id, lambda r: r.state is RunState.HALTED)
                log = (
                    stack.store_root / "tests" / "results" / run_id / TRAINING_LOG_KEY
                ).read_text()
                gone = float(log.split("all its processes ended in ")[1].split(" s")[0])
                into.append((gone, time.monotonic() - asked))

        chatty = (
            'python3 -c \'import time\nfor i in range(10**9):\n print("step", i, '
            '"loss", 1/(i+1)); time.sleep(0.0002)\''
        )
        run_id = submit(stack, chatty)
        wait(store, run_id, lambda r: r.process_id)
        time.sleep(3)
        before = tree_rss(worker)
        log_file = stack.home / "work" / run_id / "log" / TRAINING_LOG
        log_before = log_file.stat().st_size
        redis_server.stop()
        peak = before
        end = time.monotonic() + args.outage
        while time.monotonic() < end:
            peak = max(peak, tree_rss(worker))
            time.sleep(0.5)
        logged = log_file.stat().st_size - log_before
        redis_server.start()
        time.sleep(3)
        after = tree_rss(worker)
        halt(stack, run_id)
        wait(store, run_id, lambda r: r.state.terminal)
    finally:
        stack.stop_all()
        redis_server.stop()

    print(
        "fault benchmark (own Redis with AOF, API, reconciler, workers; lease TTL 3 s, "
        "refresh 0.5 s, reconcile 0.5 s, grace 3 s)"
    )
    print(f"environment: {machine()}")
    print(
        f"worker death -> run FAILED (S104): median {statistics.median(deaths):.2f} s, "
        f"min {min(deaths):.2f}, max {max(deaths):.2f} over {len(deaths)} kills"
    )
    for label, values in (("exits on SIGTERM", polite), ("ignores SIGTERM", stubborn)):
        gone = [g for g, _ in values]
        halted = [h for _, h in values]
        print(
            f"cancel, command {label}: last process gone after median "
            f"{statistics.median(gone):.2f} s (max {max(gone):.2f}); HALTED recorded after "
            f"median {statistics.median(halted):.2f} s"
        )
    print(
        f"{args.outage:.0f} s Redis outage, the command printing all along: worker RSS "
        f"{before / 2**20:.1f} MiB before, peak {peak / 2**20:.1f} MiB during, "
        f"{after / 2**20:.1f} MiB after; {logged / 2**20:.1f} MiB of log written during the outage"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
