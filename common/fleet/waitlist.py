"""The index of waiting runs, read: per size, the PENDING runs in the order the queues serve
them (keys.waiting, written by common/runstore.py in the transactions that change a run's
state). Every question is a range or a rank of a sorted set: the head of a size, a run's
place, how many wait; none reads every waiting run."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from common import keys
from common.fleet.sizes import ResourceSize


@dataclass(frozen=True)
class Queued:
    """A waiting run as the index has it: its id, its size, since when it waits (epoch)."""

    run_id: str
    size: ResourceSize
    since: float


class WaitList:
    def __init__(self, connection: redis.Redis):
        self.redis = connection

    def lengths(self, sizes: Iterable[ResourceSize] = ResourceSize) -> dict[ResourceSize, int]:
        """How many runs of each size wait (one round trip)."""
        sizes = list(sizes)
        with self.redis.pipeline(transaction=False) as pipe:
            for size in sizes:
                pipe.zcard(keys.waiting(size.value))
            return dict(zip(sizes, pipe.execute(), strict=True))

    def head(self, size: ResourceSize, count: int) -> list[Queued]:
        """The first `count` runs of `size` (the next served first)."""
        return self.heads([size], count)[size]

    def heads(self, sizes: Iterable[ResourceSize], count: int) -> dict[ResourceSize, list[Queued]]:
        """The first `count` of each size (one round trip)."""
        if count <= 0:
            return {size: [] for size in sizes}
        return self._each(sizes, lambda pipe, key: pipe.zrange(key, 0, count - 1, withscores=True))

    def waited_since(
        self, before: float, count: int, sizes: Iterable[ResourceSize] = ResourceSize
    ) -> dict[ResourceSize, list[Queued]]:
        """Of each size, the first `count` runs waiting since `before` or earlier (the ones a
        reservation may hold GPUs for): a range by score, one round trip."""
        return self._each(
            sizes, lambda pipe, key: pipe.zrangebyscore(key, "-inf", before, 0, count, True)
        )

    def next_since(self, after: float, sizes: Iterable[ResourceSize] = ResourceSize) -> float:
        """The earliest `since` later than `after` among the waiting runs (inf: none)."""
        found = self._each(
            sizes, lambda pipe, key: pipe.zrangebyscore(key, f"({after}", "+inf", 0, 1, True)
        )
        return min((q.since for queued in found.values() for q in queued), default=math.inf)

    def _each(self, sizes: Iterable[ResourceSize], read) -> dict[ResourceSize, list[Queued]]:
        """`read(pipe, key)` on each size's index, in one round trip: its (id, since) pairs."""
        sizes = list(sizes)
        with self.redis.pipeline(transaction=False) as pipe:
            for size in sizes:
                read(pipe, keys.waiting(size.value))
            answers = pipe.execute()
        return {
            size: [Queued(run_id, size, since) for run_id, since in found]
            for size, found in zip(sizes, answers, strict=True)
        }

    def place(self, run_id: str, size: ResourceSize) -> tuple[int | None, int]:
        """The run's position among the waiting runs of its size (1: the next; None: not
        waiting) and how many runs of that size wait."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrank(keys.waiting(size.value), run_id)
            pipe.zcard(keys.waiting(size.value))
            rank, count = pipe.execute()
        return (None if rank is None else rank + 1), count
