"""Run records in Redis: create, read, list per user, atomic state transitions, claims
fenced by attempt, leases, cancel requests, delete."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import redis

from common import keys, stats
from common.clock import iso, parse_iso, utcnow
from common.fleet.sizes import ResourceSize
from common.metrics import RunMetrics
from common.run import HistoryEntry, Run, encode_fields
from common.states import ACTIVE, ErrorCode, RunState, can_transition

_MAX_WATCH_RETRIES = 100
# Runs lists: the most ids a page reads at once past expired ones, or checks among the oldest.
_MAX_PAGE_READ = 1000
_FILTER_READ = 2000  # runs whose fields a filtered list reads in one command

# Refresh the lease when this worker holds it, or take it back when it lapsed (after a Redis
# outage, say) while the run is still active under the same attempt; otherwise 0: the claim
# is lost (the run ended, or was handed to another worker) and the worker must stop.
_REFRESH_LEASE = """
local active = {ACTIVE_STATES}
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
  return 1
end
if current then return 0 end
local attempt = redis.call('HGET', KEYS[2], 'attempt')
local state = redis.call('HGET', KEYS[2], 'state')
if attempt == ARGV[3] and state and active[state] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
  return 1
end
return 0
""".replace("ACTIVE_STATES", ", ".join(f'["{state.value}"]=true' for state in sorted(ACTIVE)))

# Fields of a run set (ARGV[2] name-value pairs from ARGV[3]) and cleared (the names after
# them) only when ARGV[1] is its current claim: one round trip, not WATCH, HGET and MULTI.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local last = 2 + 2 * tonumber(ARGV[2])
if last > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, last)) end
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1)) end
return 1
"""


class RunNotFound(LookupError):
    pass


class InvalidTransition(RuntimeError):
    def __init__(self, run_id: str, current: RunState, new: RunState, why: str = ""):
        self.current = current
        super().__init__(why or f"{run_id}: cannot go from {current.value} to {new.value}")


class LostClaim(InvalidTransition):
    """The writer's claim is no longer the run's current one (handed back, or re-claimed)."""


class NotKept(RuntimeError):
    """A run has no results kept on a node to store again (or a request is under way)."""


def lease_value(worker: str, attempt: int) -> str:
    return f"{worker} {attempt}"


@dataclass(frozen=True)
class Quota:
    max_queued: int = 0  # 0: no limit
    max_active: int = 0


@dataclass(frozen=True)
class RunFilter:
    """Which runs a list keeps: each criterion given must hold (AND); none given, all."""

    state: RunState | None = None
    name: str = ""  # a part of the run's name, in any case
    experiment: str = ""  # an experiment's id: its trials

    def __post_init__(self):
        # Worked out once, not once per run read.
        object.__setattr__(self, "_name", self.name.casefold())
        # The id as the record's JSON holds it (common/run.py encode_fields): a quick test
        # that rules out most runs before their JSON is read.
        object.__setattr__(self, "_quoted", json.dumps(self.experiment))

    def __bool__(self) -> bool:
        return self.state is not None or bool(self.name) or bool(self.experiment)

    def fields(self) -> tuple[str, ...]:
        """The stored fields keeps() reads: the state always (every record has one)."""
        return ("state",) + tuple(name for name in ("name", "experiment") if getattr(self, name))

    def keeps(self, stored: dict[str, str | None]) -> bool:
        """Whether a run whose stored fields (those of fields()) are these is kept."""
        if self.state is not None and stored["state"] != self.state.value:
            return False
        if self.name and self._name not in (stored["name"] or "").casefold():
            return False
        if self.experiment:
            experiment = stored["experiment"]
            if not experiment or self._quoted not in experiment:
                return False
            return json.loads(experiment).get("id") == self.experiment
        return True


def _batch(needed: int, met: int) -> int:
    """How many ids a page reads next, having met `met` expired ones: what it still needs,
    more past expired ones (ended runs expire in about the order they were submitted in, so
    one often has more beside it)."""
    return max(1, min(_MAX_PAGE_READ, max(needed, 2 * met)))


class QuotaExceeded(Exception):
    def __init__(self, which: str, limit: int, current: int):
        super().__init__(f"quota: at most {limit} {which} runs per user (you have {current})")
        self.which, self.limit, self.current = which, limit, current


