"""Experiments on the real stack: the controller (real processes, one active and one standing
by), Optuna's study in the real Redis, and every trial an ordinary run of the example training
program on two real workers."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import zipfile
from datetime import datetime

import optuna
import pytest
import requests
import yaml
from playwright.sync_api import expect

from common import keys
from common import study as studies
from common.experiment import parse_experiment
from tests.conftest import ROOT, make_zip, manifest_yaml
from tests.e2e.test_cli_e2e import dlaas

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "digits"
SWEEP_COMMAND = (
    "python3 train.py --data ${DATA_DIR} --epochs 3 --learning-rate ${learning_rate} "
    "--hidden ${hidden}"
)


@pytest.fixture(scope="module")
def sweep_stack(stack, workers, tmp_path_factory):
    """The session's stack with a second small worker and the controller (and a standby)."""
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), str(stack.bucket("data"))],
        check=True,
        capture_output=True,
    )
    stack.bucket("results")
    stack.controllers = {
        "controller-a": stack.start_controller("controller-a"),
        "controller-b": stack.start_controller("controller-b", standby=True),
    }
    pids = [stack.start_worker("small-worker-2@test", "3")]
    model = tmp_path_factory.mktemp("experiments") / "digits.zip"
    with zipfile.ZipFile(model, "w") as archive:
        archive.write(EXAMPLE / "model" / "train.py", "train.py")
        archive.write(EXAMPLE / "model" / "requirements.txt", "requirements.txt")
    stack.model_zip = model.read_bytes()
    yield stack
    for pid in pids + list(stack.controllers.values()):
        if pid in stack.pids:
            stack.stop(pid)


def experiment_yaml(method: str, hyper_parameters: list, **extra) -> str:
    hpo = {
        "method": {
            "name": method,
            "parameters": [
                {"name": "objective", "string_value": "test_accuracy"},
                {"name": "maximize_or_minimize", "string_value": "maximize"},
            ],
        },
        "hyper_parameters": hyper_parameters,
        **extra,
    }
    return yaml.safe_dump({"name": "digits-sweep", "hyper_parameters_optimization": hpo})


def submit(stack, experiment: str, command: str = SWEEP_COMMAND) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/v3/experiments",
        files={
            "model_definition": ("digits.zip", stack.model_zip),
            "manifest": ("m.yml", manifest_yaml(command, name="digits")),
            "experiment": ("e.yml", experiment),
        },
        headers=stack.headers(),
        timeout=10,
    )


