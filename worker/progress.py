"""Writes a transfer's progress onto the run every second while it goes on, so `dlaas show`
(and Flower, through the task's progress events) can tell how far staging or storing is."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future

from common.runstore import RunStore
from common.storage.base import TransferProgress
from worker.keptthreads import kept_pool

log = logging.getLogger(__name__)


class ProgressReporter:
    """Its loop runs on a thread the process keeps (worker/keptthreads.py), not one of its
    own: `start`, then `finish` once the transfer ended."""

    def __init__(
        self,
        runs: RunStore,
        run_id: str,
        attempt: int,
        progress: TransferProgress,
        tell: Callable[..., None] | None = None,
        every_seconds: float = 1.0,
    ):
        self.runs, self.run_id, self.attempt = runs, run_id, attempt
        self.progress = progress
        self.tell = tell
        self.every = every_seconds
        self._done = threading.Event()
        self._loop: Future | None = None

    def start(self) -> None:
        self._loop = kept_pool("progress").submit(self._run)

    def finish(self) -> None:
        """Stops the loop and writes the transfer's last figures."""
        self._done.set()
        if self._loop is not None:
            futures.wait((self._loop,), timeout=5)
        self._write()

    def _run(self) -> None:
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
