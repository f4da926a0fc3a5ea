"""The packing benchmark's short real version: a trace of a few dozen sleep runs through a
private stack on two real workers with declared GPUs (`--gpus 0-3`, `--gpus 4-7`), against
the simulation (benchmarks/packing.py's `simulate`, the same allocator) of the same trace.

    .venv/bin/python -m benchmarks.packing_real [--runs 36] [--median 4] [--seed 1]

The trace is benchmarks/packing.py's (sizes 60/30/10%, log-normal durations, Poisson
arrivals at `--load` of the 8 GPUs), scaled to a median of `--median` seconds; each run is
`sleep <duration>` with its time limit declared (twice its duration), submitted at its
arrival time. The reservation bound is scaled as the durations are (600 s for a median of
30 min). Figures, for each side:
  GPU utilisation   GPU-seconds of the commands (from each run's PROCESSING to its
                    STORING) over the fleet's GPU-seconds from the first arrival to the last
  wait              arrival to command start, per size (the real one includes the dispatch:
                    submission, queue, placement, staging)
The stack's own worker is drained first, so only the two packing workers take runs.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

from api.client import read_env_file
from benchmarks.figures import machine, percentile
from benchmarks.packing import LIMIT_FACTOR, Outcome, make_trace, simulate, utilisation
from benchmarks.privatestack import private_stack
from common.clock import parse_iso
from common.fleet.packing import Node, Reservation
from common.fleet.sizes import DEFAULT_SIZE_GPUS
from common.runstore import RunStore
from common.states import RunState
from deploy import runuser
from worker.runuser import slot_user

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODES = {"bench-node-a@bench": "0-3", "bench-node-b@bench": "4-7"}
GPUS_PER_NODE = 4
MANIFEST = """
model_definition:
  name: bench-pack-{size}
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "sleep {duration:.3f}", resource: {size}, timeout: {timeout:.0f}s}}
training_data_reference:
- connection: {{path: bench}}
  source: {{bucket: data, type: local}}
training_results_reference:
  connection: {{path: bench}}
  target: {{bucket: results, type: local}}
