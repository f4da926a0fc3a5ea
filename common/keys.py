"""Every Redis key the service writes, built in one place.

key                               type    TTL
dlaas:run:<run-id>                hash    none while active; retention after the run ends
dlaas:run:<run-id>:history        list    same as the run hash (JSON entries, oldest first)
dlaas:user:<user>:runs            zset    none; member run id, score submission epoch seconds.
                                          Members whose run hash expired are pruned on read.
dlaas:runs:active                 set     none; ids of runs in DOWNLOADING/PROCESSING/STORING
dlaas:lease:<run-id>              string  lease TTL (DLAAS_LEASE_TTL_SECONDS); "<worker> <attempt>",
                                          refreshed by the worker executing the run
dlaas:worker:<name>               string  heartbeat TTL; JSON of the worker (host, sizes, GPUs, run)
dlaas:workers                     zset    none; worker name -> last heartbeat epoch (pruned on read)
dlaas:worker:<name>:drain         string  none; epoch seconds after which its run is handed back
dlaas:reconciler                  string  lock TTL; the id of the one active reconciler

Celery owns its own keys on the same Redis: the queues `dlaas.small`, `dlaas.medium`,
`dlaas.large` (lists, see common/sizes.py), `unacked*`, `_kombu.*` and
`celery-task-meta-<task-id>` (results, expiring per common/taskqueue.py).
"""

from __future__ import annotations

PREFIX = "dlaas"


def run(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}"


def history(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}:history"


def user_runs(user: str) -> str:
    return f"{PREFIX}:user:{user}:runs"


def active_runs() -> str:
    return f"{PREFIX}:runs:active"


def lease(run_id: str) -> str:
    return f"{PREFIX}:lease:{run_id}"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def workers() -> str:
    return f"{PREFIX}:workers"


def drain(name: str) -> str:
    return f"{PREFIX}:worker:{name}:drain"


def reconciler_lock() -> str:
    return f"{PREFIX}:reconciler"
