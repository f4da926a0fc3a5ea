"""Run records in Redis: create, read, list per user, atomic state transitions, delete."""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from common import keys
from common.clock import iso, utcnow
from common.run import HistoryEntry, Run
from common.states import ErrorCode, RunState, can_transition

_MAX_WATCH_RETRIES = 100


class RunNotFound(LookupError):
    pass


class InvalidTransition(RuntimeError):
    def __init__(self, run_id: str, current: RunState, new: RunState):
        self.current = current
        super().__init__(f"{run_id}: cannot go from {current.value} to {new.value}")


class RunStore:
    def __init__(self, connection: redis.Redis, retention_seconds: int = 7 * 86400):
        self.redis = connection
        self.retention_seconds = retention_seconds

    def create(self, run: Run, message: str = "submitted") -> None:
        entry = HistoryEntry(run.state, run.submitted_at, message)
        score = utcnow().timestamp()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.run(run.id), mapping=run.to_dict())
            pipe.rpush(keys.history(run.id), json.dumps(entry.to_dict()))
            pipe.zadd(keys.user_runs(run.user), {run.id: score})
            pipe.execute()

    def exists(self, run_id: str) -> bool:
        return bool(self.redis.exists(keys.run(run_id)))

    def get(self, run_id: str) -> Run | None:
        data = self.redis.hgetall(keys.run(run_id))
        return Run.from_dict(data) if data else None

    def history(self, run_id: str) -> list[HistoryEntry]:
        return [
            HistoryEntry.from_dict(json.loads(e))
            for e in self.redis.lrange(keys.history(run_id), 0, -1)
        ]

    def list_for_user(self, user: str, offset: int = 0, limit: int = 50) -> tuple[list[Run], int]:
        """The user's runs, newest first, and how many there are in all."""
        index = keys.user_runs(user)
        ids = self.redis.zrevrange(index, 0, -1)
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.exists(keys.run(run_id))
            alive = pipe.execute()
        gone = [run_id for run_id, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self.redis.zrem(index, *gone)  # their records passed retention
        live = [run_id for run_id, ok in zip(ids, alive, strict=True) if ok]
        page = live[offset : offset + limit]
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in page:
                pipe.hgetall(keys.run(run_id))
            records = pipe.execute()
        return [Run.from_dict(r) for r in records if r], len(live)

    def transition(
        self,
        run_id: str,
        new: RunState,
        message: str = "",
        error_code: ErrorCode | None = None,
        expect: Iterable[RunState] | None = None,
        **fields,
    ) -> Run:
        """Move a run to `new` atomically, append the history entry, and set `fields`.

        Raises InvalidTransition when the run is not in `expect` (if given) or the table
        forbids the move, so two workers can never both claim one run.
        """
        key = keys.run(run_id)
        expected = set(expect) if expect is not None else None
        with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_WATCH_RETRIES):
                try:
                    pipe.watch(key)
                    data = pipe.hgetall(key)
                    if not data:
                        raise RunNotFound(run_id)
                    run = Run.from_dict(data)
                    if (expected is not None and run.state not in expected) or not can_transition(
                        run.state, new
                    ):
                        raise InvalidTransition(run_id, run.state, new)
                    now = iso(utcnow())
                    run.state = new
                    run.updated_at = now
                    if new.terminal:
                        run.ended_at = now
                    if error_code is not None:
                        run.error_code = error_code
                    if message:
                        run.status_message = message
                    for name, value in fields.items():
                        setattr(run, name, value)
                    entry = HistoryEntry(new, now, message, error_code)
                    pipe.multi()
                    pipe.hset(key, mapping=run.to_dict())
                    pipe.rpush(keys.history(run_id), json.dumps(entry.to_dict()))
                    if new.terminal:
                        pipe.expire(key, self.retention_seconds)
                        pipe.expire(keys.history(run_id), self.retention_seconds)
                    pipe.execute()
                    return run
                except redis.WatchError:
                    continue
        raise RuntimeError(f"{run_id}: too much contention on the run record")

    def claim(self, run_id: str, worker: str, gpus: list[int]) -> Run | None:
        """PENDING -> DOWNLOADING for exactly one caller; None when someone else had it."""
        try:
            return self.transition(
                run_id,
                RunState.DOWNLOADING,
                f"claimed by {worker}",
                expect={RunState.PENDING},
                worker=worker,
                gpus=gpus,
            )
        except (InvalidTransition, RunNotFound):
            return None

    def delete(self, run_id: str, user: str, only_in: Iterable[RunState] | None = None) -> bool:
        """Remove the run's record; with `only_in`, only while it is in one of those states.

        Returns False when the run had meanwhile moved to another state (nothing deleted).
        """
        key = keys.run(run_id)
        allowed = {s.value for s in only_in} if only_in is not None else None
        with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_WATCH_RETRIES):
                try:
                    pipe.watch(key)
                    state = pipe.hget(key, "state")
                    if allowed is not None and state is not None and state not in allowed:
                        return False
                    pipe.multi()
                    pipe.delete(key, keys.history(run_id))
                    pipe.zrem(keys.user_runs(user), run_id)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        raise RuntimeError(f"{run_id}: too much contention on the run record")
