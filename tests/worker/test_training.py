"""The training pipeline as a plain function (no broker), against a real Redis and a local store."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from cryptography.fernet import Fernet

from common.run import Run
from common.settings import Settings
from common.states import ErrorCode, RunState
from tests.conftest import ROOT, manifest_yaml, start_redis, unstamped
from tests.worker.runs import submit_manifest, worker_context
from worker.context import WorkerContext
from worker.rundirs import spare_folder
from worker.training import run_training

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path, store_redis, run_work_dir):
    key = Fernet.generate_key().decode()
    settings = Settings(home=tmp_path, secret_key=key, work_dir=run_work_dir)
    return worker_context(settings, store_redis, (3, 5), "unit-worker")


def _submit(ctx: WorkerContext, command: str, files=None, **manifest_args) -> Run:
    return submit_manifest(ctx, manifest_yaml(command, **manifest_args), files)


def _buckets(ctx: WorkerContext, data_files: dict[str, bytes] | None = None):
    root = ctx.settings.local_store_root / "tests"
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "results").mkdir(parents=True, exist_ok=True)
    for name, content in (data_files or {}).items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root / "data", root / "results"


def test_completed_run_leaves_results_log_and_code(ctx):
    _, results = _buckets(ctx, {"train.csv": b"1,2\n", "nested/more.csv": b"3,4\n"})
    run = _submit(
        ctx,
        "cat $DATA_DIR/nested/more.csv; bash train.sh > ${RESULT_DIR}/model.txt; "
        "echo gpus=$CUDA_VISIBLE_DEVICES",
    )
    assert run_training(run.id, ctx) == "COMPLETED"
    out = results / run.id
    assert (out / "model.txt").read_text() == "model\n"
    assert unstamped((out / "learner-1" / "training-log.txt").read_text()) == "3,4\ngpus=3\n"
    assert (out / "_submitted_code" / "model.zip").read_bytes().startswith(b"PK")
    done = ctx.runs.get(run.id)
    assert done.worker == "unit-worker" and done.gpus == [3] and done.exit_code == 0
    assert [h.state for h in ctx.runs.history(run.id)][-1] is RunState.COMPLETED
    assert not (ctx.settings.work_dir / run.id).exists()  # the work directory is removed
    assert not ctx.artifacts.exists(run.artifact)  # the copy in the results bucket remains


def test_a_run_starts_in_the_folder_its_process_made_when_the_last_run_ended(ctx):
    _, results = _buckets(ctx)
    first = _submit(ctx, "true")
    assert run_training(first.id, ctx) == "COMPLETED"
    spare = spare_folder(ctx.settings.work_dir)
    spare._job.result(timeout=10)
    (spare.path / "tmp" / "made-ahead").touch()  # to know the folder again
    second = _submit(ctx, "ls $TMPDIR $MODEL_DIR")
    assert run_training(second.id, ctx) == "COMPLETED"
    log = unstamped((results / second.id / "learner-1" / "training-log.txt").read_text())
    assert log.split() == [f"{ctx.settings.work_dir}/{second.id}/model:", "train.sh",
                           f"{ctx.settings.work_dir}/{second.id}/tmp:", "made-ahead"]  # fmt: skip
    spare._job.result(timeout=10)
    assert list((spare.path / "tmp").iterdir()) == []  # the next run's, made again


def test_failing_command_is_failed_c201_with_last_lines_and_log_kept(ctx):
    _, results = _buckets(ctx)
    run = _submit(ctx, "echo starting; echo 'Traceback: boom' >&2; exit 3")
    assert run_training(run.id, ctx) == "FAILED"
    done = ctx.runs.get(run.id)
    assert done.error_code is ErrorCode.COMMAND_FAILED and done.exit_code == 3
    assert "exited with code 3" in done.status_message
    assert "Traceback: boom" in done.status_message
    assert (results / run.id / "learner-1" / "training-log.txt").exists()


def test_missing_results_bucket_is_c103_before_anything_runs(ctx):
    data, results = _buckets(ctx)
    results.rmdir()
    run = _submit(ctx, "touch $RESULT_DIR/ran")
    assert run_training(run.id, ctx) == "FAILED"
    done = ctx.runs.get(run.id)
    assert done.error_code is ErrorCode.CREDENTIALS
    assert "bucket 'results' does not exist" in done.status_message
    assert RunState.PROCESSING not in [h.state for h in ctx.runs.history(run.id)]


def test_missing_data_bucket_is_c103(ctx):
    data, _ = _buckets(ctx)
    data.rmdir()
    run = _submit(ctx, "true")
    assert run_training(run.id, ctx) == "FAILED"
    done = ctx.runs.get(run.id)
    assert done.error_code is ErrorCode.CREDENTIALS
    assert done.status_message.startswith("data store: local store ")
    assert done.status_message.endswith("bucket 'data' does not exist")


def test_lost_model_zip_is_s301(ctx):
    _buckets(ctx)
    run = _submit(ctx, "true")
    ctx.artifacts.delete(run.artifact)
    assert run_training(run.id, ctx) == "FAILED"
    assert ctx.runs.get(run.id).error_code is ErrorCode.MODEL_STAGING


def test_a_second_delivery_is_skipped(ctx):
    _, results = _buckets(ctx)
    run = _submit(ctx, "echo once >> $RESULT_DIR/count.txt")
    assert run_training(run.id, ctx) == "COMPLETED"
    assert run_training(run.id, ctx) == "skipped"
    assert (results / run.id / "count.txt").read_text() == "once\n"
    assert len(ctx.runs.history(run.id)) == 5


def test_deleted_pending_run_is_skipped(ctx):
    _buckets(ctx)
    run = _submit(ctx, "true")
    ctx.runs.delete(run.id, "alice")
    assert run_training(run.id, ctx) == "skipped"


class _HeldStore:
    """The real local artifact store, whose get_file first waits for `go` (at most 10 s)."""

    def __init__(self, inner, go):
        self.inner, self.go = inner, go

    def get_file(self, bucket, key, dest):
        self.go.wait(10)
        self.inner.get_file(bucket, key, dest)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_model_zip_is_fetched_while_the_data_is_staged(ctx):
    data, results = _buckets(ctx, {"big.bin": b"d" * 3_000_000})
    run = _submit(ctx, "ls $MODEL_DIR $DATA_DIR")
    go = threading.Event()
    ctx.artifacts.store = _HeldStore(ctx.artifacts.store, go)
    staged = ctx.settings.work_dir / run.id / "data" / "big.bin"
    seen = {}

    def release_when_data_is_staged():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if staged.exists() and staged.stat().st_size == 3_000_000:
                seen["data_before_model"] = True
                break
            time.sleep(0.01)
        go.set()

    helper = threading.Thread(target=release_when_data_is_staged)
    helper.start()
    assert run_training(run.id, ctx) == "COMPLETED"
    helper.join()
    # The data was all there while the model fetch was still held: the two ran side by side.
    assert seen == {"data_before_model": True}
    log = unstamped((results / run.id / "learner-1" / "training-log.txt").read_text())
    assert "train.sh" in log and "big.bin" in log


# Redis going away at the two moments the worker once wrote without waiting for it: the run's
# state must still be written, in order, once Redis is back (a real redis-server, stopped and
# started again on the same port and data).


# Brings Redis back from a process of its own: a server the worker's process started during a
# run would be taken for the run's leftover (worker/reaper.py) and ended with it.
BOUNCER = r"""
import sys, time
from pathlib import Path
from deploy.processes import port_open, redis_argv, spawn, stop_pid, wait_until

