"""Each hook of the pipeline on its own, around a stand-in phase body: what it leaves on the
attempt and in a real Redis and local store (no broker, no command)."""

from __future__ import annotations

import time

import psutil
import pytest
from cryptography.fernet import Fernet

from common import keys
from common.livelog import LiveLog
from common.manifest import Manifest
from common.settings import Settings
from common.storage import open_store
from tests.conftest import manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker.attempt import Attempt
from worker.hooks.livelog import KeepLiveLogTail, StreamLiveLog
from worker.hooks.logchunks import UploadLogChunks
from worker.hooks.progress import ReportTransfer
from worker.hooks.supervision import Supervise
from worker.hooks.usage import SampleUsage
from worker.hooks.workdir import RemoveWorkDir
from worker.pipeline import applied
from worker.rundirs import RunDirs
from worker.supervisor import StopReason

pytestmark = pytest.mark.integration


@pytest.fixture
def attempt(tmp_path, store_redis):
    settings = Settings(
        home=tmp_path,
        secret_key=Fernet.generate_key().decode(),
        log_chunk_seconds=0.1,
        lease_refresh_seconds=0.2,
    )
    ctx = worker_context(settings, store_redis, (0,), "hook-worker")
    (settings.local_store_root / "tests" / "results").mkdir(parents=True)
    run = ctx.runs.claim(submit_manifest(ctx, manifest_yaml("true")).id, ctx.name)
    settings.work_dir.mkdir(parents=True)
    attempt = Attempt(run, ctx, RunDirs(settings.work_dir / run.id))
    attempt.dirs.create()
    attempt.manifest = Manifest.from_dict(run.manifest)
    attempt.results_store = open_store(attempt.manifest.training_results, settings.local_store_root)
    return attempt


def test_the_supervisor_shares_the_attempts_stop_flag_and_is_finished_after(attempt):
    with applied([Supervise], attempt):
        attempt.ctx.runs.request_cancel(attempt.id, "bob")
        deadline = time.monotonic() + 10
        while not attempt.stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert attempt.stop.request.reason is StopReason.CANCEL
        assert attempt.stop.request.detail == "cancelled by bob"
    assert not attempt.supervisor.is_alive()


def test_a_transfers_progress_is_on_the_run_while_the_phase_moves_data(attempt):
    with applied([ReportTransfer.named("downloading")], attempt):
        attempt.transfer.expect(2, 300)
        attempt.transfer.add_bytes(300)
        attempt.transfer.object_done()
    assert attempt.transfer is None
    progress = attempt.ctx.runs.get(attempt.id).progress
    assert progress["phase"] == "downloading"
    assert (progress["objects_done"], progress["objects_total"]) == (1, 2)
    assert progress["bytes_done"] == progress["bytes_total"] == 300


def test_the_live_log_gets_what_the_pump_offers_and_keeps_a_tail_at_the_end(attempt):
    live = LiveLog(attempt.ctx.runs.redis, attempt.id)
    live.append([(0, "a line of an earlier attempt\n")])
    with applied([KeepLiveLogTail], attempt), applied([StreamLiveLog], attempt):
        (streamer,) = attempt.log_listeners
        streamer.offer(0, (b"2026-12-02T00:00:00Z ", b"epoch 1", b"\n"), 1)
    assert [p.text for p in live.read()] == ["2026-12-02T00:00:00Z epoch 1\n"]
    assert attempt.ctx.runs.redis.ttl(keys.live_log(attempt.id)) > 0
    assert "live_log_dropped_lines" not in attempt.usage


def test_log_chunks_are_uploaded_while_the_command_runs_and_remembered(attempt):
    stored = attempt.settings.local_store_root / "tests" / "results" / attempt.id
    chunk = stored / "learner-1" / "log-chunks" / "000000000000.txt"
    with applied([UploadLogChunks], attempt):
        assert attempt.deferred  # the uploader starts with the command, not before it
        attempt.start_deferred()  # the command runs
        attempt.dirs.log_file.write_text("epoch 1\nepoch 2\n")
        deadline = time.monotonic() + 10
        while not chunk.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the uploader's own thread ships it
    assert chunk.read_text() == "epoch 1\nepoch 2\n"
    assert attempt.uploaded_chunks == ["learner-1/log-chunks/000000000000.txt"]


def test_usage_is_sampled_and_added_to_the_runs_usage(attempt):
    with applied([SampleUsage], attempt):
        (sampler,) = attempt.samplers
        sampler.sample([psutil.Process()])
    assert attempt.usage["peak_rss_bytes"] > 0 and attempt.usage["cpu_seconds"] > 0


def test_the_work_folder_is_removed_whatever_happened(attempt):
    with pytest.raises(RuntimeError), applied([RemoveWorkDir], attempt):
        (attempt.dirs.result / "model.txt").write_text("weights")
        raise RuntimeError("the phase failed")
    assert not attempt.dirs.root.exists()
