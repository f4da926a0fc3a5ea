"""A node's GPU ledger and the packer on a real Redis, without a broker: starts racing from
threads never share a GPU or a slot, a reservation holds a small run back, a run no node fits
says so, a dead pool process's GPUs come free; and the worker's GPU and slot arguments."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography.fernet import Fernet

from common.fleet.nodes import NodeStore
from common.settings import Settings
from tests.conftest import manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker.gpus import GpuSpecError, parse_gpus
from worker.main import default_slots
from worker.packer import Packer
from worker.runuser import slot_user

pytestmark = pytest.mark.integration


def make_ctx(tmp_path, store_redis, gpus=(0, 1, 2, 3), slots=4, **settings):
    values = dict(home=tmp_path, secret_key=Fernet.generate_key().decode()) | settings
    ctx = worker_context(Settings(**values), store_redis, gpus, "pack-node")
    ctx.slots = slots
    ctx.nodes = NodeStore(store_redis, 30)
    return ctx


def pending(ctx, resource: str, extra: str = ""):
    manifest = manifest_yaml("true", resource=resource)
    if extra:
        manifest = manifest.replace(
            f"    resource: {resource}\n", f"    resource: {resource}\n{extra}"
        )
    return submit_manifest(ctx, manifest)


def test_starts_racing_from_threads_never_share_a_gpu_or_a_slot(tmp_path, store_redis):
    ctx = make_ctx(tmp_path, store_redis)
    runs = [pending(ctx, "small") for _ in range(6)]
    places = {}

    def place(run):
        places[run.id] = Packer(ctx).place(run)[0]

    threads = [threading.Thread(target=place, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    got = [p for p in places.values() if p is not None]
    assert len(got) == 4  # four GPUs, four runs; two told to wait
    assert sorted(g for p in got for g in p.gpus) == [0, 1, 2, 3]
    assert sorted(p.slot for p in got) == [0, 1, 2, 3]
    held = ctx.nodes.held("pack-node")
    assert {run_id for run_id, p in places.items() if p} == set(held)
    refused = [run.id for run in runs if places[run.id] is None]
    assert len(refused) == 2
    assert Packer(ctx).place(runs[0])[1] == "all 4 run slots of pack-node are busy"
    # One ends: its GPU and its slot go to the next.
    first = next(run_id for run_id, p in places.items() if p)
    Packer(ctx).release(first)
    again = Packer(ctx).place(next(r for r in runs if r.id == refused[0]))[0]
    assert again.gpus == places[first].gpus and again.slot == places[first].slot


def test_best_fit_keeps_a_block_free_and_a_large_run_waits_for_four(tmp_path, store_redis):
    ctx = make_ctx(tmp_path, store_redis)
    one = Packer(ctx).place(pending(ctx, "small"))[0]
    two = Packer(ctx).place(pending(ctx, "medium"))[0]
    # The small run and the medium one leave a whole pair or its half, never split both.
    assert set(one.gpus).isdisjoint(two.gpus)
    assert two.gpus in ((0, 1), (2, 3))
    place, reason = Packer(ctx).place(pending(ctx, "large"))
    assert place is None
    assert reason == "waiting for 4 free GPUs on one node; free on pack-node now: 1"


def test_a_reservation_holds_a_small_run_back_unless_it_ends_in_time(tmp_path, store_redis):
    ctx = make_ctx(tmp_path, store_redis, reservation_after_seconds=0.5)
    running = pending(ctx, "medium", "    timeout: 60s\n")
    assert Packer(ctx).place(running)[0] is not None
    ctx.runs.claim(running.id, ctx.name)
    large = pending(ctx, "large")  # stays PENDING, past the bound
    time.sleep(0.6)
    no_limit = pending(ctx, "small")
    place, reason = Packer(ctx).place(no_limit)
    assert place is None
    assert reason.startswith(f"held back: run {large.id} (4 GPUs) has waited ")
    # The consumer control takes no small message now: no waiting small run may start.
    assert Packer(ctx).startable([no_limit.resource, large.resource]) == set()
    # A small run whose time limit ends before the medium one's is backfilled; and with it
    # waiting, the node consumes the small queue again.
    short = pending(ctx, "small", "    timeout: 30s\n")
    assert Packer(ctx).startable([short.resource, large.resource]) == {short.resource}
    place, reason = Packer(ctx).place(short)
    assert place is not None and "backfill" in reason


def test_a_dead_pool_process_gives_its_gpus_back(tmp_path, store_redis):
    ctx = make_ctx(tmp_path, store_redis)
    run = pending(ctx, "small")
    assert Packer(ctx).place(run)[0] is not None
    entry = ctx.nodes.held("pack-node")[run.id]
    ctx.nodes.release("pack-node", run.id)
    ctx.nodes.hold("pack-node", run.id, lambda held: dict(entry, pid=2**22 + 7))
    assert Packer(ctx).forget_dead() == [run.id]
    assert ctx.nodes.held("pack-node") == {}


def test_gpu_ranges_slots_and_slot_users():
    assert parse_gpus("0-3").indices == (0, 1, 2, 3)
    assert parse_gpus("0,2-3").indices == (0, 2, 3)
    for bad, says in (("3-1", "empty range"), ("0-1,1", "GPU 1 given twice"), ("a", "not a GPU")):
        with pytest.raises(GpuSpecError, match=says):
            parse_gpus(bad)
    assert default_slots(4, [1, 2, 4]) == 4
    assert default_slots(4, [2, 4]) == 2
    assert default_slots(2, [2]) == 1
    assert default_slots(0, [1, 2, 4]) == 1
    assert [slot_user("dlaas-run", s) for s in range(3)] == [
        "dlaas-run",
        "dlaas-run-1",
        "dlaas-run-2",
    ]
