"""The experiments list, a page at a time (common/experimentstore.py), against a real Redis:
newest first, only the page read, records past retention pruned when met."""

from __future__ import annotations

from common import keys
from common.experimentstore import Experiment, ExperimentState, ExperimentStore


def _experiments(store: ExperimentStore, count: int, user: str = "alice") -> list[str]:
    """`count` experiments of `user`, oldest first; their ids."""
    made = []
    for i in range(count):
        experiment = Experiment(
            f"experiment-{i:09d}",
            user,
            f"sweep-{i}",
            ExperimentState.RUNNING,
            "2026-12-03T00:00:00.000000Z",
            {"objective": "acc"},
            {"name": "m"},
            "sealed",
            "artifact-ref",
        )
        store.create(experiment)
        made.append(experiment.id)
    return made


def test_pages_come_newest_first_with_the_total(store_redis):
    store = ExperimentStore(store_redis, retention_seconds=3600)
    newest = _experiments(store, 7)[::-1]
    _experiments(store, 2, user="bob")
    first, total = store.list_for_user("alice", offset=0, limit=3)
    assert [e.id for e in first] == newest[:3] and total == 7
    last, total = store.list_for_user("alice", offset=6, limit=3)
    assert [e.id for e in last] == newest[6:] and total == 7
    assert store.list_for_user("alice", offset=7, limit=3) == ([], 7)


def test_a_page_reads_past_records_gone_by_retention_and_prunes_them(store_redis):
    store = ExperimentStore(store_redis, retention_seconds=3600)
    newest = _experiments(store, 6)[::-1]
    for gone in (newest[1], newest[2]):
        store_redis.delete(keys.experiment(gone))
    page, total = store.list_for_user("alice", offset=0, limit=3)
    assert [e.id for e in page] == [newest[0], newest[3], newest[4]]
    assert total == 4 and store_redis.zcard(keys.user_experiments("alice")) == 4
