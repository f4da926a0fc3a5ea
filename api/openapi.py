"""The HTTP contract: the API's OpenAPI 3 document, built as Python data and served at
`GET /openapi.json` (no auth).

To document a new endpoint, add one entry to `PATHS` (Flask's `<name>` becomes `{name}`):

    "/v3/admin/quotas/{user}": {
        "put": operation(
            "Set a user's quota",
            tag="admin",
            params=[path_param("user", "The user name")],
            body=json_body(ref("Quota")),
            ok={200: json_response("The quota now in force", ref("Quota"))},
            errors=(400, 403, 404),
        ),
    },

`operation()` adds the bearer security, the 401 and the rate limit's 429 (pass `auth=False`
for a public one) and a 503 for Redis being unreachable (`store=False` for none); `errors`
names the other statuses it can answer, each with the one error shape of api/errors.py
(`components.responses`; 429 comes with Retry-After).
Named schemas go in `SCHEMAS`. tests/api/test_openapi.py fails while a Flask rule and this
document disagree on a path or method, and fuzzes every documented operation.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, jsonify

from common.sizes import ResourceSize
from common.states import ErrorCode, RunState

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]

ERROR_TEXT = {
    400: "The request is malformed: a missing or invalid field, parameter or upload",
    401: "No bearer token, or one the service does not know",
    403: "The token's user may not do this",
    404: "No such resource (another user's run answers exactly like a missing one, except to "
    "admins)",
    409: "The resource is not in a state that allows this (e.g. the run has already ended)",
    413: "The body, or one of its parts, is larger than the service's limit",
    422: "Well-formed, but the service cannot accept it (e.g. a store type it does not enable)",
    429: "Past the token's request rate limit, or (submissions) the user's run quota; retry "
    "after Retry-After seconds",
    503: "A backend (Redis, the artifact store, the broker) is unreachable; try again shortly",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def obj(properties: dict[str, Schema], required: list[str] | None = None, **extra) -> Schema:
    """A JSON object whose listed properties are all required unless `required` says."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


