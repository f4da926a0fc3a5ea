"""One claim of a run on this worker: what its phases hand each other, and the one writer of
its state (every write fenced by the claim's attempt and retried through Redis outages)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.clock import iso, utcnow
from common.layout import TRAINING_LOG
from common.run import Run
from common.runstore import LostClaim
from common.states import ErrorCode, RunState
from worker.context import WorkerContext
from worker.patience import patiently
from worker.rundirs import RunDirs
from worker.supervisor import StopFlag, StopReason, StopRequest

if TYPE_CHECKING:
    from common.manifest import Manifest
    from common.settings import Settings
    from common.storage import ObjectStore
    from common.storage.base import TransferProgress
    from worker.environments import Environment
    from worker.limits import Limit
    from worker.process import Execution
    from worker.runuser import RunUser
    from worker.supervisor import RunSupervisor

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """A phase found the run cannot go on: it ends FAILED with this code and message."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Attempt:
    run: Run
    ctx: WorkerContext
    dirs: RunDirs
    # Progress events for monitors (the Celery task's custom state, seen in Flower).
    progress: Callable[[dict], None] | None = None
    # Set by the supervisor (cancel, time limit, drain, lost claim); read by every phase.
    stop: StopFlag = field(default_factory=StopFlag)
    supervisor: RunSupervisor | None = None
    # Its place on the node among the runs running there at once: its run user.
    slot: int = 0
    # The checkpoint this attempt was given back (files, bytes, from), if any.
    resumed: dict[str, Any] = field(default_factory=dict)

    # What the phases found, in the order they find it.
    manifest: Manifest | None = None
    data_store: ObjectStore | None = None
    results_store: ObjectStore | None = None
    transfer: TransferProgress | None = None  # the transfer going on, while one does
    usage: dict[str, Any] = field(default_factory=dict)
    limits: tuple[Limit, ...] = ()
    user: RunUser | None = None
    # The run's Python environment, held until the attempt ends, and what `show` says of it.
    environment: Environment | None = None
    environment_record: dict[str, Any] = field(default_factory=dict)
    # Where the command's output goes besides the log file (each `offer(first, pieces, n)`),
    # what samples its process tree (each `sample(members)`), and what is done when it is
    # stopped, before its processes get the first signal: hooks add themselves.
    log_listeners: list = field(default_factory=list)
    samplers: list = field(default_factory=list)
    before_stop: list = field(default_factory=list)
    # Helper threads of the command (live log, log chunks, metrics, checkpoints), started
    # once it runs (start_deferred): each start waits for the new thread to be scheduled,
    # milliseconds on a busy node, which the command's start need not wait for.
    deferred: list = field(default_factory=list)
    execution: Execution | None = None
    uploaded_chunks: list[str] = field(default_factory=list)
    # TensorBoard event files the metrics read, and their keys under the learner's folder.
    event_files: list[tuple[Path, str]] = field(default_factory=list)
    stored_summary: str = ""
    failure: RunFailed | None = None

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def run_framework(self) -> str:
        """The framework as the manifest names it: `pytorch 2.13`."""
        return f"{self.run.framework_name} {self.run.framework_version}"

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def model_zip(self) -> Path:
        return self.dirs.model_zip

    @property
    def results_where(self) -> str:
        """Where the results go, as a user names it: `s3 bucket/run-id/`."""
        results = self.manifest.training_results
        return f"{results.type.value} {results.bucket}/{self.id}/"

    # --- the one writer of the run's state -----------------------------------------------

    def write(self, state: RunState, message: str, code: ErrorCode | None = None, **fields) -> Run:
        self.tell(run_state=state.value, message=message.splitlines()[0] if message else "")
        return self.patiently(
            lambda: self.ctx.runs.transition(
                self.id, state, message, code, attempt=self.run.attempt, **fields
            ),
            f"{self.id} -> {state.value}",
        )

    def update(self, **fields) -> bool:
        """Fields of the run without a state change (its pid, its usage)."""
        return self.patiently(
            lambda: self.ctx.runs.update(self.id, self.run.attempt, **fields),
            f"{self.id}: {', '.join(fields)}",
        )

    def patiently(self, action, what: str):
        """A Redis write of this attempt that must not be lost: retried through an outage."""
        return patiently(action, self.settings.redis_outage_seconds, what)

    def tell(self, **fields) -> None:
        """A progress event for monitors (Flower): run id, state, bytes; never a secret."""
        if self.progress is not None:
            try:
                self.progress(dict(fields, run_id=self.id))
            except Exception as exc:
                log.debug("progress event not sent: %s", exc)

    def start_later(self, thread) -> None:
        """Start `thread` once the command runs (or when start_deferred is called first)."""
        self.deferred.append(thread)

    def start_deferred(self) -> None:
        """Start the threads kept for later; again, nothing (a hook's `after` calls it
        before it stops its thread, so that a thread it made was always started)."""
        while self.deferred:
            self.deferred.pop(0).start()

    def note(self, text: str, log_name: str = TRAINING_LOG) -> None:
        note(self.dirs, text, log_name)

    # --- what happened -------------------------------------------------------------------

    def stopped_by(self) -> StopRequest | None:
        """Why the run was stopped, if it was: a stop before or during its command; after
        the command ended by itself, only a cancel counts (the user asked)."""
        request = self.stop.request
        if request is None or self.execution is None or self.execution.stopped:
            return request
        return request if request.reason is StopReason.CANCEL else None

    def check_claim(self) -> None:
        """Raises LostClaim when the supervisor found the run handed to another worker."""
        request = self.stopped_by()
        if request is not None and request.reason is StopReason.LOST:
            raise LostClaim(self.id, self.run.state, RunState.STORING, "claim lost")


def note(dirs: RunDirs, text: str, log_name: str = TRAINING_LOG) -> None:
    """A line of the service's own in one of the run's logs (stamped like the pump's)."""
    with open(dirs.log / log_name, "a") as f:
        f.write(f"{iso(utcnow())} [dlaas] {text}\n")
