"""The runs list (`GET /v3/models`, what the dashboard's runs page asks for) with many runs.

    .venv/bin/python -m benchmarks.runslist [--runs 10000] [--repeat 50] [--browser-repeat 20]

Starts a private embedded stack (benchmarks/privatestack.py), then writes N runs of its demo
user straight into its Redis with the run store's own code (common/submission.py `new_run`,
RunStore.create, claim and transitions, as a submission and a worker would: real records,
ended ones with their retention TTL), nothing queued: 70% COMPLETED, 10% FAILED, 10% HALTED,
10% PENDING, named after five model families, the newest 100 of them the trials of one
experiment. Then times pages of 100 over HTTP (requests, one kept-alive session): offset 0,
a deep offset, and filtered ones (state, name, both, experiment, every user's), each case
`--repeat` times after a warm-up, the cases taken in turn. Each answer is checked (its rows,
their order, `total`). Prints median, 95th percentile and spread (min, max) per case, and the
environment. Last, the dashboard's runs page in Debian's chromium (benchmarks/browser.py):
the time from navigation to its first rows, `--browser-repeat` loads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis
import requests

from api.client import read_env_file
from benchmarks.browser import first_rows_ms
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common.crypto import CredentialBox
from common.ids import new_experiment_id
from common.manifest import parse_manifest
from common.runstore import RunStore
from common.settings import Settings
from common.states import ErrorCode, RunState
from common.submission import new_run

USER = "demo"  # the embedded stack's token is the demo user's (an admin)
FAMILIES = ("resnet50-imagenet", "bert-base-finetune", "mlp-tabular", "gpt2-small", "unet-seg")
PAGE = 100

MANIFEST = """
model_definition:
  name: {name}
  description: a run of the runs-list benchmark, never executed
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "python train.py --epochs 10 --lr 0.001", resource: small}}
training_data_reference:
- connection: {{path: bench}}
  source: {{bucket: data, type: local}}
training_results_reference:
  connection: {{path: bench}}
  target: {{bucket: results, type: local}}
