"""Kept results (S303) stored again by the node's thread, against a real Redis and a local
store: a store its earlier process was serving when it stopped is served at start, and a
request for another node's run is left alone. (Through the CLI and a real worker:
tests/e2e/test_faults.py.)"""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet

from common.settings import Settings
from common.states import ErrorCode, RunState
from tests.conftest import manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker.storeagain import StoreAgain, serve
from worker.training import run_training

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path, store_redis, run_work_dir):
    settings = Settings(
        home=tmp_path, secret_key=Fernet.generate_key().decode(), work_dir=run_work_dir
    )
    return worker_context(settings, store_redis, (0,), "keeper")


def _unstored_run(ctx):
    """A run whose results could not be stored (its folder in the bucket is a file)."""
    root = ctx.settings.local_store_root / "tests"
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "results").mkdir(parents=True, exist_ok=True)
    run = submit_manifest(ctx, manifest_yaml("echo weights > $RESULT_DIR/w.bin"))
    (root / "results" / run.id).touch()
    assert run_training(run.id, ctx) == "FAILED"
    failed = ctx.runs.get(run.id)
    assert failed.error_code is ErrorCode.RESULT_UPLOAD and failed.kept_results["state"] == "kept"
    return failed, root / "results" / run.id


def test_a_store_cut_short_by_a_stop_is_served_when_the_worker_starts_again(ctx):
    run, blocked = _unstored_run(ctx)
    blocked.unlink()
    # The earlier worker process took the request and was storing when it stopped.
    ctx.runs.update(run.id, run.attempt, kept_results=dict(run.kept_results, state="storing"))
    thread = StoreAgain(ctx, poll_seconds=0.1)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while ctx.runs.get(run.id).kept_results["state"] == "storing":
            assert time.monotonic() < deadline, "the cut-short store was not served again"
            time.sleep(0.05)
    finally:
        thread.stop()
        thread.join(5)
    done = ctx.runs.get(run.id)
    assert done.kept_results["state"] == "stored", done.kept_results
    assert (done.state, done.error_code) == (RunState.FAILED, ErrorCode.RESULT_UPLOAD)
    assert (blocked / "w.bin").read_text() == "weights\n"
    assert not (ctx.settings.work_dir / "unstored" / run.id).exists()


def test_a_request_for_another_nodes_run_is_left_alone(ctx):
    run, blocked = _unstored_run(ctx)
    blocked.unlink()
    other = worker_context(ctx.settings, ctx.runs.redis, (1,), "someone-else")
    assert serve(other, run.id) == "ignored"
    assert serve(other, "training-nosuchrun") == "ignored"
    assert ctx.runs.get(run.id).kept_results["state"] == "kept"
    assert not blocked.exists()
    assert serve(ctx, run.id) == "stored"


def test_kept_tensorboard_event_files_are_stored_again_in_the_learners_folder(ctx):
    from tests.worker.test_tensorboard import _simple, write_events

    root = ctx.settings.local_store_root / "tests"
    event_file = write_events(root / "data", [(step, _simple("loss", step)) for step in range(3)])
    (root / "results").mkdir(parents=True, exist_ok=True)
    command = f"mkdir -p $LOG_DIR/tb/train && cp $DATA_DIR/{event_file.name} $LOG_DIR/tb/train/"
    run = submit_manifest(ctx, manifest_yaml(command))
    (root / "results" / run.id).touch()  # its folder in the bucket is a file: not stored
    assert run_training(run.id, ctx) == "FAILED"
    assert ctx.runs.get(run.id).metrics["loss"]["count"] == 3  # read while it ran
    (root / "results" / run.id).unlink()
    assert serve(ctx, run.id) == "stored"
    stored = root / "results" / run.id / "learner-1" / "tensorboard" / event_file.name
    assert stored.read_bytes() == event_file.read_bytes()
