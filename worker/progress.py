"""Writes a transfer's progress onto the run every second while it goes on, so `dlaas show`
(and Flower, through the task's progress events) can tell how far staging or storing is."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from common.runstore import RunStore
from common.storage.base import TransferProgress

log = logging.getLogger(__name__)


class ProgressReporter(threading.Thread):
    def __init__(
        self,
        runs: RunStore,
        run_id: str,
        attempt: int,
        progress: TransferProgress,
        tell: Callable[..., None] | None = None,
        every_seconds: float = 1.0,
    ):
        super().__init__(name=f"progress-{run_id}", daemon=True)
        self.runs, self.run_id, self.attempt = runs, run_id, attempt
        self.progress = progress
        self.tell = tell
        self.every = every_seconds
        self._done = threading.Event()

    def finish(self) -> None:
        """Stops the thread and writes the transfer's last figures."""
        self._done.set()
        self.join(timeout=5)
        self._write()

    def run(self) -> None:
        while not self._done.wait(self.every):
            self._write()

    def _write(self) -> None:
        snapshot = self.progress.snapshot()
        try:
            self.runs.update(self.run_id, self.attempt, progress=snapshot)
            if self.tell is not None:
                self.tell(**snapshot)
        except Exception as exc:  # progress is a courtesy: never fail the run over it
            log.debug("%s: progress not written: %s", self.run_id, exc)
