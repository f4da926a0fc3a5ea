"""`GET /health`: is the API up, and can it reach Redis."""

from __future__ import annotations

import redis
from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    services = current_app.extensions["dlaas"]
    try:
        services.redis.ping()
    except redis.RedisError as exc:
        return jsonify({"status": "unavailable", "redis": f"unreachable: {exc}"}), 503
    return jsonify({"status": "ok", "redis": "ok"})