def shown(stack, experiment_id: str) -> dict:
    answer = requests.get(
        f"{stack.api_url}/v3/experiments/{experiment_id}", headers=stack.headers(), timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_experiment(stack, experiment_id: str, timeout: float = 300, until=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = shown(stack, experiment_id)
        if (until or (lambda b: b["state"] != "RUNNING"))(body):
            return body
        time.sleep(0.3)
    raise AssertionError(f"{experiment_id}: {shown(stack, experiment_id)}")


def objective_points(stack, run_id: str) -> list[dict]:
    """The trial run's test_accuracy points, as the service has them."""
    return requests.get(
        f"{stack.api_url}/v3/models/{run_id}/metrics",
        params={"name": "test_accuracy"},
        headers=stack.headers(),
        timeout=10,
    ).json()["metrics"]["test_accuracy"]["points"]


def run_of(stack, run_id: str) -> dict:
    return requests.get(
        f"{stack.api_url}/v3/models/{run_id}", headers=stack.headers(), timeout=10
    ).json()


def best_objective(stack, run_id: str) -> tuple[float, int]:
    answer = requests.get(
        f"{stack.api_url}/v3/models/{run_id}/metrics",
        params={"name": "test_accuracy"},
        headers=stack.headers(),
        timeout=10,
    ).json()
    best = answer["metrics"]["test_accuracy"]["best"]
    return best["value"], best["step"]


def active_intervals(runs: list[dict]) -> list[tuple[datetime, datetime]]:
    """Each run's span from its submission to its end, from its history."""
    spans = []
    for run in runs:
        at = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in run["history"]]
        assert run["history"][-1]["state"] in ("COMPLETED", "FAILED", "HALTED")
        spans.append((at[0], at[-1]))
    return spans


def most_at_once(spans) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, change in events:  # an end sorts before a start at the same instant
        now += change
        peak = max(peak, now)
    return peak


GRID = [
    {"name": "learning_rate", "double_values": [0.05, 0.3, 1.0]},
    {"name": "hidden", "int_values": [16, 48]},
]


def test_grid_sweep_on_two_workers_finds_the_best_within_the_cap(sweep_stack):
    stack = sweep_stack
    answer = submit(stack, experiment_yaml("grid", GRID, max_concurrent_trials=2))
    assert answer.status_code == 201, answer.text
    experiment_id = answer.json()["experiment_id"]
    final = wait_experiment(stack, experiment_id)
    assert final["state"] == "COMPLETED", final["status_message"]
    assert final["sampler"] == "GridSampler" and final["trials"]["completed"] == 6
    board = final["leaderboard"]
    runs = [run_of(stack, e["run_id"]) for e in board]
    assert all(r["state"] == "COMPLETED" for r in runs)
    # Every grid point once, each trial's values in its command and in its config.json.
    points = sorted((e["values"]["learning_rate"], e["values"]["hidden"]) for e in board)
    assert points == sorted((lr, h) for lr in (0.05, 0.3, 1.0) for h in (16, 48))
    for entry, run in zip(board, runs, strict=True):
        values = entry["values"]
        assert (
            f"--learning-rate {values['learning_rate']!r} --hidden {values['hidden']}"
            in (run["command"])
        )
        assert run["experiment"] == {
            "id": experiment_id,
            "trial": entry["trial"],
            "values": values,
        }
        stored = stack.bucket("results") / run["model_id"] / "_submitted_code" / "model.zip"
        with zipfile.ZipFile(stored) as archive:
            assert json.loads(archive.read("config.json")) == values
        # The objective is the best test_accuracy the run reported.
        assert (entry["objective"], entry["objective_step"]) == best_objective(
            stack, run["model_id"]
        )
    # The leaderboard: sorted by the objective, its best the best among the trials.
    objectives = [e["objective"] for e in board]
    assert objectives == sorted(objectives, reverse=True)
    assert [e["best"] for e in board] == [True] + [False] * 5
    assert final["best"]["objective"] == max(best_objective(stack, r["model_id"])[0] for r in runs)
    # Two workers shared it, and never more than two trials were active at once.
    assert {r["worker"] for r in runs} == {"small-worker@test", "small-worker-2@test"}
    assert most_at_once(active_intervals(runs)) <= 2
    # Each trial listed and shown like any run, with its experiment, number and values.
    rows = {
        line.split()[2]: line
        for line in dlaas(stack, "list", "training-runs").stdout.splitlines()
        if line[:1].isdigit()
    }
    for entry in board:
        assert f"{experiment_id} trial {entry['trial']} " in rows[entry["run_id"]]
    top = board[0]
    detail = dlaas(stack, "show", "training-runs", top["run_id"]).stdout.splitlines()
    assert (
        f"Experiment     {experiment_id} trial {top['trial']}: "
        f"hidden={top['values']['hidden']} learning_rate={top['values']['learning_rate']}"
    ) in detail
    listed = dlaas(stack, "experiments", "list")
    assert experiment_id in listed.stdout and "completed" in listed.stdout
    table = dlaas(stack, "experiments", "show", experiment_id)
    assert table.returncode == 0, table.stderr
    best_line = next(line for line in table.stdout.splitlines() if line.startswith("  * "))
    assert board[0]["run_id"] in best_line and f"{board[0]['objective']:.6g}" in best_line
    as_json = json.loads(dlaas(stack, "experiments", "show", experiment_id, "--json").stdout)
    assert as_json["leaderboard"] == board


def grid_order(hyper_parameters: list, seed: int) -> list[dict]:
    """The values a grid experiment's trials get, in order, from Optuna itself."""
    spec = parse_experiment(experiment_yaml("grid", hyper_parameters, seed=seed))
    study = optuna.create_study(sampler=studies.sampler(spec), direction=spec.direction)
    order = []
    for _ in range(spec.trials):
        number, values = studies.ask(study, spec)
        studies.tell(study, number, 0.0)
        order.append(values)
    return order


@pytest.fixture(scope="module")
def pruned_experiment(sweep_stack) -> dict:
    """An experiment of three trials, one at a time, whose third is hopeless: its final view."""
    stack = sweep_stack
    # One trial at a time: two sound learning rates, then one that diverges. The seed is one
    # under which Optuna's GridSampler (as the service builds it) takes the bad one last.
    rates = [{"name": "learning_rate", "double_values": [0.3, 0.35, 50.0]}]
    early = {"method": "median", "startup_trials": 2, "warmup_steps": 1}
    seed = next(s for s in range(100) if grid_order(rates, s)[-1] == {"learning_rate": 50.0})
    experiment = experiment_yaml(
        "grid", rates, max_concurrent_trials=1, early_stopping=early, seed=seed
    )
    command = "python3 train.py --data ${DATA_DIR} --epochs 8 --pause 0.4"
    answer = submit(stack, experiment, command=command)
    assert answer.status_code == 201, answer.text
    return wait_experiment(stack, answer.json()["experiment_id"])


def test_a_hopeless_trial_is_stopped_early_by_the_median_rule(sweep_stack, pruned_experiment):
    stack, final = sweep_stack, pruned_experiment
    assert final["state"] == "COMPLETED", final["status_message"]
    by_rate = {e["values"]["learning_rate"]: e for e in final["leaderboard"]}
    assert by_rate[0.3]["state"] == by_rate[0.35]["state"] == "completed"
    hopeless = by_rate[50.0]
    assert hopeless["state"] == "pruned", hopeless
    run = run_of(stack, hopeless["run_id"])
    assert run["state"] == "HALTED"
    message = run["status_message"]
    assert message.startswith("stopped early: test_accuracy "), message
    words = message.split(";")[0].split()
    value, step, median = float(words[3]), int(words[6]), float(words[11])
    assert words[7:11] == ["worse", "than", "the", "median"]
    assert words[12:] == ["of", "earlier", "trials"]
    assert step < 8  # stopped before its last epoch
    earlier = []
    for rate in (0.3, 0.35):
        series = objective_points(stack, by_rate[rate]["run_id"])
        earlier.append(next(p["value"] for p in series if p["step"] == step))
    assert median == pytest.approx(statistics.median(earlier), rel=1e-5)
    assert value < median


TENSORBOARD_TRIAL = """
import os, sys, time
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

quality = float(sys.argv[1])
writer = EventFileWriter(os.path.join(os.environ["LOG_DIR"], "tb"))
for step in range(1, 9):
    value = summary_pb2.Summary.Value(tag="accuracy", simple_value=quality * step / 8)
    summary = summary_pb2.Summary(value=[value])
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.flush()
    time.sleep(0.4)
writer.close()
"""


def test_a_tensorboard_scalar_is_an_experiments_objective_and_the_pruner_acts_on_it(sweep_stack):
    """Trials that report only through TensorBoard event files: their scalar is the objective,
    the leaderboard ranks by it, and the median rule stops the hopeless third."""
    stack = sweep_stack
    qualities = [{"name": "quality", "double_values": [0.9, 0.8, 0.1]}]
    seed = next(s for s in range(100) if grid_order(qualities, s)[-1] == {"quality": 0.1})
    hpo = {
        "method": {
            "name": "grid",
            "parameters": [
                {"name": "objective", "string_value": "accuracy"},
                {"name": "maximize_or_minimize", "string_value": "maximize"},
            ],
        },
        "hyper_parameters": qualities,
        "max_concurrent_trials": 1,
        "early_stopping": {"method": "median", "startup_trials": 2, "warmup_steps": 1},
        "seed": seed,
    }
    answer = requests.post(
        f"{stack.api_url}/v3/experiments",
        files={
            "model_definition": (
                "tb.zip",
                make_zip({"tb.py": TENSORBOARD_TRIAL, "requirements.txt": "tensorboard\n"}),
            ),
            "manifest": ("m.yml", manifest_yaml("python3 tb.py ${quality}", name="tb-trial")),
            "experiment": (
                "e.yml",
                yaml.safe_dump({"name": "tb-sweep", "hyper_parameters_optimization": hpo}),
            ),
        },  # fmt: skip
        headers=stack.headers(),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    final = wait_experiment(stack, answer.json()["experiment_id"])
    assert final["state"] == "COMPLETED", final["status_message"]
    by_quality = {e["values"]["quality"]: e for e in final["leaderboard"]}
    assert by_quality[0.9]["state"] == by_quality[0.8]["state"] == "completed"
    assert by_quality[0.9]["objective"] == pytest.approx(0.9)  # step 8's, as written
    assert final["leaderboard"][0]["values"] == {"quality": 0.9}
    hopeless = by_quality[0.1]
    assert hopeless["state"] == "pruned", hopeless
    message = run_of(stack, hopeless["run_id"])["status_message"]
    assert message.startswith("stopped early: accuracy "), message


def test_the_experiment_page_shows_the_leaderboard_every_trials_curve_and_the_stopped_one(
    sweep_stack, pruned_experiment, visit
):
    final = pruned_experiment
    visitor = visit("alice")
    page = visitor.page
    page.goto(f"/ui/experiments/{final['experiment_id']}")
    rows = page.locator("#leaderboard tbody tr")
    expect(rows).to_have_count(3)
    # The leaderboard's order and best are the service's; the hopeless trial is marked.
    shown = rows.evaluate_all("rs => rs.map(r => Number(r.dataset.trial))")
    assert shown == [e["trial"] for e in final["leaderboard"]]
    best = final["best"]["trial"]
    expect(page.locator(f'#leaderboard tr[data-trial="{best}"] .best-mark')).to_have_text("★ best")
    (hopeless,) = [e for e in final["leaderboard"] if e["state"] == "pruned"]
    stopped = page.locator(f'#leaderboard tr[data-trial="{hopeless["trial"]}"]')
    expect(stopped).to_have_class("stopped-early")
    expect(stopped).to_contain_text("stopped early: test_accuracy")
    # One chart, a line per trial: each trial's objective points, as the service has them.
    chart = page.locator("figure.chart")
    expect(chart).to_have_count(1)
    expect(chart.locator(".u-legend .u-series")).to_have_count(1 + 3)  # the step axis, 3 trials
    expect(chart.locator(".u-legend")).to_contain_text(f"trial {best} (best)")
    expect(chart.locator(".u-legend")).to_contain_text(f"trial {hopeless['trial']} (stopped early)")
    steps = set()
    for entry in final["leaderboard"]:
        steps |= {p["step"] for p in objective_points(sweep_stack, entry["run_id"])}
    expect(chart).to_have_attribute("data-points", str(len(steps)))
    visitor.shot("experiment")
    # Its trials compared side by side: a line a trial in every metric's chart.
    page.click("#compare-trials")
    page.wait_for_url(re.compile(r".*/ui/compare\?runs="))
    compared = page.locator('figure.chart[data-metric="test_accuracy"]')
    counts = [len(objective_points(sweep_stack, e["run_id"])) for e in final["leaderboard"]]
    expect(compared).to_have_attribute("data-line-points", ",".join(map(str, counts)))
    page.go_back()
    page.goto("/ui/experiments/")
    listed = page.locator(f'#experiments tr[data-experiment-id="{final["experiment_id"]}"]')
    expect(listed).to_contain_text("completed")
    visitor.shot("experiments")


def test_the_standby_controller_carries_on_after_a_sigkill(sweep_stack):
    stack = sweep_stack
    experiment = experiment_yaml("grid", GRID, max_concurrent_trials=2)
    command = SWEEP_COMMAND + " --pause 0.3"
    experiment_id = submit(stack, experiment, command=command).json()["experiment_id"]
    wait_experiment(stack, experiment_id, until=lambda b: b["trials"]["started"] >= 2)
    logs = stack.home / "logs"
    active, other = "controller-a", "controller-b"
    if "controller active" not in (logs / "controller-a.log").read_text():
        active, other = other, active
    pid = stack.controllers[active]
    os.kill(pid, signal.SIGKILL)
    stack.pids.remove(pid)
    final = wait_experiment(stack, experiment_id)
    assert final["state"] == "COMPLETED", final["status_message"]
    assert "controller active" in (logs / f"{other}.log").read_text()
    board = final["leaderboard"]
    assert sorted(e["trial"] for e in board) == list(range(6))
    assert len({e["run_id"] for e in board}) == 6
    assert len({(e["values"]["learning_rate"], e["values"]["hidden"]) for e in board}) == 6
    runs = [run_of(stack, e["run_id"]) for e in board]
    # No trial ran twice: each run claimed once, and no other run of the experiment exists.
    assert all(r["state"] == "COMPLETED" and _claims(r) == 1 for r in runs)
    mine = [m for m in _all_runs(stack) if (m.get("experiment") or {}).get("id") == experiment_id]
    assert sorted(m["model_id"] for m in mine) == sorted(e["run_id"] for e in board)
    assert most_at_once(active_intervals(runs)) <= 2
    # The module's other tests want a standby again.
    stack.controllers[active] = stack.start_controller(active, standby=True)


def _claims(run: dict) -> int:
    return sum(1 for e in run["history"] if e["state"] == "DOWNLOADING")


def _all_runs(stack) -> list[dict]:
    """Every run of the user, as listed (each listing says its experiment)."""
    found, offset = [], 0
    while offset is not None:
        page = requests.get(
            f"{stack.api_url}/v3/models",
            params={"limit": 100, "offset": offset},
            headers=stack.headers(),
            timeout=10,
        ).json()
        found += page["models"]
        offset = page["next_offset"]
    return found


def test_cancel_halts_the_active_trials_and_starts_no_more(sweep_stack):
    stack = sweep_stack
    experiment = experiment_yaml("grid", GRID, max_concurrent_trials=2)
    command = SWEEP_COMMAND.replace("--epochs 3", "--epochs 50") + " --pause 1"
    experiment_id = submit(stack, experiment, command=command).json()["experiment_id"]
    started = wait_experiment(
        stack,
        experiment_id,
        until=lambda b: sum(1 for e in b["leaderboard"] if e["run_state"] == "PROCESSING") == 2,
    )
    cancelled = dlaas(stack, "experiments", "cancel", experiment_id)
    assert cancelled.returncode == 0, cancelled.stderr
    final = wait_experiment(stack, experiment_id, timeout=60)
    assert final["state"] == "HALTED"
    assert final["status_message"] == "cancelled by alice"
    assert len(final["leaderboard"]) == len(started["leaderboard"]) == 2
    for entry in final["leaderboard"]:
        assert entry["state"] == "cancelled"
        assert run_of(stack, entry["run_id"])["state"] == "HALTED"
    time.sleep(2)  # a controller that still started one would have by now
    assert len(shown(stack, experiment_id)["leaderboard"]) == 2
    again = requests.patch(
        f"{stack.api_url}/v3/experiments/{experiment_id}",
        json={"status": "halt"},
        headers=stack.headers(),
        timeout=10,
    )
    assert again.status_code == 409
    # Deleting it removes it and its trial runs.
    deleted = dlaas(stack, "experiments", "delete", experiment_id)
    assert deleted.returncode == 0, deleted.stderr
    assert (
        requests.get(
            f"{stack.api_url}/v3/experiments/{experiment_id}", headers=stack.headers(), timeout=10
        ).status_code
        == 404
    )
    for entry in final["leaderboard"]:
        gone = requests.get(
            f"{stack.api_url}/v3/models/{entry['run_id']}", headers=stack.headers(), timeout=10
        )
        assert gone.status_code == 404


ORIGINAL = """
settings:
  name: digits-hpo
  author: {name: someone, email: someone@example.com}
training_references:
- name: digits
  training_definition_url: https://example.invalid/v3/ml_assets/training_definitions/1
  hyper_parameters_optimization:
    method:
      name: rbfopt
      parameters:
      - name: objective
        string_value: test_accuracy
      - name: maximize_or_minimize
        string_value: maximize
      - name: num_optimizer_steps
        int_value: 3
    hyper_parameters:
    - name: learning_rate
      double_range:
        min_value: 0.1
        max_value: 0.5
        step: 0.1
    - name: hidden
      int_values: [16, 32]
"""


def test_the_original_services_experiment_form_is_accepted_and_runs(sweep_stack):
    stack = sweep_stack
    # The command names no values: the program reads them from config.json.
    command = "python3 train.py --data ${DATA_DIR} --epochs 2"
    answer = submit(stack, ORIGINAL, command=command)
    assert answer.status_code == 201, answer.text
    final = wait_experiment(stack, answer.json()["experiment_id"])
    assert final["state"] == "COMPLETED", final["status_message"]
    assert (final["method"], final["sampler"]) == ("rbfopt", "TPESampler")
    assert final["name"] == "digits-hpo" and final["trials"]["completed"] == 3
    for entry in final["leaderboard"]:
        assert entry["values"]["hidden"] in (16, 32)
        assert 0.1 <= entry["values"]["learning_rate"] <= 0.5
        log = stack.bucket("results") / entry["run_id"] / "learner-1" / "training-log.txt"
        assert "epoch  2" in log.read_text()


@pytest.mark.parametrize(
    "experiment, field",
    [
        (experiment_yaml("annealing", GRID), "method.name"),
        (
            experiment_yaml(
                "random", [{"name": "lr", "double_range": {"min_value": 1, "max_value": 0.1}}]
            ),
            "double_range",
        ),
        (
            experiment_yaml(
                "grid",
                [{"name": "lr", "double_range": {"min_value": 0.1, "max_value": 1, "step": 0}}],
            ),
            "step",
        ),
        (
            experiment_yaml(
                "grid",
                [{"name": "a", "int_range": {"min_value": 1, "max_value": 2000}}],
            ),
            "hyper_parameters",
        ),
        (experiment_yaml("grid", [{"name": "learning-rate", "int_values": [1]}]), "name"),
        ("hyper_parameters_optimization: [", "experiment"),
    ],
)
def test_bad_experiment_files_are_refused_naming_the_field_and_leave_nothing(
    stack, api_url, experiment, field
):
    before = requests.get(f"{api_url}/v3/experiments", headers=stack.headers(), timeout=10)
    artifacts = sorted(os.listdir(stack.artifact_dir)) if stack.artifact_dir.exists() else []
    model = io.BytesIO()
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("train.py", "print(1)\n")
    stack.model_zip = getattr(stack, "model_zip", model.getvalue())
    answer = submit(stack, experiment)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert field in error["field"] or field in error["message"], error
    assert error["message"].startswith("experiment: ")
    after = requests.get(f"{api_url}/v3/experiments", headers=stack.headers(), timeout=10)
    assert after.json()["total"] == before.json()["total"]
    now = sorted(os.listdir(stack.artifact_dir)) if stack.artifact_dir.exists() else []
    assert now == artifacts


def test_reaching_the_target_ends_the_experiment_early(sweep_stack):
    stack = sweep_stack
    experiment = experiment_yaml(
        "random",
        [{"name": "learning_rate", "double_range": {"min_value": 0.2, "max_value": 0.5}}],
        max_concurrent_trials=1,
        target=0.5,  # any sound learning rate reaches it in 3 epochs
    )
    spec = yaml.safe_load(experiment)
    spec["hyper_parameters_optimization"]["method"]["parameters"].append(
        {"name": "num_optimizer_steps", "int_value": 6}
    )
    command = "python3 train.py --data ${DATA_DIR} --epochs 3 --learning-rate ${learning_rate}"
    answer = submit(stack, yaml.safe_dump(spec), command=command)
    assert answer.status_code == 201, answer.text
    final = wait_experiment(stack, answer.json()["experiment_id"])
    assert final["state"] == "COMPLETED"
    best = final["best"]
    assert final["status_message"] == (
        f"target reached: test_accuracy {best['objective']:.6g} by trial {best['trial']} "
        f"({best['run_id']})"
    )
    assert best["objective"] >= 0.5
    assert final["trials"]["started"] == 1 < final["trials"]["planned"] == 6
    # Ended: its record, trials and Optuna journal are kept for the retention, then go.
    client = stack.redis.client(0)
    prefix = keys.experiment_study_prefix(final["experiment_id"])
    kept = [keys.experiment(final["experiment_id"]), keys.experiment_trials(final["experiment_id"])]
    kept += list(client.scan_iter(match=f"{prefix}*"))
    assert len(kept) > 3 and all(client.ttl(key) > 0 for key in kept), kept


def test_too_many_failed_trials_fail_the_experiment_and_delete_takes_it_all(sweep_stack):
    stack = sweep_stack
    experiment = experiment_yaml("grid", GRID, max_concurrent_trials=1, max_failed_trials=1)
    answer = submit(stack, experiment, command="python3 train.py --data /nonexistent")
    assert answer.status_code == 201, answer.text
    experiment_id = answer.json()["experiment_id"]
    final = wait_experiment(stack, experiment_id)
    assert final["state"] == "FAILED"
    assert final["status_message"].startswith(
        "2 trials failed (more than max_failed_trials 1); the last: trial "
    )
    assert "its run failed: command exited with code 1" in final["status_message"]
    assert [e["state"] for e in final["leaderboard"]] == ["failed", "failed"]
    runs = [e["run_id"] for e in final["leaderboard"]]
    deleted = requests.delete(
        f"{stack.api_url}/v3/experiments/{experiment_id}", headers=stack.headers(), timeout=10
    )
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    for run_id in runs:
        assert (
            requests.get(
                f"{stack.api_url}/v3/models/{run_id}", headers=stack.headers(), timeout=10
            ).status_code
            == 404
        )
    listed = requests.get(f"{stack.api_url}/v3/experiments", headers=stack.headers(), timeout=10)
    assert experiment_id not in {e["experiment_id"] for e in listed.json()["experiments"]}
    # Nothing of it is left in Redis: not the experiment's keys, not its runs' (their logs too).
    client = stack.redis.client(0)
    for name in (experiment_id, *runs):
        assert list(client.scan_iter(match=f"dlaas:*{name}*")) == [], name


def test_deleting_a_running_experiment_cancels_then_removes_it(sweep_stack):
    stack = sweep_stack
    experiment = experiment_yaml("grid", GRID, max_concurrent_trials=2)
    command = SWEEP_COMMAND.replace("--epochs 3", "--epochs 50") + " --pause 1"
    experiment_id = submit(stack, experiment, command=command).json()["experiment_id"]
    started = wait_experiment(stack, experiment_id, until=lambda b: b["trials"]["active"] == 2)
    deleted = dlaas(stack, "experiments", "delete", experiment_id)
    assert deleted.returncode == 0 and "being cancelled" in deleted.stdout, deleted.stdout
    url = f"{stack.api_url}/v3/experiments/{experiment_id}"
    deadline = time.monotonic() + 60
    while requests.get(url, headers=stack.headers(), timeout=10).status_code != 404:
        assert time.monotonic() < deadline, "the experiment was not removed"
        time.sleep(0.3)
    for entry in started["leaderboard"]:
        gone = requests.get(
            f"{stack.api_url}/v3/models/{entry['run_id']}", headers=stack.headers(), timeout=10
        )
        assert gone.status_code == 404
