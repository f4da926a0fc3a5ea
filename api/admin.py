"""`/v3/admin`: tokens, key rotation and the audit log (the admin role only)."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from api.auth import audit, require_admin
from api.errors import ApiError
from api.params import int_arg

bp = Blueprint("admin", __name__, url_prefix="/v3/admin")

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def _services():
    return current_app.extensions["dlaas"]


@bp.get("/tokens")
def list_tokens():
    require_admin("listing tokens")
    return jsonify({"tokens": _services().tokens.list()})


@bp.post("/tokens")
def create_token():
    """`{"user": "bob", "note": "..."}`: a new token for bob, shown in this answer only."""
    principal = require_admin("creating tokens")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not set(body) <= {"user", "note"}:
        raise ApiError(400, 'expected a JSON body {"user": NAME, "note": TEXT}', field="user")
    user, note = body.get("user"), body.get("note", "")
    if not isinstance(user, str) or not USER_NAME.match(user):
        raise ApiError(
            400,
            "user: 1-64 letters, digits or . _ @ - (starting with a letter or digit)",
            field="user",
        )
    if not isinstance(note, str) or len(note) > 200:
        raise ApiError(400, "note: text of at most 200 characters", field="note")
    token, record = _services().tokens.create(user, principal.user, note)
    audit("token.create", record["id"], user=user)
    return jsonify({"token": token, **record}), 201


@bp.delete("/tokens/<token_id>")
def revoke_token(token_id: str):
    require_admin("revoking tokens")
    tokens = _services().tokens
    record = tokens.revoke(token_id)
    if record is None:
        if tokens.in_file(token_id):
            raise ApiError(
                409, f"token {token_id} is in the tokens file: remove it there", code="in_file"
            )
        raise ApiError(404, f"no token {token_id!r}")
    audit("token.revoke", token_id, user=record["user"])
    return jsonify({"id": token_id, "user": record["user"], "revoked": True})


@bp.post("/rotate-key")
def rotate_key():
    """Re-encrypts every run's stored credentials with the newest DLAAS_SECRET_KEY key."""
    require_admin("rotating the key")
    services = _services()
    done, unreadable = services.runs.reseal_credentials(services.box.rotate)
    audit("key.rotate", "credentials", resealed=done, unreadable=len(unreadable))
    return jsonify(
        {"resealed": done, "unreadable": unreadable, "keys_configured": services.box.key_count}
    )


@bp.get("/audit")
def read_audit():
    require_admin("reading the audit log")
    limit = int_arg("limit", 100, 1, 1000)
    actor = request.args.get("actor") or None
    return jsonify({"entries": _services().audit.recent(limit, actor)})
