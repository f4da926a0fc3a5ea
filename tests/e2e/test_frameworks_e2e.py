"""Frameworks end to end: a run's manifest framework and its zip's requirements.txt become a
Python environment built with uv on the worker (real API, Redis, Celery workers, local store,
this machine's local package sources). The PyTorch environment is built once per session in
the shared cache (tests/conftest.py `environment_env`)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests
from playwright.sync_api import expect

from common.layout import ENVIRONMENT_LOG, TRAINING_LOG_KEY
from tests.conftest import ROOT, make_zip, manifest_yaml, unstamped
from tests.e2e.test_cli_e2e import dlaas

pytestmark = pytest.mark.integration

PYTORCH = ROOT / "examples" / "pytorch-mlp"
SEED = ROOT / "tests" / "fixtures" / "seed-s3-manifest.yml"
EPOCH = re.compile(r"^epoch (\d+)/(\d+) loss (\d+\.\d+)", re.M)


def post(stack, files: dict[str, str | bytes], manifest: str) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/v3/models",
        files={
            "model_definition": ("model.zip", make_zip(files)),
            "manifest": ("manifest.yml", manifest),
        },
        headers=stack.headers(),
        timeout=30,
    )


def submitted(stack, files: dict[str, str | bytes], manifest: str) -> str:
    answer = post(stack, files, manifest)
    assert answer.status_code == 201, answer.text
    return answer.json()["model_id"]


def example_files(example) -> dict[str, bytes]:
    """What `make demo` zips of an example's model folder: its *.py and its requirements.txt."""
    folder = example / "model"
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.py")}
    if (folder / "requirements.txt").is_file():
        files["requirements.txt"] = (folder / "requirements.txt").read_bytes()
    return files


@pytest.fixture(scope="module")
def buckets(stack):
    return stack.bucket("fw-data"), stack.bucket("fw-results")


def test_pytorch_example_trains_with_torch_and_its_loss_falls(stack, workers, buckets):
    data, results = buckets
    subprocess.run(
        [sys.executable, str(PYTORCH / "make_data.py"), str(data), "--train", "3000"],
        check=True,
        capture_output=True,
    )
    manifest = manifest_yaml(
        "python3 train.py --data ${DATA_DIR} --epochs 4 --threads 2",
        data_bucket="fw-data",
        results_bucket="fw-results",
        name="pytorch-mlp",
        framework=("pytorch", "2.13"),
    )
    run_id = submitted(stack, example_files(PYTORCH), manifest)
    # The first run of a session builds the torch environment (local wheels: tens of seconds).
    done = stack.wait_ended(run_id, timeout=600)
    out = results / run_id
    log = (
        unstamped((out / TRAINING_LOG_KEY).read_text()) if (out / TRAINING_LOG_KEY).exists() else ""
    )
    assert done["state"] == "COMPLETED", (done["status_message"], log[-2000:])

    model = out / "model.pt"
    assert model.stat().st_size > 1000
    assert model.read_bytes().startswith(b"PK")  # torch.save's zip format
    assert re.search(r"^torch 2\.13\.0\+cpu, \d+ threads", log, re.M), log
    epochs = [(int(n), int(of), float(loss)) for n, of, loss in EPOCH.findall(log)]
    assert [n for n, _, _ in epochs] == [1, 2, 3, 4] and all(of == 4 for _, of, _ in epochs), log
    first, last = epochs[0][2], epochs[-1][2]
    assert last < first * 0.9, f"loss did not fall: {first} -> {last}"

    shown = requests.get(
        f"{stack.api_url}/v3/models/{run_id}", headers=stack.headers(), timeout=10
    ).json()
    environment = shown["environment"]
    assert environment["framework"] == "pytorch 2.13"
    assert environment["status"] in ("built", "reused")
    assert environment["accelerator"] == "cpu"
    assert environment["python"].startswith("3.11.")
    assert shown["framework"] == {"name": "pytorch", "version": "2.13"}


def test_seed_era_tensorflow_manifest_is_accepted_and_fails_for_its_python(stack, workers, buckets):
    # The seed's model_definition as written (`version: 1.2-py3`, unquoted), its data and
    # results moved to the test stack's local buckets.
    seed = SEED.read_text()
    model_definition = seed[: seed.index("training_data:")]
    assert "name: tensorflow\n    version: 1.2-py3\n" in model_definition
    manifest = model_definition + (
        "training_data_reference:\n"
        "- connection: {path: tests}\n"
        "  source: {bucket: fw-data, type: local}\n"
        "training_results_reference:\n"
        "  connection: {path: tests}\n"
        "  target: {bucket: fw-results, type: local}\n"
    )
    answer = post(stack, {"convolutional_network.py": "print('never runs')\n"}, manifest)
    assert answer.status_code == 201, answer.text
    done = stack.wait_ended(answer.json()["model_id"], timeout=120)
    assert done["state"] == "FAILED"
    assert done["error_code"] == "C104", done
    message = done["status_message"]
    assert "needs Python 3.6" in message and "does not have" in message, message


