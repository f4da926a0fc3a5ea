"""The run store against a real Redis: records, history, atomic claims, retention, listing."""

from __future__ import annotations

import threading
import time

import pytest

from common import keys, runstore
from common.clock import iso, utcnow
from common.fleet.sizes import ResourceSize
from common.ids import is_run_id, new_run_id
from common.run import Run
from common.runstore import InvalidTransition, Quota, QuotaExceeded, RunFilter, RunStore
from common.states import ErrorCode, RunState

pytestmark = pytest.mark.integration


def _created(store: RunStore, runs: list[Run]) -> list[str]:
    """Stores the runs in their order (oldest first); their ids."""
    for run in runs:
        store.create(run)
    return [run.id for run in runs]


def _run(user: str = "alice", name: str = "r") -> Run:
    return Run(
        id=new_run_id(),
        user=user,
        name=name,
        state=RunState.PENDING,
        framework_name="python",
        framework_version="3.11",
        resource=ResourceSize.SMALL,
        gpu_count=1,
        command="true",
        submitted_at=iso(utcnow()),
        manifest={"name": name},
        credentials="sealed",
    )


def test_run_ids_look_like_the_original():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_run_id(i) for i in ids)


def test_create_get_round_trip(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    got = store.get(run.id)
    assert got == run
    assert [h.state for h in store.history(run.id)] == [RunState.PENDING]
    assert store_redis.ttl(keys.run(run.id)) == -1  # active runs never expire


def test_transitions_append_history_and_terminal_runs_expire(store_redis):
    store = RunStore(store_redis, retention_seconds=3600)
    run = _run()
    store.create(run)
    store.claim(run.id, "w1", lambda n: [0])
    store.transition(run.id, RunState.PROCESSING, "running")
    store.transition(run.id, RunState.STORING, "exit 3", exit_code=3)
    done = store.transition(run.id, RunState.FAILED, "command exited 3", ErrorCode.COMMAND_FAILED)
    assert done.exit_code == 3 and done.error_code is ErrorCode.COMMAND_FAILED
    assert done.ended_at and done.worker == "w1" and done.gpus == [0]
    history = store.history(run.id)
    assert [h.state for h in history] == [
        RunState.PENDING,
        RunState.DOWNLOADING,
        RunState.PROCESSING,
        RunState.STORING,
        RunState.FAILED,
    ]
    assert history[-1].error_code is ErrorCode.COMMAND_FAILED
    for key in (keys.run(run.id), keys.history(run.id)):
        assert 3500 < store_redis.ttl(key) <= 3600


def test_a_store_again_request_goes_to_the_node_that_kept_the_results_once(store_redis):
    store = RunStore(store_redis, retention_seconds=3600)
    run = _run()
    store.create(run)
    store.claim(run.id, "keeper", lambda n: [0])
    with pytest.raises(runstore.NotKept, match="no results of it are kept on a node"):
        store.request_store_again(run.id, "alice")
    kept = {"node": "keeper", "path": "/w/unstored/x", "state": "kept"}
    store.transition(run.id, RunState.STORING, "storing")
    store.transition(
        run.id, RunState.FAILED, "not stored", ErrorCode.RESULT_UPLOAD, kept_results=kept
    )
    asked = store.request_store_again(run.id, "alice")
    requested_at = asked.kept_results.pop("requested_at")
    assert asked.kept_results == dict(kept, state="requested", requested_by="alice")
    assert requested_at.startswith(iso(utcnow())[:10])
    assert store.get(run.id).kept_results["state"] == "requested"
    assert store.next_store_request("keeper", 0.1) == run.id
    assert store.next_store_request("keeper", 0.1) is None
    with pytest.raises(runstore.NotKept, match="keeper is requested its results already"):
        store.request_store_again(run.id, "bob")
    assert store_redis.llen(keys.worker_store_requests("keeper")) == 0
    # An ended run's fields rewritten keep its expiry (the record still goes at retention).
    assert 3500 < store_redis.ttl(keys.run(run.id)) <= 3600
    with pytest.raises(runstore.RunNotFound):
        store.request_store_again("training-nosuchrun", "alice")


def test_forbidden_transition_raises(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    with pytest.raises(InvalidTransition, match="cannot go from PENDING to COMPLETED"):
        store.transition(run.id, RunState.COMPLETED)


def test_exactly_one_of_many_concurrent_claims_wins(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    winners = []
    barrier = threading.Barrier(8)

    def claim(i):
        barrier.wait()
        if store.claim(run.id, f"w{i}", lambda n, i=i: [i]) is not None:
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(winners) == 1
    assert store.get(run.id).worker == f"w{winners[0]}"
    assert len(store.history(run.id)) == 2


def test_claiming_an_ended_or_missing_run_returns_none(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    store.transition(run.id, RunState.HALTED, "cancelled")
    assert store.claim(run.id, "w") is None
    assert store.claim("training-missing00", "w") is None


def test_an_update_sets_and_clears_fields_only_for_the_current_claim(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    claimed = store.claim(run.id, "w1", lambda n: [0])
    assert store.update(run.id, claimed.attempt, process_id=42, usage={"staged_bytes": 7})
    got = store.get(run.id)
    assert (got.process_id, got.usage) == (42, {"staged_bytes": 7})
    # An empty value removes the field; a stale claim changes nothing.
    assert store.update(run.id, claimed.attempt, usage={}, status_message="staging")
    assert not store.update(run.id, claimed.attempt - 1, process_id=1)
    assert not store.update("training-missing00", 1, process_id=1)
    got = store.get(run.id)
    assert (got.process_id, got.usage, got.status_message) == (42, {}, "staging")
    assert "usage" not in store_redis.hgetall(keys.run(run.id))
    assert not store_redis.exists(keys.run("training-missing00"))
    with pytest.raises(TypeError, match="no field 'nonsense'"):
        store.update(run.id, claimed.attempt, nonsense=1)


def test_listing_is_per_user_newest_first_and_paginated(store_redis):
    store = RunStore(store_redis)
    mine = []
    for i in range(5):
        run = _run("alice", f"a{i}")
        store.create(run)
        mine.append(run.id)
    store.create(_run("bob", "b"))
    page, total = store.list_for_user("alice", offset=0, limit=3)
    assert total == 5
    assert [r.id for r in page] == mine[::-1][:3]
    page2, _ = store.list_for_user("alice", offset=3, limit=3)
    assert [r.id for r in page2] == mine[::-1][3:]


def test_expired_runs_leave_the_listing(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    store_redis.delete(keys.run(run.id))  # as if retention had passed
    runs, total = store.list_for_user("alice")
    assert (runs, total) == ([], 0)
    assert store_redis.zcard(keys.user_runs("alice")) == 0


def test_conditional_delete(store_redis):
    store = RunStore(store_redis)
    run = _run()
    store.create(run)
    store.claim(run.id, "w")
    assert store.delete(run.id, "alice", only_in={RunState.PENDING}) is False
    assert store.get(run.id) is not None
    assert store.delete(run.id, "alice") is True
    assert store.get(run.id) is None and store.history(run.id) == []


def test_quotas_count_queued_and_active_runs_and_refuse_atomically(store_redis):
    store = RunStore(store_redis, 60)
    quota = Quota(max_queued=2, max_active=1)
    first, second = _run("quota-user"), _run("quota-user")
    store.create(first, quota=quota)
    store.create(second, quota=quota)
    with pytest.raises(QuotaExceeded) as refused:
        store.create(_run("quota-user"), quota=quota)
    assert (refused.value.which, refused.value.limit, refused.value.current) == ("queued", 2, 2)
    # One starts: one queued place frees, the one active place is taken.
    store.transition(first.id, RunState.DOWNLOADING)
    third = _run("quota-user")
    with pytest.raises(QuotaExceeded) as refused:
        store.create(third, quota=quota)
    assert refused.value.which == "active"
    assert not store.exists(third.id)
    store.transition(first.id, RunState.FAILED, error_code=ErrorCode.WORKER_ERROR)
    store.create(third, quota=quota)  # the active one ended
    assert store_redis.smembers(keys.user_queued("quota-user")) == {second.id, third.id}
    assert store_redis.scard(keys.user_active("quota-user")) == 0
    store.delete(second.id, "quota-user")
    assert store_redis.smembers(keys.user_queued("quota-user")) == {third.id}


def test_concurrent_submissions_never_pass_the_quota_together(store_redis):
    store = RunStore(store_redis, 60)
    quota = Quota(max_queued=5)
    outcomes = []

    def submit():
        try:
            store.create(_run("racer"), quota=quota)
            outcomes.append("ok")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["ok"] * 5 + ["refused"] * 15
    assert store_redis.scard(keys.user_queued("racer")) == 5


def _trial(user: str, name: str, experiment_id: str, trial: int) -> Run:
    run = _run(user, name)
    run.experiment = {"id": experiment_id, "trial": trial, "values": {"lr": 0.1}}
    return run


def _listed(store: RunStore, user: str | None = None, **criteria) -> tuple[list[str], int]:
    """(ids of one page, total) of the user's list, or every user's (user None)."""
    paging = {k: criteria.pop(k) for k in ("offset", "limit") if k in criteria}
    where = RunFilter(**criteria)
    if user is None:
        runs, total = store.list_all(where=where, **paging)
    else:
        runs, total = store.list_for_user(user, where=where, **paging)
    return [r.id for r in runs], total


def test_filters_keep_state_name_and_experiment_together_and_count_what_they_keep(store_redis):
    store = RunStore(store_redis, retention_seconds=3600)
    names = ["ResNet-a", "bert-1", "BERT-2", "resnet-b", "mlp", "Bert-3"]
    made = _created(  # oldest first
        store,
        [
            _trial("alice", name, "experiment-aaaaaaaaa", i) if i % 2 else _run("alice", name)
            for i, name in enumerate(names)
        ],
    )
    store.create(_run("bob", "bert-bob"))
    store.transition(made[1], RunState.FAILED, "exit 1", ErrorCode.COMMAND_FAILED)
    store.transition(made[2], RunState.FAILED, "exit 1", ErrorCode.COMMAND_FAILED)
    store.request_cancel(made[5], "alice")
    newest = made[::-1]

    assert _listed(store, "alice", state=RunState.FAILED) == ([made[2], made[1]], 2)
    # The name: a part of it, in any case.
    assert _listed(store, "alice", name="bErT") == ([made[5], made[2], made[1]], 3)
    assert _listed(store, "alice", name="net-") == ([made[3], made[0]], 2)
    assert _listed(store, "alice", experiment="experiment-aaaaaaaaa") == (
        [made[5], made[3], made[1]],
        3,
    )
    # All given must hold.
    assert _listed(store, "alice", state=RunState.FAILED, name="bert") == ([made[2], made[1]], 2)
    assert _listed(
        store, "alice", state=RunState.FAILED, name="bert", experiment="experiment-aaaaaaaaa"
    ) == ([made[1]], 1)
    assert _listed(store, "alice", state=RunState.HALTED, name="resnet") == ([], 0)
    # Not an id's part, nor another experiment's: an experiment is its id, whole.
    assert _listed(store, "alice", experiment="experiment-aaaa") == ([], 0)
    assert _listed(store, "alice", experiment="trial") == ([], 0)
    # Pages of the kept ones, and the total is theirs (all but "mlp").
    with_e = [made[5], made[3], made[2], made[1], made[0]]
    assert _listed(store, "alice", name="e", limit=2) == (with_e[:2], 5)
    assert _listed(store, "alice", name="e", offset=2, limit=2) == (with_e[2:4], 5)
    assert _listed(store, "alice", name="e", offset=4, limit=2) == (with_e[4:], 5)
    assert _listed(store, "alice", name="e", offset=9) == ([], 5)
    # No criterion: every run, as without a filter.
    assert _listed(store, "alice") == (newest, 6)
    # Every user's: bob's too, the filters the same.
    everyone, total = _listed(store, None, name="bert")
    assert total == 4 and everyone[1:] == [made[5], made[2], made[1]]
    assert store.get(everyone[0]).user == "bob"
    assert _listed(store, None, state=RunState.FAILED, name="BERT") == ([made[2], made[1]], 2)


def test_a_page_read_past_expired_records_prunes_them_and_fills_up(store_redis):
    store = RunStore(store_redis, retention_seconds=3600)
    made = _created(store, [_run("alice", f"r{i}") for i in range(12)])
    newest = made[::-1]
    index = keys.user_runs("alice")
    # Records gone by retention: three inside the first page, one further down.
    for run_id in (newest[1], newest[2], newest[4], newest[10]):
        store_redis.delete(keys.run(run_id))
    page, total = store.list_for_user("alice", limit=4)
    assert [r.id for r in page] == [newest[0], newest[3], newest[5], newest[6]]
    # The three met left the index; the one not met yet is still counted, and still there.
    assert total == 9 and store_redis.zcard(index) == 9
    assert store_redis.zscore(index, newest[10]) is not None
    assert all(store_redis.zscore(index, i) is None for i in (newest[1], newest[2], newest[4]))
    # The next page, from where the first ended, meets it.
    page, total = store.list_for_user("alice", offset=4, limit=4)
    assert [r.id for r in page] == [newest[7], newest[8], newest[9], newest[11]]
    assert total == 8 and store_redis.zcard(index) == 8
    # A page of expired ones only, at the end: empty, and the index pruned.
    for run_id in (newest[9], newest[11]):
        store_redis.delete(keys.run(run_id))
    page, total = store.list_for_user("alice", offset=6, limit=4)
    assert (page, total) == ([], 6)
    assert store_redis.zcard(index) == 6


def test_a_long_stretch_of_expired_records_is_read_through(store_redis):
    store = RunStore(store_redis, retention_seconds=3600)
    made = _created(store, [_run("alice", f"r{i}") for i in range(60)])
    for run_id in made[:55]:  # the oldest ones expire first
        store_redis.delete(keys.run(run_id))
    page, total = store.list_for_user("alice", limit=10)
    assert [r.id for r in page] == made[55:][::-1]
    assert total == 5 and store_redis.zcard(keys.user_runs("alice")) == 5


def test_real_expiry_leaves_the_lists_filtered_or_not(store_redis):
    """Through the TTL an ended run really gets (retention), not a deleted key."""
    store = RunStore(store_redis, retention_seconds=2)
    ended, kept = _run("alice", "short"), _run("alice", "long")
    store.create(ended)
    store.create(kept)
    store.transition(ended.id, RunState.FAILED, "exit 1", ErrorCode.COMMAND_FAILED)
    assert 0 < store_redis.ttl(keys.run(ended.id)) <= 2
    assert _listed(store, "alice", state=RunState.FAILED) == ([ended.id], 1)
    deadline = time.monotonic() + 10
    while store_redis.exists(keys.run(ended.id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _listed(store, "alice", state=RunState.FAILED) == ([], 0)
    assert store_redis.zcard(keys.user_runs("alice")) == 1  # pruned by the filtered list
    assert _listed(store, "alice") == ([kept.id], 1)


def test_filtered_lists_prune_the_expired_records_they_meet(store_redis):
    store = RunStore(store_redis)
    mine = [_run("alice", f"a{i}") for i in range(3)]
    bobs = [_run("bob", f"b{i}") for i in range(2)]
    for run in mine + bobs:
        store.create(run)
    store_redis.delete(keys.run(mine[0].id), keys.run(bobs[1].id))
    assert _listed(store, "alice", name="a") == ([mine[2].id, mine[1].id], 2)
    assert store_redis.zcard(keys.user_runs("alice")) == 2
    assert store_redis.zcard(keys.user_runs("bob")) == 2  # not read: bob's list
    assert _listed(store, None, name="b") == ([bobs[0].id], 1)
    assert store_redis.zcard(keys.user_runs("bob")) == 1


def test_every_users_list_is_newest_first_paginated_and_prunes(store_redis):
    store = RunStore(store_redis)
    made, owner = [], {}
    for i in range(7):
        run = _run(("alice", "bob", "carol")[i % 3], f"r{i}")
        store.create(run)
        made.append(run.id)
        owner[run.id] = run.user
    newest = made[::-1]
    assert _listed(store, None, limit=3) == (newest[:3], 7)
    assert _listed(store, None, offset=3, limit=3) == (newest[3:6], 7)
    assert _listed(store, None, offset=6, limit=3) == (newest[6:], 7)
    store_redis.delete(keys.run(newest[1]))  # as if its retention had passed
    assert _listed(store, None, limit=3) == ([newest[0], newest[2], newest[3]], 6)
    assert store_redis.zscore(keys.user_runs(owner[newest[1]]), newest[1]) is None
    # A deleted run leaves every list at once (its index entry goes with it).
    store.delete(newest[0], owner[newest[0]])
    assert _listed(store, None, limit=3) == (newest[2:5], 5)
    assert sum(_listed(store, user)[1] for user in ("alice", "bob", "carol")) == 5


def test_ids_older_than_the_retention_are_checked_so_the_total_counts_no_expired_one(
    store_redis,
):
    store = RunStore(store_redis, retention_seconds=3600)
    made = _created(store, [_run("alice" if i != 1 else "bob", f"r{i}") for i in range(10)])
    # The oldest four were submitted longer ago than the retention; three of them expired.
    long_ago = utcnow().timestamp() - 7200
    for n, run_id in enumerate(made[:4]):
        user = "bob" if n == 1 else "alice"
        store_redis.zadd(keys.user_runs(user), {run_id: long_ago + n}, xx=True)
    store_redis.delete(keys.run(made[0]), keys.run(made[1]), keys.run(made[2]))
    # A young one gone too (an eviction, say): only a page that meets it can tell.
    store_redis.delete(keys.run(made[6]))
    alice = keys.user_runs("alice")
    page, total = store.list_for_user("alice", limit=2)
    assert [r.id for r in page] == [made[9], made[8]]
    assert total == 7  # 9 of alice's, less the two old ones that expired
    assert store_redis.zscore(alice, made[0]) is None and store_redis.zscore(alice, made[2]) is None
    assert store_redis.zscore(alice, made[3]) is not None  # old, but still there
    assert store_redis.zscore(alice, made[6]) is not None
    assert store_redis.zscore(keys.user_runs("bob"), made[1]) is not None  # not alice's list
    # Every user's list checks the oldest of every user's.
    page, total = store.list_all(limit=2)
    assert [r.id for r in page] == [made[9], made[8]] and total == 7
    assert store_redis.zcard(keys.user_runs("bob")) == 0


def test_filtered_lists_read_long_indexes_in_parts(store_redis, monkeypatch):
    monkeypatch.setattr(runstore, "_FILTER_READ", 3)  # 3 runs a read: 8 runs take 3 reads
    store = RunStore(store_redis)
    made = _created(store, [_run("alice", "even" if i % 2 == 0 else "odd") for i in range(8)])
    store_redis.delete(keys.run(made[4]))
    newest = made[::-1]
    assert _listed(store, "alice", name="even") == ([newest[1], newest[5], newest[7]], 3)
    assert _listed(store, "alice", name="odd", limit=2) == (newest[:4:2], 4)
    assert _listed(store, None, name="d", offset=1) == ([newest[2], newest[4], newest[6]], 4)
    assert store_redis.zcard(keys.user_runs("alice")) == 7
