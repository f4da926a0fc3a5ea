"""A transfer's progress (staging or storing) written onto the run every second, and sent as
progress events, while the phase moves data (worker/progress.py)."""

from __future__ import annotations

from collections.abc import Callable

from common.storage.base import TransferProgress
from worker.attempt import Attempt
from worker.pipeline import Hook
from worker.progress import ProgressReporter


class ReportTransfer(Hook):
    def __init__(self, phase: str):
        self.phase = phase

    @classmethod
    def named(cls, phase: str) -> Callable[[], ReportTransfer]:
        """The hook for one kind of transfer (`downloading`, `storing`), as a phase lists it."""
        return lambda: cls(phase)

    def before(self, attempt: Attempt) -> None:
        self.reporter = ProgressReporter(
            attempt.ctx.runs,
            attempt.id,
            attempt.run.attempt,
            TransferProgress(self.phase),
            attempt.tell,
        )
        self.reporter.start()
        attempt.transfer = self.reporter.progress

    def after(self, attempt: Attempt) -> None:
        attempt.transfer = None
        self.reporter.finish()
