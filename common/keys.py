"""Every Redis key the service writes, built in one place.

key                               type    TTL
dlaas:run:<run-id>                hash    none while active; retention after the run ends
dlaas:run:<run-id>:history        list    same as the run hash (JSON entries, oldest first)
dlaas:user:<user>:runs            zset    none; member run id, score submission epoch seconds.
                                          Members whose run hash expired are pruned on read.

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
