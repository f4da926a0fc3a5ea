"""`GET /health`: is the API up, and can it reach Redis."""

from __future__ import annotations

import redis
from flask import Blueprint, jsonify

from api.openapi import contract, json_response, ref
from api.services import current_services

bp = Blueprint("health", __name__)


@bp.get("/health")
@contract(
    "Is the API up, and can it reach Redis",
    tag="service",
    store=False,
    ok={
        200: json_response("Up, and Redis answers", ref("Health")),
        503: json_response("Up, but Redis does not answer", ref("Health")),
    },
)
def health():
    try:
        current_services().redis.ping()
    except redis.RedisError as exc:
        return jsonify({"status": "unavailable", "redis": f"unreachable: {exc}"}), 503
    return jsonify({"status": "ok", "redis": "ok"})
