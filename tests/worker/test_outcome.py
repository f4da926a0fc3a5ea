"""The end decision (worker/outcome.py): each way an attempt can end, from what happened, written
to a real Redis (no broker, no command run)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from common.manifest import Manifest
from common.settings import Settings
from common.states import ErrorCode, RunState
from tests.conftest import manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker.attempt import Attempt, RunFailed
from worker.limits import run_limits
from worker.outcome import end
from worker.process import Execution
from worker.rundirs import RunDirs
from worker.supervisor import StopReason

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path, store_redis):
    settings = Settings(home=tmp_path, secret_key=Fernet.generate_key().decode(), run_retries=1)
    return worker_context(settings, store_redis, (0,), "outcome-worker")


def _storing(ctx, requeued: list | None = None) -> Attempt:
    """A claimed run that went as far as STORING, as the pipeline leaves it for `end`."""
    run = submit_manifest(ctx, manifest_yaml("python3 train.py"))
    if requeued is not None:
        ctx.requeue = lambda run_id, size: requeued.append((run_id, size.value))
    claimed = ctx.runs.claim(run.id, ctx.name)
    ctx.runs.transition(run.id, RunState.STORING, "storing", attempt=claimed.attempt)
    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    dirs = RunDirs(ctx.settings.work_dir / run.id)
    dirs.create()
    attempt = Attempt(claimed, ctx, dirs)
    attempt.manifest = Manifest.from_dict(claimed.manifest)
    attempt.limits = run_limits(ctx.settings, claimed.resource)
    attempt.stored_summary = f"stored 3 objects (42 bytes) in {attempt.results_where}"
    return attempt


def _ended(attempt: Attempt):
    end(attempt)
    return attempt.ctx.runs.get(attempt.id)


def test_exit_code_zero_completes_with_what_was_stored(ctx):
    attempt = _storing(ctx)
    attempt.execution = Execution(0)
    done = _ended(attempt)
    assert done.state is RunState.COMPLETED and done.error_code is None
    assert done.status_message == attempt.stored_summary


def test_a_phase_failure_ends_failed_with_its_code(ctx):
    attempt = _storing(ctx)
    attempt.execution = Execution(0)  # the failure wins over a command that went well
    attempt.failure = RunFailed(ErrorCode.RESULT_UPLOAD, "storing results failed")
    done = _ended(attempt)
    assert (done.state, done.error_code) == (RunState.FAILED, ErrorCode.RESULT_UPLOAD)
    assert done.status_message == "storing results failed"


def test_a_failed_command_is_c201_with_the_limit_it_hit_and_its_last_lines(ctx):
    attempt = _storing(ctx)
    attempt.dirs.log_file.write_text("epoch 1\nOSError: [Errno 24] Too many open files\n")
    attempt.execution = Execution(1)
    done = _ended(attempt)
    assert (done.state, done.error_code) == (RunState.FAILED, ErrorCode.COMMAND_FAILED)
    first, *rest = done.status_message.splitlines()
    assert first.startswith("command exited with code 1: ")
    assert "DLAAS_RUN_MAX_OPEN_FILES" in first
    assert "learner-1/training-log.txt; last lines:" in first
    assert rest == ["epoch 1", "OSError: [Errno 24] Too many open files"]


@pytest.mark.parametrize(
    "reason, state, code",
    [
        (StopReason.CANCEL, RunState.HALTED, None),
        (StopReason.TIMEOUT, RunState.FAILED, ErrorCode.TIME_LIMIT),
    ],
)
def test_a_stopped_command_ends_as_its_stop_asks(ctx, reason, state, code):
    attempt = _storing(ctx)
    attempt.stop.set(reason, f"{reason.value} detail")
    attempt.execution = Execution(143, attempt.stop.request)
    done = _ended(attempt)
    assert (done.state, done.error_code) == (state, code)
    assert done.status_message == f"{reason.value} detail; {attempt.stored_summary}"


def test_after_a_command_that_ended_by_itself_only_a_cancel_counts(ctx):
    timed_out, cancelled = _storing(ctx), _storing(ctx)
    for attempt, reason in ((timed_out, StopReason.TIMEOUT), (cancelled, StopReason.CANCEL)):
        attempt.execution = Execution(0)
        attempt.stop.set(reason, "came while storing")
    assert _ended(timed_out).state is RunState.COMPLETED
    assert _ended(cancelled).state is RunState.HALTED


def test_a_drained_run_goes_back_to_its_queue_while_retries_allow(ctx):
    requeued: list = []
    attempt = _storing(ctx, requeued)
    attempt.stop.set(StopReason.DRAIN, "worker shut down")
    done = _ended(attempt)  # stopped before its command started: no execution
    assert done.state is RunState.PENDING
    assert requeued == [(attempt.id, "small")]
    assert "handed back to the queue: outcome-worker shut down (attempt 1 of 2)" in (
        done.status_message
    )


def test_a_drained_run_past_its_retries_is_s105(ctx):
    attempt = _storing(ctx)  # no requeue: the worker cannot hand it back
    attempt.stop.set(StopReason.DRAIN, "worker shut down")
    done = _ended(attempt)
    assert (done.state, done.error_code) == (RunState.FAILED, ErrorCode.WORKER_SHUTDOWN)
    assert done.status_message.startswith("worker shut down: outcome-worker; stored 3 objects")


def test_an_end_that_cannot_be_decided_is_a_worker_error(ctx):
    attempt = _storing(ctx)  # neither a failure, a stop nor an execution: a pipeline bug
    done = _ended(attempt)
    assert (done.state, done.error_code) == (RunState.FAILED, ErrorCode.WORKER_ERROR)
    assert done.status_message.startswith("worker error: AttributeError: ")
