"""The node record says which run it is busy with, for `dlaas nodes` and /metrics."""

from __future__ import annotations

from worker.attempt import Attempt
from worker.pipeline import Hook


class MarkNodeBusy(Hook):
    def before(self, attempt: Attempt) -> None:
        attempt.ctx.nodes.set_running(attempt.ctx.name, attempt.id)

    def after(self, attempt: Attempt) -> None:
        attempt.ctx.nodes.set_running(attempt.ctx.name, None)
