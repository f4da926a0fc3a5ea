"""The run store against a real Redis: records, history, atomic claims, retention, listing."""

from __future__ import annotations

import threading

import pytest

from common import keys
from common.clock import iso, utcnow
from common.ids import is_run_id, new_run_id
from common.run import Run
from common.runstore import InvalidTransition, Quota, QuotaExceeded, RunStore
from common.sizes import ResourceSize
from common.states import ErrorCode, RunState

pytestmark = pytest.mark.integration


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
