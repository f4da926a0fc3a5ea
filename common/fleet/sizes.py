"""Resource sizes, the GPUs (and memory cap) each one gets, and the Celery queue each one
travels on."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum


class ResourceSize(str, Enum):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


# The default table; settings may override it (DLAAS_SIZE_GPUS="small=1,medium=2,large=4").
DEFAULT_SIZE_GPUS: dict[ResourceSize, int] = {
    ResourceSize.SMALL: 1,
    ResourceSize.MEDIUM: 2,
    ResourceSize.LARGE: 4,
}

QUEUE_PREFIX = "dlaas."


def queue_name(size: ResourceSize) -> str:
    return f"{QUEUE_PREFIX}{ResourceSize(size).value}"


def gpu_count(text: str) -> int:
    """One value of the GPU table: a whole number, 0 or more."""
    if not text.isdigit():
        raise ValueError("GPU count must be a whole number")
    return int(text)


BYTE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_amount(text: str) -> int:
    """One value of the memory table: `8G`, `8GiB`, `8GB`, `512M` or bytes, above 0."""
    amount = text.upper().removesuffix("B").removesuffix("I")
    unit = amount[-1:] if amount[-1:] in BYTE_UNITS else ""
    number = amount[: len(amount) - len(unit)]
    if not number.isdigit() or int(number) == 0:
        raise ValueError("expected an amount like 8G")
    return int(number) * BYTE_UNITS[unit]


def parse_size_table(
    text: str, value: Callable[[str], int] = gpu_count, every_size: bool = True
) -> dict[ResourceSize, int]:
    """Parse a per-size table, `small=1,medium=2,large=4` (or `small=8G,...`, with another
    `value` parser); with `every_size`, a size left out is an error, else it gets no entry."""
    table: dict[ResourceSize, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, amount = part.partition("=")
        if not sep:
            raise ValueError(f"entry {part!r}: expected SIZE=VALUE")
        try:
            size = ResourceSize(name.strip())
        except ValueError:
            known = ", ".join(s.value for s in ResourceSize)
            raise ValueError(f"entry {part!r}: unknown size (known: {known})") from None
        try:
            table[size] = value(amount.strip())
        except ValueError as exc:
            raise ValueError(f"entry {part!r}: {exc}") from None
    missing = [s.value for s in ResourceSize if s not in table]
    if every_size and missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return table


def sizes_for_gpus(
    gpu_count: int, table: dict[ResourceSize, int], serve_smaller: bool = False
) -> list[ResourceSize]:
    """The sizes a worker with `gpu_count` GPUs consumes.

    By default a worker serves the size that uses all of its GPUs (or the largest that fits),
    so that a small run never occupies a medium node while a small node exists; with
    `serve_smaller` it also takes every smaller size. A CPU node (0 GPUs) serves every size:
    its runs get no GPU, and it says so at start.
    """
    if gpu_count == 0:
        return list(ResourceSize)
    fitting = [s for s in ResourceSize if table[s] <= gpu_count]
    if not fitting:
        return []
    if serve_smaller:
        return fitting
    best = max(table[s] for s in fitting)
    return [s for s in fitting if table[s] == best]
