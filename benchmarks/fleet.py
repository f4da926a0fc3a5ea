"""The fleet's cost against the length of its queue and the number of its nodes, on one Redis.

    .venv/bin/python -m benchmarks.fleet [--workers 30] [--waiting 0,1000,10000]
                                         [--nodes 1000] [--runs 20] [--drain 150]

A private embedded stack (its own worker stopped: it is a CPU node and would take every size),
then two parts, one table each:

1. Real workers: `--workers` real `dlaas-worker` processes, each a node with one declared GPU
   (it serves `small`), each as its own run user (as root). With 0, 1,000 and 10,000 runs
   waiting (`large` runs, which no node can hold, from ten users, written through the run
   store with their queue messages, as the API writes them): each node's CPU while idle
   (its main process and pool, over a window), Redis's CPU and commands per second over the
   same window, the dispatch of a `small` run submitted over HTTP behind them (submission
   to the command's start, one at a time: p50, p95), and the drain throughput of `--drain`
   small runs submitted back to back (runs ended per second). First of all, the dispatch on
   one worker with nothing waiting: the empty single-node figure the goals compare with.
2. A simulated fleet: `--nodes` nodes running the node's own control-plane code against the
   same Redis, with the largest queue still waiting: the heartbeat (NodeStore.heartbeat),
   the consumer decision every DLAAS_PACK_INTERVAL_SECONDS (ConsumerControl.tick, switching
   nothing: no Celery here) and a placement and release every 30 s (Packer.place: the GPU
   ledger), in two processes, without Celery pools or commands. Redis's CPU and commands
   per second, the ticks the simulator achieved against the ticks asked for (on a small
   machine it falls behind: the per-tick Redis cost is then what to read), the Redis
   commands per node per second; and the dispatch of a real run on one real worker among
   them.

Prints the environment first (machine, load, the variables that change what is measured).
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from api.client import read_env_file
from benchmarks.dispatch import Bench, start_latency, wait_ended
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common import keys
from common.artifacts import ArtifactStore
from common.crypto import CredentialBox
from common.fleet.nodes import NodeStore
from common.fleet.sizes import ResourceSize
from common.runstore import RunStore
from common.settings import Settings
from common.taskqueue import enqueue_run, make_celery
from deploy import runuser
from deploy.processes import stop_pid
from tests.conftest import bare_run
from worker.context import WorkerContext
from worker.gpus import GpuSet
from worker.packer import ConsumerControl, Packer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
USERS = [f"fleet-user-{i}" for i in range(10)]
WINDOW = 10.0  # seconds over which idle CPU and Redis figures are taken
SIM_WINDOW = 20.0
PLACE_EVERY = 30.0  # a simulated node places and releases a run this often


def pct(seconds: float, over: float) -> str:
    return f"{100 * seconds / over:6.2f}%"


class Stack:
    """The private stack's Redis, settings and HTTP submission."""

    def __init__(self, home: Path, env: dict[str, str], ports: dict[str, int]):
        self.home = home
        config = read_env_file(home / "config.env")
        self.url = f"redis://:{config['DLAAS_REDIS_PASSWORD']}@127.0.0.1:{ports['redis']}/0"
        self.env = dict(
            env,
            DLAAS_REDIS_URL=self.url,
            DLAAS_SECRET_KEY=config["DLAAS_SECRET_KEY"],
            DLAAS_TOKENS_FILE=str(home / "tokens.json"),
        )
        self.settings = Settings.from_env(self.env)
        self.redis = redis.Redis.from_url(self.url, decode_responses=True)
        self.runs = RunStore(self.redis)
        self.bench = Bench(home)
        self.celery = make_celery(self.settings, main="dlaas-bench-fleet")
        self.workers: dict[str, subprocess.Popen] = {}
        self.filled = 0  # the large runs written so far (they never start)

    def start_workers(self, count: int) -> None:
        """More real workers, up to `count`, each with one declared GPU and its own run user."""
        reach = [self.home / "work", self.home / "environments", *runuser.python_paths()]
        names = []
        for i in range(len(self.workers), count):
            name, user = f"fleet-{i}@bench", f"dlaas-fleet-{i}"
            if os.geteuid() == 0:
                runuser.ensure(user, [p for p in reach if p.exists()])
            log = open(self.home / f"{name}.log", "w")
            argv = [str(BIN / "dlaas-worker"), "--name", name, "--gpus", "0"]
            env = dict(self.env, DLAAS_RUN_AS=user)
            self.workers[name] = subprocess.Popen(  # its own group: stopped by pid, whole
                argv,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            names.append(name)
        deadline = time.monotonic() + 60 + 5 * len(names)
        for name in names:
            while "ready." not in (self.home / f"{name}.log").read_text():
                if time.monotonic() > deadline or self.workers[name].poll() is not None:
                    raise RuntimeError(f"{name} did not start:\n{self.log_tail(name)}")
                time.sleep(0.2)

    def log_tail(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text()[-2000:]

    def stop_workers(self, keep: int = 0) -> None:
        for name in list(self.workers)[keep:]:
            stop_pid(self.workers.pop(name).pid, timeout=30)

    def fill(self, waiting: int) -> None:
        """Large runs waiting, from ten users, until `waiting` wait (records and messages
        as the API writes them, without its HTTP and its zip upload)."""
        for i in range(self.filled, waiting):
            size = ResourceSize.LARGE
            run = bare_run(size, USERS[i % len(USERS)], self.settings.size_gpus[size])
            self.runs.create(run)
            enqueue_run(self.celery, run.id, run.resource)
        self.filled = max(self.filled, waiting)

    def redis_figures(self) -> tuple[float, int]:
        """Redis's CPU seconds so far and the commands it has processed."""
        info = self.redis.info()
        return info["used_cpu_user"] + info["used_cpu_sys"], info["total_commands_processed"]

    def dispatch(self, count: int) -> list[float]:
        """`count` small runs submitted one at a time: submission -> command start each."""
        seconds = []
        for _ in range(count):
            run_id = self.bench.submit()
            wait_ended(self.runs, run_id, timeout=120)
            seconds.append(start_latency(self.runs, run_id))
        return seconds

    def drain(self, count: int) -> float:
        """`count` small runs submitted back to back; runs ended per second."""
        began = time.monotonic()
        ids = [self.bench.submit() for _ in range(count)]
        for run_id in ids:
            wait_ended(self.runs, run_id, timeout=600)
        return count / (time.monotonic() - began)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (a worker's main process and its pool)."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
        return total
    except psutil.NoSuchProcess:
        return 0.0


def idle_figures(stack: Stack) -> dict[str, float]:
    """Over WINDOW seconds with nothing to start: each node's CPU (median, max), Redis's."""
    pids = [proc.pid for proc in stack.workers.values()]
    before = [cpu_seconds(pid) for pid in pids]
    redis_cpu, commands = stack.redis_figures()
    began = time.monotonic()
    time.sleep(WINDOW)
    wall = time.monotonic() - began
    node = [(cpu_seconds(pid) - b) / wall for pid, b in zip(pids, before, strict=True)]
    redis_cpu2, commands2 = stack.redis_figures()
    return {
        "node_median": statistics.median(node),
        "node_max": max(node),
        "redis_cpu": (redis_cpu2 - redis_cpu) / wall,
        "redis_ops": (commands2 - commands) / wall,
    }


# --- the simulated fleet -------------------------------------------------------------------


def simulate(url: str, env: dict[str, str], names: list[str], seconds: float, report) -> None:
    """One simulator process: these nodes' heartbeats, consumer decisions and placements on
    one scheduler, for `seconds`; reports (ticks asked, ticks done, places) on `report`."""
    os.nice(19)  # the simulated nodes stand for other machines: this one's CPU goes first to
    # the real worker and API whose dispatch is measured (the ticks done say if they lag)
    settings = Settings.from_env(env)
    connection = redis.Redis.from_url(url, decode_responses=True)
    box, artifacts = CredentialBox(settings.secret_key), ArtifactStore.from_settings(settings)
    sizes = [ResourceSize.SMALL, ResourceSize.MEDIUM, ResourceSize.LARGE]
    nodes = []
    for name in names:
        ctx = WorkerContext(
            settings=settings,
            runs=RunStore(connection, settings.retention_seconds, settings.lease_ttl_seconds),
            nodes=NodeStore(connection, 3 * settings.worker_heartbeat_seconds),
            box=box,
            artifacts=artifacts,
            gpus=GpuSet((0, 1, 2, 3), "declared"),
            name=name,
            slots=4,
        )
        nodes.append((ctx, ConsumerControl(ctx, sizes), Packer(ctx)))
    info = {"host": "sim", "pid": os.getpid(), "sizes": [s.value for s in sizes], "slots": 4}
    info["gpus"] = [0, 1, 2, 3]
    tick, beat = settings.pack_interval_seconds, settings.worker_heartbeat_seconds
    now = time.monotonic()
    queue = []
    for i in range(len(nodes)):  # spread over the periods, as real nodes are
        queue.append((now + random.uniform(0, tick), i, "tick"))
        queue.append((now + random.uniform(0, beat), i, "beat"))
        queue.append((now + random.uniform(0, PLACE_EVERY), i, "place"))
    heapq.heapify(queue)
    end, ticks, places = now + seconds, 0, 0
    while queue:
        at, i, kind = heapq.heappop(queue)
        if at >= end or time.monotonic() >= end:  # a simulator that lags stops on time too
            break
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ctx, control, packer = nodes[i]
        if kind == "tick":
            control.tick()
            ctx.nodes.redis.lpop(keys.worker_wake(ctx.name))  # a real node's BLPOP between ticks
            ticks += 1
            heapq.heappush(queue, (at + tick, i, kind))
        elif kind == "beat":
            ctx.nodes.heartbeat(ctx.name, info)
            heapq.heappush(queue, (at + beat, i, kind))
        else:
            run = bare_run(ResourceSize.SMALL, "sim")
            if packer.place(run)[0] is not None:
                packer.release(run.id)
                places += 1
            heapq.heappush(queue, (at + PLACE_EVERY, i, kind))
    asked = len(nodes) * seconds / tick
    report.put((asked, ticks, places))
    for ctx, _, _ in nodes:
        ctx.nodes.forget(ctx.name)


def simulated_fleet(stack: Stack, count: int, runs: int) -> dict[str, float]:
    names = [f"sim-{i}@bench" for i in range(count)]
    halves = [names[0::2], names[1::2]]
    report = multiprocessing.get_context("fork").Queue()
    warm = 8.0
    procs = [
        multiprocessing.get_context("fork").Process(
            target=simulate, args=(stack.url, stack.env, half, warm + SIM_WINDOW, report)
        )
        for half in halves
    ]
    for proc in procs:
        proc.start()
    time.sleep(warm)
    redis_cpu, commands = stack.redis_figures()
    began = time.monotonic()
    dispatch = stack.dispatch(runs)  # a real run on a real worker, among them
    left = SIM_WINDOW - (time.monotonic() - began) - 0.5
    if left > 0:
        time.sleep(left)
    wall = time.monotonic() - began
    redis_cpu2, commands2 = stack.redis_figures()
    reports = [report.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    asked = sum(r[0] for r in reports)
    done = sum(r[1] for r in reports)
    ops = (commands2 - commands) / wall
    return {
        "redis_cpu": (redis_cpu2 - redis_cpu) / wall,
        "redis_ops": ops,
        "achieved": done / asked,
        "per_node_ops": ops / count,
        "places": sum(r[2] for r in reports),
        "p50": statistics.median(dispatch),
        "p95": percentile(dispatch, 0.95),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=30)
    parser.add_argument("--waiting", default="0,1000,10000")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20, help="dispatch samples per figure")
    parser.add_argument("--drain", type=int, default=150, help="runs per drain figure")
    args = parser.parse_args()
    levels = [int(x) for x in args.waiting.split(",")]

    print(f"fleet benchmark: {args.workers} real workers, {args.nodes} simulated nodes")
    print(
        f"environment: {machine()}, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"PYTHONUNBUFFERED={os.environ.get('PYTHONUNBUFFERED', '(unset)')}, "
        f"AWS_CA_BUNDLE={'set' if os.environ.get('AWS_CA_BUNDLE') else '(unset)'}; "
        f"runs get a clean environment built by the worker",
        flush=True,
    )
    with private_stack(
        "dlaas-bench-fleet-",
        DLAAS_MAX_QUEUED_PER_USER="0",
        DLAAS_REQUESTS_PER_MINUTE="0",
    ) as (home, env, ports):
        stop_pid(int((home / "pids" / "worker.pid").read_text()), timeout=30)
        stack = Stack(home, env, ports)
        try:
            stack.start_workers(1)
            stack.dispatch(2)  # warm up: imports, connections, first fork
            single = stack.dispatch(args.runs)
            print(
                f"empty fleet, one worker: dispatch p50 {1000 * statistics.median(single):.1f} ms"
                f"  p95 {1000 * percentile(single, 0.95):.1f} ms",
                flush=True,
            )
            stack.start_workers(args.workers)
            time.sleep(10.0)  # their start-up (imports, first heartbeats) over
            stack.drain(2 * args.workers)  # each worker's first runs (its pool's cold path)
            print(f"\n1. real workers ({args.workers}, one declared GPU each, serving small)")
            print(
                f"{'waiting':>8} {'node idle CPU':>14} {'(max)':>8} {'Redis CPU':>10} "
                f"{'Redis ops/s':>12} {'dispatch p50':>13} {'p95':>9} {'drain runs/s':>13}"
            )
            drained = {}
            for waiting in levels:
                stack.fill(waiting)
                time.sleep(2.0)
                idle = idle_figures(stack)
                seconds = stack.dispatch(args.runs)
                drained[waiting] = stack.drain(args.drain)
                print(
                    f"{waiting:>8} {pct(idle['node_median'], 1):>14} {pct(idle['node_max'], 1):>8} "
                    f"{pct(idle['redis_cpu'], 1):>10} {idle['redis_ops']:>12.0f} "
                    f"{1000 * statistics.median(seconds):>10.1f} ms "
                    f"{1000 * percentile(seconds, 0.95):>6.1f} ms {drained[waiting]:>13.2f}",
                    flush=True,
                )
            if 0 in drained:
                for waiting in levels[1:]:
                    ratio = drained[waiting] / drained[0]
                    print(f"  drain with {waiting} waiting / empty: {ratio:.2f}x")
            stack.stop_workers(keep=1)
            most = max(levels)
            print(f"\n2. simulated fleet: {args.nodes} nodes, {most} runs waiting, one real worker")
            sim = simulated_fleet(stack, args.nodes, args.runs)
            print(
                f"  Redis CPU {pct(sim['redis_cpu'], 1)} of a core, {sim['redis_ops']:.0f} ops/s "
                f"({sim['per_node_ops']:.2f} per node per second)"
            )
            scaled = pct(sim["redis_cpu"] / sim["achieved"], 1)
            print(
                f"  simulator ticks done / asked: {sim['achieved']:.2f} "
                f"(Redis CPU at the full rate, scaled: {scaled}); placements {sim['places']}"
            )
            print(
                f"  dispatch of a real run among them: p50 {1000 * sim['p50']:.1f} ms  "
                f"p95 {1000 * sim['p95']:.1f} ms; "
                f"{sim['p50'] / statistics.median(single):.2f}x the empty single-node p50"
            )
        finally:
            stack.stop_workers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
