"""Reads a multipart upload part by part, with a size limit per field enforced while reading:
a part past its limit ends the request with 413 naming the field, before the rest arrives
(werkzeug's own form parser would spool every file part whole first)."""

from __future__ import annotations

from flask import request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from api.errors import ApiError

CHUNK = 64 * 1024
OTHER_FIELD_BYTES = 64 * 1024  # fields the service does not use are read, then dropped
MAX_PARTS = 16


def read_form(limits: dict[str, int]) -> dict[str, bytes]:
    """{field: its bytes} for the fields named in `limits`, each at most its limit."""
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary:
        fields = ", ".join(limits)
        raise ApiError(400, f"expected a multipart/form-data body with the fields {fields}")
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_parts=MAX_PARTS)
    found: dict[str, bytearray] = {}
    name, part, limit = "", None, 0
    stream = request.stream
    try:
        while not decoder.complete:
            data = stream.read(CHUNK)
            decoder.receive_data(data or None)
            event = decoder.next_event()
            while not isinstance(event, Epilogue | NeedData):
                if isinstance(event, Field | File):
                    name = event.name
                    limit = limits.get(name, OTHER_FIELD_BYTES)
                    if name in limits and name in found:
                        raise ApiError(400, f"{name}: given more than once", field=name)
                    part = found.setdefault(name, bytearray()) if name in limits else bytearray()
                elif isinstance(event, Data) and part is not None:
                    part.extend(event.data)
                    if len(part) > limit:
                        raise ApiError(
                            413, f"{name}: larger than the limit of {limit} bytes", field=name
                        )
                event = decoder.next_event()
            if isinstance(event, Epilogue):
                break
    except ValueError as exc:  # malformed multipart (werkzeug raises ValueError)
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    return {k: bytes(v) for k, v in found.items()}
