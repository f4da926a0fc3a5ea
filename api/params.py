"""Query parameters, declared once: each checks what a request gives, and documents itself
for the view's contract (api/openapi.py)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request

from api.errors import ApiError
from api.openapi import query_param


@dataclass(frozen=True)
class IntArg:
    """A whole number from `low` to `high` (no bound when None), `default` when absent."""

    name: str
    description: str
    default: int
    low: int
    high: int | None = None
    expected: str = ""  # what the 400 says is expected, when not "a whole number from ..."

    def read(self) -> int:
        text = request.args.get(self.name)
        if text is None:
            return self.default
        # isdigit() alone lets "²" through, which int() refuses.
        if text.isascii() and text.isdigit():
            try:
                value = int(text)
            except ValueError:  # thousands of digits: past Python's limit for int(str)
                value = None
            if value is not None and self._within(value):
                return value
        raise ApiError(400, f"{self.name}: expected {self._expected()}", field=self.name)

    def parameter(self) -> dict:
        schema: dict = {"type": "integer", "minimum": self.low}
        if self.high is not None:
            schema["maximum"] = self.high
        return query_param(self.name, self.description, schema)

    def _within(self, value: int) -> bool:
        return self.low <= value and (self.high is None or value <= self.high)

    def _expected(self) -> str:
        if self.expected:
            return self.expected
        if self.high is None:
            return f"a whole number from {self.low}"
        return f"a whole number from {self.low} to {self.high}"