def _track_user_state(pipe, run: Run, old: RunState | None) -> None:
    """Keeps the user's queued/active sets (what quotas count) and the index of waiting runs
    (keys.waiting) in step with the run's new state; `old`: the state it left (None: new)."""
    queued, active = keys.user_queued(run.user), keys.user_active(run.user)
    waiting = keys.waiting(run.resource.value)
    if run.state is RunState.PENDING:
        pipe.sadd(queued, run.id)
        pipe.srem(active, run.id)
        if old is not RunState.PENDING:
            pipe.zadd(waiting, {run.id: waiting_since(run, old)})
    elif run.state in ACTIVE:
        pipe.srem(queued, run.id)
        pipe.sadd(active, run.id)
        pipe.zrem(waiting, run.id)
    else:
        pipe.srem(queued, run.id)
        pipe.srem(active, run.id)
        pipe.zrem(waiting, run.id)


def waiting_since(run: Run, old: RunState | None) -> float:
    """A PENDING run's place in its size's index: a new run its submission (first in, first
    out), one back from a node (handed back, or its node lost) the moment it came back, as
    its message goes to the back of its queue then."""
    return parse_iso(run.submitted_at if old is None else run.updated_at).timestamp()


class RunStore:
    def __init__(
        self,
        connection: redis.Redis,
        retention_seconds: int = 7 * 86400,
        lease_ttl_seconds: float = 30.0,
    ):
        self.redis = connection
        self.retention_seconds = retention_seconds
        self.lease_ttl_ms = int(lease_ttl_seconds * 1000)
        self._refresh = connection.register_script(_REFRESH_LEASE)
        self._update = connection.register_script(_UPDATE)

    def create(self, run: Run, message: str = "submitted", quota: Quota | None = None) -> None:
        """Stores a new run. With `quota`, atomically checks first that the user has fewer
        than `quota.max_queued` runs PENDING and fewer than `quota.max_active` running
        (0: no limit); QuotaExceeded and nothing stored otherwise."""
        entry = HistoryEntry(run.state, run.submitted_at, message)
        score = utcnow().timestamp()
        queued, active = keys.user_queued(run.user), keys.user_active(run.user)

        def body(pipe):
            if quota is not None:
                counts = {"queued": pipe.scard(queued), "active": pipe.scard(active)}
                for name, limit in (("queued", quota.max_queued), ("active", quota.max_active)):
                    if limit and counts[name] >= limit:
                        raise QuotaExceeded(name, limit, counts[name])
            pipe.multi()
            pipe.hset(keys.run(run.id), mapping=run.to_dict())
            pipe.rpush(keys.history(run.id), json.dumps(entry.to_dict()))
            pipe.zadd(keys.user_runs(run.user), {run.id: score})
            _track_user_state(pipe, run, None)
            stats.count_state_change(pipe, run, None, None)
            pipe.execute()

        watched = (queued, active) if quota is not None else ()
        self._atomically(body, *watched, busy=f"{run.user}: too many concurrent submissions")

    def exists(self, run_id: str) -> bool:
        return bool(self.redis.exists(keys.run(run_id)))

    def get(self, run_id: str) -> Run | None:
        data = self.redis.hgetall(keys.run(run_id))
        return Run.from_dict(data) if data else None

    def history(self, run_id: str) -> list[HistoryEntry]:
        entries = self.redis.lrange(keys.history(run_id), 0, -1)
        return [HistoryEntry.from_dict(json.loads(e)) for e in entries]

    def all_ids(self) -> list[str]:
        """Every run's id (SCAN: no blocking of Redis however many there are)."""
        found = set()
        for key in self.redis.scan_iter(match=keys.run("*"), count=500):
            run_id = key.split(":")[2]
            if key == keys.run(run_id):
                found.add(run_id)
        return sorted(found)

    def reseal_credentials(self, reseal: Callable[[str], str]) -> tuple[int, list[str]]:
        """Replaces every stored run's sealed credentials with `reseal(sealed)` (key
        rotation). Returns (how many were re-sealed, ids of runs whose credentials `reseal`
        could not read: ValueError)."""
        done, unreadable = 0, []
        for run_id in self.all_ids():
            key = keys.run(run_id)

            def body(pipe, key=key):
                sealed = pipe.hget(key, "credentials")
                if not sealed:
                    return 0
                fresh = reseal(sealed)
                pipe.multi()
                pipe.hset(key, "credentials", fresh)
                pipe.execute()
                return 1

            try:
                done += self._atomically(body, key)
            except ValueError:
                unreadable.append(run_id)
        return done, unreadable

    def list_all(
        self, offset: int = 0, limit: int = 50, where: RunFilter | None = None
    ) -> tuple[list[Run], int]:
        """Every user's runs (admins), as list_for_user gives one user's: the users' indexes
        (found by SCAN) merged newest first."""
        indexes = sorted(
            set(self.redis.scan_iter(match=keys.user_runs("*"), count=1000, _type="zset"))
        )
        return self._list(indexes, offset, limit, where)

    def records(self, ids: list[str]) -> list[Run]:
        """The runs of these ids that exist, in their order, in one round trip."""
        return [run for run in self._fetch(ids) if run is not None]

    def _fetch(self, ids: list[str]) -> list[Run | None]:
        """The run of each id (None where there is no record), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(keys.run(run_id))
            records = pipe.execute()
        return [Run.from_dict(r) if r else None for r in records]

    def active_ids(self) -> list[str]:
        return sorted(self.redis.smembers(keys.active_runs()))

    def list_for_user(
        self, user: str, offset: int = 0, limit: int = 50, where: RunFilter | None = None
    ) -> tuple[list[Run], int]:
        """The user's runs, newest first, those `where` keeps (all, without one), from
        `offset`; and how many there are in all.

        Unfiltered, only the page is read: its ids from the index (positions offset on), then
        their records. An id whose record is gone (an ended run's expires after the
        retention: `_write`) leaves the index when met, and the ids after it are read
        instead, until the page is full or the index ends. The oldest ids, those submitted
        longer ago than the retention (only they can have expired by it), are checked too.
        So the total, the index's size less what was pruned, counts no expired record in the
        usual case; but it can count one that expired and was not met yet (past the first
        _MAX_PAGE_READ of those old ids, or expired early by a store with a shorter
        retention than this one's, or evicted), until a list meets it; offsets are positions
        among those too.

        Filtered, every id is read, with only the fields the filter needs, and each expired
        one met pruned: the total is exact."""
        return self._list([keys.user_runs(user)], offset, limit, where)

    def _list(
        self, indexes: list[str], offset: int, limit: int, where: RunFilter | None
    ) -> tuple[list[Run], int]:
        """The page of the runs of these indexes (merged newest first), and their total."""
        if where:
            return self._filtered(indexes, where, offset, limit)
        cutoff = f"({self._expiry_cutoff()}"
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcard(index)
                pipe.zrangebyscore(index, "-inf", cutoff, 0, _MAX_PAGE_READ)
            answers = pipe.execute()
        total = sum(answers[0::2])
        old = dict(zip(indexes, answers[1::2], strict=True))
        runs: list[Run] = []
        pruned = met = 0
        wanted = limit
        while True:
            # The pruned ones made room: the ids that follow start where the page got to.
            window = self._window(indexes, offset + len(runs), wanted)
            found = self._fetch([run_id for run_id, _ in window])
            gone: dict[str, list[str]] = {}
            for (run_id, index), run in zip(window, found, strict=True):
                if run is None:
                    gone.setdefault(index, []).append(run_id)
                else:
                    runs.append(run)
            if not gone or len(runs) >= limit:
                pruned += self._prune(gone)
                break  # full, or the indexes ended (fewer came than asked, none gone)
            met += sum(len(ids) for ids in gone.values())
            pruned += self._prune(gone)
            wanted = _batch(limit - len(runs), met)
        pruned += self._prune_expired(old)
        return runs[:limit], total - pruned

    def _window(self, indexes: list[str], start: int, count: int) -> list[tuple[str, str]]:
        """(run id, its index) at positions start to start + count - 1 of the indexes merged
        newest first (by score; then by id, as ZREVRANGE orders equal scores)."""
        if len(indexes) == 1:
            ids = self.redis.zrevrange(indexes[0], start, start + count - 1)
            return [(run_id, indexes[0]) for run_id in ids]
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:  # each one's newest, as many as the window could take
                pipe.zrevrange(index, 0, start + count - 1, withscores=True)
            tops = pipe.execute()
        merged = sorted(
            (
                (score, run_id, index)
                for index, top in zip(indexes, tops, strict=True)
                for run_id, score in top
            ),
            reverse=True,
        )
        return [(run_id, index) for _, run_id, index in merged[start : start + count]]

    def _filtered(
        self, indexes: list[str], where: RunFilter, offset: int, limit: int
    ) -> tuple[list[Run], int]:
        """The page of the runs `where` keeps in these indexes (merged newest first), and how
        many it keeps: every run's fields that `where` reads (_stored), then the page's
        records. Ids whose record is gone leave their index."""
        fields = where.fields()
        kept: dict[str, list[str]] = {}
        gone: dict[str, list[str]] = {}
        for index in indexes:
            mine = kept[index] = []
            for run_id, values in self._stored(index, fields):
                if values[0] is None:  # no state: no record
                    gone.setdefault(index, []).append(run_id)
                elif where.keeps(dict(zip(fields, values, strict=True))):
                    mine.append(run_id)
        self._prune(gone)
        if len(indexes) == 1:
            ordered = kept[indexes[0]]
        else:  # merged by the kept ones' scores
            with self.redis.pipeline(transaction=False) as pipe:
                for index, ids in kept.items():
                    if ids:
                        pipe.zmscore(index, ids)
                scores = iter(pipe.execute())
            ordered = [
                run_id
                for _, run_id in sorted(
                    (
                        (score or 0.0, run_id)
                        for ids in kept.values()
                        if ids
                        for run_id, score in zip(ids, next(scores), strict=True)
                    ),
                    reverse=True,
                )
            ]
        # A record whose retention ended (or that was deleted) in between is left out.
        return self.records(ordered[offset : offset + limit]), len(ordered)

    def _stored(self, index: str, fields: tuple[str, ...]) -> Iterator[tuple[str, list]]:
        """(run id, the values of these fields of its record, None where there is none) for
        each id of the index, newest first. Read by SORT BY nosort (which keeps the index's
        order) with a GET per field, which Redis reads from the run hashes itself: one reply
        of _FILTER_READ runs, rather than as many HMGET (whose packing and parsing here cost
        three times as much), and no longer a command than that (Redis serves no one else
        meanwhile). An id that a submission meanwhile pushed into the next read comes once."""
        get = ["#", *(f"{keys.run('*')}->{name}" for name in fields)]
        step = len(get)
        seen: set[str] = set()
        start = 0
        while True:
            flat = self.redis.sort(
                index, start=start, num=_FILTER_READ, by="nosort", desc=True, get=get
            )
            for at in range(0, len(flat), step):
                if flat[at] not in seen:
                    seen.add(flat[at])
                    yield flat[at], flat[at + 1 : at + step]
            if len(flat) < _FILTER_READ * step:
                return
            start += _FILTER_READ

    def _expiry_cutoff(self) -> float:
        """The index score (submission epoch seconds) before which a run's record may have
        expired: an ended run's expires `retention_seconds` after its end, which is after
        its submission."""
        return utcnow().timestamp() - self.retention_seconds

    def _prune_expired(self, candidates: dict[str, list[str]]) -> int:
        """Removes those of these ids (by index) whose record is gone; how many were."""
        pairs = [(index, run_id) for index, ids in candidates.items() for run_id in ids]
        if not pairs:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for _, run_id in pairs:
                pipe.exists(keys.run(run_id))
            there = pipe.execute()
        gone: dict[str, list[str]] = {}
        for (index, run_id), ok in zip(pairs, there, strict=True):
            if not ok:
                gone.setdefault(index, []).append(run_id)
        return self._prune(gone)

    def _prune(self, gone: dict[str, list[str]]) -> int:
        """Removes these ids (of records gone: expired) from their indexes; how many were."""
        if not gone:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for index, ids in gone.items():
                pipe.zrem(index, *ids)
            return sum(pipe.execute())

    def transition(
        self,
        run_id: str,
        new: RunState,
        message: str = "",
        error_code: ErrorCode | None = None,
        expect: Iterable[RunState] | None = None,
        attempt: int | None = None,
        **fields,
    ) -> Run:
        """Move a run to `new` atomically, append the history entry, and set `fields`.

        Raises InvalidTransition when the run is not in `expect` (if given) or the table
        forbids the move, and LostClaim when `attempt` is given and is not the run's current
        claim, so two workers can never both claim, or both write, one run.
        An ended run whose deletion was requested is deleted instead of kept.
        """
        expected = set(expect) if expect is not None else None

        def change(run: Run) -> HistoryEntry:
            if attempt is not None and run.attempt != attempt:
                raise LostClaim(
                    run_id,
                    run.state,
                    new,
                    f"{run_id}: claim {attempt} was superseded by {run.attempt}",
                )
            if (expected is not None and run.state not in expected) or not can_transition(
                run.state, new
            ):
                raise InvalidTransition(run_id, run.state, new)
            if error_code is not None:
                run.error_code = error_code
            if message:
                run.status_message = message
            for name, value in fields.items():
                setattr(run, name, value)
            return _enter(run, new, message, error_code)

        return self._rewrite(run_id, change)

    def _rewrite(self, run_id: str, change: Callable[[Run], HistoryEntry | None], then=None):
        """The one read-modify-write of a run record: read it, let `change(run)` change it
        (returning the history entry of a state change, or None when only fields changed),
        write it back with its indexes and stats, and `then(pipe, run)` in the same
        transaction. Raises RunNotFound for a missing run; whatever `change` raises, nothing
        is written."""
        key = keys.run(run_id)

        def body(pipe):
            data = pipe.hgetall(key)
            if not data:
                raise RunNotFound(run_id)
            run = Run.from_dict(data)
            old = run.state
            entry = change(run)
            pipe.multi()
            self._write(pipe, run, entry, old)
            if then is not None:
                then(pipe, run)
            pipe.execute()
            return run

        return self._atomically(body, key)

    def _write(self, pipe, run: Run, entry: HistoryEntry | None, old: RunState) -> None:
        key = keys.run(run.id)
        if entry is not None:
            seconds = None
            if run.state.terminal and run.submitted_at and run.ended_at:
                seconds = (parse_iso(run.ended_at) - parse_iso(run.submitted_at)).total_seconds()
            stats.count_state_change(pipe, run, old, seconds)
            _track_user_state(pipe, run, old)
            if run.state.terminal and run.experiment:
                pipe.rpush(keys.experiment_events(), run.experiment["id"])  # its controller's news
            if run.state.terminal and run.delete_requested:
                _forget(pipe, run.id, run.user)
                return
        # Fields that were cleared must go from the hash too (HSET only adds).
        pipe.delete(key)
        pipe.hset(key, mapping=run.to_dict())
        if entry is None:
            if run.state.terminal and run.ended_at:  # its expiry, as its end set it
                ends = parse_iso(run.ended_at).timestamp() + self.retention_seconds
                pipe.expireat(key, int(ends))
            return
        pipe.rpush(keys.history(run.id), json.dumps(entry.to_dict()))
        if run.state in ACTIVE:
            pipe.sadd(keys.active_runs(), run.id)
        else:
            pipe.srem(keys.active_runs(), run.id)
            pipe.delete(keys.lease(run.id))
            pipe.zrem(keys.leases(), run.id)
        if run.state.terminal:
            pipe.expire(key, self.retention_seconds)
            pipe.expire(keys.history(run.id), self.retention_seconds)

    def _atomically(self, body: Callable, *watched: str, busy: str = ""):
        """Run `body(pipe)` with `watched` keys WATCHed; again when another writer changed
        one first (bounded: heavy contention is an error, not a hang)."""
        with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_WATCH_RETRIES):
                try:
                    if watched:
                        pipe.watch(*watched)
                    return body(pipe)
                except redis.WatchError:
                    continue
        raise RuntimeError(busy or f"{watched[0]}: too much contention on the run record")

    def claim(
        self, run_id: str, worker: str, gpus_for: Callable[[int], list[int]] = lambda count: []
    ) -> Run | None:
        """PENDING -> DOWNLOADING for exactly one caller, with a fresh lease; None when the
        run is gone, already claimed or ended. `gpus_for(gpu_count)` picks the run's GPUs."""

        def take(run: Run) -> HistoryEntry:
            if run.state is not RunState.PENDING:
                raise _NotPending
            run.attempt += 1
            run.worker = worker
            run.gpus = list(gpus_for(run.gpu_count))
            run.process_id = None
            run.status_message = f"claimed by {worker}"
            return _enter(run, RunState.DOWNLOADING, run.status_message)

        def lease(pipe, run: Run) -> None:
            pipe.set(keys.lease(run_id), lease_value(worker, run.attempt), px=self.lease_ttl_ms)
            pipe.zadd(keys.leases(), {run_id: time.time() + self.lease_ttl_ms / 1000})
            pipe.delete(keys.taken(run_id))
            pipe.zrem(keys.messages_taken(), run_id)

        try:
            return self._rewrite(run_id, take, lease)
        except (RunNotFound, _NotPending):
            return None

    def refresh_lease(self, run_id: str, worker: str, attempt: int) -> bool:
        """Keep the lease alive; False when the claim is lost and the run must stop here."""
        lapses = time.time() + self.lease_ttl_ms / 1000
        return bool(
            self._refresh(
                keys=[keys.lease(run_id), keys.run(run_id), keys.leases()],
                args=[
                    lease_value(worker, attempt),
                    self.lease_ttl_ms,
                    str(attempt),
                    lapses,
                    run_id,
                ],
            )
        )

    def lapsed_leases(self, count: int = 1000) -> list[str]:
        """Runs whose lease lapsed by the lease index (at most `count`, the longest lapsed
        first): a range read, however many runs are active. A hint: the lease key decides."""
        return self.redis.zrangebyscore(keys.leases(), "-inf", time.time(), 0, count)

    def forget_lease(self, run_id: str) -> None:
        """The run is no longer active: its lease index entry goes (normally its state change
        removes it; this cleans an entry met after such a change)."""
        self.redis.zrem(keys.leases(), run_id)

    def take_message(self, run_id: str, worker: str) -> Run | None:
        """A worker received the run's message: until it claims the run or hands it back
        (`message_done`), or for one lease TTL, the reconciler knows where the message is.
        Returns the run as it is once marked (None when it is gone), in the same round trip."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.taken(run_id), worker, px=self.lease_ttl_ms)
            pipe.zadd(keys.messages_taken(), {run_id: time.time()})
            pipe.hgetall(keys.run(run_id))
            data = pipe.execute()[2]
        return Run.from_dict(data) if data else None

    def message_done(self, run_id: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.taken(run_id))
            pipe.zrem(keys.messages_taken(), run_id)
            pipe.execute()

    def messages_in_flight(self, taken_after: float) -> int:
        """How many messages workers have taken and not yet claimed or handed back, counting
        only those taken after `taken_after` (epoch seconds; older marks are of workers that
        died holding them, and are dropped here)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(keys.messages_taken(), "-inf", f"({taken_after}")
            pipe.zcard(keys.messages_taken())
            return pipe.execute()[1]

    def message_taken(self, run_id: str) -> str | None:
        return self.redis.get(keys.taken(run_id))

    def lease_holder(self, run_id: str) -> str | None:
        return self.redis.get(keys.lease(run_id))

    def update(self, run_id: str, attempt: int, **fields) -> bool:
        """Set fields of the run without a state change, fenced by the claim: values as the
        Run holds them (a dict, an int), stored as the Run stores them; an empty one is
        removed. False when the claim is not the run's current one."""
        key = keys.run(run_id)
        encoded = encode_fields(fields)
        kept = {name: value for name, value in encoded.items() if value is not None}
        cleared = [name for name, value in encoded.items() if value is None]

        pairs = [item for name, value in kept.items() for item in (name, value)]
        return bool(self._update(keys=[key], args=[attempt, len(kept), *pairs, *cleared]))

    def request_store_again(self, run_id: str, by: str) -> Run:
        """Ask the node that kept a run's results (S303) to store them again: the run's
        `kept_results` goes to `requested` and its id onto that node's list, in one
        transaction. Raises NotKept when there is nothing to ask for: no results kept,
        already stored, or a request under way."""

        def change(run: Run) -> None:
            kept = run.kept_results
            if not kept:
                raise NotKept(
                    f"{run_id}: no results of it are kept on a node (only a run that ended "
                    f"FAILED {ErrorCode.RESULT_UPLOAD.value}, its results not stored, has them)"
                )
            if kept["state"] == "stored":
                raise NotKept(f"{run_id}: its results were stored again already, at {kept['at']}")
            if kept["state"] in ("requested", "storing"):
                raise NotKept(
                    f"{run_id}: {kept['node']} is {kept['state']} its results already "
                    f"(asked by {kept['requested_by']} at {kept['requested_at']})"
                )
            run.kept_results = dict(
                kept, state="requested", requested_by=by, requested_at=iso(utcnow())
            )

        def ask(pipe, run: Run) -> None:
            pipe.rpush(keys.worker_store_requests(run.kept_results["node"]), run_id)

        return self._rewrite(run_id, change, ask)

    def next_store_request(self, node: str, timeout: float) -> str | None:
        """The next run whose kept results `node` was asked to store again (waits up to
        `timeout` seconds)."""
        got = self.redis.blpop([keys.worker_store_requests(node)], timeout=timeout)
        return got[1] if got else None

    def cancel_detail(self, run_id: str) -> str | None:
        """What a stop by cancel says (`cancelled by alice`, or the canceller's reason); None
        while no cancel is asked."""
        by, reason = self.redis.hmget(keys.run(run_id), "cancel_requested", "cancel_reason")
        return (reason or f"cancelled by {by}") if by else None

    def request_cancel(self, run_id: str, by: str, delete: bool = False, reason: str = "") -> Run:
        """Cancel a run: a PENDING run ends HALTED at once (and is deleted, with `delete`);
        an active one is flagged for its worker, which stops it. Raises InvalidTransition
        when the run has already ended. `reason` replaces `cancelled by <by>` in its end."""

        def change(run: Run) -> HistoryEntry | None:
            if run.state.terminal:
                raise InvalidTransition(
                    run_id,
                    run.state,
                    RunState.HALTED,
                    f"{run_id} has already ended ({run.state.value})",
                )
            run.cancel_requested = by
            run.cancel_reason = reason
            run.delete_requested = run.delete_requested or delete
            if run.state is not RunState.PENDING:
                return None  # flagged: its worker stops it
            run.status_message = reason or f"cancelled by {by} before it started"
            return _enter(run, RunState.HALTED, run.status_message)

        return self._rewrite(run_id, change)

    def delete(self, run_id: str, user: str, only_in: Iterable[RunState] | None = None) -> bool:
        """Remove the run's record; with `only_in`, only while it is in one of those states.

        Returns False when the run had meanwhile moved to another state (nothing deleted).
        """
        key = keys.run(run_id)
        allowed = {s.value for s in only_in} if only_in is not None else None

        def body(pipe):
            state, size = pipe.hmget(key, "state", "resource")
            if allowed is not None and state is not None and state not in allowed:
                return False
            pipe.multi()
            if state is not None and not RunState(state).terminal:
                pipe.hincrby(keys.stats(), f"active:{state}:{size}", -1)
            _forget(pipe, run_id, user)
            pipe.execute()
            return True

        return self._atomically(body, key)

    def index_waiting(self) -> int:
        """Puts every PENDING run into the index of waiting runs, once for a store written
        before there was one (its runs' ids from the users' queued sets, by SCAN); then marks
        the store indexed, and later calls cost one GET. How many runs it added."""
        if self.redis.exists(keys.waiting_indexed()):
            return 0
        ids: set[str] = set()
        for key in self.redis.scan_iter(match=keys.user_queued("*"), count=500):
            ids |= self.redis.smembers(key)
        added = 0
        with self.redis.pipeline(transaction=False) as pipe:
            for run in self.records(sorted(ids)):
                if run.state is RunState.PENDING:
                    pipe.zadd(
                        keys.waiting(run.resource.value),
                        {run.id: waiting_since(run, None)},
                        nx=True,
                    )
                    added += 1
            pipe.set(keys.waiting_indexed(), utcnow().isoformat())
            pipe.execute()
        return added


class _NotPending(Exception):
    """A claim found the run already claimed or ended."""


def _enter(run: Run, state: RunState, message: str, code: ErrorCode | None = None) -> HistoryEntry:
    """`run` moves to `state` now; its history entry."""
    now = iso(utcnow())
    run.state = state
    run.updated_at = now
    if state.terminal:
        run.ended_at = now
    return HistoryEntry(state, now, message, code)


def _forget(pipe, run_id: str, user: str) -> None:
    """Every key and index entry of the run, in `pipe`."""
    pipe.delete(keys.run(run_id), keys.history(run_id), keys.lease(run_id), keys.live_log(run_id))
    pipe.delete(keys.taken(run_id))
    pipe.zrem(keys.leases(), run_id)
    pipe.zrem(keys.messages_taken(), run_id)
    pipe.delete(*RunMetrics(pipe, run_id).all_keys())
    pipe.zrem(keys.user_runs(user), run_id)
    pipe.srem(keys.active_runs(), run_id)
    pipe.srem(keys.user_queued(user), run_id)
    pipe.srem(keys.user_active(user), run_id)
    for size in ResourceSize:
        pipe.zrem(keys.waiting(size.value), run_id)
