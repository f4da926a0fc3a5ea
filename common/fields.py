"""Reading a parsed YAML document field by field, each refusal naming the field's dotted path:
what the manifest's and the experiment file's readers share."""

from __future__ import annotations

from typing import Any


class FieldReader:
    """The checks every document reader makes; `error` is its exception, built as
    `error(field_path, problem)`."""

    error: type[ValueError] = ValueError

    def mapping(self, value: Any, path: str, known: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be text, got {key!r}")
            if key not in known:
                raise self.error(
                    join(path, key or '""'), f"unknown field (known here: {', '.join(known)})"
                )
        return value

    def text(self, parent: dict, key: str, path: str, required: bool = True) -> str:
        where = join(path, key)
        value = parent.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise self.error(where, "required")
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(where, f"expected text, got {kind(value)}")
        return str(value).strip()


def join(*parts: str) -> str:
    """`a.b[0].c` from its parts, the empty ones left out."""
    return ".".join(p for p in parts if p)


def kind(value: Any) -> str:
    """What a YAML value is, in words: `a mapping`, `a list`, `text`, `true/false`, `int`."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), type(value).__name__
    )
