"""Training metrics on the real stack: the example program's metrics by each of the three ways
(log regexes, LOG_DIR/evaluation-metrics.txt, RESULT_DIR/val_dict_list.json), live while it
runs and stored after; through HTTP, the CLI and `show`; and a million-line log with three
regexes kept whole."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import zipfile

import pytest
import requests
import yaml

from common import keys
from common.metrics import MAX_SERIES
from tests.conftest import ROOT, make_zip, manifest_yaml, unstamped
from tests.e2e.test_cli_e2e import dlaas

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "digits"
EPOCHS = 4


def example_definitions() -> str:
    """The example manifest's metric_definitions section, as the example gives it."""
    example = yaml.safe_load((EXAMPLE / "manifest.yml").read_text())
    return yaml.safe_dump({"metric_definitions": example["metric_definitions"]})


def get_metrics(stack, run_id: str, **params) -> requests.Response:
    return requests.get(
        f"{stack.api_url}/v3/models/{run_id}/metrics",
        params=params,
        headers=stack.headers(),
        timeout=10,
    )


@pytest.fixture(scope="module")
def example_run(stack, workers, tmp_path_factory):
    """One run of the example training program, with the example's regexes."""
    data, results = stack.bucket("data"), stack.bucket("results")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), str(data)], check=True, capture_output=True
    )
    model = tmp_path_factory.mktemp("metrics") / "digits.zip"
    with zipfile.ZipFile(model, "w") as archive:
        archive.write(EXAMPLE / "model" / "train.py", "train.py")
        archive.write(EXAMPLE / "model" / "requirements.txt", "requirements.txt")
    command = f"python3 train.py --data ${{DATA_DIR}} --epochs {EPOCHS}"
    answer = requests.post(
        f"{stack.api_url}/v3/models",
        files={
            "model_definition": ("m.zip", model.read_bytes()),
            "manifest": ("m.yml", manifest_yaml(command, name="digits") + example_definitions()),
        },
        headers=stack.headers(),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["model_id"]
    shown = stack.wait_ended(run_id, timeout=300)
    assert shown["state"] == "COMPLETED", shown["status_message"]
    # What the program itself wrote, one record per epoch: the truth to compare with.
    out = results / run_id
    records = [
        json.loads(line)
        for line in (out / "learner-1" / "evaluation-metrics.txt").read_text().splitlines()
    ]
    return run_id, shown, out, records


def _series(answer: dict, name: str) -> list[tuple[int, float]]:
    return [(p["step"], p["value"]) for p in answer["metrics"][name]["points"]]


def test_each_of_the_three_ways_gives_the_programs_series(stack, example_run):
    run_id, shown, out, records = example_run
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    answer = get_metrics(stack, run_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source"] == "live" and body["state"] == "COMPLETED"
    # 1. The manifest's regexes over the printed log.
    assert _series(body, "train_loss") == [(r["epoch"], r["loss"]) for r in records]
    assert _series(body, "train_accuracy") == [(r["epoch"], r["accuracy"]) for r in records]
    assert _series(body, "log_test_accuracy") == [(r["epoch"], r["test_accuracy"]) for r in records]
    # 2. The JSON lines the program appended to LOG_DIR.
    for name in ("loss", "accuracy", "test_loss", "test_accuracy"):
        assert _series(body, name) == [(r["epoch"], r[name]) for r in records], name
    # 3. The original service's val_dict_list.json in RESULT_DIR (stored with the results).
    val_dict = json.loads((out / "val_dict_list.json").read_text())
    assert _series(body, "val_accuracy") == [(v["steps"], v["val_accuracy"]) for v in val_dict]
    # Last and best, each way round.
    loss = body["metrics"]["test_loss"]
    assert loss["goal"] == "minimize" and loss["count"] == EPOCHS
    assert loss["best"]["value"] == min(r["test_loss"] for r in records)
    assert loss["last"]["step"] == EPOCHS and loss["last"]["value"] == records[-1]["test_loss"]
    accuracy = body["metrics"]["test_accuracy"]
    assert accuracy["goal"] == "maximize"
    assert accuracy["best"]["value"] == max(r["test_accuracy"] for r in records)
    # Every point is stored, and the show of the run carries the summaries.
    stored = (out / "learner-1" / "metrics.jsonl").read_text().splitlines()
    assert len(stored) == sum(s["count"] for s in body["metrics"].values()) == EPOCHS * 8
    assert shown["metrics"]["test_loss"]["best"] == loss["best"]


def test_one_metric_since_a_step_and_bad_queries(stack, example_run):
    run_id, _, _, records = example_run
    answer = get_metrics(stack, run_id, name="test_loss", since=3).json()
    assert list(answer["metrics"]) == ["test_loss"]
    assert _series(answer, "test_loss") == [(r["epoch"], r["test_loss"]) for r in records][2:]
    missing = get_metrics(stack, run_id, name="nope")
    assert missing.status_code == 404
    assert "test_loss" in missing.json()["error"]["message"]
    bad = get_metrics(stack, run_id, since="soon")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "since"
    assert get_metrics(stack, "training-nosuchrun").status_code == 404


def test_stored_metrics_serve_once_the_redis_copy_is_gone(stack, example_run):
    run_id, _, _, _ = example_run
    live = get_metrics(stack, run_id).json()
    client = stack.redis.client(0)
    client.delete(
        keys.run_metrics(run_id), *(keys.run_metric_points(run_id, i) for i in range(MAX_SERIES))
    )
    stored = get_metrics(stack, run_id).json()
    assert stored["source"] == "stored"
    assert stored["metrics"] == live["metrics"]


def test_cli_metrics_table_json_and_show(stack, example_run):
    run_id, _, _, records = example_run
    table = dlaas(stack, "metrics", run_id)
    assert table.returncode == 0, table.stderr
    row = re.search(
        r"^test_loss\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+minimize\s+(\d+)$", table.stdout, re.M
    )
    assert row, table.stdout
    best = min(records, key=lambda r: r["test_loss"])
    assert float(row.group(1)) == records[-1]["test_loss"] and int(row.group(2)) == EPOCHS
    assert float(row.group(3)) == best["test_loss"] and int(row.group(4)) == best["epoch"]
    as_json = json.loads(dlaas(stack, "metrics", run_id, "--json").stdout)
    assert as_json["metrics"]["val_accuracy"]["count"] == EPOCHS
    points = dlaas(stack, "metrics", run_id, "--name", "loss", "--since", "2")
    assert [int(s) for s in re.findall(r"^\s+(\d+)\s+\S+\s+\d{4}-", points.stdout, re.M)] == list(
        range(2, EPOCHS + 1)
    )
    shown = dlaas(stack, "show", "trained-models", run_id)
    assert re.search(
        rf"^Metric\s+test_loss: last {records[-1]['test_loss']:.6g} \(step {EPOCHS}\), "
        rf"best {best['test_loss']:.6g} \(step {best['epoch']}, lowest\)$",
        shown.stdout,
        re.M,
    ), shown.stdout


SECOND = """
import json, os
with open(os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt"), "a") as f:
    for epoch in (1, 2, 3):
        f.write(json.dumps({"epoch": epoch, "test_loss": 3.0 / epoch}) + "\\n")
"""


def test_cli_metrics_compares_runs_side_by_side_and_refuses_another_users(stack, example_run):
    run_id, _, _, records = example_run
    answer = requests.post(
        f"{stack.api_url}/v3/models",
        files={
            "model_definition": ("m.zip", make_zip({"second.py": SECOND})),
            "manifest": ("m.yml", manifest_yaml("python3 second.py")),
        },
        headers=stack.headers(),
        timeout=10,
    )
    second = answer.json()["model_id"]
    assert stack.wait_ended(second)["state"] == "COMPLETED"
    table = dlaas(stack, "metrics", run_id, second)
    assert table.returncode == 0, table.stderr
    assert re.split(r"\s+", table.stdout.splitlines()[0].strip()) == ["metric", run_id, second]
    best = min(records, key=lambda r: r["test_loss"])
    row = next(line for line in table.stdout.splitlines() if line.startswith("test_loss "))
    assert row.split()[1:] == [
        f"{records[-1]['test_loss']:.4g}", f"({EPOCHS})", "/", f"{best['test_loss']:.4g}",
        f"({best['epoch']})", "1", "(3)", "/", "1", "(3)",
    ]  # fmt: skip
    assert re.search(r"^val_accuracy\s+\S+ \(\d+\) / \S+ \(\d+\)\s+-$", table.stdout, re.M)
    steps = dlaas(stack, "metrics", run_id, second, "--name", "test_loss")
    rows = [line.split() for line in steps.stdout.splitlines()[1:]]
    by_epoch = {r["epoch"]: r["test_loss"] for r in records}
    assert rows == [
        [
            str(e),
            f"{by_epoch[e]:.6g}" if e in by_epoch else "-",
            f"{3.0 / e:.6g}" if e <= 3 else "-",
        ]
        for e in sorted({*by_epoch, 1, 2, 3})
    ]
    as_json = json.loads(dlaas(stack, "metrics", run_id, second, "--json").stdout)
    assert [r["metrics"]["test_loss"]["count"] for r in as_json["runs"]] == [EPOCHS, 3]
    # Another user's run: not there for this one, as for `show`.
    refused = dlaas(stack, "metrics", run_id, second, user="bob")
    assert refused.returncode != 0
    assert refused.stderr == f"no training run '{run_id}' (HTTP 404)\n", refused.stderr


LIVE = """
import json, os, time
print("step 1 loss=0.75", flush=True)
with open(os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt"), "a") as f:
    f.write(json.dumps({"step": 1, "accuracy": 0.5}) + "\\n")
with open(os.path.join(os.environ["RESULT_DIR"], "val_dict_list.json"), "w") as f:
    json.dump([{"steps": 1, "val_accuracy": 0.25}], f)
time.sleep(120)
"""


def test_metrics_are_live_while_the_run_goes_on(stack, workers):
    answer = requests.post(
        f"{stack.api_url}/v3/models",
        files={
            "model_definition": ("m.zip", make_zip({"live.py": LIVE})),
            "manifest": (
                "m.yml",
                manifest_yaml("python3 live.py")
                + 'metric_definitions: [{name: loss, regex: "loss=(\\\\S+)"}]\n',
            ),
        },
        headers=stack.headers(),
        timeout=10,
    )
    run_id = answer.json()["model_id"]
    deadline, body = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        body = get_metrics(stack, run_id).json()
        if len(body.get("metrics", {})) == 3:
            break
        time.sleep(0.3)
    assert body["state"] == "PROCESSING", body
    assert {n: s["last"]["value"] for n, s in body["metrics"].items()} == {
        "loss": 0.75,
        "accuracy": 0.5,
        "val_accuracy": 0.25,
    }
    shown = requests.get(
        f"{stack.api_url}/v3/models/{run_id}", headers=stack.headers(), timeout=10
    ).json()
    assert shown["metrics"]["loss"]["last"]["value"] == 0.75
    requests.patch(
        f"{stack.api_url}/v3/models/{run_id}",
        json={"status": "halt"},
        headers=stack.headers(),
        timeout=10,
    )
    assert stack.wait_ended(run_id)["state"] == "HALTED"


MILLION = """
import sys
out = sys.stdout
for i in range(1, 1_000_001):
    if i % 1000 == 0:
        out.write(f"step {i} loss={1000 / i:.6f} acc={i / 1e6:.6f} lr={0.1 / i:.3e}\\n")
    else:
        out.write("line %09d " % i + "x" * 64 + "\\n")
"""
THREE = """
metric_definitions:
- {name: loss, regex: "^step (?P<step>\\\\d+) loss=(\\\\S+)"}
- {name: acc, regex: "acc=(?P<value>\\\\S+)"}
- {name: lr, regex: " lr=(\\\\S+)$"}
"""


def test_a_million_lines_with_three_regexes_keeps_every_line(stack, workers):
    answer = requests.post(
        f"{stack.api_url}/v3/models",
        files={
            "model_definition": ("m.zip", make_zip({"million.py": MILLION})),
            "manifest": ("m.yml", manifest_yaml("python3 million.py") + THREE),
        },
        headers=stack.headers(),
        timeout=10,
    )
    run_id = answer.json()["model_id"]
    assert stack.wait_ended(run_id, timeout=300)["state"] == "COMPLETED"
    log = stack.bucket("results") / run_id / "learner-1" / "training-log.txt"
    printed = [line for line in unstamped(log.read_text()).splitlines() if "[dlaas]" not in line]
    assert len(printed) == 1_000_000
    assert printed[0].startswith("line 000000001 ") and printed[-1].startswith("step 1000000 ")
    body = get_metrics(stack, run_id).json()
    metric_lines = [line for line in printed if line.startswith("step ")]
    for name in ("loss", "acc", "lr"):
        assert body["metrics"][name]["count"] == len(metric_lines) == 1000, name
    assert body["metrics"]["loss"]["last"]["step"] == 1_000_000
    assert body["metrics"]["loss"]["best"]["value"] == 0.001  # 1000 / 1e6
    assert body["metrics"]["acc"]["best"]["value"] == 1.0