def json_response(description: str, schema: Schema, headers: dict | None = None) -> dict:
    answer: dict = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def json_body(schema: Schema) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def path_param(name: str, description: str, schema: Schema | None = None) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def query_param(name: str, description: str, schema: Schema) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def operation(
    summary: str,
    *,
    tag: str,
    ok: dict[int, dict],
    errors: tuple[int, ...] = (),
    params: list[dict] | None = None,
    body: dict | None = None,
    auth: bool = True,
    store: bool = True,
    description: str = "",
) -> dict:
    """One operation: its success responses `ok`, and the error statuses it can answer."""
    # Every authenticated request counts against its token's rate limit (429).
    statuses = set(errors) | ({401, 429} if auth else set()) | ({503} if store else set())
    responses = {str(code): answer for code, answer in sorted(ok.items())}
    for code in sorted(statuses):
        responses[str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    op: dict = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    op["security"] = [{"bearer": []}] if auth else []
    return op


RUN_ID = path_param(
    "run_id", "The run's `model_id` (`training-` and 9 letters or digits)", {"type": "string"}
)
TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO-8601, UTC"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "status": {"type": "integer", "description": "The HTTP status, again"},
                    "message": {"type": "string", "description": "What went wrong, actionable"},
                    "field": {
                        "type": "string",
                        "description": "The request field (or manifest path) at fault",
                    },
                    "code": {
                        "type": "string",
                        "description": "An error code (C101 manifest, C102 zip, ...) or a "
                        "machine-readable reason",
                    },
                },
                required=["status", "message"],
            )
        }
    ),
    "RunState": {"type": "string", "enum": [s.value for s in RunState]},
    "ResourceSize": {"type": "string", "enum": [s.value for s in ResourceSize]},
    "ErrorCode": nullable({"type": "string", "enum": [c.value for c in ErrorCode] + [None]}),
    "Submitted": obj(
        {
            "model_id": {"type": "string"},
            "location": {"type": "string", "description": "The run's URL path"},
        }
    ),
    "RunSummary": obj(
        {
            "model_id": {"type": "string"},
            "url": {"type": "string"},
            "user": {"type": "string", "description": "Who submitted it"},
            "name": {"type": "string"},
            "state": ref("RunState"),
            "submitted_at": TIMESTAMP,
            "resource": ref("ResourceSize"),
            "error_code": ref("ErrorCode"),
        }
    ),
    "TokenRecord": obj(
        {
            "id": {"type": "string", "description": "The token's public id (12 hex digits)"},
            "user": {"type": "string"},
            "source": {"type": "string", "enum": ["redis", "file"]},
            "created_at": TIMESTAMP,
            "created_by": {"type": "string"},
            "note": {"type": "string"},
        },
        required=["id", "user", "source"],
    ),
    "NewToken": obj(
        {
            "token": {"type": "string", "description": "The token: shown in this answer only"},
            "id": {"type": "string"},
            "user": {"type": "string"},
            "created_at": TIMESTAMP,
            "created_by": {"type": "string"},
            "note": {"type": "string"},
        }
    ),
    "AuditEntry": obj(
        {
            "id": {"type": "string"},
            "time": TIMESTAMP,
            "actor": {"type": "string"},
            "action": {
                "type": "string",
                "enum": [
                    "run.submit",
                    "run.cancel",
                    "run.delete",
                    "token.create",
                    "token.revoke",
                    "key.rotate",
                    "node.drain",
                ],
            },
            "target": {"type": "string"},
            "address": {"type": "string"},
        },
        additionalProperties={"type": "string"},
    ),
    "RunList": obj(
        {
            "models": {"type": "array", "items": ref("RunSummary")},
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1},
            "next_offset": nullable({"type": "integer", "minimum": 0}),
        }
    ),
    "HistoryEntry": obj(
        {
            "state": ref("RunState"),
            "at": TIMESTAMP,
            "message": {"type": "string"},
            "error_code": {"type": "string", "enum": [c.value for c in ErrorCode]},
        },
        required=["state", "at", "message"],
    ),
    "RunDetail": {
        "allOf": [
            ref("RunSummary"),
            obj(
                {
                    "updated_at": nullable(TIMESTAMP),
                    "ended_at": nullable(TIMESTAMP),
                    "framework": obj({"name": {"type": "string"}, "version": {"type": "string"}}),
                    "gpu_count": {"type": "integer", "minimum": 0},
                    "command": {"type": "string"},
                    "worker": nullable({"type": "string"}),
                    "gpus": {"type": "array", "items": {"type": "integer"}},
                    "exit_code": nullable({"type": "integer"}),
                    "status_message": {"type": "string"},
                    "usage": {"type": "object", "description": "What the run used, so far"},
                    "progress": {"type": "object", "description": "The transfer going on"},
                    "results_location": obj(
                        {
                            "type": nullable({"type": "string"}),
                            "bucket": nullable({"type": "string"}),
                            "prefix": {"type": "string"},
                        }
                    ),
                    "history": {"type": "array", "items": ref("HistoryEntry")},
                    "manifest": {
                        "type": "object",
                        "description": "The manifest as submitted, secrets redacted",
                    },
                }
            ),
        ]
    },
    "HaltRequest": obj(
        {"status": {"type": "string", "enum": ["halt"]}}, additionalProperties=False
    ),
    "Halted": obj(
        {
            "model_id": {"type": "string"},
            "state": ref("RunState"),
            "message": {"type": "string", "enum": ["halted", "halting"]},
        }
    ),
    "Deleted": obj(
        {
            "model_id": {"type": "string"},
            "deleted": {"type": "boolean"},
            "message": {"type": "string"},
        },
        required=["model_id", "deleted"],
    ),
    "LogEvent": obj(
        {
            "event": {"type": "string", "enum": ["status", "log", "end"]},
            "data": {
                "type": "string",
                "description": "status: the run's new state; log: its new lines (one `data:` "
                "line each); end: the final state, or DELETED",
            },
        },
        description="One server-sent event of a followed log (keep-alive comments between)",
    ),
    "Node": obj(
        {
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["ready", "draining", "lost"]},
            "last_heartbeat": {"type": "number", "description": "Epoch seconds"},
            "run": nullable({"type": "string", "description": "The run it executes now"}),
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "sizes": {"type": "array", "items": ref("ResourceSize")},
            "gpus": {"type": "array", "items": {"type": "integer"}},
        },
        required=["name", "status", "last_heartbeat"],
    ),
    "NodeList": obj({"nodes": {"type": "array", "items": ref("Node")}}),
    "Draining": obj(
        {"name": {"type": "string"}, "status": {"type": "string", "enum": ["draining"]}}
    ),
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "redis": {"type": "string"},
        }
    ),
}


