"""A run's training metrics: points (name, step, value, time seen), each series' summary (last
and best), and where they live while the run does: two kinds of Redis key (common/keys.py),
a hash of summaries and a capped list of points per series. The worker writes them
(worker/metrics.py); the API reads them. Every point also goes to `learner-1/metrics.jsonl`.

A series over its cap is thinned, not cut: every other point is dropped and from then on only
every other new one is kept, so the kept points always span the whole run evenly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import redis

from common import keys

MAX_SERIES = 32  # names past this many in one run are not kept (counted in usage)


@dataclass(frozen=True)
class Point:
    name: str
    step: int
    value: float
    time: str  # ISO-8601 UTC, when the service saw it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "value": self.value, "time": self.time}

    def short(self) -> dict[str, Any]:
        return {"step": self.step, "value": self.value, "time": self.time}


def better(goal: str, value: float, than: float) -> bool:
    return value < than if goal == "minimize" else value > than


@dataclass
class Series:
    """One metric of a run: its summary, and the points kept of it (at most `cap`)."""

    name: str
    index: int
    goal: str
    cap: int
    count: int = 0
    last: Point | None = None
    best: Point | None = None
    kept: list[Point] = field(default_factory=list)
    stride: int = 1  # keep every stride-th point seen

    def add(self, point: Point) -> bool:
        """Counts the point; True when it was kept (the summary changes either way)."""
        self.count += 1
        self.last = point
        if self.best is None or better(self.goal, point.value, self.best.value):
            self.best = point
        if (self.count - 1) % self.stride:
            return False
        self.kept.append(point)
        if len(self.kept) > self.cap:
            self.kept = self.kept[::2]
            self.stride *= 2
        return True

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "goal": self.goal,
            "count": self.count,
            "last": self.last.short() if self.last else None,
            "best": self.best.short() if self.best else None,
        }


def finite(value: Any) -> float | None:
    """The value as a float when it is a finite number (NaN and infinities are not points:
    they have no JSON form, and nothing can be compared with them)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


class RunMetrics:
    """The Redis side of one run's metrics."""

    def __init__(self, connection: redis.Redis, run_id: str):
        self.redis = connection
        self.run_id = run_id
        self.key = keys.run_metrics(run_id)

    def all_keys(self) -> list[str]:
        return [self.key] + [keys.run_metric_points(self.run_id, i) for i in range(MAX_SERIES)]

    def reset(self) -> None:
        """A new attempt of the run starts its metrics again."""
        self.redis.delete(*self.all_keys())

    def save(self, changed: list[Series], appended: dict[str, list[Point]], thinned: set[str]):
        """The changed series' summaries, their new points (or, for a series just thinned, its
        kept points afresh), in one round trip."""
        with self.redis.pipeline(transaction=True) as pipe:
            for series in changed:
                pipe.hset(self.key, series.name, json.dumps(series.summary()))
                points_key = keys.run_metric_points(self.run_id, series.index)
                if series.name in thinned:
                    pipe.delete(points_key)
                    new = series.kept
                else:
                    new = appended.get(series.name, [])
                if new:
                    pipe.rpush(points_key, *(json.dumps(p.short()) for p in new))
            pipe.execute()

    def close(self, retention_seconds: int) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self.all_keys():
                pipe.expire(key, retention_seconds)
            pipe.execute()

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {name: json.loads(text) for name, text in self.redis.hgetall(self.key).items()}

    def points(self, summaries: dict[str, dict[str, Any]], since: int = 0) -> dict[str, list]:
        """Each named series' kept points from step `since` on."""
        with self.redis.pipeline(transaction=False) as pipe:
            for summary in summaries.values():
                pipe.lrange(keys.run_metric_points(self.run_id, summary["index"]), 0, -1)
            answers = pipe.execute()
        out = {}
        for name, raw in zip(summaries, answers, strict=True):
            points = (json.loads(text) for text in raw)
            out[name] = [p for p in points if p["step"] >= since]
        return out


def read_jsonl(lines, since: int = 0, only: str | None = None):
    """Summaries and points from a stored `metrics.jsonl` (one Point per line), as
    `RunMetrics` gives them; for runs whose Redis keys have expired."""
    series: dict[str, Series] = {}
    for line in lines:
        try:
            data = json.loads(line)
            point = Point(data["name"], int(data["step"]), float(data["value"]), data["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if only is not None and point.name != only:
            continue
        if point.name not in series:
            series[point.name] = Series(point.name, len(series), data.get("goal", ""), 10**9)
        series[point.name].add(point)
    summaries = {name: s.summary() for name, s in series.items()}
    points = {name: [p.short() for p in s.kept if p.step >= since] for name, s in series.items()}
    return summaries, points