"""


def start_workers(home: Path, env: dict[str, str], bound: float) -> dict[str, subprocess.Popen]:
    """The two packing workers, each with its slots' run users (as root), ready."""
    config = read_env_file(home / "config.env")
    redis_port = env["DLAAS_STACK_REDIS_PORT"]
    worker_env = dict(
        env,
        DLAAS_REDIS_URL=f"redis://:{config['DLAAS_REDIS_PASSWORD']}@127.0.0.1:{redis_port}/0",
        DLAAS_SECRET_KEY=config["DLAAS_SECRET_KEY"],
        DLAAS_TOKENS_FILE=str(home / "tokens.json"),
        DLAAS_RESERVATION_AFTER_SECONDS=f"{bound:g}",
    )
    if os.geteuid() == 0:
        reach = [home / "work", home / "environments", *runuser.python_paths()]
        for slot in range(GPUS_PER_NODE):
            runuser.ensure(slot_user("dlaas-run", slot), [p for p in reach if p.exists()])
    workers = {}
    for name, gpus in NODES.items():
        log = open(home / f"{name}.log", "w")
        argv = [str(BIN / "dlaas-worker"), "--name", name, "--gpus", gpus]
        workers[name] = subprocess.Popen(argv, env=worker_env, cwd=ROOT, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    for name in NODES:
        while "ready." not in (home / f"{name}.log").read_text():
            if time.monotonic() > deadline or workers[name].poll() is not None:
                raise RuntimeError(f"{name} did not start: {(home / f'{name}.log').read_text()}")
            time.sleep(0.2)
    return workers


def stop(workers: dict[str, subprocess.Popen]) -> None:
    for proc in workers.values():
        proc.send_signal(signal.SIGTERM)
    for proc in workers.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def command_span(store: RunStore, run_id: str) -> tuple[float, float]:
    """When the run's command started and ended (its PROCESSING and STORING entries)."""
    at = {entry.state: parse_iso(entry.at) for entry in store.history(run_id)}
    return at[RunState.PROCESSING].timestamp(), at[RunState.STORING].timestamp()


def waits(outcomes: list[Outcome]) -> dict[str, str]:
    out = {}
    for size in DEFAULT_SIZE_GPUS:
        got = [o.wait for o in outcomes if o.job.size is size]
        if got:
            out[size.value] = (
                f"median {statistics.median(got):6.2f} s  p95 {percentile(got, 95):6.2f} s"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=36)
    parser.add_argument("--median", type=float, default=4.0, help="median duration, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.9)
    args = parser.parse_args()
    fleet_gpus = len(NODES) * GPUS_PER_NODE
    scale = args.median / (30 * 60.0)
    trace = make_trace(args.runs, fleet_gpus, args.load, args.seed, dict(DEFAULT_SIZE_GPUS))
    trace = [
        type(j)(j.run_id, j.size, j.gpus, j.arrival * scale, j.duration * scale, j.timeout * scale)
        for j in trace
    ]
    bound = Reservation().after_seconds * scale
    span = (trace[0].arrival, trace[-1].arrival)
    nodes = [Node(name, tuple(range(GPUS_PER_NODE))) for name in NODES]
    simulated = simulate(trace, nodes, random.Random(args.seed), Reservation(bound), True)

    with private_stack(
        "dlaas-bench-pack-", DLAAS_MAX_QUEUED_PER_USER="0", DLAAS_REQUESTS_PER_MINUTE="0"
    ) as (home, env, ports):
        saved = read_env_file(home / "env")
        for bucket in ("data", "results"):
            (home / "store" / "bench" / bucket).mkdir(parents=True, exist_ok=True)
        http = requests.Session()
        http.trust_env = False
        http.headers["Authorization"] = f"Bearer {saved['DLAAS_TOKEN']}"
        url = saved["DLAAS_URL"]
        for node in http.get(f"{url}/v3/nodes", timeout=10).json()["nodes"]:
            http.post(f"{url}/v3/nodes/{node['name']}/drain", timeout=10).raise_for_status()
        workers = start_workers(home, env, bound)
        try:
            config = read_env_file(home / "config.env")
            connection = redis.Redis(
                port=ports["redis"], password=config["DLAAS_REDIS_PASSWORD"], decode_responses=True
            )
            store = RunStore(connection)
            zipped = empty_zip()
            ids, began = {}, time.time()
            for job in trace:
                time.sleep(max(0.0, began + job.arrival - time.time()))
                manifest = MANIFEST.format(
                    size=job.size.value, duration=job.duration, timeout=job.timeout
                )
                answer = http.post(
                    f"{url}/v3/models",
                    files={
                        "model_definition": ("m.zip", zipped),
                        "manifest": ("m.yml", manifest),
                    },
                    timeout=30,
                )
                answer.raise_for_status()
                ids[job.run_id] = (answer.json()["model_id"], time.time() - began)
            deadline = time.monotonic() + 600
            for run_id, _ in ids.values():
                while not (run := store.get(run_id)).state.terminal:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{run_id} still {run.state.value} after 600 s")
                    time.sleep(0.2)
                if run.state is not RunState.COMPLETED:
                    raise RuntimeError(f"{run_id}: {run.state.value} {run.status_message}")
            real, nodes_used = [], set()
            for job in trace:
                run_id, submitted = ids[job.run_id]
                start, end = command_span(store, run_id)
                run = store.get(run_id)
                nodes_used.add(run.worker)
                measured = type(job)(
                    job.run_id, job.size, job.gpus, submitted, end - start, job.timeout
                )
                real.append(Outcome(measured, start - began, run.worker))
        finally:
            stop(workers)

    real_span = (min(o.job.arrival for o in real), max(o.job.arrival for o in real))
    sim_use = utilisation(simulated, fleet_gpus, span)
    real_use = utilisation(real, fleet_gpus, real_span)
    print(
        f"packing, real against simulated: {args.runs} sleep runs (median {args.median:g} s, "
        f"each declaring {LIMIT_FACTOR:g}x its duration), load {args.load:.2f}, seed "
        f"{args.seed}, on 2 workers of 4 declared GPUs; reservation after {bound:.2f} s"
    )
    print(f"environment: {machine()}; the workers' clean run environment")
    print(f"  {'':<18}{'simulated':>32}{'real':>34}")
    print(f"  {'GPU utilisation':<18}{sim_use:>32.1%}{real_use:>34.1%}")
    sim_waits, real_waits = waits(simulated), waits(real)
    for size in sim_waits:
        print(f"  {'wait ' + size:<18}{sim_waits[size]:>32}{real_waits.get(size, '-'):>34}")
    print(
        f"  real / simulated utilisation: {real_use / sim_use:.2f}; nodes used: {len(nodes_used)}"
    )
    return 0


def empty_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("train.sh", "true\n")
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
