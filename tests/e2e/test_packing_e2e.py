"""Several runs at once on one worker's GPUs, with real worker processes that own declared
GPUs (`--gpus 0-3` on this GPU-less machine): what the runs' own commands saw
(CUDA_VISIBLE_DEVICES, when they ran), the reservation that keeps a large run from starving,
and cancel and a lost node with three runs on one worker; two runs staging at once share one
fetch of their data (the node's data cache).

Its own Redis and API (as test_faults), so that its workers take only its runs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from itertools import combinations

import pytest
import requests

from common.states import ErrorCode, RunState
from deploy.processes import alive
from tests.conftest import RUN_USERS, module_stack, stopped_after, unstamped
from tests.e2e.test_cli_e2e import dlaas
from tests.e2e.test_faults import living, lose_node, results, runs, submit, wait_state
from tests.e2e.test_object_storage import s3_client, s3_manifest

pytestmark = pytest.mark.integration

# Each run's command says which GPUs it got, as whom it runs and when (epoch seconds).
SAYS = (
    'echo "gpus=$CUDA_VISIBLE_DEVICES user=$(id -un) start=$(date +%s.%N)"; '
    'sleep {sleep}; echo "end=$(date +%s.%N)"'
)
GPUS = {"small": 1, "medium": 2, "large": 4}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    with module_stack(tmp_path_factory, "pack") as stack:
        yield stack


@pytest.fixture
def started(pack):
    """Processes a test starts (workers, reconcilers), stopped when it ends."""
    with stopped_after(pack) as pids:
        yield pids


def seen(pack, run_id: str) -> dict:
    """What the run's command printed: its GPUs and its start and end."""
    text = (results(pack, run_id) / "learner-1" / "training-log.txt").read_text()
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    gpus = {int(g) for g in fields["gpus"].split(",") if g}
    return {
        "gpus": gpus,
        "user": fields["user"],
        "start": float(fields["start"]),
        "end": float(fields["end"]),
    }


def ledger(pack, node: str) -> dict:
    listed = requests.get(f"{pack.api_url}/v3/nodes", headers=pack.headers(), timeout=5).json()
    return {n["name"]: n for n in listed["nodes"]}[node]


def test_a_burst_of_mixed_runs_packs_onto_disjoint_gpus_of_one_worker(pack, started):
    started.append(pack.start_worker("pack-a@test", "0-3"))
    sizes = ["small"] * 4 + ["medium"] * 2 + ["large"] + ["small"] * 2 + ["medium"]
    ids = {submit(pack, SAYS.format(sleep=2), resource=size): size for size in sizes}
    # One past its own time limit: it alone is stopped, the others run on.
    late = submit(pack, "echo late; sleep 60", "small", extra="    timeout: 2s\n")
    ended = {
        run_id: wait_state(pack, run_id, RunState.COMPLETED, RunState.FAILED, timeout=120)
        for run_id in ids
    }
    assert all(run.state is RunState.COMPLETED for run in ended.values()), [
        run.status_message for run in ended.values()
    ]
    stopped = wait_state(pack, late, RunState.FAILED, timeout=60)
    assert stopped.error_code is ErrorCode.TIME_LIMIT
    views = {run_id: seen(pack, run_id) for run_id in ids}
    for run_id, view in views.items():
        # Its own GPUs, as many as its size asks, the same the run record gives.
        assert len(view["gpus"]) == GPUS[ids[run_id]]
        assert view["gpus"] <= {0, 1, 2, 3}
        assert set(ended[run_id].gpus) == view["gpus"]
        assert ended[run_id].worker == "pack-a@test"
    for a, b in combinations(views, 2):
        overlap = views[a]["start"] < views[b]["end"] and views[b]["start"] < views[a]["end"]
        if overlap:  # never a GPU given twice; each under its own run user (as root)
            assert not views[a]["gpus"] & views[b]["gpus"], (a, b, views[a], views[b])
            assert os.geteuid() != 0 or views[a]["user"] != views[b]["user"], (a, b)
    # Several ran at once: the four small runs of the burst's head shared the node.
    most = max(
        sum(v["start"] <= view["start"] < v["end"] for v in views.values())
        for view in views.values()
    )
    assert most >= 3, views
    if os.geteuid() == 0:
        assert {v["user"] for v in views.values()} <= set(RUN_USERS)
    node = ledger(pack, "pack-a@test")
    assert node["slots"] == 4 and node["runs"] == [] and node["free_gpus"] == [0, 1, 2, 3]


