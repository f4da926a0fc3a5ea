"""How fast the experiment controller keeps a sweep moving, against plain dispatch.

    .venv/bin/python -m benchmarks.experiments [--trials 50] [--rounds 2]

On a private embedded stack (one worker, the controller), in each round:
  1. dispatch: N plain runs submitted over HTTP one after another, each a command that only
     prints a metric and exits; per run, submission (`submitted_at`) to the command starting
     (its PROCESSING entry): benchmarks/dispatch.py's figure, for these runs;
  2. an experiment of N trials (random search, one trial at a time) of the same command, its
     value substituted in; per pair of consecutive trials, the end of one (its run's terminal
     history entry) to the next one's command starting (its PROCESSING entry): the controller
     noticing the end, telling Optuna, asking for the next values, and the run's dispatch.
Prints the medians side by side and their ratio (goal: within 2x), and the controller's CPU
time per trial (from /proc, its user + system time over the experiment).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

import redis
import requests
import yaml

from api.client import read_env_file
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common.clock import parse_iso
from common.runstore import RunStore
from common.states import RunState

MANIFEST = """
model_definition:
  name: bench-trial
  framework: {name: python, version: "3.11"}
  execution: {command: "echo loss=%s", resource: small}
training_data_reference:
- connection: {path: bench}
  source: {bucket: data, type: local}
training_results_reference:
  connection: {path: bench}
  target: {bucket: results, type: local}
metric_definitions:
- {name: loss, regex: "loss=(\\\\S+)"}
"""


def experiment(trials: int, seed: int) -> str:
    hpo = {
        "method": {
            "name": "random",
            "parameters": [
                {"name": "objective", "string_value": "loss"},
                {"name": "maximize_or_minimize", "string_value": "minimize"},
                {"name": "num_optimizer_steps", "int_value": trials},
            ],
        },
        "hyper_parameters": [{"name": "x", "double_range": {"min_value": 0, "max_value": 1}}],
        "max_concurrent_trials": 1,
        "max_failed_trials": 0,
        "seed": seed,
    }
    return yaml.safe_dump({"name": "bench-sweep", "hyper_parameters_optimization": hpo})


class Bench:
    def __init__(self, home: Path, runs: RunStore):
        saved = read_env_file(home / "env")
        self.url = saved["DLAAS_URL"]
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {saved['DLAAS_TOKEN']}"
        self.runs = runs
        path = home / "bench.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("README", "a model that only prints its loss\n")
        self.zip_bytes = path.read_bytes()
        for bucket in ("data", "results"):
            (home / "store" / "bench" / bucket).mkdir(parents=True, exist_ok=True)

    def files(self, command_value: str) -> dict:
        return {
            "model_definition": ("m.zip", self.zip_bytes),
            "manifest": ("m.yml", MANIFEST % command_value),
        }

    def run_once(self) -> float:
        answer = self.http.post(f"{self.url}/v3/models", files=self.files("0.5"), timeout=30)
        answer.raise_for_status()
        run_id = answer.json()["model_id"]
        self.wait(lambda: (r := self.runs.get(run_id)) is not None and r.state.terminal, 60)
        history = self.runs.history(run_id)
        return _at(history, RunState.PROCESSING) - _at(history, RunState.PENDING)

    def sweep(self, trials: int, seed: int) -> tuple[list[float], str]:
        files = dict(self.files("${x}"), experiment=("e.yml", experiment(trials, seed)))
        answer = self.http.post(f"{self.url}/v3/experiments", files=files, timeout=30)
        answer.raise_for_status()
        experiment_id = answer.json()["experiment_id"]
        shown: dict = {}

        def ended() -> bool:
            shown.update(self.get(f"/v3/experiments/{experiment_id}"))
            return shown["state"] != "RUNNING"

        self.wait(ended, 60 + 10 * trials, every=0.5)
        if shown["state"] != "COMPLETED":
            raise RuntimeError(f"{experiment_id} {shown['state']}: {shown['status_message']}")
        board = sorted(shown["leaderboard"], key=lambda e: e["trial"])
        histories = [self.runs.history(e["run_id"]) for e in board]
        gaps = [
            _at(after, RunState.PROCESSING) - _end(before)
            for before, after in zip(histories, histories[1:], strict=False)
        ]
        return gaps, experiment_id

    def get(self, path: str) -> dict:
        answer = self.http.get(self.url + path, timeout=30)
        answer.raise_for_status()
        return answer.json()

    @staticmethod
    def wait(done, timeout: float, every: float = 0.005) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"not done in {timeout:.0f} s")
            time.sleep(every)


def _at(history, state: RunState) -> float:
    return parse_iso(next(h.at for h in history if h.state is state)).timestamp()


def _end(history) -> float:
    return parse_iso(history[-1].at).timestamp()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    dispatch: list[float] = []
    gaps: list[float] = []
    per_round = []
    cpu_per_trial = []
    with private_stack("dlaas-bench-experiments-", DLAAS_REQUESTS_PER_MINUTE="0") as (
        home,
        env,
        ports,
    ):
        password = read_env_file(home / "config.env")["DLAAS_REDIS_PASSWORD"]
        connection = redis.Redis.from_url(
            f"redis://:{password}@127.0.0.1:{ports['redis']}/0", decode_responses=True
        )
        bench = Bench(home, RunStore(connection))
        controller = int((home / "pids" / "controller.pid").read_text())
        bench.run_once()  # warm up: the environment built, imports, connections
        for round_number in range(args.rounds):
            plain = [bench.run_once() for _ in range(args.trials)]
            before = cpu_seconds(controller)
            sweep, experiment_id = bench.sweep(args.trials, seed=round_number)
            cpu_per_trial.append((cpu_seconds(controller) - before) / args.trials)
            dispatch += plain
            gaps += sweep
            per_round.append((statistics.median(plain), statistics.median(sweep), experiment_id))
    print(
        f"experiment benchmark: {args.rounds} rounds of {args.trials} plain runs, then an "
        f"experiment of {args.trials} trials (random search, one at a time), one worker"
    )
    print(
        f"environment: {machine()}, PYTHONUNBUFFERED="
        f"{os.environ.get('PYTHONUNBUFFERED', '(unset)')}; runs get the worker's clean "
        f"environment; controller interval 1 s (it wakes at once on a trial's end)"
    )
    for number, (plain, sweep, experiment_id) in enumerate(per_round, 1):
        print(
            f"  round {number}: dispatch {ms(plain)}, trial to trial {ms(sweep)} ({experiment_id})"
        )
    d, g = statistics.median(dispatch), statistics.median(gaps)
    print(
        f"submission -> command start, plain runs:   median {ms(d)}  p95 "
        f"{ms(percentile(dispatch, 0.95))}  ({len(dispatch)} runs)"
    )
    print(
        f"trial end -> next trial's command start:   median {ms(g)}  p95 "
        f"{ms(percentile(gaps, 0.95))}  ({len(gaps)} gaps)"
    )
    print(f"ratio trial-to-trial / dispatch: {g / d:5.2f} (goal: within 2)")
    print(
        "controller CPU per trial: "
        + ", ".join(ms(c) for c in cpu_per_trial)
        + f" (median {ms(statistics.median(cpu_per_trial))})"
    )
    return 0 if g / d <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
