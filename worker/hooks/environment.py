"""The run's environment stays held (no eviction can remove it) until the attempt ends."""

from __future__ import annotations

from worker.attempt import Attempt
from worker.pipeline import Hook


class HoldEnvironment(Hook):
    def after(self, attempt: Attempt) -> None:
        if attempt.environment is not None:
            attempt.environment.release()