def test_a_large_run_behind_a_stream_of_small_ones_starts_within_the_bound(pack, started):
    bound, limit = 3.0, 6.0  # the reservation's bound; the small runs' declared time limit
    started.append(
        pack.start_worker("pack-b@test", "0-3", DLAAS_RESERVATION_AFTER_SECONDS=str(bound))
    )
    timeout = f"    timeout: {limit:g}s\n"
    # Ends a second apart, so that GPUs come free one at a time: without the reservation
    # each goes to the next small run and the large one never finds four free.
    small = [submit(pack, SAYS.format(sleep=s), "small", extra=timeout) for s in (2, 3, 4, 5)]
    wait_state(pack, small[-1], RunState.PROCESSING, timeout=60)
    large = submit(pack, SAYS.format(sleep=1), "large")
    submitted = time.time()
    stream, deadline = [], time.monotonic() + 4 * (bound + limit)
    # Small runs keep coming, enough to keep every GPU busy without the reservation.
    while runs(pack).get(large).state is RunState.PENDING and time.monotonic() < deadline:
        stream.append(submit(pack, SAYS.format(sleep=3), "small", extra=timeout))
        time.sleep(0.5)
    done = wait_state(pack, large, RunState.COMPLETED, RunState.FAILED, timeout=60)
    assert done.state is RunState.COMPLETED, done.status_message
    started_at = seen(pack, large)["start"]
    # The bound that follows: the reservation's bound plus the longest time limit of the
    # runs holding GPUs (plus the kill grace and a start's own overhead).
    waited = started_at - submitted
    print(f"\nlarge run behind {len(stream)} small ones: started after {waited:.1f} s")
    assert waited <= bound + limit + 3 + 2, waited
    # It was held for: small runs that came after it waited for it, none starved it.
    for run_id in stream:
        wait_state(pack, run_id, RunState.COMPLETED, RunState.FAILED, timeout=120)
    later = [seen(pack, r)["start"] for r in stream]
    assert any(start >= started_at for start in later)
    assert len(stream) >= 4


def test_cancel_and_a_lost_node_with_three_runs_leave_no_run_stuck_and_no_process(pack, started):
    worker = pack.start_worker("pack-c@test", "0-3")
    started.append(worker)
    started.append(pack.start_reconciler("pack-reconciler"))
    ids = [submit(pack, SAYS.format(sleep=300), size) for size in ("small", "small", "medium")]
    procs = {}
    for run_id in ids:
        run = wait_state(pack, run_id, RunState.PROCESSING, timeout=60)
        deadline = time.monotonic() + 10
        while not run.process_id and time.monotonic() < deadline:
            run = runs(pack).get(run_id)
            time.sleep(0.05)
        procs[run_id] = run.process_id
    node = ledger(pack, "pack-c@test")
    assert sorted(r["run_id"] for r in node["runs"]) == sorted(ids)
    held = [g for r in node["runs"] for g in r["gpus"]]
    assert len(held) == len(set(held)) == 4 and node["free_gpus"] == []
    # `dlaas nodes` says which run each GPU runs; a large run says why it waits.
    holder = {g: r["run_id"] for r in node["runs"] for g in r["gpus"]}
    listed = dlaas(pack, "nodes")
    line = next(x for x in listed.stdout.splitlines() if x.startswith("pack-c@test"))
    assert line.endswith(" ".join(f"{g}:{holder[g]}" for g in range(4))), line
    large = submit(pack, "true", "large")
    shown = requests.get(f"{pack.api_url}/v3/models/{large}", headers=pack.headers(), timeout=5)
    assert shown.json()["waiting"]["reason"] == (
        "waiting for 4 free GPUs on one node; largest free block now: 0 on pack-c@test"
    )
    assert dlaas(pack, "cancel", "training-runs", large).returncode == 0
    # Cancel one: it ends, its GPU is free again, the other two run on.
    cancelled = dlaas(pack, "cancel", "training-runs", ids[0])
    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_state(pack, ids[0], RunState.HALTED, timeout=30).state is RunState.HALTED
    assert not living([procs[ids[0]]])
    deadline = time.monotonic() + 10
    while ids[0] in [r["run_id"] for r in ledger(pack, "pack-c@test")["runs"]]:
        assert time.monotonic() < deadline, "the cancelled run still holds its GPU"
        time.sleep(0.1)
    assert all(runs(pack).get(r).state is RunState.PROCESSING for r in ids[1:])
    # Its GPU goes to the next run; then the node is lost with three runs on it: each ends
    # FAILED S104, none stays active, no process of theirs is left.
    refill = submit(pack, SAYS.format(sleep=300), "small")
    run = wait_state(pack, refill, RunState.PROCESSING, timeout=60)
    assert set(run.gpus) == set(next(r for r in node["runs"] if r["run_id"] == ids[0])["gpus"])
    deadline = time.monotonic() + 10
    while not run.process_id and time.monotonic() < deadline:
        run = runs(pack).get(refill)
        time.sleep(0.05)
    procs[refill] = run.process_id
    on_node = [*ids[1:], refill]
    for run_id in on_node:
        lose_node(worker, procs[run_id])
    started.remove(worker)
    for run_id in on_node:
        failed = wait_state(pack, run_id, RunState.FAILED, timeout=30)
        assert failed.error_code is ErrorCode.NODE_LOST
        assert run_id not in runs(pack).active_ids()
    assert not living(list(procs.values()))
    assert ledger(pack, "pack-c@test")["status"] == "lost"


