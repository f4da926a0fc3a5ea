"""What a worker process has for every run it executes: settings, stores, its GPUs, its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.artifacts import ArtifactStore
from common.crypto import CredentialBox
from common.fleet.nodes import NodeStore
from common.fleet.sizes import ResourceSize
from common.frameworks import Registry
from common.runstore import RunStore
from common.settings import Settings
from worker.environments import EnvironmentCache
from worker.gpus import GpuSet
from worker.sandbox import Sandbox, find_sandbox


@dataclass
class WorkerContext:
    settings: Settings
    runs: RunStore
    nodes: NodeStore
    box: CredentialBox
    artifacts: ArtifactStore
    gpus: GpuSet
    name: str
    # The framework registry and the node's environment cache (built from the settings
    # unless given).
    frameworks: Registry | None = None
    environments: EnvironmentCache | None = None
    # How many runs it runs at once at most (each on its own GPUs, as its own run user).
    slots: int = 1
    # Puts a run id back on its size's queue (the Celery app's send_task); None: cannot.
    requeue: Callable[[str, ResourceSize], None] | None = None
    # How its runs' commands are sandboxed (worker/sandbox.py): found from the settings
    # unless given (the worker finds it at start, as its first run user).
    sandbox: Sandbox | None = None

    def __post_init__(self) -> None:
        if self.sandbox is None:
            self.sandbox = find_sandbox(self.settings)
        if self.frameworks is None:
            self.frameworks = Registry.load(self.settings.frameworks_file)
        if self.environments is None:
            self.environments = EnvironmentCache(self.settings)

    @property
    def accelerator(self) -> str:
        """Which framework variant this worker's runs get: `gpu` with GPUs NVML found."""
        if self.settings.accelerator != "auto":
            return self.settings.accelerator
        return "gpu" if self.gpus.source == "nvml" and len(self.gpus) else "cpu"
