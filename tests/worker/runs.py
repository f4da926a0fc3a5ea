"""A run put straight into the run store and artifact store (no API, no broker), for tests
that call the worker's pipeline as a plain function."""

from __future__ import annotations

import redis

from common.artifacts import ArtifactStore
from common.clock import iso, utcnow
from common.crypto import CredentialBox
from common.fleet.nodes import NodeStore
from common.ids import new_run_id
from common.manifest import parse_manifest
from common.run import Run
from common.runstore import RunStore
from common.settings import Settings
from common.states import RunState
from tests.conftest import environment_values, make_zip
from worker.context import WorkerContext
from worker.gpus import GpuSet


def worker_context(
    settings: Settings, connection: redis.Redis, gpus: tuple[int, ...], name: str
) -> WorkerContext:
    """What dlaas-worker builds at start (worker/main.py), on a test's Redis and settings, with
    the session's environment cache and this machine's package sources."""
    settings = settings.model_copy(update=environment_values())
    return WorkerContext(
        settings=settings,
        runs=RunStore(connection, 3600, lease_ttl_seconds=10),
        nodes=NodeStore(connection),
        box=CredentialBox(settings.secret_key),
        artifacts=ArtifactStore.from_settings(settings),
        gpus=GpuSet(gpus, "declared"),
        name=name,
    )


def submit_manifest(ctx: WorkerContext, manifest_text: str, files: dict | None = None) -> Run:
    manifest = parse_manifest(manifest_text)
    run_id = new_run_id()
    run = Run(
        id=run_id,
        user="alice",
        name=manifest.name,
        state=RunState.PENDING,
        framework_name=manifest.framework_name,
        framework_version=manifest.framework_version,
        resource=manifest.resource,
        gpu_count=ctx.settings.size_gpus[manifest.resource],
        command=manifest.command,
        timeout_seconds=manifest.timeout_seconds,
        submitted_at=iso(utcnow()),
        manifest=manifest.to_dict(redact=True),
        credentials=ctx.box.seal(manifest.secrets()),
    )
    run.artifact = ctx.artifacts.put(run_id, make_zip(files or {"train.sh": "echo model\n"}))
    ctx.runs.create(run)
    return run
