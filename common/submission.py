"""A new run, from a validated manifest to a queued PENDING record: the one way runs are made,
by the API for a submission and by the experiment controller for a trial. Nothing is left
behind when a step fails (the zip stored, then the record, then the queue message)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from common.artifacts import ArtifactStore
from common.clock import iso, utcnow
from common.ids import new_run_id
from common.manifest import Manifest
from common.run import Run
from common.runstore import Quota, RunStore
from common.settings import Settings
from common.states import RunState
from common.taskqueue import enqueue_run

log = logging.getLogger(__name__)


def new_run(
    settings: Settings,
    user: str,
    manifest: Manifest,
    sealed_credentials: str,
    run_id: str | None = None,
    command: str | None = None,
    experiment: dict[str, Any] | None = None,
) -> Run:
    """The record of a run about to be queued (`command`: the manifest's, unless given)."""
    return Run(
        id=run_id or new_run_id(),
        user=user,
        name=manifest.name,
        state=RunState.PENDING,
        framework_name=manifest.framework_name,
        framework_version=manifest.framework_version,
        resource=manifest.resource,
        gpu_count=settings.size_gpus[manifest.resource],
        command=command or manifest.command,
        submitted_at=iso(utcnow()),
        manifest=manifest.to_dict(redact=True),
        credentials=sealed_credentials,
        timeout_seconds=manifest.timeout_seconds,
        experiment=experiment or {},
    )


def queue_run(
    runs: RunStore,
    artifacts: ArtifactStore,
    celery: Celery,
    run: Run,
    zip_bytes: bytes,
    quota: Quota | None = None,
) -> None:
    """Stores the zip, the record and the queue message. Raises what failed (StorageError,
    QuotaExceeded, the broker's error) with nothing of the run left."""
    run.artifact = artifacts.put(run.id, zip_bytes)
    try:
        runs.create(run, quota=quota)
    except Exception:
        artifacts.delete(run.artifact)
        raise
    try:
        enqueue_run(celery, run.id, run.resource)
    except Exception:
        log.exception("queueing %s failed", run.id)
        runs.delete(run.id, run.user)
        artifacts.delete(run.artifact)
        raise
