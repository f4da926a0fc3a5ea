"""Experiments as stored: the record (a flat hash, like a run's), its trials (one JSON field
each, by trial number), the per-user index, the set of running ones, and the event list the
controller waits on. The keys are in common/keys.py.

    RUNNING ──> COMPLETED   every trial done, or the objective's target reached
            ├─> FAILED      more trials failed than max_failed_trials allows
            └─> HALTED      cancelled: its active trials cancelled, no more started
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

import redis

from common import keys
from common.clock import iso, utcnow
from common.metrics import better


class ExperimentState(str, Enum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    HALTED = "HALTED"

    @property
    def terminal(self) -> bool:
        return self is not ExperimentState.RUNNING


class TrialState(str, Enum):
    CREATING = "creating"  # its run id is chosen; the run may not exist yet
    ACTIVE = "active"  # its run is queued or running
    COMPLETED = "completed"  # its run completed and reported the objective
    PRUNED = "pruned"  # stopped early by the pruner (its run HALTED)
    FAILED = "failed"  # its run failed, or completed without the objective
    CANCELLED = "cancelled"  # its run was cancelled or deleted by a person, or the experiment

    @property
    def ended(self) -> bool:
        return self not in (TrialState.CREATING, TrialState.ACTIVE)


@dataclass
class Trial:
    number: int
    run_id: str
    values: dict[str, Any]
    state: TrialState = TrialState.CREATING
    objective: float | None = None
    objective_step: int | None = None
    reported_step: int = -1  # the last step reported to the pruner
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(dict(asdict(self), state=self.state.value), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Trial:
        data = json.loads(text)
        data["state"] = TrialState(data["state"])
        return cls(**data)


@dataclass
class Experiment:
    id: str
    user: str
    name: str
    state: ExperimentState
    created_at: str
    spec: dict[str, Any]  # common/experiment.py ExperimentSpec.to_dict()
    manifest: dict[str, Any]  # the trials' manifest, secrets redacted
    credentials: str  # the manifest's connections, sealed (common/crypto.py)
    artifact: str  # the model zip every trial copies
    updated_at: str = ""
    ended_at: str = ""
    status_message: str = ""
    cancel_requested: str = ""
    delete_requested: bool = False

    def to_dict(self) -> dict[str, str]:
        out = {}
        for name, value in asdict(self).items():
            if value in ("", None, False, {}):
                continue
            if isinstance(value, Enum):
                value = value.value
            out[name] = json.dumps(value) if isinstance(value, dict) else str(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Experiment:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        values["state"] = ExperimentState(values["state"])
        for name in ("spec", "manifest"):
            values[name] = json.loads(values.get(name, "{}"))
        values["delete_requested"] = values.get("delete_requested") == "True"
        return cls(**values)


def best_trial(direction: str, trials: list[Trial]) -> Trial | None:
    """The completed trial with the best objective (the first of equals)."""
    best = None
    for trial in trials:
        if trial.state is TrialState.COMPLETED and trial.objective is not None:
            if best is None or better(direction, trial.objective, best.objective):
                best = trial
    return best


class ExperimentStore:
    def __init__(self, connection: redis.Redis, retention_seconds: int = 7 * 86400):
        self.redis = connection
        self.retention_seconds = retention_seconds

    def create(self, experiment: Experiment) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.experiment(experiment.id), mapping=experiment.to_dict())
            pipe.zadd(keys.user_experiments(experiment.user), {experiment.id: utcnow().timestamp()})
            pipe.sadd(keys.active_experiments(), experiment.id)
            pipe.rpush(keys.experiment_events(), experiment.id)
            pipe.execute()

    def exists(self, experiment_id: str) -> bool:
        return bool(self.redis.exists(keys.experiment(experiment_id)))

    def get(self, experiment_id: str) -> Experiment | None:
        data = self.redis.hgetall(keys.experiment(experiment_id))
        return Experiment.from_dict(data) if data else None

    def trials(self, experiment_id: str) -> list[Trial]:
        raw = self.redis.hgetall(keys.experiment_trials(experiment_id))
        return sorted((Trial.from_json(text) for text in raw.values()), key=lambda t: t.number)

    def active_ids(self) -> list[str]:
        return sorted(self.redis.smembers(keys.active_experiments()))

    def list_for_user(
        self, user: str, offset: int = 0, limit: int = 50
    ) -> tuple[list[Experiment], int]:
        """One page of the user's experiments, newest first, and how many there are: only the
        page's records are read; ids whose record passed retention leave the index when met
        (the page reads on past them), so the total can count one not met yet."""
        index = keys.user_experiments(user)
        found: list[Experiment] = []
        start = offset
        while len(found) < limit:
            ids = self.redis.zrevrange(index, start, start + limit - len(found) - 1)
            if not ids:
                break
            with self.redis.pipeline(transaction=False) as pipe:
                for experiment_id in ids:
                    pipe.hgetall(keys.experiment(experiment_id))
                records = pipe.execute()
            gone = [i for i, data in zip(ids, records, strict=True) if not data]
            if gone:
                self.redis.zrem(index, *gone)  # past retention
            found += [Experiment.from_dict(data) for data in records if data]
            start += len(ids) - len(gone)
        return found, self.redis.zcard(index)

    def update(self, experiment_id: str, **values: Any) -> None:
        """Fields of the record (state by its value); `updated_at` set too."""
        mapping = {"updated_at": iso(utcnow())}
        for name, value in values.items():
            mapping[name] = value.value if isinstance(value, Enum) else str(value)
        self.redis.hset(keys.experiment(experiment_id), mapping=mapping)

    def put_trial(self, experiment_id: str, trial: Trial, pipe=None) -> None:
        target = pipe if pipe is not None else self.redis
        target.hset(keys.experiment_trials(experiment_id), str(trial.number), trial.to_json())

    def notify(self, experiment_id: str) -> None:
        """Wakes the controller for this experiment (a cancel, a delete)."""
        self.redis.rpush(keys.experiment_events(), experiment_id)

    def wait_event(self, timeout: float) -> str | None:
        """The next experiment with news, or None after `timeout` seconds."""
        answer = self.redis.blpop([keys.experiment_events()], timeout=timeout)
        return answer[1] if answer else None

    def end(self, experiment_id: str, state: ExperimentState, message: str) -> None:
        """The experiment ended: its record, trials and study journal kept for the retention
        (nothing writes to the journal once the experiment has ended)."""
        now = iso(utcnow())
        study_keys = self._study_keys(experiment_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.experiment(experiment_id),
                mapping={
                    "state": state.value,
                    "status_message": message,
                    "ended_at": now,
                    "updated_at": now,
                },
            )
            pipe.srem(keys.active_experiments(), experiment_id)
            kept = (keys.experiment(experiment_id), keys.experiment_trials(experiment_id))
            for key in (*kept, *study_keys):
                pipe.expire(key, self.retention_seconds)
            pipe.execute()

    def _study_keys(self, experiment_id: str) -> list[str]:
        prefix = keys.experiment_study_prefix(experiment_id)
        return list(self.redis.scan_iter(match=f"{prefix}*", count=500))

    def delete(self, experiment: Experiment) -> None:
        """The record, its trials and its study's journal (the trial runs are the caller's)."""
        study_keys = self._study_keys(experiment.id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.experiment(experiment.id), keys.experiment_trials(experiment.id))
            if study_keys:
                pipe.delete(*study_keys)
            pipe.zrem(keys.user_experiments(experiment.user), experiment.id)
            pipe.srem(keys.active_experiments(), experiment.id)
            pipe.execute()
