"""Resource sizes, the GPUs each one gets, and the Celery queue each one travels on."""

from __future__ import annotations

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


def parse_size_table(text: str) -> dict[ResourceSize, int]:
    """Parse `small=1,medium=2,large=4`; every size must be given a non-negative count."""
    table: dict[ResourceSize, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        if not sep:
            raise ValueError(f"size table entry {part!r}: expected NAME=GPUS")
        try:
            size = ResourceSize(name.strip())
        except ValueError:
            known = ", ".join(s.value for s in ResourceSize)
            raise ValueError(f"size table entry {part!r}: unknown size (known: {known})") from None
        if not count.strip().isdigit():
            raise ValueError(f"size table entry {part!r}: GPU count must be a whole number")
        table[size] = int(count)
    missing = [s.value for s in ResourceSize if s not in table]
    if missing:
        raise ValueError(f"size table: missing {', '.join(missing)}")
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
