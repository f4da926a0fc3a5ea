"""Counters and gauges of the service, kept in one Redis hash so that every API process,
worker and reconciler adds to the same figures; /metrics reads them at each scrape.

Fields of `dlaas:stats`:
  active:<state>:<size>             runs now in PENDING/DOWNLOADING/PROCESSING/STORING
  submitted:<size>                  runs accepted
  ended:<state>:<size>:<code|->     runs that reached an end state
  duration_bucket:<size>:<le>       run durations (submission to end), cumulative buckets
  duration_sum:<size>, duration_count:<size>
  staged_bytes, staging_seconds, stored_bytes, storing_seconds
"""

from __future__ import annotations

from common import keys
from common.run import Run
from common.states import RunState

DURATION_BUCKETS = (10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)


def count_state_change(pipe, run: Run, old: RunState | None, seconds: float | None) -> None:
    """Add one state change of `run` (`old` -> run.state) to the stats, in `pipe`."""
    key, size = keys.stats(), run.resource.value
    if old is not None and not old.terminal:
        pipe.hincrby(key, f"active:{old.value}:{size}", -1)
    if run.state.terminal:
        code = run.error_code.value if run.error_code else "-"
        pipe.hincrby(key, f"ended:{run.state.value}:{size}:{code}", 1)
        if seconds is not None:
            for le in DURATION_BUCKETS:
                if seconds <= le:
                    pipe.hincrby(key, f"duration_bucket:{size}:{le}", 1)
            pipe.hincrbyfloat(key, f"duration_sum:{size}", seconds)
            pipe.hincrby(key, f"duration_count:{size}", 1)
    else:
        pipe.hincrby(key, f"active:{run.state.value}:{size}", 1)
    if old is None:
        pipe.hincrby(key, f"submitted:{size}", 1)


def add_transfers(connection, usage: dict) -> None:
    """Add what a run's staging and storing moved, and how long they took."""
    key = keys.stats()
    with connection.pipeline(transaction=False) as pipe:
        for name in ("staged_bytes", "stored_bytes"):
            if usage.get(name):
                pipe.hincrby(key, name, int(usage[name]))
        for name in ("staging_seconds", "storing_seconds"):
            if usage.get(name):
                pipe.hincrbyfloat(key, name, float(usage[name]))
        pipe.execute()


def read(connection) -> dict[str, float]:
    return {k: float(v) for k, v in connection.hgetall(keys.stats()).items()}