def test_requirement_that_does_not_exist_fails_naming_it_with_uvs_output_stored(
    stack, workers, buckets
):
    _, results = buckets
    missing = "dlaas-no-such-package-7f3a9c"
    run_id = submitted(
        stack,
        {"train.sh": "echo never\n", "requirements.txt": f"{missing}==1.0\n"},
        manifest_yaml(
            "bash train.sh", data_bucket="fw-data", results_bucket="fw-results", name="no-such"
        ),
    )
    done = stack.wait_ended(run_id, timeout=120)
    assert done["state"] == "FAILED"
    assert done["error_code"] == "C104", done
    assert missing in done["status_message"], done["status_message"]
    assert f"learner-1/{ENVIRONMENT_LOG}" in done["status_message"]
    build_log = (results / run_id / "learner-1" / ENVIRONMENT_LOG).read_text()
    assert "uv pip install" in build_log  # the command, then uv's whole output
    assert missing in build_log and "No solution found" in build_log, build_log


SUMMARY_WRITER = """
import os, time
import torch
from torch.utils.tensorboard import SummaryWriter

root = os.path.join(os.environ["LOG_DIR"], "tb")
train, evaluation = SummaryWriter(f"{root}/train"), SummaryWriter(f"{root}/eval")
torch.manual_seed(0)
model, x = torch.nn.Linear(4, 1), torch.randn(256, 4)
y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(1, 41):
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    train.add_scalar("loss", loss.item(), step)
    print(f"step {step} loss {loss.item():.6f}", flush=True)
    if step % 10 == 0:
        evaluation.add_scalar("loss", loss.item() * 1.1, step)
    if step == 20:  # half of it on disk; the test sees it while the run goes on
        train.flush(); evaluation.flush()
        time.sleep(6)
train.close(); evaluation.close()
"""


def test_summarywriter_scalars_are_the_runs_metrics_live_and_stored_with_the_event_files(
    stack, workers, buckets, visit
):
    """A PyTorch program logging with SummaryWriter (tensorboard from its requirements.txt),
    no metric declared: its scalars are the run's metrics while it runs and after."""
    _, results = buckets
    manifest = manifest_yaml(
        "python3 train.py",
        data_bucket="fw-data",
        results_bucket="fw-results",
        framework=("pytorch", "2.13"),
    )
    files = {"train.py": SUMMARY_WRITER, "requirements.txt": "tensorboard\n"}
    run_id = submitted(stack, files, manifest)
    url = f"{stack.api_url}/v3/models/{run_id}"
    live, deadline = {}, time.monotonic() + 600
    while time.monotonic() < deadline:
        live = requests.get(f"{url}/metrics", headers=stack.headers(), timeout=10).json()
        if live["state"] in ("COMPLETED", "FAILED") or "train/loss" in live.get("metrics", {}):
            break
        time.sleep(0.5)
    assert live["state"] == "PROCESSING", live  # seen while the run went on
    assert 1 <= live["metrics"]["train/loss"]["count"] <= 20
    done = stack.wait_ended(run_id, timeout=120)
    out = results / run_id
    log = unstamped((out / TRAINING_LOG_KEY).read_text())
    assert done["state"] == "COMPLETED", (done["status_message"], log[-2000:])
    printed = {int(s): float(v) for s, v in re.findall(r"^step (\d+) loss (\S+)$", log, re.M)}
    body = requests.get(f"{url}/metrics", headers=stack.headers(), timeout=10).json()
    metrics = body["metrics"]
    assert set(metrics) == {"train/loss", "eval/loss"}
    train = [(p["step"], p["value"]) for p in metrics["train/loss"]["points"]]
    assert [step for step, _ in train] == list(range(1, 41))
    assert all(abs(value - printed[step]) < 1e-5 for step, value in train)
    assert [p["step"] for p in metrics["eval/loss"]["points"]] == [10, 20, 30, 40]
    assert metrics["train/loss"]["goal"] == "minimize"
    assert metrics["train/loss"]["best"]["value"] == min(value for _, value in train)
    shown = requests.get(url, headers=stack.headers(), timeout=10).json()
    assert shown["metrics"]["train/loss"]["last"]["step"] == 40
    table = dlaas(stack, "metrics", run_id)
    assert re.search(r"^train/loss\s+\S+\s+40\s+\S+\s+\d+\s+minimize\s+40$", table.stdout, re.M)
    page = visit("alice").page
    page.goto(f"/ui/runs/{run_id}")
    expect(page.locator('figure.chart[data-metric^="train/loss "]')).to_have_attribute(
        "data-points", "40"
    )
    stored = sorted(p.relative_to(out).parent.as_posix() for p in out.rglob("*tfevents*"))
    assert stored == ["learner-1/tensorboard/eval", "learner-1/tensorboard/train"]
