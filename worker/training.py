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

from common.states import RunState
from worker.attempt import Attempt
from worker.context import WorkerContext
from worker.hooks.environment import HoldEnvironment
from worker.hooks.livelog import KeepLiveLogTail, StreamLiveLog
from worker.hooks.logchunks import UploadLogChunks
from worker.hooks.metrics import CollectMetrics
from worker.hooks.node import MarkNodeBusy
from worker.hooks.progress import ReportTransfer
from worker.hooks.supervision import Supervise
from worker.hooks.usage import SampleUsage
from worker.hooks.workdir import RemoveWorkDir
from worker.phases.execute import Execute
from worker.phases.open_stores import OpenStores
from worker.phases.prepare import Prepare
from worker.phases.stage import Stage
from worker.phases.store import Store
from worker.pipeline import drive
from worker.rundirs import RunDirs

log = logging.getLogger(__name__)

ATTEMPT_HOOKS = (RemoveWorkDir, KeepLiveLogTail, MarkNodeBusy, Supervise, HoldEnvironment)
PHASES = (
    Prepare(),
    OpenStores(),
    Stage(hooks=(ReportTransfer.named("downloading"),)),
    Execute(hooks=(StreamLiveLog, UploadLogChunks, CollectMetrics, SampleUsage)),
    Store(hooks=(ReportTransfer.named("storing"),)),
)


def run_training(run_id: str, ctx: WorkerContext, progress=None) -> str:
    """Claim, stage, execute, store. Returns the end state, or `skipped` for a message
    whose run is gone, already claimed or already ended (a duplicate is never run twice)."""
    if _hand_back_while_draining(run_id, ctx):
        return "requeued"
    run = ctx.runs.claim(run_id, ctx.name, lambda count: list(ctx.gpus.for_run(count)))
    if run is None:
        log.info("%s: dropped, not PENDING any more (claimed, ended or deleted)", run_id)
        return "skipped"
    attempt = Attempt(run, ctx, RunDirs(ctx.settings.work_dir / run_id), progress)
    if not drive(attempt, PHASES, ATTEMPT_HOOKS):
        return "lost"
    final = ctx.runs.get(run_id)
    if final is None or (final.state.terminal and final.artifact):
        ctx.artifacts.delete(run.artifact)  # a copy is in the results bucket now
    return final.state.value if final else "deleted"


def _hand_back_while_draining(run_id: str, ctx: WorkerContext) -> bool:
    """A draining worker takes no new run: it goes back to its queue, for another node."""
    if ctx.nodes.drain_deadline(ctx.name) is None or ctx.requeue is None:
        return False
    pending = ctx.runs.get(run_id)
    if pending is None or pending.state is not RunState.PENDING:
        return False
    time.sleep(1.0)  # its consumer is being cancelled: do not spin on the message
    ctx.requeue(run_id, pending.resource)
    log.info("%s: handed back to its queue, %s is draining", run_id, ctx.name)
    return True
