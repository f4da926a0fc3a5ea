"""Query parameters, checked the one way every route does it."""

from __future__ import annotations

from flask import request

from api.errors import ApiError


def int_arg(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    # isdigit() alone lets "²" through, which int() refuses.
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ApiError(400, f"{name}: expected a whole number from {low} to {high}", field=name)
    return int(text)
