"""The index of waiting runs against a real Redis: after any sequence of submissions, claims,
cancels, deletes, hand-backs, lapsed leases (re-queued) and lost workers (failed), each
size's index holds exactly the PENDING runs, in the order they are served; a run's place and
the head of a size are read from it; a store from before the index is indexed once."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import keys
from common.fleet.sizes import ResourceSize
from common.fleet.waitlist import WaitList
from common.run import Run
from common.runstore import InvalidTransition, RunStore
from common.settings import Settings
from common.states import ACTIVE, RunState
from tests.conftest import bare_run
from worker.reconciler import Reconciler

pytestmark = pytest.mark.integration

STEPS = ("submit", "claim", "cancel", "delete", "hand_back", "lease_lapsed", "worker_died", "end")


def _pending_by_scan(store: RunStore) -> set[str]:
    """The PENDING runs, found the slow way: every record of the store."""
    found = set()
    for run_id in store.all_ids():
        run = store.get(run_id)
        if run is not None and run.state is RunState.PENDING:
            found.add(run_id)
    return found


def _indexed(connection) -> dict[ResourceSize, list[str]]:
    return {size: connection.zrange(keys.waiting(size.value), 0, -1) for size in ResourceSize}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(STEPS), st.sampled_from(list(ResourceSize)), st.integers(0, 1000)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_index_is_the_pending_runs_in_the_order_they_are_served(store_redis, steps):
    store_redis.flushdb()
    store = RunStore(store_redis, lease_ttl_seconds=30)
    queued_again: list[str] = []
    retrying = Reconciler(Settings(run_retries=5), store_redis, lambda rid, size: None)
    failing = Reconciler(Settings(run_retries=0), store_redis, lambda rid, size: None)
    # The model: each size's PENDING runs in the order they are served.
    served: dict[ResourceSize, list[str]] = {size: [] for size in ResourceSize}
    made: list[str] = []

    def active() -> list[Run]:
        return [r for r in store.records(made) if r.state in ACTIVE]

    for step, size, pick in steps:
        pending = [run_id for ids in served.values() for run_id in ids]
        if step == "submit":
            run = bare_run(size)
            store.create(run)
            made.append(run.id)
            served[size].append(run.id)
        elif step == "claim" and pending:
            run_id = pending[pick % len(pending)]
            run = store.claim(run_id, "node-a")
            served[run.resource].remove(run_id)
        elif step == "cancel" and made:
            run_id = made[pick % len(made)]
            try:
                run = store.request_cancel(run_id, "alice")
            except (InvalidTransition, LookupError):
                continue
            if run.state is RunState.HALTED:
                served[run.resource].remove(run_id)
        elif step == "delete" and made:
            run_id = made.pop(pick % len(made))
            run = store.get(run_id)
            store.delete(run_id, "alice")
            if run is not None and run.state is RunState.PENDING:
                served[run.resource].remove(run_id)
        elif step in ("hand_back", "lease_lapsed", "worker_died", "end") and active():
            runs = active()
            run = runs[pick % len(runs)]
            if step == "hand_back":  # a draining worker hands it back: to the back of its queue
                store.transition(run.id, RunState.PENDING, "handed back", attempt=run.attempt)
                served[run.resource].append(run.id)
            elif step == "lease_lapsed":  # its lease lapsed: queued again by the reconciler
                store_redis.delete(keys.lease(run.id))
                assert retrying._node_lost(run) == "requeued"
                queued_again.append(run.id)
                served[run.resource].append(run.id)
            elif step == "worker_died":  # its node is lost and no retry is left: FAILED
                store_redis.delete(keys.lease(run.id))
                assert failing._node_lost(run) == "failed"
            else:  # its command ran and its results were stored
                states = [RunState.PROCESSING, RunState.STORING, RunState.COMPLETED]
                for state in states[states.index(run.state) + 1 if run.state in states else 0 :]:
                    store.transition(run.id, state, state.value, attempt=run.attempt)
        assert _indexed(store_redis) == served
        assert {r for ids in served.values() for r in ids} == _pending_by_scan(store)


def test_a_runs_place_and_the_head_of_its_size(store_redis):
    store = RunStore(store_redis)
    runs = [
        bare_run(ResourceSize.SMALL),
        bare_run(ResourceSize.LARGE),
        bare_run(ResourceSize.SMALL),
    ]
    for run in runs:
        store.create(run)
    waitlist = WaitList(store_redis)
    assert waitlist.lengths() == {
        ResourceSize.SMALL: 2,
        ResourceSize.MEDIUM: 0,
        ResourceSize.LARGE: 1,
    }
    assert waitlist.place(runs[2].id, ResourceSize.SMALL) == (2, 2)
    assert waitlist.place(runs[1].id, ResourceSize.LARGE) == (1, 1)
    assert [q.run_id for q in waitlist.head(ResourceSize.SMALL, 5)] == [runs[0].id, runs[2].id]
    claimed = store.claim(runs[0].id, "node-a")
    assert waitlist.place(runs[0].id, ResourceSize.SMALL) == (None, 1)
    assert waitlist.place(runs[2].id, ResourceSize.SMALL) == (1, 1)
    # Back from its node: behind the one that waited meanwhile.
    store.transition(claimed.id, RunState.PENDING, "handed back", attempt=claimed.attempt)
    assert [q.run_id for q in waitlist.head(ResourceSize.SMALL, 5)] == [runs[2].id, runs[0].id]


def test_a_store_from_before_the_index_is_indexed_once(store_redis):
    store = RunStore(store_redis)
    runs = [bare_run(ResourceSize.MEDIUM) for _ in range(5)]
    for run in runs:
        store.create(run)
    claimed = store.claim(runs[1].id, "node-a")
    for size in ResourceSize:  # as a store written before there was an index
        store_redis.delete(keys.waiting(size.value))
    assert store.index_waiting() == 4
    expected = [r.id for r in runs if r.id != claimed.id]
    assert store_redis.zrange(keys.waiting("medium"), 0, -1) == expected
    store_redis.delete(keys.waiting("medium"))
    assert store.index_waiting() == 0  # indexed: never scanned again
    assert store_redis.zcard(keys.waiting("medium")) == 0
