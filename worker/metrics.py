"""Training metrics, collected while the command runs, from three places here and TensorBoard's
event files (worker/tensorboard.py):

    the log           the manifest's regexes over each new line of the stored log file
    LOG_DIR           evaluation-metrics.txt, JSON lines the program appends (FfDL's form
                      {"etimes": {...}, "values": {...}} or flat {"step": 3, "loss": 0.2})
    RESULT_DIR        val_dict_list.json, a list the program rewrites ([{"steps": 10,
                      "accuracy": 0.9}, ...], the original service's form)

A thread of its own reads them every `poll_seconds`, off the log pump's path: the pump only
writes the log file, and this thread reads what is new in it. Regexes run with a time limit
and without the GIL (the `regex` module's `concurrent`), so one that backtracks badly costs its
own match, not the worker. The files the program writes are opened without following links.
Every point goes to metrics.jsonl in LOG_DIR (stored as learner-1/metrics.jsonl); the
summaries and a thinned copy of each series go to Redis (common/metrics.py).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from common.clock import iso, utcnow
from common.metrics import MAX_SERIES, Point, RunMetrics, Series, finite
from common.metricspec import STAMP_CHARS, LogPattern, goal_for

log = logging.getLogger(__name__)

VAL_DICT_FILE = "val_dict_list.json"
STEP_KEYS = ("step", "steps", "epoch", "iteration")
NOT_VALUES = {*STEP_KEYS, "time", "timestamp", "meta", "grouplabel", "etimes", "values"}
READ_BYTES = 16 * 1024 * 1024  # of the log per pass; the next pass reads on
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_JSON_LINE = 64 * 1024

# What a source yields: name, step (None: the series' next), value, time seen, goal (None: by name)
Found = tuple[str, int | None, float, str, str | None]


def open_regular(path: Path) -> int | None:
    """A read-only fd on `path` when it is a plain file with one link (never a symlink or a
    hard link to a file the program should not read), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        return None
    return fd


class LogSource:
    """The manifest's regexes over what is new in the stored log (each line: stamp, text)."""

    def __init__(self, patterns: Sequence[LogPattern], log_file: Path, regex_seconds: float):
        self.patterns = [(p, p.compiled()) for p in patterns]
        self.log_file = log_file
        self.regex_seconds = regex_seconds
        self.offset = 0
        self.timeouts = 0

    def read(self) -> Iterator[Found]:
        if not self.patterns:
            return
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self.offset)
                data = f.read(READ_BYTES)
        except FileNotFoundError:
            return
        cut = data.rfind(b"\n")
        if cut < 0:
            return
        self.offset += cut + 1
        text = data[: cut + 1].decode("utf-8", "replace")
        for pattern, compiled in self.patterns:
            try:
                yield from self._matches(text, pattern, compiled)
            except TimeoutError:
                self.timeouts += 1
                log.warning(
                    "metric regex %r: over %.1f s on a piece of the log, skipped",
                    pattern.regex,
                    self.regex_seconds,
                )

    def _matches(self, text: str, pattern: LogPattern, compiled) -> Iterator[Found]:
        matches = compiled.finditer(text, concurrent=True, timeout=self.regex_seconds)
        for match in matches:
            start = text.rfind("\n", 0, match.start()) + 1
            seen = text[start : start + STAMP_CHARS - 1]
            step = None
            if pattern.step_group:
                step = _step(match.group(pattern.step_group))
            for value in pattern.values:
                group = int(value.group) if value.group.isdigit() else value.group
                number = finite(match.group(group))
                if number is not None:
                    yield value.name, step, number, seen, value.goal