def test_sigterm_drains_every_run_of_the_node(pack, started):
    worker = pack.start_worker("pack-d@test", "0-3", DLAAS_DRAIN_TIMEOUT_SECONDS="3")
    started.append(worker)
    finishing = submit(pack, SAYS.format(sleep=1), "small")
    stopped = [submit(pack, "echo long job; sleep 300", size) for size in ("small", "medium")]
    for run_id in (finishing, *stopped):
        wait_state(pack, run_id, RunState.PROCESSING, timeout=60)
    procs = [runs(pack).get(run_id).process_id for run_id in stopped]
    os.kill(worker, signal.SIGTERM)
    # The run that ends within the drain timeout finishes; the others are stopped at it
    # (no retries here: FAILED S105), each with its log kept, none left running.
    done = wait_state(pack, finishing, RunState.COMPLETED, RunState.FAILED, timeout=30)
    assert done.state is RunState.COMPLETED, done.status_message
    for run_id in stopped:
        failed = wait_state(pack, run_id, RunState.FAILED, timeout=30)
        assert failed.error_code is ErrorCode.WORKER_SHUTDOWN
        log = results(pack, run_id) / "learner-1" / "training-log.txt"
        assert "long job" in log.read_text()
    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)
    started.remove(worker)
    assert not living([p for p in procs if p])


def test_a_message_lost_with_the_worker_holding_it_is_queued_again(pack, started):
    run_id = submit(pack, "echo found again", "small")
    broker = pack.redis.client()
    deadline = time.monotonic() + 10
    while not (taken := broker.rpop("dlaas.small")) and time.monotonic() < deadline:
        time.sleep(0.05)  # a worker took the message and died before it claimed the run
    assert taken and run_id in taken
    started.append(pack.start_worker("pack-e@test", "0-3"))
    time.sleep(2.0)
    assert runs(pack).get(run_id).state is RunState.PENDING  # nothing left to take
    started.append(pack.start_reconciler("pack-reconciler-2"))
    done = wait_state(pack, run_id, RunState.COMPLETED, RunState.FAILED, timeout=60)
    assert done.state is RunState.COMPLETED and done.worker == "pack-e@test"
    log = (pack.home / "logs" / "pack-reconciler-2.log").read_text()
    assert f"{run_id}: PENDING with no message (its worker died holding it)" in log


def test_two_runs_staging_at_once_on_one_node_fetch_their_shared_data_once(pack, started, swift):
    client = s3_client(swift)
    for bucket in ("pack-shared", "pack-shared-results"):
        client.create_bucket(Bucket=bucket)
    big = os.urandom(64 << 20)  # long enough to fetch that the second run waits on the first
    client.put_object(Bucket="pack-shared", Key="big.bin", Body=big)
    client.put_object(Bucket="pack-shared", Key="small.csv", Body=b"1,2\n")
    manifest = s3_manifest(
        swift, "pack-shared", "pack-shared-results", command="sha256sum < $DATA_DIR/big.bin"
    )
    started.append(pack.start_worker("pack-cache@test", "0-3"))
    ids = [pack.submit(manifest), pack.submit(manifest)]
    done = [wait_state(pack, run_id, RunState.COMPLETED, RunState.FAILED) for run_id in ids]
    assert [run.state for run in done] == [RunState.COMPLETED] * 2, [
        run.status_message for run in done
    ]
    assert {run.worker for run in done} == {"pack-cache@test"}
    # They staged at the same time: each was claimed before the other's command started.
    when = {
        run_id: {entry.state: entry.at for entry in runs(pack).history(run_id)} for run_id in ids
    }
    for one, other in (ids, ids[::-1]):
        assert when[one][RunState.DOWNLOADING] < when[other][RunState.PROCESSING], when
    # Each object came from the store once, for both runs, and both read the same bytes.
    assert sum(run.usage["fetched_objects"] for run in done) == 2
    assert sum(run.usage["cached_objects"] for run in done) == 2
    digest = hashlib.sha256(big).hexdigest()
    for run_id in ids:
        log = client.get_object(
            Bucket="pack-shared-results", Key=f"{run_id}/learner-1/training-log.txt"
        )["Body"].read()
        assert digest in unstamped(log.decode())


def test_the_consumer_control_switches_in_process_and_broadcasts_nothing(pack, started):
    # Every remote-control message of the fleet travels on the pidbox channel: count them.
    listener = pack.redis.client().pubsub()
    listener.psubscribe("*pidbox*")
    started.append(pack.start_worker("pack-f@test", "0"))  # one GPU: one small run fills it
    ids = [submit(pack, "sleep 1", "small") for _ in range(3)]
    for run_id in ids:
        assert wait_state(pack, run_id, RunState.COMPLETED, timeout=60).state is RunState.COMPLETED
    time.sleep(1.0)  # idle ticks too
    broadcasts, deadline = [], time.monotonic() + 2
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
        if message is not None and message["type"] == "pmessage":
            broadcasts.append(message)
    listener.close()
    assert broadcasts == []
    # The node stopped taking small runs while full and took them again when free: its own
    # consumer did, at each start and end.
    log = (pack.home / "logs" / "pack-f@test.log").read_text()
    assert log.count("Canceling queue dlaas.small") >= 2, log[-3000:]
    assert log.count("Started consuming from dlaas.small") >= 2, log[-3000:]