"""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def state_of(i: int) -> RunState:
    """The state run number `i` (0: the oldest) is left in."""
    return {0: RunState.FAILED, 1: RunState.HALTED, 2: RunState.PENDING}.get(
        i % 10, RunState.COMPLETED
    )


def fill(runs: RunStore, settings: Settings, count: int, experiment_id: str) -> list[dict]:
    """Writes `count` runs of USER, oldest first; what each is (id, name, state, trial),
    newest first, as the list should give them."""
    box = CredentialBox(settings.secret_key)
    sealed = box.seal({"data": {"user": "bench", "password": "x" * 24}})
    manifests = {f: parse_manifest(MANIFEST.format(name=f)) for f in FAMILIES}
    written = []
    for i in range(count):
        family = FAMILIES[(i // 10) % len(FAMILIES)]  # every family has runs of each state
        trial = i - (count - PAGE) if i >= count - PAGE else None
        experiment = (
            {"id": experiment_id, "trial": trial, "values": {"lr": 0.001 * (trial + 1)}}
            if trial is not None
            else None
        )
        run = new_run(settings, USER, manifests[family], sealed, experiment=experiment)
        runs.create(run)
        state = state_of(i)
        if state is RunState.FAILED:
            runs.transition(run.id, state, "command exited 1", ErrorCode.COMMAND_FAILED)
        elif state is RunState.HALTED:
            runs.request_cancel(run.id, USER)
        elif state is RunState.COMPLETED:
            claimed = runs.claim(run.id, "bench-worker@here")
            runs.transition(
                run.id, RunState.STORING, "exit 0", exit_code=0, attempt=claimed.attempt
            )
            runs.transition(run.id, state, "done", attempt=claimed.attempt)
        written.append({"id": run.id, "name": run.name, "state": state.value, "trial": trial})
    return written[::-1]


class Case:
    def __init__(self, label: str, query: str, expected: list[dict], offset: int = 0):
        self.label, self.query, self.offset = label, query, offset
        self.total = len(expected)
        self.ids = [r["id"] for r in expected[offset : offset + PAGE]]
        self.times: list[float] = []
        self.wrong = ""

    def check(self, answer: dict) -> None:
        got = [m["model_id"] for m in answer["models"]]
        if got != self.ids or answer["total"] != self.total:
            self.wrong = (
                f"{len(got)} rows (first {got[:1]}), total {answer['total']}; expected "
                f"{len(self.ids)} rows (first {self.ids[:1]}), total {self.total}"
            )


def cases(written: list[dict], experiment_id: str, deep: int) -> list[Case]:
    failed = [r for r in written if r["state"] == "FAILED"]
    bert = [r for r in written if "bert" in r["name"]]
    trials = [r for r in written if r["trial"] is not None]
    return [
        Case("offset 0", f"limit={PAGE}", written),
        Case(f"offset {deep}", f"limit={PAGE}&offset={deep}", written, deep),
        Case("state=FAILED", f"limit={PAGE}&state=FAILED", failed),
        Case("name=BERT", f"limit={PAGE}&name=BERT", bert),
        Case(
            "state=FAILED&name=bert",
            f"limit={PAGE}&state=FAILED&name=bert",
            [r for r in failed if "bert" in r["name"]],
        ),
        Case("experiment=<id>", f"limit={PAGE}&experiment={experiment_id}", trials),
        # Every user's (admins): the same runs here, the demo user being the only one.
        Case("all=true", f"limit={PAGE}&all=true", written),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--browser-repeat", type=int, default=20, help="page loads in chromium")
    args = parser.parse_args()
    if args.runs < 2 * PAGE:
        parser.error(f"--runs: at least {2 * PAGE}")
    deep = args.runs - 10 * PAGE if args.runs >= 10 * PAGE else args.runs - PAGE

    with private_stack("dlaas-bench-runslist-", DLAAS_REQUESTS_PER_MINUTE="0") as (
        home,
        env,
        ports,
    ):
        config = read_env_file(home / "config.env")
        settings = Settings.from_env(
            env,
            redis_url=f"redis://:{config['DLAAS_REDIS_PASSWORD']}@127.0.0.1:{ports['redis']}/0",
            secret_key=config["DLAAS_SECRET_KEY"],
        )
        connection = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        runs = RunStore(connection, retention_seconds=settings.retention_seconds)
        experiment_id = new_experiment_id()
        began = time.monotonic()
        written = fill(runs, settings, args.runs, experiment_id)
        fill_seconds = time.monotonic() - began

        saved = read_env_file(Path(home) / "env")
        http = requests.Session()
        http.trust_env = False
        http.headers["Authorization"] = f"Bearer {saved['DLAAS_TOKEN']}"
        todo = cases(written, experiment_id, deep)
        for repetition in range(args.warmup + args.repeat):
            for case in todo:
                t0 = time.perf_counter()
                answer = http.get(f"{saved['DLAAS_URL']}/v3/models?{case.query}", timeout=60)
                seconds = time.perf_counter() - t0
                answer.raise_for_status()
                if repetition >= args.warmup:
                    case.times.append(seconds)
                case.check(answer.json())
        # The dashboard's runs page: the demo user is an admin, so the page asks for all=true.
        browser = first_rows_ms(saved["DLAAS_URL"], saved["DLAAS_TOKEN"], args.browser_repeat)

    print(
        f"runs-list benchmark: GET /v3/models, pages of {PAGE}, {args.runs} runs of one user, "
        f"embedded stack (API: gunicorn, 2 workers)"
    )
    print(
        f"environment: {machine()}, redis-py {redis.__version__}, requests "
        f"{requests.__version__}; {args.runs} runs written in {fill_seconds:.1f} s"
    )
    print(f"{args.repeat} timed requests per case after {args.warmup} warm-up, cases in turn")
    wrong = False
    for case in todo:
        t = case.times
        print(
            f"  {case.label:<24} total {case.total:>6}   median {ms(statistics.median(t))}   "
            f"p95 {ms(percentile(t, 0.95))}   min {ms(min(t))}   max {ms(max(t))}"
        )
        if case.wrong:
            wrong = True
            print(f"    WRONG ANSWER: {case.wrong}")
    print(
        f"browser (Debian chromium, headless), the runs page (admin: all=true) from navigation "
        f"to its first {PAGE} rows, {args.browser_repeat} loads after a warm-up: median "
        f"{browser['median']:.0f} ms, p95 {browser['p95']:.0f} ms, min {browser['min']:.0f} ms, "
        f"max {browser['max']:.0f} ms"
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
