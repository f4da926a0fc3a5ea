"""UTC timestamps as the service writes them: ISO-8601 with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def iso_seconds(text: str) -> str:
    """`2017-10-26T11:16:51Z`, the form the original CLI printed."""
    return text.split(".")[0] + "Z" if text else ""
