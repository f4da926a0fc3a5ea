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

    def head(self, size: ResourceSize, count: int, start: int = 0) -> list[Queued]:
        """The runs of `size` at positions start to start + count - 1 (0: the next served)."""
        if count <= 0:
            return []
        found = self.redis.zrange(
            keys.waiting(size.value), start, start + count - 1, withscores=True
        )
        return [Queued(run_id, size, since) for run_id, since in found]

    def heads(self, sizes: Iterable[ResourceSize], count: int) -> dict[ResourceSize, list[Queued]]:
        """The first `count` of each size (one round trip)."""
        sizes = list(sizes)
        with self.redis.pipeline(transaction=False) as pipe:
            for size in sizes:
                pipe.zrange(keys.waiting(size.value), 0, count - 1, withscores=True)
            answers = pipe.execute()
        return {
            size: [Queued(run_id, size, since) for run_id, since in found]
            for size, found in zip(sizes, answers, strict=True)
        }

    def waited_since(
        self, before: float, count: int, sizes: Iterable[ResourceSize] = ResourceSize
    ) -> dict[ResourceSize, list[Queued]]:
        """Of each size, the first `count` runs waiting since `before` or earlier (the ones a
        reservation may hold GPUs for): a range by score, one round trip."""
        sizes = list(sizes)
        with self.redis.pipeline(transaction=False) as pipe:
            for size in sizes:
                pipe.zrangebyscore(keys.waiting(size.value), "-inf", before, 0, count, True)
            answers = pipe.execute()
        return {
            size: [Queued(run_id, size, since) for run_id, since in found]
            for size, found in zip(sizes, answers, strict=True)
        }

    def next_since(self, after: float, sizes: Iterable[ResourceSize] = ResourceSize) -> float:
        """The earliest `since` later than `after` among the waiting runs (inf: none)."""
        sizes = list(sizes)
        with self.redis.pipeline(transaction=False) as pipe:
            for size in sizes:
                pipe.zrangebyscore(keys.waiting(size.value), f"({after}", "+inf", 0, 1, True)
            answers = pipe.execute()
        return min((since for found in answers for _, since in found), default=math.inf)

    def place(self, run_id: str, size: ResourceSize) -> tuple[int | None, int]:
        """The run's position among the waiting runs of its size (1: the next; None: not
        waiting) and how many runs of that size wait."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrank(keys.waiting(size.value), run_id)
            pipe.zcard(keys.waiting(size.value))
            rank, count = pipe.execute()
        return (None if rank is None else rank + 1), count
