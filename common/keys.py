"""Every Redis key the service writes, built in one place.

key                               type    TTL
dlaas:run:<run-id>                hash    none while active; retention after the run ends
dlaas:run:<run-id>:history        list    same as the run hash (JSON entries, oldest first)
dlaas:user:<user>:runs            zset    none; member run id, score submission epoch seconds.
                                          Members whose run hash expired are pruned on read.
dlaas:runs:active                 set     none; ids of runs in DOWNLOADING/PROCESSING/STORING
dlaas:user:<user>:queued          set     none; the user's PENDING run ids (quota counting)
dlaas:user:<user>:active          set     none; the user's DOWNLOADING/PROCESSING/STORING run ids
dlaas:waiting:<size>              zset    none; the PENDING runs of a size in the order they are
                                          served: score the epoch seconds a run took its place
                                          (its submission; its return to PENDING from a node, which
                                          puts it at the back), member its id. Written in the
                                          transactions that change a run's state (runstore.py)
dlaas:waiting:indexed             string  none; set once every PENDING run is in the index (a store
                                          from before the index is indexed once, then never scanned)
dlaas:plan                        hash    a few plan periods; the fleet's reservation plan
                                          (common/fleet/plan.py): node name -> JSON list of the runs
                                          past the bound it holds GPUs back for, "@at" -> when made,
                                          "@due" -> when the next waiting run passes the bound
dlaas:plan:lock                   string  one plan period, deleted once made; the node making it
dlaas:tokens                      hash    none; "sha256:<hex>" -> JSON {id, user, created_at,
                                          created_by, note} (tokens made by `dlaas admin`)
dlaas:rate:<token-id>:<minute>    string  2 minutes; requests counted in that minute
dlaas:audit                       stream  capped (DLAAS_AUDIT_MAX_ENTRIES); who did what, from where
dlaas:lease:<run-id>              string  lease TTL (DLAAS_LEASE_TTL_SECONDS); "<worker> <attempt>",
                                          refreshed by the worker executing the run
dlaas:taken:<run-id>              string  lease TTL; the worker that received the run's message
                                          and has not yet claimed the run or handed it back
dlaas:leases                      zset    none; run id -> epoch seconds its lease lapses, as its
                                          worker last refreshed it (a hint: the lease key decides);
                                          the reconciler reads the lapsed ones by range
dlaas:messages:taken              zset    none; run id -> epoch seconds a worker took its message
                                          (with dlaas:taken:<run-id>), until it claims the run or
                                          hands it back; what the reconciler counts as in flight
dlaas:worker:<name>               string  heartbeat TTL; JSON of the worker (host, sizes, GPUs, run)
dlaas:workers                     zset    none; worker name -> last heartbeat epoch (pruned on read)
dlaas:worker:<name>:drain         string  none; epoch seconds after which its run is handed back
dlaas:reconciler                  string  lock TTL; the id of the one active reconciler
dlaas:run:<run-id>:log            stream  capped (DLAAS_LIVE_LOG_MAX_ENTRIES, trimmed to a tail when
                                          the run ends, then the run's retention); entries
                                          {line: first line number, data: stamped lines}
dlaas:worker:<name>:gpus          hash    heartbeat TTL; the node's GPU ledger: run id -> JSON
                                          {gpus, slot, size, started_at, timeout_seconds, pid} of
                                          each run holding GPUs there (one transaction per start)
dlaas:worker:<name>:cache         hash    none; the node's data-cache counters: hits, hit_bytes,
                                          misses, miss_bytes, evictions (objects, bytes)
dlaas:worker:<name>:wake          list    heartbeat TTL; pushed when a run of the node frees its
                                          GPUs, so that its consumer control looks again at once
dlaas:worker:<name>:store         list    none; ids of runs whose results the node kept (S303) and
                                          that a user asked it to store again (worker/storeagain.py)
dlaas:stats                       hash    none; counters and gauges behind /metrics (stats.py)
dlaas:run:<run-id>:metrics        hash    as the live log; metric name -> JSON summary {index,
                                          goal, count, last, best} (common/metrics.py)
dlaas:run:<run-id>:metric:<n>     list    same; the points of the metric whose index is n, JSON
                                          {step, value, time}, thinned to DLAAS_METRICS_MAX_POINTS
dlaas:experiment:<id>              hash    none while running; retention after it ends; the
                                          experiment's record (common/experimentstore.py)
dlaas:experiment:<id>:trials       hash    same; trial number -> JSON of the trial (its run id,
                                          values, state, objective)
dlaas:experiment:<id>:study:      prefix  same; Optuna's journal of the experiment's study
                                          (optuna.storages.journal.JournalRedisBackend keys)
dlaas:user:<user>:experiments     zset    none; experiment id, score creation epoch seconds
dlaas:experiments:active          set     none; ids of RUNNING experiments
dlaas:experiments:events          list    none; experiment ids with news (a trial run ended, a
                                          cancel, a new experiment): the controller BLPOPs it
dlaas:controller                  string  lock TTL; the id of the one active experiment controller
dlaas:session:<sha256 of id>      string  DLAAS_SESSION_HOURS; a browser session: JSON {user,
                                          token_hash, csrf, created_at} (common/sessions.py)

Celery owns its own keys on the same Redis: the queues `dlaas.small`, `dlaas.medium`,
`dlaas.large` (lists, see common/fleet/sizes.py), `unacked*`, `_kombu.*` and
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


def taken(run_id: str) -> str:
    return f"{PREFIX}:taken:{run_id}"


def leases() -> str:
    return f"{PREFIX}:leases"


def messages_taken() -> str:
    return f"{PREFIX}:messages:taken"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def workers() -> str:
    return f"{PREFIX}:workers"


def drain(name: str) -> str:
    return f"{PREFIX}:worker:{name}:drain"


def reconciler_lock() -> str:
    return f"{PREFIX}:reconciler"


def live_log(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}:log"


def worker_gpus(name: str) -> str:
    return f"{PREFIX}:worker:{name}:gpus"


def worker_cache(name: str) -> str:
    return f"{PREFIX}:worker:{name}:cache"


def worker_wake(name: str) -> str:
    return f"{PREFIX}:worker:{name}:wake"


def worker_store_requests(name: str) -> str:
    return f"{PREFIX}:worker:{name}:store"


def stats() -> str:
    return f"{PREFIX}:stats"


def user_queued(user: str) -> str:
    return f"{PREFIX}:user:{user}:queued"


def user_active(user: str) -> str:
    return f"{PREFIX}:user:{user}:active"


def waiting(size: str) -> str:
    return f"{PREFIX}:waiting:{size}"


def waiting_indexed() -> str:
    return f"{PREFIX}:waiting:indexed"


def plan() -> str:
    return f"{PREFIX}:plan"


def plan_lock() -> str:
    return f"{PREFIX}:plan:lock"


def tokens() -> str:
    return f"{PREFIX}:tokens"


def rate(token_id: str, minute: int) -> str:
    return f"{PREFIX}:rate:{token_id}:{minute}"


def audit() -> str:
    return f"{PREFIX}:audit"


def run_metrics(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}:metrics"


def run_metric_points(run_id: str, index: int) -> str:
    return f"{PREFIX}:run:{run_id}:metric:{index}"


def experiment_study_prefix(experiment_id: str) -> str:
    """The prefix Optuna's Redis journal puts before its own keys for this study."""
    return f"{PREFIX}:experiment:{experiment_id}:study:"


def experiment(experiment_id: str) -> str:
    return f"{PREFIX}:experiment:{experiment_id}"


def experiment_trials(experiment_id: str) -> str:
    return f"{PREFIX}:experiment:{experiment_id}:trials"


def user_experiments(user: str) -> str:
    return f"{PREFIX}:user:{user}:experiments"


def active_experiments() -> str:
    return f"{PREFIX}:experiments:active"


def experiment_events() -> str:
    return f"{PREFIX}:experiments:events"


def controller_lock() -> str:
    return f"{PREFIX}:controller"


def session(session_hash: str) -> str:
    return f"{PREFIX}:session:{session_hash}"
