"""How an attempt ends: its end state decided in one place, from what happened (a phase that
failed, a stop and its reason, the command's exit code), and written once.

    failure            FAILED with the phase's code (C103, S301, S302, S303, S100 ...)
    stopped: cancel    HALTED
    stopped: timeout   FAILED C202
    stopped: drain     back to PENDING when retries allow, else FAILED S105
    exit code 0        COMPLETED
    otherwise          FAILED C201, with the limit it hit (if any) and the log's last lines
"""

from __future__ import annotations

import logging

from common.layout import TRAINING_LOG_KEY
from common.runstore import LostClaim, RunNotFound
from common.states import ErrorCode, RunState
from worker.attempt import Attempt, RunFailed
from worker.limits import describe_hit, limit_hit
from worker.process import tail
from worker.supervisor import StopReason, StopRequest

log = logging.getLogger(__name__)


def end(attempt: Attempt) -> None:
    """Writes the attempt's end state; a failure to decide it is itself a worker error."""
    try:
        _decide(attempt)
    except (LostClaim, RunNotFound):
        raise
    except Exception as exc:
        log.exception("%s: worker error while ending the run", attempt.id)
        on_failure(
            attempt, RunFailed(ErrorCode.WORKER_ERROR, f"worker error: {type(exc).__name__}: {exc}")
        )


def _decide(attempt: Attempt) -> None:
    if attempt.failure is not None:
        on_failure(attempt, attempt.failure)
    elif (request := attempt.stopped_by()) is not None:
        on_stopped(attempt, request)
    elif attempt.execution.exit_code == 0:
        attempt.write(RunState.COMPLETED, attempt.stored_summary)
    else:
        on_failure(attempt, command_failed(attempt))


def on_failure(attempt: Attempt, failure: RunFailed) -> None:
    attempt.write(RunState.FAILED, failure.message, failure.code)
    log.warning(
        "%s failed (%s): %s", attempt.id, failure.code.value, failure.message.splitlines()[0]
    )


def on_stopped(attempt: Attempt, request: StopRequest) -> None:
    ctx, run, summary = attempt.ctx, attempt.run, attempt.stored_summary
    if request.reason is StopReason.CANCEL:
        attempt.write(RunState.HALTED, f"{request.detail}; {summary}")
    elif request.reason is StopReason.TIMEOUT:
        on_failure(attempt, RunFailed(ErrorCode.TIME_LIMIT, f"{request.detail}; {summary}"))
    elif request.reason is StopReason.DRAIN:
        if run.attempt <= ctx.settings.run_retries and ctx.requeue is not None:
            attempt.write(
                RunState.PENDING,
                f"handed back to the queue: {ctx.name} shut down "
                f"(attempt {run.attempt} of {ctx.settings.run_retries + 1})",
            )
            ctx.requeue(run.id, run.resource)
        else:
            message = f"{request.detail}: {ctx.name}; {summary}"
            on_failure(attempt, RunFailed(ErrorCode.WORKER_SHUTDOWN, message))


def command_failed(attempt: Attempt) -> RunFailed:
    log_file = attempt.dirs.log_file
    hit = limit_hit(attempt.limits, tail(log_file, lines=30, max_chars=8000))
    why = f": {describe_hit(hit)}" if hit else ""
    return RunFailed(
        ErrorCode.COMMAND_FAILED,
        f"command exited with code {attempt.execution.exit_code}{why}; log in "
        f"{attempt.results_where}{TRAINING_LOG_KEY}; last lines:\n{tail(log_file)}",
    )