port, data, password, trigger, delay = sys.argv[1:]
port, data, trigger = int(port), Path(data), Path(trigger)
deadline = time.monotonic() + 120
while not trigger.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(float(delay))
pid = spawn(redis_argv(port, data, persist=True, password=password), data / "redis.log")
wait_until(lambda: port_open(port), 20, "redis-server", pid=pid)
print("back", flush=True)
sys.stdin.read()  # until the test is done with it
stop_pid(pid)
"""


class Outage:
    """The test's Redis stopped at `begin()`, and back `seconds` later."""

    def __init__(self, server, seconds: float):
        self.server, self.trigger = server, server.data / "outage"
        argv = [sys.executable, "-c", BOUNCER, str(server.port), str(server.data)]
        argv += [server.password, str(self.trigger), str(seconds)]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.begun = False

    def begin(self) -> None:
        self.begun = True
        self.server.stop()
        self.trigger.touch()

    def over(self) -> bool:
        return self.proc.stdout.readline().strip() == "back"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def own_redis(tmp_path):
    server = start_redis(tmp_path / "redis", persist=True)
    yield server
    server.stop()


@pytest.fixture
def outage(own_redis):
    outage = Outage(own_redis, 1.0)
    yield outage
    outage.close()


@pytest.fixture
def outage_ctx(tmp_path, own_redis, run_work_dir):
    key = Fernet.generate_key().decode()
    settings = Settings(
        home=tmp_path, secret_key=key, work_dir=run_work_dir, redis_outage_seconds=60
    )
    return worker_context(settings, own_redis.client(), (3, 5), "unit-worker")


def test_redis_away_as_the_command_starts_still_records_the_run(outage_ctx, outage):
    ctx = outage_ctx
    _, results = _buckets(ctx)
    run = _submit(ctx, "sleep 1.5; echo done > $RESULT_DIR/out.txt")
    real_update = ctx.runs.update

    def update(run_id, attempt, **fields):
        if "process_id" in fields and not outage.begun:  # the write right after Popen
            outage.begin()
        return real_update(run_id, attempt, **fields)

    ctx.runs.update = update
    assert run_training(run.id, ctx) == "COMPLETED"
    assert outage.over()
    done = ctx.runs.get(run.id)
    assert done.process_id and done.exit_code == 0
    assert (results / run.id / "out.txt").read_text() == "done\n"
    states = [h.state for h in ctx.runs.history(run.id)]
    assert states[-3:] == [RunState.PROCESSING, RunState.STORING, RunState.COMPLETED]


def test_worker_error_while_redis_is_away_is_recorded_when_it_is_back(outage_ctx, outage):
    ctx = outage_ctx
    _buckets(ctx)
    run = _submit(ctx, "touch $RESULT_DIR/ran")

    def fetch(artifact, dest):
        outage.begin()
        raise RuntimeError("disk controller on fire")

    ctx.artifacts.fetch = fetch
    assert run_training(run.id, ctx) == "FAILED"
    assert outage.over()
    done = ctx.runs.get(run.id)
    assert done.error_code is ErrorCode.WORKER_ERROR
    assert done.status_message == "worker error: RuntimeError: disk controller on fire"
    assert RunState.PROCESSING not in [h.state for h in ctx.runs.history(run.id)]
