"""PROCESSING: the command as the run user, in its own process group, with a clean environment
and the run's limits; its output into the log (and the hooks' listeners), until it ends or the
run is stopped; then the run's folders are root's again and its GPUs checked free."""

from __future__ import annotations

import logging
import os

from common.layout import LOAD_LOG, RUN_LOGS, STORE_LOG
from common.run import Run
from common.settings import Settings
from common.states import ErrorCode, RunState
from worker.attempt import Attempt, RunFailed
from worker.limits import run_limits
from worker.pipeline import Phase
from worker.process import (
    RUNTIME_DIR,
    credential_environment,
    execute,
    expand_command,
    run_environment,
)
from worker.reaper import gpus_released
from worker.runuser import (
    RunUserError,
    alone_as,
    check_reachable,
    hand_over,
    hold_user,
    reclaim,
    run_user,
    slot_user,
)

log = logging.getLogger(__name__)


class Execute(Phase):
    name = "execute"

    def wanted(self, attempt: Attempt) -> bool:
        # Stopped while staging, or its environment failed: the command never starts.
        return not attempt.stop.is_set() and attempt.failure is None

    def run(self, attempt: Attempt) -> None:
        ctx, run, settings = attempt.ctx, attempt.run, attempt.settings
        attempt.limits = run_limits(settings, run.resource)
        try:
            attempt.user = user = run_user(slot_user(settings.run_as, attempt.slot))
            if user is not None:
                check_reachable(user, settings.work_dir)
        except RunUserError as exc:
            raise RunFailed(ErrorCode.WORKER_ERROR, f"{ctx.name}: {exc}") from None
        env = run_environment(settings, run.id, attempt.dirs, tuple(run.gpus), attempt.environment)
        # Which attempt this is, and whether CHECKPOINT_DIR holds an earlier one's checkpoint.
        env["DLAAS_ATTEMPT"] = str(run.attempt)
        env["DLAAS_RESUMED"] = "1" if attempt.resumed else "0"
        if attempt.manifest.expose_credentials:  # asked for: execution.expose_credentials
            env.update(credential_environment(attempt.manifest.training_data))
        who = f"user {user.name!r}" if user else "the worker's own user (not root)"
        limit_text = ", ".join(f"{limit.what} {limit.shown()}" for limit in attempt.limits)
        attempt.note(f"command runs as {who}; limits: {limit_text}", LOAD_LOG)
        held = None
        if user is not None:
            held = hold_user(user)
            hand_over(attempt.dirs, RUN_LOGS, user)
        try:
            attempt.write(
                RunState.PROCESSING,
                f"{_staged_text(attempt)}; running on {ctx.name} "
                f"with CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES'] or '(none)'}",
            )
            if attempt.supervisor is not None:
                attempt.supervisor.start_clock(time_limit(run, settings))
            attempt.execution = _run_command(attempt, env)
        finally:
            # Root's again, the run user's leftovers ended, before anything is read back.
            # Its leftovers are ended by uid only when no other run's command runs as the
            # same user now.
            alone = held is not None and alone_as(user, held)
            removed = reclaim(attempt.dirs, user if alone else None)
            if held is not None:
                os.close(held)
            if removed:
                attempt.note(
                    f"removed links and pipes the run left: {', '.join(removed)}", STORE_LOG
                )
        _after_command(attempt)


def _staged_text(attempt: Attempt) -> str:
    usage = attempt.usage
    return f"staged {usage['staged_objects']} objects ({usage['staged_bytes']} bytes)"


def _run_command(attempt: Attempt, env: dict):
    settings = attempt.settings
    wrap = _sandboxed(attempt)
    return execute(
        expand_command(attempt.run.command, env),
        env,
        attempt.dirs.model,
        attempt.dirs.log_file,
        attempt.stop,
        settings.cancel_grace_seconds,
        on_start=lambda pid: _started(attempt, pid),
        listeners=attempt.log_listeners,
        samplers=attempt.samplers,
        before_stop=attempt.before_stop,
        # In the sandbox as root, bwrap's setpriv switches to the run user (worker/sandbox.py).
        user=None if wrap is not None and os.geteuid() == 0 else attempt.user,
        limits=attempt.limits,
        wrap=wrap,
    )


def _sandboxed(attempt: Attempt):
    """The run's argv inside the node's sandbox (None when it has none): its run folder
    writable, its environment and the runtime folder readable, its GPUs' device nodes. (Its
    staged data are links into the data cache: the cache's own path is not needed.)"""
    sandbox, settings = attempt.ctx.sandbox, attempt.settings
    if sandbox is None or not sandbox.on:
        return None
    read_only = [settings.environment_dir, RUNTIME_DIR]
    user = attempt.user
    return lambda argv: sandbox.wrap(
        argv,
        settings,
        attempt.dirs.root,
        attempt.dirs.model,
        tuple(attempt.run.gpus),
        [path for path in read_only if path is not None],
        (user.uid, user.gid) if user is not None and os.geteuid() == 0 else None,
    )


def _started(attempt: Attempt, pid: int) -> None:
    """The command runs: its helper threads start now, then its pid is written."""
    attempt.start_deferred()
    attempt.update(process_id=pid)


def _after_command(attempt: Attempt) -> None:
    execution = attempt.execution
    if execution.stopped:
        attempt.note(
            f"stopped: {execution.stopped.detail} (SIGTERM, then SIGKILL after "
            f"{attempt.settings.cancel_grace_seconds:g} s); all its processes ended in "
            f"{execution.stop_seconds:.2f} s"
        )
    # Before the next run: nothing of this one may still hold its GPUs.
    if not gpus_released(tuple(attempt.run.gpus), set(execution.pids)):
        log.error("%s: its GPUs are still held by its processes", attempt.id)


def time_limit(run: Run, settings: Settings) -> float:
    """The run's own limit or the service's, whichever is shorter (0: none)."""
    limits = [t for t in (run.timeout_seconds, settings.max_run_seconds) if t and t > 0]
    return min(limits) if limits else 0.0
