"""What a worker process has for every run it executes: settings, stores, its GPUs, its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.artifacts import ArtifactStore
from common.crypto import CredentialBox
from common.nodes import NodeStore
from common.runstore import RunStore
from common.settings import Settings
from common.sizes import ResourceSize
from worker.gpus import GpuSet


@dataclass
class WorkerContext:
    settings: Settings
    runs: RunStore
    nodes: NodeStore
    box: CredentialBox
    artifacts: ArtifactStore
    gpus: GpuSet
    name: str
    # Puts a run id back on its size's queue (the Celery app's send_task); None: cannot.
    requeue: Callable[[str, ResourceSize], None] | None = None
