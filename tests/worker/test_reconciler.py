"""The reconciler against a real Redis: one active instance, patience with lapsed leases,
S104 or a re-queue per the retry policy."""

from __future__ import annotations

import time

import pytest

from common.clock import iso, utcnow
from common.fleet.sizes import ResourceSize
from common.ids import new_run_id
from common.run import Run
from common.runstore import LostClaim, RunStore
from common.settings import Settings
from common.states import ErrorCode, RunState
from worker.reconciler import Reconciler

pytestmark = pytest.mark.integration


def _settings(**overrides) -> Settings:
    values = dict(lease_ttl_seconds=0.3, reconcile_interval_seconds=0.1, run_retries=0)
    values.update(overrides)
    return Settings(**values)


def _claimed(store: RunStore) -> Run:
    run = Run(
        id=new_run_id(),
        user="alice",
        name="r",
        state=RunState.PENDING,
        framework_name="python",
        framework_version="3.11",
        resource=ResourceSize.MEDIUM,
        gpu_count=2,
        command="true",
        submitted_at=iso(utcnow()),
    )
    store.create(run)
    return store.claim(run.id, "node-a")


def test_only_one_reconciler_is_active_and_another_takes_over(store_redis):
    a = Reconciler(_settings(), store_redis, identity="a")
    b = Reconciler(_settings(), store_redis, identity="b")
    assert a.hold_lock() and a.hold_lock()
    assert not b.hold_lock()
    time.sleep(0.35)  # a stops renewing: its lock (3 intervals) lapses
    assert b.hold_lock()
    assert not a.hold_lock()


def test_live_lease_is_left_alone(store_redis):
    settings = _settings()
    store = RunStore(store_redis, lease_ttl_seconds=5)
    run = _claimed(store)
    reconciler = Reconciler(settings, store_redis)
    assert reconciler.pass_once() == []
    time.sleep(0.4)
    assert reconciler.pass_once() == []
    assert store.get(run.id).state is RunState.DOWNLOADING


def test_lapsed_lease_waits_one_more_period_then_fails_s104(store_redis):
    settings = _settings()
    store = RunStore(store_redis, lease_ttl_seconds=0.2)
    run = _claimed(store)
    reconciler = Reconciler(settings, store_redis)
    time.sleep(0.25)
    assert reconciler.pass_once() == []  # first seen lapsed: patience
    # The worker comes back in time (after a Redis outage, say) and takes its lease back.
    assert store.refresh_lease(run.id, "node-a", run.attempt)
    assert reconciler.pass_once() == []  # seen alive: the patience starts over
    time.sleep(0.25)
    assert reconciler.pass_once() == []  # lapsed again, first seen now
    time.sleep(0.35)
    assert reconciler.pass_once() == [(run.id, "failed")]
    failed = store.get(run.id)
    assert failed.state is RunState.FAILED and failed.error_code is ErrorCode.NODE_LOST
    assert failed.status_message == "node lost: node-a"
    assert not store.refresh_lease(run.id, "node-a", run.attempt)  # the claim is over


def test_retry_policy_requeues_once_then_fails(store_redis):
    settings = _settings(run_retries=1)
    store = RunStore(store_redis, lease_ttl_seconds=0.1)
    queued = []
    reconciler = Reconciler(settings, store_redis, requeue=lambda rid, size: queued.append(size))
    run = _claimed(store)
    for expected in ("requeued", "failed"):
        deadline = time.monotonic() + 5
        outcome = []
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.12)
            outcome = reconciler.pass_once()
        assert outcome == [(run.id, expected)]
        if expected == "requeued":
            assert store.get(run.id).state is RunState.PENDING
            assert queued == [ResourceSize.MEDIUM]
            assert store.claim(run.id, "node-b").attempt == 2
    assert store.get(run.id).error_code is ErrorCode.NODE_LOST


def test_stale_writer_is_fenced_off(store_redis):
    store = RunStore(store_redis, lease_ttl_seconds=5)
    run = _claimed(store)
    store.transition(run.id, RunState.PENDING, "handed back", attempt=run.attempt)
    again = store.claim(run.id, "node-b")
    with pytest.raises(LostClaim):
        store.transition(run.id, RunState.PROCESSING, "old worker", attempt=run.attempt)
    assert not store.update(run.id, run.attempt, process_id=1)
    assert store.transition(run.id, RunState.PROCESSING, "new", attempt=again.attempt)
