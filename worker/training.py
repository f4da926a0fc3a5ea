"""One training run from claim to end state: the plain function the Celery task calls, and the
run's pipeline as two lists.

    ATTEMPT_HOOKS  around the whole attempt, started in order, undone in reverse
    PHASES         the steps in order, each with the hooks wrapped around it

A new step is a module in worker/phases/ and one line in PHASES; a new concern around a step
is a module in worker/hooks/ and one line in that step's hooks (or in ATTEMPT_HOOKS). The end
state is decided in worker/outcome.py.
"""

from __future__ import annotations

import logging
import time

from common.run import Run
from common.states import RunState
from worker.attempt import Attempt
from worker.context import WorkerContext
from worker.hooks.checkpoints import CopyCheckpoints
from worker.hooks.environment import HoldEnvironment
from worker.hooks.livelog import KeepLiveLogTail, StreamLiveLog
from worker.hooks.logchunks import UploadLogChunks
from worker.hooks.metrics import CollectMetrics
from worker.hooks.progress import ReportTransfer
from worker.hooks.supervision import Supervise
from worker.hooks.usage import SampleUsage
from worker.hooks.workdir import RemoveWorkDir
from worker.packer import Packer
from worker.phases.execute import Execute
from worker.phases.open_stores import OpenStores
from worker.phases.prepare import Prepare
from worker.phases.stage import Stage
from worker.phases.store import Store
from worker.pipeline import drive
from worker.rundirs import RunDirs

log = logging.getLogger(__name__)

ATTEMPT_HOOKS = (RemoveWorkDir, KeepLiveLogTail, Supervise, HoldEnvironment)
PHASES = (
    Prepare(),
    OpenStores(),
    Stage(hooks=(ReportTransfer.named("downloading"),)),
    Execute(hooks=(StreamLiveLog, UploadLogChunks, CollectMetrics, SampleUsage, CopyCheckpoints)),
    Store(hooks=(ReportTransfer.named("storing"),)),
)


def run_training(run_id: str, ctx: WorkerContext, progress=None) -> str:
    """Place, claim, stage, execute, store. Returns the end state, `requeued` for a run
    handed back (the node cannot start it now), or `skipped` for a message whose run is
    gone, already claimed or already ended (a duplicate is never run twice).

    From the message's arrival to the claim (or the hand-back) the run is marked taken by
    this worker: a worker that dies in between leaves a PENDING run with no message, which
    the reconciler finds (no message on its queue, no mark) and queues again."""
    pending = ctx.runs.take_message(run_id, ctx.name)
    try:
        return _run_training(run_id, pending, ctx, progress)
    finally:
        ctx.runs.message_done(run_id)


def _run_training(run_id: str, pending: Run | None, ctx: WorkerContext, progress) -> str:
    if pending is None or pending.state is not RunState.PENDING:
        log.info("%s: dropped, not PENDING any more (claimed, ended or deleted)", run_id)
        return "skipped"
    if ctx.nodes.drain_deadline(ctx.name) is not None and ctx.requeue is not None:
        # A draining worker takes no new run; its consumers are being cancelled.
        return _hand_back(pending, ctx, f"{ctx.name} is draining", wait=1.0)
    packer = Packer(ctx)
    place, reason = packer.place(pending)
    if place is None:
        return _hand_back(pending, ctx, reason, wait=ctx.settings.pack_interval_seconds)
    try:
        run = ctx.runs.claim(run_id, ctx.name, lambda count: list(place.gpus))
        if run is None:
            log.info("%s: dropped, not PENDING any more (claimed, ended or deleted)", run_id)
            return "skipped"
        dirs = RunDirs(ctx.settings.work_dir / run_id)
        attempt = Attempt(run, ctx, dirs, progress, slot=place.slot)
        if not drive(attempt, PHASES, ATTEMPT_HOOKS):
            return "lost"
    finally:
        packer.release(run_id)
    final = ctx.runs.get(run_id)
    if final is None or (final.state.terminal and final.artifact):
        ctx.artifacts.delete(run.artifact)  # a copy is in the results bucket now
    return final.state.value if final else "deleted"


def _hand_back(run, ctx: WorkerContext, reason: str, wait: float) -> str:
    """The node cannot start the run now (draining, its GPUs taken, or held for a larger
    run): the message goes back to its queue at once, for this node later or another one.
    This pool process then waits `wait` seconds, by which this node stops consuming that
    size, so that it does not take the same message again meanwhile."""
    if ctx.requeue is None:
        raise RuntimeError(f"{run.id}: cannot start here ({reason}) and cannot hand it back")
    ctx.requeue(run.id, run.resource)
    log.info("%s: handed back to its queue: %s", run.id, reason)
    time.sleep(wait)
    return "requeued"
