"""A training run as stored: a flat record of JSON-safe fields, and its history entries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from common.fleet.sizes import ResourceSize
from common.states import ErrorCode, RunState


@dataclass
class Run:
    id: str
    user: str
    name: str
    state: RunState
    framework_name: str
    framework_version: str
    resource: ResourceSize
    gpu_count: int
    command: str
    submitted_at: str
    updated_at: str = ""
    ended_at: str = ""
    worker: str = ""
    gpus: list[int] = field(default_factory=list)
    exit_code: int | None = None
    error_code: ErrorCode | None = None
    status_message: str = ""
    # The manifest with secrets redacted: safe to show.
    manifest: dict[str, Any] = field(default_factory=dict)
    # The full connections, sealed with the service key (common/crypto.py): never shown.
    credentials: str = ""
    # Where the submitted zip waits in the artifact store.
    artifact: str = ""
    # Claims so far; the current one fences every write of the worker executing it.
    attempt: int = 0
    # Set when a user cancels an active run (their name), or deletes one (then also delete).
    cancel_requested: str = ""
    delete_requested: bool = False
    # Why, when the canceller said (an experiment's pruner: "stopped early: ...").
    cancel_reason: str = ""
    # The run's own time limit (manifest execution.timeout), seconds; 0 = none.
    timeout_seconds: float = 0.0
    # The pid of the run's `bash -c` on its worker's node, while it runs.
    process_id: int | None = None
    # What it used: peak_rss_bytes, cpu_seconds, gpu_utilization_mean/max,
    # gpu_memory_peak_bytes; and what staging and storing moved.
    usage: dict[str, Any] = field(default_factory=dict)
    # The transfer going on (or last done): phase, objects/bytes done and total, rate.
    progress: dict[str, Any] = field(default_factory=dict)
    # Its Python environment: key, framework, python, built or reused, seconds.
    environment: dict[str, Any] = field(default_factory=dict)
    # Its metrics' summaries once its command ended: name -> {goal, count, last, best}.
    metrics: dict[str, Any] = field(default_factory=dict)
    # A trial of an experiment: {"id": experiment id, "trial": number, "values": {...}}.
    experiment: dict[str, Any] = field(default_factory=dict)
    # The checkpoints attempts were given back: attempt number -> {files, bytes, from}.
    resumed: dict[str, Any] = field(default_factory=dict)
    # Results that could not be stored (S303), kept on the node: {node, path, state, ...};
    # state kept -> requested (a user asked) -> storing -> stored, or failed (kept still).
    kept_results: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, str]:
        """Flat string fields for one Redis HSET; empty values are left out."""
        # Not asdict(): it deep-copies the manifest and every dict only to dump them as JSON.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in encode_fields(values).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Run:
        values: dict[str, Any] = {k: v for k, v in data.items() if k in _FIELDS}
        values["state"] = RunState(values["state"])
        values["resource"] = ResourceSize(values["resource"])
        values["gpu_count"] = int(values["gpu_count"])
        if "gpus" in values:
            values["gpus"] = json.loads(values["gpus"])
        for name in (
            "manifest",
            "usage",
            "progress",
            "environment",
            "metrics",
            "experiment",
            "resumed",
            "kept_results",
        ):
            if name in values:
                values[name] = json.loads(values[name])
        if "exit_code" in values:
            values["exit_code"] = int(values["exit_code"])
        if "error_code" in values:
            values["error_code"] = ErrorCode(values["error_code"])
        for name in ("attempt", "process_id"):
            if name in values:
                values[name] = int(values[name])
        if "timeout_seconds" in values:
            values["timeout_seconds"] = float(values["timeout_seconds"])
        if "delete_requested" in values:
            values["delete_requested"] = values["delete_requested"] == "True"
        return cls(**values)


_FIELDS = frozenset(f.name for f in fields(Run))


def encode_fields(values: dict[str, Any]) -> dict[str, str | None]:
    """Fields of a run as stored: enums by value, lists and dicts as JSON, the rest as text;
    None for an empty value (not stored: an HSET leaves it out, an update removes it)."""
    out: dict[str, str | None] = {}
    for name, value in values.items():
        if name not in _FIELDS:
            raise TypeError(f"a run has no field {name!r}")
        if value is None or value is False or value == "" or value == [] or value == {}:
            out[name] = None
        elif isinstance(value, RunState | ResourceSize | ErrorCode):
            out[name] = value.value
        elif isinstance(value, list | dict):
            out[name] = json.dumps(value, sort_keys=True)
        else:
            out[name] = str(value)
    return out


@dataclass(frozen=True)
class HistoryEntry:
    state: RunState
    at: str
    message: str = ""
    error_code: ErrorCode | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"state": self.state.value, "at": self.at, "message": self.message}
        if self.error_code:
            out["error_code"] = self.error_code.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> HistoryEntry:
        code = data.get("error_code")
        return cls(
            RunState(data["state"]),
            data["at"],
            data.get("message", ""),
            ErrorCode(code) if code else None,
        )
