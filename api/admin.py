"""`/v3/admin`: tokens, key rotation and the audit log (the admin role only)."""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, request

from api.auth import admin_only, audit, caller
from api.errors import ApiError
from api.openapi import contract, json_body, json_response, obj, path_param, query_param, ref
from api.params import IntArg
from api.services import current_services

bp = Blueprint("admin", __name__, url_prefix="/v3/admin")

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
NOTE_MAX = 200
AUDIT_LIMIT = IntArg("limit", "How many entries (default 100)", default=100, low=1, high=1000)


@bp.get("/tokens")
@admin_only("listing tokens")
@contract(
    "Every token: made with `dlaas admin` (Redis) or in the tokens file (admins)",
    tag="admin",
    ok={
        200: json_response(
            "The tokens (never the tokens themselves)",
            obj({"tokens": {"type": "array", "items": ref("TokenRecord")}}),
        )
    },
)
def list_tokens():
    return jsonify({"tokens": current_services().tokens.list()})


@bp.post("/tokens")
@admin_only("creating tokens")
@contract(
    "Make a token for a user (admins); it is shown in this answer only",
    tag="admin",
    body=json_body(
        obj(
            {
                "user": {"type": "string", "pattern": USER_NAME.pattern},
                "note": {"type": "string", "maxLength": NOTE_MAX},
            },
            required=["user"],
            additionalProperties=False,
        )
    ),
    ok={201: json_response("Made", ref("NewToken"))},
    errors=(400,),
)
def create_token():
    """`{"user": "bob", "note": "..."}`: a new token for bob, shown in this answer only."""
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
    if not isinstance(note, str) or len(note) > NOTE_MAX:
        raise ApiError(400, f"note: text of at most {NOTE_MAX} characters", field="note")
    token, record = current_services().tokens.create(user, caller().user, note)
    audit("token.create", record["id"], user=user)
    return jsonify({"token": token, **record}), 201


@bp.delete("/tokens/<token_id>")
@admin_only("revoking tokens")
@contract(
    "Revoke a token made with `dlaas admin` (admins); it stops working at once",
    tag="admin",
    params=[path_param("token_id", "The token's id, from the token list")],
    ok={
        200: json_response(
            "Revoked",
            obj(
                {
                    "id": {"type": "string"},
                    "user": {"type": "string"},
                    "revoked": {"type": "boolean"},
                }
            ),
        )
    },
    errors=(404, 409),
)
def revoke_token(token_id: str):
    tokens = current_services().tokens
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
@admin_only("rotating the key")
@contract(
    "Re-encrypt every run's stored credentials with the newest DLAAS_SECRET_KEY key (admins)",
    tag="admin",
    ok={
        200: json_response(
            "Done",
            obj(
                {
                    "resealed": {"type": "integer", "minimum": 0},
                    "unreadable": {"type": "array", "items": {"type": "string"}},
                    "keys_configured": {"type": "integer", "minimum": 1},
                }
            ),
        )
    },
)
def rotate_key():
    """Re-encrypts every run's stored credentials with the newest DLAAS_SECRET_KEY key."""
    services = current_services()
    done, unreadable = services.runs.reseal_credentials(services.box.rotate)
    audit("key.rotate", "credentials", resealed=done, unreadable=len(unreadable))
    return jsonify(
        {"resealed": done, "unreadable": unreadable, "keys_configured": services.box.key_count}
    )


@bp.get("/audit")
@admin_only("reading the audit log")
@contract(
    "The audit log, newest first (admins)",
    tag="admin",
    params=[
        AUDIT_LIMIT.parameter(),
        query_param("actor", "Only this user's actions", {"type": "string"}),
    ],
    ok={
        200: json_response(
            "Entries", obj({"entries": {"type": "array", "items": ref("AuditEntry")}})
        )
    },
    errors=(400,),
)
def read_audit():
    limit = AUDIT_LIMIT.read()
    actor = request.args.get("actor") or None
    return jsonify({"entries": current_services().audit.recent(limit, actor)})
