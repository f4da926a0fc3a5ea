"""The Flask app factory: settings, Redis, the run store and the Celery client are passed in.
The framework registry is read here, once: a registry file that cannot be used stops the app
from being made (RegistryError, naming the file), not a request later."""

from __future__ import annotations

import redis
from celery import Celery
from flask import Flask

from api.errors import register_error_handlers
from api.services import EXTENSION, Services
from common.artifacts import ArtifactStore
from common.audit import AuditLog
from common.crypto import CredentialBox
from common.experimentstore import ExperimentStore
from common.fleet.nodes import NodeStore
from common.frameworks import Registry
from common.runstore import RunStore
from common.sessions import SessionStore
from common.settings import Settings
from common.taskqueue import make_celery
from common.tokens import TokenRegistry


def create_app(
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
    celery_app: Celery | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    frameworks = Registry.load(settings.frameworks_file)  # None: the built-in registry
    redis_client = redis_client or redis.Redis.from_url(settings.redis_url, decode_responses=True)
    app = Flask("dlaas")
    # Werkzeug stops reading a body past this (413) instead of buffering it whole.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_zip_bytes + settings.max_manifest_bytes + 65536
    app.json.sort_keys = False
    app.extensions[EXTENSION] = Services(
        settings=settings,
        redis=redis_client,
        runs=RunStore(redis_client, settings.retention_seconds),
        celery=celery_app or make_celery(settings, main="dlaas-api"),
        tokens=TokenRegistry(redis_client, settings.tokens_file, settings.admin_users),
        artifacts=ArtifactStore.from_settings(settings),
        box=CredentialBox(settings.secret_key),
        nodes=NodeStore(redis_client),
        audit=AuditLog(redis_client, settings.audit_max_entries),
        frameworks=frameworks,
        experiments=ExperimentStore(redis_client, settings.retention_seconds),
        sessions=SessionStore(redis_client, settings.session_hours),
    )
    from api.admin import bp as admin_bp
    from api.experiments import bp as experiments_bp
    from api.frameworks import bp as frameworks_bp
    from api.health import bp as health_bp
    from api.logs import bp as logs_bp
    from api.metrics import bp as metrics_bp
    from api.models import bp as models_bp
    from api.nodes import bp as nodes_bp
    from api.nodes import queues_bp
    from api.openapi import bp as openapi_bp
    from api.results import bp as results_bp
    from api.runmetrics import bp as runmetrics_bp
    from api.ui import bp as ui_bp
    from api.ui import root_bp as ui_root_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(models_bp)
    app.register_blueprint(nodes_bp)
    app.register_blueprint(queues_bp)
    app.register_blueprint(frameworks_bp)
    app.register_blueprint(logs_bp)
    app.register_blueprint(runmetrics_bp)
    app.register_blueprint(results_bp)
    app.register_blueprint(experiments_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(ui_bp)
    app.register_blueprint(ui_root_bp)
    register_error_handlers(app)
    return app
