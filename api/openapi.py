"""The HTTP contract: the API's OpenAPI 3 document, served at `GET /openapi.json` (no auth).

Each endpoint's contract sits beside its handler, under its route and access rule:

    @bp.put("/quotas/<user>")
    @admin_only("setting quotas")
    @contract(
        "Set a user's quota",
        tag="admin",
        params=[path_param("user", "The user name")],
        body=json_body(ref("Quota")),
        ok={200: json_response("The quota now in force", ref("Quota"))},
        errors=(400, 404),
    )
    def set_quota(user: str): ...

`document(app)` walks the app's URL map and hands each view to apispec's Flask plugin, which
takes the path from the view's rule (`<user>` becomes `{user}`) and the methods from it too.
The view's access rule (api/auth.py) adds the bearer security, 401 and the rate limit's 429
(`@admin_only` also 403); `store=False` drops the 503 for Redis being unreachable; `errors`
names the other statuses it can answer, each with the one error shape of api/errors.py
(`components.responses`; 429 comes with Retry-After). Named schemas go in `SCHEMAS`; view
docstrings stay prose (apispec would read YAML after a `---` line as operations).
tests/api/test_openapi.py fails while a route has no contract, and fuzzes every operation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from apispec import APISpec
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, current_app, jsonify

from api.auth import Access
from common.fleet.sizes import ResourceSize
from common.states import ErrorCode, RunState

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]
View = TypeVar("View", bound=Callable)
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers these for every GET rule by itself
CACHE = "dlaas.openapi"  # app.extensions key of the built document

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


@dataclass(frozen=True)
class Contract:
    """One operation: its success responses `ok`, and the error statuses it can answer."""

    summary: str
    tag: str
    ok: dict[int, dict]
    errors: tuple[int, ...] = ()
    params: tuple[dict, ...] = ()
    body: dict | None = None
    store: bool = True
    description: str = ""

    def operation(self, access: Access | None) -> dict:
        # Every authenticated request counts against its token's rate limit (429).
        statuses = set(self.errors) | ({503} if self.store else set())
        if access is not None:
            statuses |= {401, 429} | ({403} if access is Access.ADMIN else set())
        responses: dict[str, Any] = {str(code): answer for code, answer in sorted(self.ok.items())}
        for code in sorted(statuses):
            responses[str(code)] = f"Error{code}"  # apispec makes it a components.responses $ref
        op: dict = {"summary": self.summary, "tags": [self.tag], "responses": responses}
        if self.description:
            op["description"] = self.description
        if self.params:
            op["parameters"] = list(self.params)
        if self.body:
            op["requestBody"] = self.body
        op["security"] = [{"bearer": []}] if access is not None else []
        return op


def contract(
    summary: str,
    *,
    tag: str,
    ok: dict[int, dict],
    errors: tuple[int, ...] = (),
    params: list[dict] | None = None,
    body: dict | None = None,
    store: bool = True,
    description: str = "",
) -> Callable[[View], View]:
    """Documents the view below it (kept on the view as its `contract`)."""
    found = Contract(summary, tag, ok, tuple(errors), tuple(params or ()), body, store, description)

    def mark(view: View) -> View:
        view.contract = found
        return view

    return mark


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
            "ended_at": nullable(TIMESTAMP),
            "worker": nullable({"type": "string", "description": "The node it runs or ran on"}),
            "status_message": {"type": "string", "description": "Why it failed, in words"},
            "experiment": {"allOf": [ref("TrialOf")], "nullable": True},
        }
    ),
    "TrialOf": obj(
        {
            "id": {"type": "string", "description": "The experiment's id"},
            "trial": {"type": "integer", "minimum": 0},
            "values": {"type": "object", "description": "The trial's hyperparameter values"},
        },
        description="The experiment the run is a trial of (null for a plain run)",
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
                    "run.download",
                    "token.create",
                    "token.revoke",
                    "key.rotate",
                    "node.drain",
                    "node.undrain",
                    "experiment.submit",
                    "experiment.cancel",
                    "experiment.delete",
                    "session.sign_in",
                    "session.sign_out",
                    "session.refused",
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
                    "framework": obj({"name": {"type": "string"}, "version": {"type": "string"}}),
                    "gpu_count": {"type": "integer", "minimum": 0},
                    "command": {"type": "string"},
                    "gpus": {"type": "array", "items": {"type": "integer"}},
                    "exit_code": nullable({"type": "integer"}),
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
                    "attempts": {
                        "type": "array",
                        "items": obj(
                            {
                                "attempt": {"type": "integer", "minimum": 1},
                                "node": {"type": "string"},
                                "started_at": {"type": "string"},
                                "ended_at": nullable({"type": "string"}),
                                "ended": nullable(
                                    {"type": "string", "description": "Its end, in words"}
                                ),
                                "resumed_from": nullable(
                                    obj(
                                        {
                                            "files": {"type": "integer"},
                                            "bytes": {"type": "integer"},
                                            "from": {"type": "string"},
                                        }
                                    )
                                ),
                            }
                        ),
                        "description": "Each claim of the run, oldest first",
                    },
                    "kept_results": nullable(ref("KeptResults")),
                    "waiting": nullable(
                        obj(
                            {
                                "position": {"type": "integer", "minimum": 1},
                                "of": {"type": "integer", "minimum": 1},
                                "reason": {"type": "string"},
                            },
                            description="A PENDING run: its place among the PENDING runs of "
                            "its size, and what it waits for (also its status_message)",
                        )
                    ),
                    # A $ref takes no siblings (OpenAPI 3.0): the null goes beside an allOf.
                    "environment": {"allOf": [ref("RunEnvironment")], "nullable": True},
                    "metrics": {
                        "type": "object",
                        "additionalProperties": ref("MetricSummary"),
                        "description": "Each metric's last and best point, live while it runs",
                    },
                    "manifest": {
                        "type": "object",
                        "description": "The manifest as submitted, secrets redacted",
                    },
                }
            ),
        ]
    },
    "RunEnvironment": obj(
        {
            "key": {"type": "string", "description": "Its content address in the node's cache"},
            "framework": {"type": "string", "description": "Name and version, `pytorch 2.13`"},
            "python": {"type": "string", "description": "The interpreter's version, `3.11.2`"},
            "accelerator": {"type": "string", "enum": ["cpu", "gpu"]},
            "requirements": {
                "type": "integer",
                "minimum": 0,
                "description": "Lines of the model zip's requirements.txt installed",
            },
            "status": {"type": "string", "enum": ["built", "reused"]},
            "seconds": {"type": "number", "description": "Spent building or finding it"},
        },
        description="The run's Python environment, once it is ready (null before)",
    ),
    "MetricPoint": obj(
        {
            "step": {"type": "integer"},
            "value": {"type": "number"},
            "time": TIMESTAMP,
        },
        required=["step", "value", "time"],
    ),
    "MetricSummary": obj(
        {
            "goal": {"type": "string", "enum": ["minimize", "maximize"]},
            "count": {"type": "integer", "minimum": 0, "description": "Points seen"},
            "last": {"allOf": [ref("MetricPoint")], "nullable": True},
            "best": {"allOf": [ref("MetricPoint")], "nullable": True},
        },
        required=["goal", "count", "last", "best"],
    ),
    "MetricSeries": {
        "allOf": [
            ref("MetricSummary"),
            obj(
                {
                    "points": {
                        "type": "array",
                        "items": ref("MetricPoint"),
                        "description": "The points kept, from `since` on (thinned evenly "
                        "past the service's cap; every point is in learner-1/metrics.jsonl)",
                    }
                }
            ),
        ]
    },
    "RunMetrics": obj(
        {
            "model_id": {"type": "string"},
            "state": ref("RunState"),
            "source": {
                "type": "string",
                "enum": ["live", "stored", "summary"],
                "description": "Where they came from: Redis, the stored metrics.jsonl, or "
                "the run's record (summaries without points)",
            },
            "metrics": {"type": "object", "additionalProperties": ref("MetricSeries")},
        },
        required=["model_id", "state", "source", "metrics"],
    ),
    "ResultList": obj(
        {
            "model_id": {"type": "string"},
            "state": ref("RunState"),
            "results_location": obj(
                {
                    "type": {
                        "type": "string",
                        "description": "The store type: local, s3 or bluemix_objectstore (Swift)",
                    },
                    "bucket": {"type": "string"},
                    "prefix": {"type": "string", "description": "The run's folder: `<id>/`"},
                }
            ),
            "files": {
                "type": "array",
                "items": obj(
                    {
                        "path": {
                            "type": "string",
                            "description": "In the run's folder (GET results/<path>)",
                        },
                        "size": {"type": "integer", "description": "Bytes"},
                    }
                ),
            },
            "total_bytes": {"type": "integer"},
        }
    ),
    "ExperimentNew": obj(
        {
            "experiment_id": {"type": "string"},
            "location": {"type": "string", "description": "The experiment's URL path"},
        }
    ),
    "ExperimentState": {"type": "string", "enum": ["RUNNING", "COMPLETED", "FAILED", "HALTED"]},
    "ExperimentBest": obj(
        {
            "trial": {"type": "integer"},
            "run_id": {"type": "string"},
            "objective": {"type": "number"},
            "objective_step": nullable({"type": "integer"}),
            "values": {"type": "object"},
        }
    ),
    "ExperimentSummary": obj(
        {
            "experiment_id": {"type": "string"},
            "url": {"type": "string"},
            "name": {"type": "string"},
            "user": {"type": "string"},
            "state": ref("ExperimentState"),
            "created_at": TIMESTAMP,
            "method": {"type": "string", "description": "As the experiment file named it"},
            "sampler": {"type": "string", "description": "The Optuna sampler that ran"},
            "objective": {"type": "string"},
            "direction": {"type": "string", "enum": ["maximize", "minimize"]},
            "trials": {
                "type": "object",
                "description": "planned, started, and how many are in each trial state",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "best": {"allOf": [ref("ExperimentBest")], "nullable": True},
        }
    ),
    "ExperimentList": obj(
        {
            "experiments": {"type": "array", "items": ref("ExperimentSummary")},
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1},
            "next_offset": nullable({"type": "integer", "description": "null: the last page"}),
        }
    ),
    "TrialEntry": obj(
        {
            "trial": {"type": "integer"},
            "run_id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["creating", "active", "completed", "pruned", "failed", "cancelled"],
            },
            "run_state": {"allOf": [ref("RunState")], "nullable": True},
            "values": {"type": "object"},
            "objective": nullable({"type": "number"}),
            "objective_step": nullable({"type": "integer"}),
            "message": {"type": "string"},
            "best": {"type": "boolean"},
        }
    ),
    "ExperimentDetail": {
        "allOf": [
            ref("ExperimentSummary"),
            obj(
                {
                    "status_message": {"type": "string"},
                    "ended_at": nullable(TIMESTAMP),
                    "cancel_requested": nullable({"type": "string"}),
                    "spec": {"type": "object", "description": "The search, as the service read it"},
                    "leaderboard": {"type": "array", "items": ref("TrialEntry")},
                }
            ),
        ]
    },
    "ExperimentHalted": obj(
        {"experiment_id": {"type": "string"}, "message": {"type": "string", "enum": ["halting"]}}
    ),
    "ExperimentDeleted": obj(
        {
            "experiment_id": {"type": "string"},
            "deleted": {"type": "boolean"},
            "message": {"type": "string"},
        },
        required=["experiment_id", "deleted"],
    ),
    "HaltRequest": obj(
        {"status": {"type": "string", "enum": ["halt"]}}, additionalProperties=False
    ),
    "KeptResults": obj(
        {
            "node": {"type": "string"},
            "path": {"type": "string", "description": "Where on the node"},
            "state": {
                "type": "string",
                "enum": ["kept", "requested", "storing", "stored", "failed"],
            },
            "requested_by": {"type": "string"},
            "requested_at": TIMESTAMP,
            "started_at": TIMESTAMP,
            "at": TIMESTAMP,
            "objects": {"type": "integer", "minimum": 0},
            "bytes": {"type": "integer", "minimum": 0},
            "message": {"type": "string"},
        },
        required=["node", "path", "state"],
        description="A run whose results could not be stored (S303): what its node kept, and "
        "what became of a request to store them again (`POST /v3/models/{run_id}/store`)",
    ),
    "StoreRequested": obj(
        {
            "model_id": {"type": "string"},
            "node": {"type": "string"},
            "state": {"type": "string", "enum": ["requested"]},
            "message": {"type": "string"},
        },
        required=["model_id", "node", "state", "message"],
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
            "run": nullable(
                {"type": "string", "description": "The first of the runs it executes now"}
            ),
            "runs": {
                "type": "array",
                "items": ref("NodeRun"),
                "description": "Every run holding GPUs there now, by first GPU",
            },
            "free_gpus": {"type": "array", "items": {"type": "integer"}},
            "slots": {"type": "integer", "description": "How many runs it runs at once at most"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "sizes": {"type": "array", "items": ref("ResourceSize")},
            "gpus": {"type": "array", "items": {"type": "integer"}},
            "accelerator": {"type": "string", "enum": ["cpu", "gpu"]},
            "environments": {"type": "array", "items": ref("NodeEnvironment")},
            "isolation": obj(
                {
                    "sandbox": {"type": "boolean", "description": "Runs in a sandbox each"},
                    "detail": {"type": "string", "description": "Which, or why none"},
                },
                description="How the node keeps its runs apart",
            ),
        },
        required=["name", "status", "last_heartbeat"],
    ),
    "NodeRun": obj(
        {
            "run_id": {"type": "string"},
            "gpus": {"type": "array", "items": {"type": "integer"}},
            "slot": {"type": "integer", "description": "Its place on the node (its run user)"},
            "size": ref("ResourceSize"),
            "started_at": {"type": "number", "description": "Epoch seconds"},
            "timeout_seconds": {
                "type": "number",
                "description": "Its declared time limit (0: none)",
            },
        },
        required=["run_id", "gpus"],
        description="A run holding GPUs on a node (the node's GPU ledger)",
    ),
    "NodeEnvironment": obj(
        {
            "key": {"type": "string"},
            "framework": {"type": "string", "description": "The framework's name"},
            "version": {"type": "string"},
            "accelerator": {"type": "string", "enum": ["cpu", "gpu"]},
            "python": {"type": "string"},
            "requirements": {"type": "integer", "description": "User requirement lines"},
            "bytes": {"type": "integer", "description": "Its size on disk"},
        },
        required=[],
        description="An environment the node's cache holds, built",
    ),
    "NodeList": obj({"nodes": {"type": "array", "items": ref("Node")}}),
    "QueueList": obj(
        {
            "queues": {
                "type": "array",
                "items": obj(
                    {
                        "size": ref("ResourceSize"),
                        "pending": {"type": "integer", "minimum": 0},
                        "runs": {"type": "array", "items": ref("QueuedRun")},
                    }
                ),
            }
        }
    ),
    "QueuedRun": obj(
        {
            "position": {"type": "integer", "minimum": 1},
            "model_id": nullable({"type": "string", "description": "null: another user's"}),
            "name": nullable({"type": "string"}),
            "user": nullable({"type": "string"}),
            "submitted_at": TIMESTAMP,
            "gpu_count": {"type": "integer", "minimum": 0},
        }
    ),
    "Draining": obj(
        {"name": {"type": "string"}, "status": {"type": "string", "enum": ["draining"]}}
    ),
    "Undrained": obj({"name": {"type": "string"}, "status": {"type": "string", "enum": ["ready"]}}),
    "FrameworkVersion": obj(
        {
            "version": {"type": "string", "description": "As a manifest names it"},
            "python": {"type": "string", "description": "The Python it runs on"},
            "packages": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Requirement specs installed on every node",
            },
            "variants": obj(
                {
                    "cpu": {"type": "array", "items": {"type": "string"}},
                    "gpu": {"type": "array", "items": {"type": "string"}},
                },
                required=[],
                description="Added on nodes with that accelerator",
            ),
            "available": {"type": "boolean", "description": "Whether the service builds it"},
            "unavailable": {"type": "string", "description": 'Why not ("" when it does)'},
            "note": {"type": "string"},
            "nodes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The live nodes holding an environment for it built (with any "
                "requirements)",
            },
        }
    ),
    "Framework": obj(
        {
            "name": {"type": "string", "description": "As a manifest names it"},
            "note": {"type": "string"},
            "versions": {"type": "array", "items": ref("FrameworkVersion")},
        }
    ),
    "FrameworkList": obj(
        {
            "frameworks": {"type": "array", "items": ref("Framework")},
            "live_nodes": {
                "type": "array",
                "items": obj(
                    {
                        "name": {"type": "string"},
                        "status": {"type": "string", "enum": ["ready", "draining"]},
                        "accelerator": nullable({"type": "string", "enum": ["cpu", "gpu", None]}),
                    }
                ),
                "description": "The nodes the `nodes` lists are drawn from",
            },
        }
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


def document(app: Flask) -> dict:
    """The document for `app`'s routes, built once per app (its routes are set by then), a
    fresh copy each time: tools may resolve its references in place."""
    if CACHE not in app.extensions:
        app.extensions[CACHE] = _build(app)
    return copy.deepcopy(app.extensions[CACHE])


def _build(app: Flask) -> dict:
    """A route without a contract is left out (the drift test names it)."""
    spec = APISpec(
        title="dlaas",
        version="3",
        openapi_version="3.0.3",
        plugins=[FlaskPlugin()],
        info={
            "description": "Training runs as a service. Every error answers "
            '`{"error": {"status", "message", "field"?, "code"?}}`.'
        },
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema)
    for code in ERROR_TEXT:
        spec.components.response(f"Error{code}", _error_response(code))
    spec.components.security_scheme(
        "bearer",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from the service's tokens file",
        },
    )
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        found: Contract | None = getattr(view, "contract", None)
        if found is None:
            continue
        operation = found.operation(getattr(view, "access", None))
        methods = sorted(rule.methods - IGNORED_METHODS)
        spec.path(view=view, app=app, operations={m.lower(): operation for m in methods})
    return spec.to_dict()


@bp.get("/openapi.json")
@contract(
    "This document",
    tag="service",
    store=False,
    ok={200: json_response("The OpenAPI 3 document", {"type": "object"})},
)
def openapi_json():
    return jsonify(document(current_app))
