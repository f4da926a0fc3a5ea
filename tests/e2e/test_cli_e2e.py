"""End to end through the `dlaas` CLI: real API (gunicorn), real Redis, real Celery workers
with declared GPU sets, and the local object store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from common.clock import parse_iso, utcnow
from tests.conftest import BIN, ROOT, manifest_yaml, unstamped

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "digits"


def dlaas(
    stack,
    *args: str,
    user: str = "alice",
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    full_env = dict(stack.env, DLAAS_URL=stack.api_url, DLAAS_TOKEN=stack.tokens[user])
    if env is not None:
        full_env = env
    return subprocess.run(
        [str(BIN / "dlaas"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def _files(
    tmp_path: Path,
    command: str,
    resource: str = "small",
    name: str = "e2e",
    files: dict | None = None,
) -> tuple[str, str]:
    model = tmp_path / "model.zip"
    with zipfile.ZipFile(model, "w") as archive:
        for fname, content in (files or {"train.sh": "echo training\n"}).items():
            archive.writestr(fname, content)
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(manifest_yaml(command, resource=resource, name=name))
    return str(model), str(manifest)


def _train_and_wait(stack, model, manifest) -> tuple[str, subprocess.CompletedProcess]:
    done = dlaas(stack, "train", model, manifest, "--wait", "--timeout", "120")
    match = re.search(r"^Model-ID is '(training-[A-Za-z0-9]{9})'$", done.stdout, re.M)
    assert match, done.stdout + done.stderr
    return match.group(1), done


@pytest.fixture(scope="module")
def buckets(stack):
    return stack.bucket("data"), stack.bucket("results")


def test_example_training_run_completes_with_results_in_the_bucket(
    stack, workers, buckets, tmp_path
):
    data, results = buckets
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), str(data)], check=True, capture_output=True
    )
    model = tmp_path / "digits.zip"
    with zipfile.ZipFile(model, "w") as archive:
        archive.write(EXAMPLE / "model" / "train.py", "train.py")
        # numpy: the run's environment has it from here, not from the worker's Python.
        archive.write(EXAMPLE / "model" / "requirements.txt", "requirements.txt")
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(
        manifest_yaml("python3 train.py --data ${DATA_DIR} --epochs 5", name="numpy-digits")
    )
    run_id, done = _train_and_wait(stack, str(model), str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"Starting to train ...\nOK\nModel-ID is '{run_id}'\n")
    assert "Status: COMPLETED" in done.stdout
    out = results / run_id
    log = unstamped((out / "learner-1" / "training-log.txt").read_text())
    assert re.search(r"^epoch  5  loss \d\.\d{4}  accuracy 0\.\d{4}", log, re.M), log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 5 and metrics["test_accuracy"] > 0.5
    assert (out / "model.npz").stat().st_size > 1000
    with zipfile.ZipFile(out / "_submitted_code" / "model.zip") as archive:
        assert archive.namelist() == ["train.py", "requirements.txt"]

    shown = dlaas(stack, "show", "trained-models", run_id)
    assert shown.returncode == 0
    fields = dict(re.findall(r"^(\w+)\s{2,}(.*)$", shown.stdout, re.M))
    assert fields["ModelId"] == run_id
    assert fields["url"] == f"/v3/models/{run_id}"
    assert fields["Name"] == "numpy-digits"
    assert fields["State"] == "completed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["Submitted_at"])
    assert fields["Framework"] == "python 3.11"
    assert fields["Resource"] == "small (1 GPU)"
    assert fields["Worker"] == workers["small"]
    assert fields["GPUs"] == "0"
    for state in ("pending", "downloading", "running", "storing", "completed"):
        assert re.search(rf"^  \S+Z  {state}\b", shown.stdout, re.M), state
    assert shown.stdout.rstrip().endswith("OK\nShow trained-models details successful")


def test_failed_run_is_listed_and_shown_with_its_reason(stack, workers, buckets, tmp_path):
    model, manifest = _files(
        tmp_path, "echo about to fail; echo 'ValueError: bad shape' >&2; exit 3", name="will-fail"
    )
    run_id, done = _train_and_wait(stack, model, manifest)
    assert done.returncode == 1
    assert "Status: FAILED" in done.stdout
    listed = dlaas(stack, "list", "trained-models")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if run_id in line)
    assert re.match(rf"^\d+\s+will-fail\s+{run_id}\s+failed\s+\d{{4}}-\S+Z$", row), row
    assert listed.stdout.splitlines()[1].split() == [
        "SI",
        "No",
        "Name",
        "guid",
        "status",
        "submitted-at",
    ]
    assert re.search(
        r"^\d+ records found\.\nOK\nList all trained-models successful$", listed.stdout, re.M
    )
    shown = dlaas(stack, "show", "trained-models", run_id)
    assert re.search(r"^State\s+failed$", shown.stdout, re.M)
    assert re.search(r"^Exit_code\s+3$", shown.stdout, re.M)
    assert re.search(r"^Error_code\s+C201$", shown.stdout, re.M)
    assert "ValueError: bad shape" in shown.stdout
    detail = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
    assert (
        detail["state"] == "FAILED" and detail["exit_code"] == 3 and detail["error_code"] == "C201"
    )


def test_medium_run_gets_exactly_the_two_gpu_workers_gpus(stack, workers, buckets, tmp_path):
    model, manifest = _files(
        tmp_path,
        "echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES $GPU_COUNT > $RESULT_DIR/gpus.txt",
        resource="medium",
    )
    run_id, done = _train_and_wait(stack, model, manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (buckets[1] / run_id / "gpus.txt").read_text() == "1,2 1,2 2\n"
    detail = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
    assert detail["worker"] == workers["medium"] and detail["gpus"] == [1, 2]
    assert detail["gpu_count"] == 2


def test_small_runs_never_land_on_the_medium_worker(stack, workers, buckets, tmp_path):
    model, manifest = _files(tmp_path, "echo $CUDA_VISIBLE_DEVICES > $RESULT_DIR/gpus.txt")
    ids = []
    for _ in range(4):
        submitted = dlaas(stack, "train", model, manifest, "--json")
        assert submitted.returncode == 0, submitted.stderr
        ids.append(json.loads(submitted.stdout)["model_id"])
    for run_id in ids:
        _wait_state(stack, run_id, "COMPLETED")
        detail = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
        assert detail["worker"] == workers["small"], detail
        assert (buckets[1] / run_id / "gpus.txt").read_text() == "0\n"


def _wait_state(stack, run_id: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
        if shown["state"] == state:
            return
        assert shown["state"] not in {"COMPLETED", "FAILED", "HALTED"} - {state}, shown
        time.sleep(0.3)
    raise AssertionError(f"{run_id} not {state} after {timeout} s")


def test_delete_removes_the_run_but_not_its_outputs(stack, workers, buckets, tmp_path):
    model, manifest = _files(tmp_path, "echo kept > $RESULT_DIR/kept.txt")
    run_id, done = _train_and_wait(stack, model, manifest)
    assert done.returncode == 0
    deleted = dlaas(stack, "delete", "trained-models", run_id)
    assert deleted.returncode == 0
    assert deleted.stdout == (
        f"Deleting the trained model '{run_id}' ...\nOK\nDelete trained-models successful\n"
    )
    again = dlaas(stack, "show", "trained-models", run_id)
    assert again.returncode == 1
    assert again.stdout.endswith("FAILED\n")
    assert again.stderr.strip() == f"no training run '{run_id}' (HTTP 404)"
    assert (buckets[1] / run_id / "kept.txt").read_text() == "kept\n"
    assert run_id not in dlaas(stack, "list", "trained-models").stdout


def test_bad_input_through_the_cli_fails_with_one_line(stack, api_url, tmp_path):
    model, manifest = _files(tmp_path, "true")
    Path(manifest).write_text(manifest_yaml(resource="giant"))
    done = dlaas(stack, "train", model, manifest)
    assert done.returncode == 1 and done.stdout.endswith("FAILED\n")
    assert "model_definition.execution.resource: unknown size 'giant'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    missing = dlaas(stack, "train", str(tmp_path / "nope.zip"), manifest, "--json")
    assert missing.returncode == 1
    assert "No such file or directory" in json.loads(missing.stdout)["error"]


def test_cli_reads_the_env_file_and_reports_an_unreachable_server(stack, api_url, tmp_path):
    (tmp_path / ".dlaas").mkdir()
    (tmp_path / ".dlaas" / "env").write_text(
        f"export DLAAS_URL={api_url}\nexport DLAAS_TOKEN={stack.tokens['bob']}\n"
    )
    env = {k: v for k, v in stack.env.items() if k not in ("DLAAS_URL", "DLAAS_TOKEN")}
    listed = dlaas(stack, "list", "trained-models", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "models" in json.loads(listed.stdout)
    env["DLAAS_URL"] = "http://127.0.0.1:9"
    down = dlaas(stack, "list", "trained-models", env=env, cwd=tmp_path)
    assert down.returncode == 1
    assert (
        down.stderr.strip()
        == "cannot reach the dlaas service at http://127.0.0.1:9 (is it up? `make up`)"
    )


def test_cancel_and_nodes_through_the_cli(stack, workers, buckets, tmp_path):
    model, manifest = _files(tmp_path, "echo waiting; sleep 120")
    submitted = dlaas(stack, "train", model, manifest, "--json")
    run_id = json.loads(submitted.stdout)["model_id"]
    _wait_state(stack, run_id, "PROCESSING")
    busy = dlaas(stack, "nodes").stdout.splitlines()
    assert busy[0].split() == ["Name", "status", "sizes", "GPUs", "host", "sandbox", "GPU", "use"]
    (small,) = [line.split() for line in busy if line.startswith(workers["small"] + " ")]
    assert small[-1] == f"0:{run_id}"
    cancelled = dlaas(stack, "cancel", "training-runs", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == (
        f"Canceling training for MODEL-ID '{run_id}'...\nOK\nCancel training successful\n"
    )
    _wait_state(stack, run_id, "HALTED")
    shown = dlaas(stack, "show", "trained-models", run_id)
    assert re.search(r"^State\s+halted$", shown.stdout, re.M)
    assert re.search(r"^Status\s+cancelled by alice; stored", shown.stdout, re.M)
    again = dlaas(stack, "cancel", "training-runs", run_id)
    assert again.returncode == 1
    assert again.stderr.strip() == f"{run_id} has already ended (HALTED) (HTTP 409)"

    nodes = dlaas(stack, "nodes")
    assert nodes.returncode == 0
    rows = {line.split()[0]: line.split() for line in nodes.stdout.splitlines()[1:-2]}
    assert rows[workers["small"]][1:4] == ["ready", "small", "0"]
    sandbox = "bwrap" if shutil.which("bwrap") else "none"  # make test installs bubblewrap
    assert rows[workers["small"]][5] == sandbox
    assert rows[workers["medium"]][1:4] == ["ready", "medium", "1,2"]
    assert rows[workers["small"]][-1] == "0:free" and rows[workers["medium"]][-2:] == [
        "1:free",
        "2:free",
    ]
    refused = dlaas(stack, "nodes", "drain", workers["small"], user="bob")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "draining nodes is for administrators (HTTP 403)"


CHATTY = (
    "for i in $(seq 1 200); do echo line $i; done; echo to-stderr >&2; "
    "for i in $(seq 201 230); do echo line $i; sleep 0.05; done; "
    "ls $LOG_DIR > $RESULT_DIR/log-dir-during-run.txt"
)


def test_logs_are_followed_live_stored_in_order_and_readable_after(
    stack, workers, buckets, tmp_path
):
    model, manifest = _files(tmp_path, CHATTY)
    run_id = json.loads(dlaas(stack, "train", model, manifest, "--json").stdout)["model_id"]
    env = dict(stack.env, DLAAS_URL=stack.api_url, DLAAS_TOKEN=stack.tokens["alice"])
    monitor = subprocess.Popen(
        [str(BIN / "dlaas"), "monitor", "training-runs", run_id],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    arrived = None
    lines = []
    for raw in monitor.stdout:
        lines.append(raw.rstrip("\n"))
        if raw.strip().endswith("line 205") and arrived is None:
            arrived = utcnow()
    assert monitor.wait(timeout=60) == 0
    # Line 205 reached the client while the run still had 25 lines (1.25 s) to print: the
    # run's recorded end is later. (Asking `dlaas show` at that moment raced a slow CLI start.)
    shown = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
    assert arrived is not None and arrived < parse_iso(shown["ended_at"])
    assert lines[0] == "Starting to fetch status messages..."
    assert "Status: running" in lines and lines[-2:] == ["Run ended: completed", "OK"]
    logged = [unstamped(line + "\n").rstrip("\n") for line in lines if re.match(r"^\d{4}-", line)]
    expected = (
        [f"line {i}" for i in range(1, 201)]
        + ["to-stderr"]
        + [f"line {i}" for i in range(201, 231)]
    )
    assert logged == expected

    stored = (buckets[1] / run_id / "learner-1" / "training-log.txt").read_text()
    assert unstamped(stored).splitlines() == expected
    stamps = re.findall(r"^(\S+Z) ", stored, re.M)
    assert stamps == sorted(stamps)
    folder = buckets[1] / run_id / "learner-1"
    assert "[dlaas] data: local store" in (folder / "load-data.log").read_text()
    assert "[dlaas] stored" in (folder / "store-results.log").read_text()
    assert not (folder / "log-chunks").exists()  # the chunks went once the whole log was there

    # The whole log of an ended run, from line 0 or from a line number, live stream trimmed;
    # following an ended run prints it all and returns.
    full = dlaas(stack, "logs", run_id)
    assert unstamped(full.stdout).splitlines() == expected
    followed = dlaas(stack, "logs", run_id, "--follow", timeout=30)
    assert followed.returncode == 0
    assert unstamped(followed.stdout).splitlines() == expected
    tail = dlaas(stack, "logs", run_id, "--since", "225", "--json")
    answer = json.loads(tail.stdout)
    assert [unstamped(x + "\n").strip() for x in answer["lines"]] == [
        f"line {i}" for i in range(225, 231)
    ]
    assert answer["next_line"] == 231


def test_log_chunks_reach_the_bucket_while_the_run_goes_on(stack, workers, buckets, tmp_path):
    model, manifest = _files(tmp_path, "echo early; sleep 3; echo late")
    run_id = json.loads(dlaas(stack, "train", model, manifest, "--json").stdout)["model_id"]
    chunks = buckets[1] / run_id / "learner-1" / "log-chunks"
    deadline = time.monotonic() + 30
    while not (chunks.exists() and any(chunks.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    first = sorted(chunks.iterdir())[0]
    assert first.name == "000000000000.txt"
    assert unstamped(first.read_text()) == "early\n"
    shown = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
    assert shown["state"] == "PROCESSING"
    so_far = dlaas(stack, "logs", run_id)
    assert unstamped(so_far.stdout) == "early\n"
    _wait_state(stack, run_id, "COMPLETED")
    assert not chunks.exists()
    shown = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
    assert shown["usage"]["peak_rss_bytes"] > 0 and shown["usage"]["cpu_seconds"] >= 0


def test_ctrl_c_stops_following_and_leaves_the_run_alone(stack, workers, buckets, tmp_path):
    model, manifest = _files(tmp_path, "echo one; sleep 4; echo two")
    run_id = json.loads(dlaas(stack, "train", model, manifest, "--json").stdout)["model_id"]
    env = dict(stack.env, DLAAS_URL=stack.api_url, DLAAS_TOKEN=stack.tokens["alice"])
    follower = subprocess.Popen(
        [str(BIN / "dlaas"), "logs", run_id, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = follower.stdout.readline()
    assert unstamped(first) == "one\n"
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=10)
    assert follower.returncode == 130
    assert "stopped following; the run itself is untouched" in err
    _wait_state(stack, run_id, "COMPLETED")


def test_staging_progress_is_shown_while_it_happens(stack, workers, buckets, tmp_path):
    data = stack.bucket("progress-data")
    (data / "a.bin").write_bytes(b"x" * 1_000_000)
    os.mkfifo(data / "z.fifo")  # staging blocks here until the test writes: DOWNLOADING held
    model, manifest = _files(tmp_path, "ls $DATA_DIR")
    Path(manifest).write_text(manifest_yaml("ls $DATA_DIR", data_bucket="progress-data"))
    run_id = json.loads(dlaas(stack, "train", model, manifest, "--json").stdout)["model_id"]
    deadline = time.monotonic() + 30
    shown = {}
    while time.monotonic() < deadline:
        shown = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
        if shown["state"] == "DOWNLOADING" and shown.get("progress", {}).get("objects_done") == 1:
            break
        time.sleep(0.2)
    progress = shown["progress"]
    assert progress["phase"] == "downloading"
    assert (progress["objects_done"], progress["objects_total"]) == (1, 2)
    assert progress["bytes_done"] == 1_000_000
    text = dlaas(stack, "show", "trained-models", run_id).stdout
    assert re.search(r"^Progress\s+downloading: 1/2 objects, 1\.0/1\.0 MB, ", text, re.M)
    with open(data / "z.fifo", "wb") as writer:
        writer.write(b"end")
    _wait_state(stack, run_id, "COMPLETED")
    done = json.loads(dlaas(stack, "show", "trained-models", run_id, "--json").stdout)
    assert done["progress"]["phase"] == "storing"
    assert done["progress"]["objects_done"] == done["progress"]["objects_total"]
