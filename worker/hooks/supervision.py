"""The run's supervisor for the whole attempt: its lease kept alive, and its stop flag set on a
cancel, a time limit, a drain or a lost claim (worker/supervisor.py)."""

from __future__ import annotations

from worker.attempt import Attempt
from worker.pipeline import Hook
from worker.supervisor import RunSupervisor


class Supervise(Hook):
    def before(self, attempt: Attempt) -> None:
        ctx = attempt.ctx
        attempt.supervisor = RunSupervisor(
            ctx.runs,
            ctx.nodes,
            attempt.id,
            ctx.name,
            attempt.run.attempt,
            ctx.settings.lease_refresh_seconds,
            stop=attempt.stop,
        )
        attempt.supervisor.start()

    def after(self, attempt: Attempt) -> None:
        attempt.supervisor.finish()
