"""The live log of a run: a capped Redis stream of stamped lines, written by the worker's log
pump and read (and followed) by the API. The durable log is the file on the node and the
objects in the results bucket; this stream may drop lines, they may not."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from common import keys

TAIL_KEPT_AFTER_END = 50


@dataclass(frozen=True)
class LogPiece:
    entry_id: str
    first_line: int  # number of the first line in `text`, from 0
    text: str  # whole lines, each ending with "\n"

    @property
    def line_count(self) -> int:
        return self.text.count("\n")


class LiveLog:
    def __init__(self, connection: redis.Redis, run_id: str, max_entries: int = 200):
        self.redis = connection
        self.key = keys.live_log(run_id)
        self.max_entries = max_entries

    def reset(self) -> None:
        """A new attempt of the run starts a new log."""
        self.redis.delete(self.key)

    def append(self, pieces: list[tuple[int, str]]) -> None:
        # Entry ids are the first line's number (+1: 0-0 is not a valid id), so a reader
        # finds the entry holding line N with one XREVRANGE.
        with self.redis.pipeline(transaction=False) as pipe:
            for first_line, data in pieces:
                pipe.xadd(
                    self.key,
                    {"line": first_line, "data": data},
                    id=f"{first_line + 1}-0",
                    maxlen=self.max_entries,
                    approximate=True,
                )
            pipe.execute()

    def close(self, retention_seconds: int) -> None:
        """The run ended: keep a short tail for late readers; the bucket has the rest."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xtrim(self.key, maxlen=TAIL_KEPT_AFTER_END, approximate=False)
            pipe.expire(self.key, retention_seconds)
            pipe.execute()

    def read(self, after_id: str = "-", count: int = 1000) -> list[LogPiece]:
        start = "-" if after_id == "-" else f"({after_id}"
        return [_piece(i, f) for i, f in self.redis.xrange(self.key, start, "+", count=count)]

    def read_from_line(self, line: int, count: int = 1000) -> list[LogPiece]:
        """The pieces holding line `line` and after (those still in the stream)."""
        holding = self.redis.xrevrange(self.key, f"{line + 1}-0", "-", count=1)
        start = holding[0][0] if holding else "-"
        return [_piece(i, f) for i, f in self.redis.xrange(self.key, start, "+", count=count)]

    def last_id(self) -> str:
        last = self.redis.xrevrange(self.key, "+", "-", count=1)
        return last[0][0] if last else "0-0"

    def wait(self, after_id: str, block_ms: int, count: int = 1000) -> list[LogPiece]:
        answer = self.redis.xread({self.key: after_id}, count=count, block=block_ms)
        return [_piece(i, f) for _, entries in answer for i, f in entries]


def _piece(entry_id, fields) -> LogPiece:
    data = fields["data"]
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return LogPiece(entry_id, int(fields["line"]), data)
