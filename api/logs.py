"""`GET /v3/models/<id>/logs`: the run's log so far (`?since=` a line number), or followed
live (`?follow=true`, server-sent events) until the run ends.

Lines come from the live stream in Redis while they are there; older lines, and the whole
log of an ended run, come from the durable copies in the results bucket.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Response, current_app, request, stream_with_context

from api.auth import authenticated
from api.models import RUN_ID, own_run
from api.openapi import contract, query_param, ref
from api.params import IntArg
from api.services import current_services
from common.layout import LOG_CHUNKS_PREFIX, TRAINING_LOG_KEY, run_key
from common.livelog import LiveLog, LogPiece
from common.manifest import DataStore, Manifest
from common.run import Run
from common.storage import ObjectStore, StorageError, open_store

bp = Blueprint("logs", __name__, url_prefix="/v3/models")

FOLLOW_MAX_SECONDS = 6 * 3600
BLOCK_MS = 1000
SINCE = IntArg(
    "since",
    "First line to send (0 = the first)",
    default=0,
    low=0,
    expected="a line number (0 = the first line)",
)
LOG_HEADERS = {
    "X-Next-Line": {
        "description": "The line number to pass as `since` next time",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Run-State": {"description": "The run's state now", "schema": ref("RunState")},
}


def results_store(run: Run) -> tuple[ObjectStore, DataStore]:
    """The run's results bucket, opened with its sealed credentials."""
    services = current_services()
    connections = services.box.open(run.credentials)
    results = Manifest.from_dict(run.manifest).with_connections(connections).training_results
    return open_store(results, services.settings.local_store_root), results


def _durable_lines(run: Run, since: int, upto: int | None = None) -> Iterator[str]:
    """Lines `since`..`upto` of the stored log: the whole log of an ended run, else the chunk
    objects copied while it runs. Nothing when the bucket cannot be read."""
    try:
        store, results = results_store(run)
        with tempfile.TemporaryDirectory() as tmp:
            if run.state.terminal:
                keys = [(0, run_key(run.id, TRAINING_LOG_KEY))]
            else:
                prefix = run_key(run.id, LOG_CHUNKS_PREFIX)
                keys = [
                    (int(o.key[len(prefix) :].split(".")[0]), o.key)
                    for o in store.list(results.bucket, prefix)
                ]
            for first, key in sorted(keys):
                local = Path(tmp) / "piece"
                try:
                    store.get_file(results.bucket, key, local)
                except StorageError:
                    continue
                with open(local, encoding="utf-8", errors="replace") as f:
                    for number, line in enumerate(f, start=first):
                        if upto is not None and number >= upto:
                            return
                        if number >= since:
                            yield line
    except Exception as exc:  # the bucket may be unreachable: the live stream still serves
        current_app.logger.warning("%s: stored log not readable: %s", run.id, exc)


def _lines(run: Run, since: int) -> tuple[list[str], str, int]:
    """Lines from `since`: (lines, the last live entry id used, the next line number)."""
    live = LiveLog(current_services().redis, run.id)
    pieces = live.read_from_line(since, count=100_000)
    first_live = pieces[0].first_line if pieces else None
    out: list[str] = []
    if run.state.terminal or first_live is None or first_live > since:
        # The stream does not reach back to `since` (trimmed, or the run has ended): read
        # the stored copies, up to where the stream takes over.
        upto = None if run.state.terminal else first_live
        out.extend(_durable_lines(run, since, upto))
        if run.state.terminal and out:
            return out, live.last_id(), since + len(out)
    next_line = since + len(out)
    for piece in pieces:
        for number, line in enumerate(piece.text.splitlines(keepends=True), piece.first_line):
            if number >= next_line:
                out.append(line)
                next_line = number + 1
    return out, (pieces[-1].entry_id if pieces else live.last_id()), next_line


@bp.get("/<run_id>/logs")
@authenticated
@contract(
    "The run's log: so far, or followed live as server-sent events",
    tag="models",
    params=[
        RUN_ID,
        SINCE.parameter(),
        query_param(
            "follow",
            "Follow until the run ends (server-sent events: `status`, `log`, `end`)",
            {"type": "boolean"},
        ),
    ],
    ok={
        200: {
            "description": "Lines since `since`: plain text, or an event stream with `follow=true`",
            "headers": LOG_HEADERS,
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": ref("LogEvent")},
            },
        }
    },
    errors=(400, 404),
)
def logs(run_id: str):
    run = own_run(run_id)
    since = SINCE.read()
    follow = request.args.get("follow", "false").lower() in ("1", "true", "yes")
    if not follow:
        lines, _, next_line = _lines(run, since)
        response = Response("".join(lines), mimetype="text/plain")
        response.headers["X-Next-Line"] = str(next_line)
        response.headers["X-Run-State"] = run.state.value
        return response
    return Response(
        stream_with_context(_follow(run, since)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(kind: str, lines: list[str]) -> str:
    data = "".join(f"data: {line.rstrip(chr(10))}\n" for line in lines) or "data: \n"
    return f"event: {kind}\n{data}\n"


def _after(piece: LogPiece, next_line: int) -> tuple[list[str], int]:
    """The piece's lines from `next_line` on, and the next line number after them."""
    lines = piece.text.splitlines(keepends=True)
    fresh = [line for n, line in enumerate(lines, piece.first_line) if n >= next_line]
    return fresh, max(next_line, piece.first_line + len(lines))


def _follow(run: Run, since: int) -> Iterator[str]:
    services = current_services()
    live = LiveLog(services.redis, run.id)
    state = run.state
    yield _event("status", [state.value])
    lines, last_id, next_line = _lines(run, since)
    if lines:
        yield _event("log", lines)
    deadline = time.monotonic() + FOLLOW_MAX_SECONDS
    while not state.terminal and time.monotonic() < deadline:
        for piece in live.wait(last_id, BLOCK_MS):
            last_id = piece.entry_id
            fresh, next_line = _after(piece, next_line)
            if fresh:
                yield _event("log", fresh)
        current = services.runs.get(run.id)
        if current is None:
            yield _event("end", ["DELETED"])
            return
        if current.state != state:
            state = current.state
            yield _event("status", [state.value])
        if not state.terminal:
            yield ": keep-alive\n\n"
    # The run ended: whatever the stream got after the last read.
    for piece in live.read(last_id):
        fresh, next_line = _after(piece, next_line)
        if fresh:
            yield _event("log", fresh)
    yield _event("end", [state.value])