class JsonLinesSource:
    """evaluation-metrics.txt in LOG_DIR: the lines appended since the last look."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.bad_lines = 0

    def read(self) -> Iterator[Found]:
        fd = open_regular(self.path)
        if fd is None:
            return
        with os.fdopen(fd, "rb") as f:
            f.seek(self.offset)
            data = f.read(MAX_JSON_BYTES)
        cut = data.rfind(b"\n")
        if cut < 0:
            return
        self.offset += cut + 1
        seen = iso(utcnow())
        for line in data[:cut].split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line) if len(line) <= MAX_JSON_LINE else None
            except ValueError:
                record = None
            if not isinstance(record, dict):
                self.bad_lines += 1
                continue
            yield from _record_points(record, seen)


class ValDictSource:
    """val_dict_list.json in RESULT_DIR, read again whenever it changed; new entries only."""

    def __init__(self, path: Path):
        self.path = path
        self.seen_entries = 0
        self.version: tuple[int, int] | None = None

    def read(self) -> Iterator[Found]:
        fd = open_regular(self.path)
        if fd is None:
            return
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            version = (info.st_mtime_ns, info.st_size)
            if version == self.version or info.st_size > MAX_JSON_BYTES:
                return
            data = f.read(MAX_JSON_BYTES)
        try:
            entries = json.loads(data)
        except ValueError:
            return  # being rewritten: read again next time
        self.version = version
        if not isinstance(entries, list):
            return
        seen = iso(utcnow())
        for entry in entries[self.seen_entries :]:
            if isinstance(entry, dict):
                yield from _record_points(entry, seen)
        self.seen_entries = max(self.seen_entries, len(entries))


def _record_points(record: dict, seen: str) -> Iterator[Found]:
    """A JSON record's points: FfDL's {etimes, values, grouplabel} or a flat mapping."""
    values = record.get("values")
    if isinstance(values, dict):
        label = record.get("grouplabel")
        prefix = f"{label}:" if isinstance(label, str) and label else ""
        etimes = record.get("etimes") if isinstance(record.get("etimes"), dict) else {}
        step = next((_step(_inner(v)) for v in etimes.values()), None)
        for name, value in values.items():
            number = finite(_inner(value))
            if number is not None:
                yield f"{prefix}{name}", step, number, seen, None
        return
    step = next((_step(record[k]) for k in STEP_KEYS if k in record), None)
    for name, value in record.items():
        number = finite(value) if name not in NOT_VALUES else None
        if number is not None:
            yield str(name), step, number, seen, None


def _inner(value):
    return value.get("value") if isinstance(value, dict) else value


def _step(value) -> int | None:
    number = finite(value)
    return int(number) if number is not None else None


class MetricsCollector(threading.Thread):
    def __init__(
        self,
        sources: Sequence,
        out_file: Path,
        store: RunMetrics | None,
        max_points: int = 1000,
        max_stored_points: int = 1_000_000,
        poll_seconds: float = 1.0,
    ):
        super().__init__(name="metrics", daemon=True)
        self.sources = tuple(sources)
        self.out_file = out_file
        self.store = store
        self.max_points = max_points
        self.max_stored_points = max_stored_points
        self.poll_seconds = poll_seconds
        self.series: dict[str, Series] = {}
        self.stored_points = 0
        self.dropped_points = 0
        self._unsaved: set[str] = set()  # series Redis has not got whole since a failure
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._closed.wait(self.poll_seconds):
            self.collect()

    def close(self) -> None:
        """Stops the thread, then reads what the sources still hold."""
        self._closed.set()
        self.join(timeout=60)
        self.collect(final=True)

    def collect(self, final: bool = False) -> None:
        with self._lock:
            found = []
            for source in self.sources:
                try:
                    offset = getattr(source, "offset", None)
                    found += source.read()
                    # At the end, the whole rest of the log (read in pieces).
                    while final and isinstance(source, LogSource) and source.offset != offset:
                        offset = source.offset
                        found += source.read()
                    while final and getattr(source, "unread", False):  # event files
                        found += source.read()
                except Exception:  # a source's failure must not end the others
                    log.exception("metrics: %s failed", type(source).__name__)
            if found:
                self._keep(found)

    def summaries(self) -> dict[str, dict]:
        with self._lock:
            return {name: s.summary() for name, s in self.series.items()}

    def _keep(self, found: list[Found]) -> None:
        appended: dict[str, list[Point]] = {}
        thinned: set[str] = set()
        lines = []
        for name, step, value, seen, goal in found:
            series = self._series(name, goal)
            if series is None:
                self.dropped_points += 1
                continue
            point = Point(name, series.count + 1 if step is None else step, value, seen)
            stride = series.stride
            if series.add(point):
                appended.setdefault(name, []).append(point)
            if series.stride != stride:
                thinned.add(name)
            if self.stored_points < self.max_stored_points:
                lines.append(json.dumps(dict(point.to_dict(), goal=series.goal)) + "\n")
                self.stored_points += 1
        with open(self.out_file, "a") as out:
            out.writelines(lines)
        self._save(appended, thinned)

    def _series(self, name: str, goal: str | None) -> Series | None:
        series = self.series.get(name)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                return None
            series = Series(name, len(self.series), goal or goal_for(name), self.max_points)
            self.series[name] = series
        return series

    def _save(self, appended: dict[str, list[Point]], thinned: set[str]) -> None:
        if self.store is None:
            return
        names = set(appended) | thinned | self._unsaved
        whole = thinned | self._unsaved
        try:
            self.store.save([self.series[n] for n in names], appended, whole)
            self._unsaved.clear()
        except redis.RedisError as exc:
            # Redis is slow or away: those series are sent whole once it answers again.
            log.warning("metrics not sent to Redis yet: %s", exc)
            self._unsaved |= names
