"""What the views share: the settings and every backend client, built once by the app factory
(api/app.py) and kept in `app.extensions["dlaas"]`; views reach them with `current_services()`."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from common.artifacts import ArtifactStore
from common.audit import AuditLog
from common.crypto import CredentialBox
from common.experimentstore import ExperimentStore
from common.fleet.nodes import NodeStore
from common.frameworks import Registry
from common.runstore import RunStore
from common.sessions import SessionStore
from common.settings import Settings
from common.tokens import TokenRegistry

EXTENSION = "dlaas"


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    runs: RunStore
    celery: Celery
    tokens: TokenRegistry
    artifacts: ArtifactStore
    box: CredentialBox
    nodes: NodeStore
    audit: AuditLog
    frameworks: Registry  # what a manifest may name (settings.frameworks_file)
    experiments: ExperimentStore
    sessions: SessionStore  # the dashboard's browser sessions


def current_services() -> Services:
    """The services of the app handling this request."""
    return current_app.extensions[EXTENSION]