def _error_response(code: int) -> dict:
    answer = json_response(ERROR_TEXT[code], ref("Error"))
    if code in (429, 503):
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again",
                "required": code == 429,
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return answer


LOG_HEADERS = {
    "X-Next-Line": {
        "description": "The line number to pass as `since` next time",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Run-State": {"description": "The run's state now", "schema": ref("RunState")},
}

PATHS: dict[str, dict[str, dict]] = {
    "/health": {
        "get": operation(
            "Is the API up, and can it reach Redis",
            tag="service",
            auth=False,
            store=False,
            ok={
                200: json_response("Up, and Redis answers", ref("Health")),
                503: json_response("Up, but Redis does not answer", ref("Health")),
            },
        )
    },
    "/openapi.json": {
        "get": operation(
            "This document",
            tag="service",
            auth=False,
            store=False,
            ok={200: json_response("The OpenAPI 3 document", {"type": "object"})},
        )
    },
    "/metrics": {
        "get": operation(
            "The service's figures, Prometheus text format",
            tag="service",
            auth=False,
            ok={
                200: {
                    "description": "Runs by state and size, queue lengths, nodes, GPUs, ...",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        )
    },
    "/v3/models": {
        "post": operation(
            "Submit a training run",
            tag="models",
            description="Multipart: the model definition (a zip) and its manifest (YAML, as a "
            "file or a plain form field). The run is queued by its resource size.",
            body={
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": obj(
                            {
                                "manifest": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "The manifest, YAML",
                                },
                                "model_definition": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "The model definition, a .zip",
                                },
                            }
                        ),
                        "encoding": {"model_definition": {"contentType": "application/zip"}},
                    }
                },
            },
            ok={
                201: json_response(
                    "Queued (PENDING)",
                    ref("Submitted"),
                    headers={
                        "Location": {
                            "description": "The run's URL path",
                            "schema": {"type": "string"},
                        }
                    },
                )
            },
            errors=(400, 413, 422, 429),
        ),
        "get": operation(
            "List the user's runs (or every user's, `all=true`), newest first",
            tag="models",
            params=[
                query_param(
                    "limit", "Runs per page", {"type": "integer", "minimum": 1, "maximum": 200}
                ),
                query_param("offset", "Runs to skip", {"type": "integer", "minimum": 0}),
                query_param(
                    "all",
                    "Every user's runs (admins only)",
                    {"type": "string", "enum": ["true", "false"]},
                ),
            ],
            ok={200: json_response("One page of runs", ref("RunList"))},
            errors=(400, 403),
        ),
    },
    "/v3/models/{run_id}": {
        "get": operation(
            "Show a run: state, history, usage, where its results go",
            tag="models",
            params=[RUN_ID],
            ok={200: json_response("The run", ref("RunDetail"))},
            errors=(404,),
        ),
        "patch": operation(
            'Cancel a run: `{"status": "halt"}`',
            tag="models",
            params=[RUN_ID],
            body=json_body(ref("HaltRequest")),
            ok={
                200: json_response("Halted (it had not started)", ref("Halted")),
                202: json_response("Halting: its worker stops it", ref("Halted")),
            },
            errors=(400, 404, 409),
        ),
        "delete": operation(
            "Delete a run from the service (never its outputs in the user's bucket)",
            tag="models",
            params=[RUN_ID],
            ok={
                200: json_response("Deleted", ref("Deleted")),
                202: json_response(
                    "An active run: cancelled first, removed once it has stopped", ref("Deleted")
                ),
            },
            errors=(404, 409),
        ),
    },
    "/v3/models/{run_id}/logs": {
        "get": operation(
            "The run's log: so far, or followed live as server-sent events",
            tag="models",
            params=[
                RUN_ID,
                query_param(
                    "since", "First line to send (0 = the first)", {"type": "integer", "minimum": 0}
                ),
                query_param(
                    "follow",
                    "Follow until the run ends (server-sent events: `status`, `log`, `end`)",
                    {"type": "boolean"},
                ),
            ],
            ok={
                200: {
                    "description": "Lines since `since`: plain text, or an event stream with "
                    "`follow=true`",
                    "headers": LOG_HEADERS,
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "text/event-stream": {"schema": ref("LogEvent")},
                    },
                }
            },
            errors=(400, 404),
        )
    },
    "/v3/nodes": {
        "get": operation(
            "The fleet's workers: ready, draining or lost",
            tag="nodes",
            ok={200: json_response("Every node seen lately", ref("NodeList"))},
        )
    },
    "/v3/nodes/{name}/drain": {
        "post": operation(
            "Drain a worker: it takes no new run; its running run finishes (admins only)",
            tag="nodes",
            params=[path_param("name", "The worker's name")],
            ok={202: json_response("Draining", ref("Draining"))},
            errors=(403, 404),
        )
    },
    "/v3/admin/tokens": {
        "get": operation(
            "Every token: made with `dlaas admin` (Redis) or in the tokens file (admins)",
            tag="admin",
            ok={
                200: json_response(
                    "The tokens (never the tokens themselves)",
                    obj({"tokens": {"type": "array", "items": ref("TokenRecord")}}),
                )
            },
            errors=(403,),
        ),
        "post": operation(
            "Make a token for a user (admins); it is shown in this answer only",
            tag="admin",
            body=json_body(
                obj(
                    {
                        "user": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"},
                        "note": {"type": "string", "maxLength": 200},
                    },
                    required=["user"],
                    additionalProperties=False,
                )
            ),
            ok={201: json_response("Made", ref("NewToken"))},
            errors=(400, 403),
        ),
    },
    "/v3/admin/tokens/{token_id}": {
        "delete": operation(
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
            errors=(403, 404, 409),
        )
    },
    "/v3/admin/rotate-key": {
        "post": operation(
            "Re-encrypt every run's stored credentials with the newest DLAAS_SECRET_KEY key "
            "(admins)",
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
            errors=(403,),
        )
    },
    "/v3/admin/audit": {
        "get": operation(
            "The audit log, newest first (admins)",
            tag="admin",
            params=[
                query_param(
                    "limit",
                    "How many entries (default 100)",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                query_param("actor", "Only this user's actions", {"type": "string"}),
            ],
            ok={
                200: json_response(
                    "Entries", obj({"entries": {"type": "array", "items": ref("AuditEntry")}})
                )
            },
            errors=(400, 403),
        )
    },
}


def document() -> dict:
    """A fresh copy each time: tools may resolve its references in place."""
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "dlaas",
                "version": "3",
                "description": "Training runs as a service. Every error answers "
                '`{"error": {"status", "message", "field"?, "code"?}}`.',
            },
            "paths": PATHS,
            "components": {
                "schemas": SCHEMAS,
                "responses": {f"Error{code}": _error_response(code) for code in ERROR_TEXT},
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A token from the service's tokens file",
                    }
                },
            },
        }
    )


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document())
