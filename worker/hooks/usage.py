"""What the command used (peak memory, CPU time, GPU utilisation and memory), sampled while it
runs and added to the run's usage (worker/usage.py)."""

from __future__ import annotations

from worker.attempt import Attempt
from worker.pipeline import Hook
from worker.usage import UsageSampler


class SampleUsage(Hook):
    def before(self, attempt: Attempt) -> None:
        self.sampler = UsageSampler(tuple(attempt.run.gpus))
        attempt.samplers.append(self.sampler)

    def after(self, attempt: Attempt) -> None:
        self.sampler.close()
        attempt.usage.update(self.sampler.summary())
