"""Fault injection with real processes: lost nodes, duplicate messages, a Redis restart,
cancel in each state, escaped grandchildren, worker shutdown, time limits, drain.

This module has its own Redis (with AOF, so it can be restarted) and its own API, so that
killing and restarting things here never disturbs the other tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

from common.fleet.sizes import ResourceSize
from common.runstore import RunStore
from common.settings import Settings
from common.states import ErrorCode, RunState
from common.taskqueue import RUN_TASK, make_celery
from deploy.processes import alive
from tests.conftest import bare_run, make_zip, manifest_yaml, module_stack, stopped_after
from tests.e2e.test_cli_e2e import dlaas

pytestmark = pytest.mark.integration

LARGE_GPUS = "4,5,6,7"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with module_stack(tmp_path_factory, "fault", persist=True) as stack:
        # These runs leave witnesses outside their folders (a shared folder in /tmp, their
        # pids as the node sees them), which is what the sandbox forbids: unsandboxed here.
        stack.settings["DLAAS_SANDBOX"] = "off"
        yield stack


@pytest.fixture
def started(fleet):
    """Processes a test starts (workers, reconcilers), stopped when it ends."""
    with stopped_after(fleet) as pids:
        yield pids


def runs(fleet) -> RunStore:
    return RunStore(fleet.redis.client())


def submit(fleet, command: str, resource: str = "large", extra: str = "") -> str:
    manifest = manifest_yaml(command, resource=resource) + extra
    if extra:  # execution.timeout and the like go under model_definition.execution
        manifest = manifest_yaml(command, resource=resource).replace(
            f"    resource: {resource}\n", f"    resource: {resource}\n{extra}"
        )
    return fleet.submit(manifest)


def wait_state(fleet, run_id: str, *states: RunState, timeout: float = 60):
    store = runs(fleet)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get(run_id)
        if run is not None and run.state in states:
            return run
        time.sleep(0.05)
    run = store.get(run_id)
    raise AssertionError(
        f"{run_id} not {[s.value for s in states]} after {timeout} s: "
        f"{run.state.value if run else 'gone'} {run.status_message if run else ''}"
    )


def wait_process(fleet, run_id: str, timeout: float = 30):
    store = runs(fleet)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get(run_id)
        if run and run.process_id:
            return run
        time.sleep(0.05)
    raise AssertionError(f"{run_id}: its command did not start")


# A run that went through every state once (none lost, none repeated).
EVERY_STATE_ONCE = [
    RunState.PENDING,
    RunState.DOWNLOADING,
    RunState.PROCESSING,
    RunState.STORING,
    RunState.COMPLETED,
]


def wait_node(fleet, name: str, timeout: float = 10) -> None:
    """Until the node's first heartbeat is in (a moment after its log says ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fleet.redis.client().exists(f"dlaas:worker:{name}"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{name}: no heartbeat after {timeout} s")


def results(fleet, run_id: str) -> Path:
    return fleet.store_root / "tests" / "results" / run_id


def lose_node(worker_pid: int, process_id: int | None) -> None:
    """Everything on the node dies at once: the worker, its pool child, the run."""
    os.killpg(worker_pid, signal.SIGKILL)
    if process_id:
        try:
            os.killpg(process_id, signal.SIGKILL)
        except ProcessLookupError:
            pass


def living(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def witness():
    """A folder the runs may write their witness files in (they run as an unprivileged
    user, who cannot reach pytest's 0700 temp folders)."""
    folder = Path(tempfile.mkdtemp(prefix="dlaas-witness-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_same_message_delivered_twice_runs_once(fleet, started, witness):
    started.append(fleet.start_worker("dup-worker@fault", LARGE_GPUS))
    side = witness / "effects.txt"
    run_id = submit(fleet, f"echo ran >> {side}")
    celery = make_celery(Settings.from_env(fleet.env))
    for _ in range(2):
        celery.send_task(RUN_TASK, args=[run_id], queue="dlaas.large")
    wait_state(fleet, run_id, RunState.COMPLETED)
    redis_client = fleet.redis.client()
    deadline = time.monotonic() + 20
    while redis_client.llen("dlaas.large") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the duplicates' tasks were received; give them time to be dropped
    log = (fleet.home / "logs" / "dup-worker@fault.log").read_text()
    assert log.count(f"{run_id}: dropped, not PENDING any more") == 2
    assert side.read_text() == "ran\n"
    assert [h.state for h in runs(fleet).history(run_id)].count(RunState.PROCESSING) == 1


def test_lost_node_ends_its_run_failed_s104(fleet, started):
    worker = fleet.start_worker("doomed@fault", LARGE_GPUS)
    started.append(worker)
    started.append(fleet.start_reconciler("reconciler-noretry"))
    timings = []
    for _ in range(2):
        run_id = submit(fleet, "sleep 120")
        run = wait_process(fleet, run_id)
        assert runs(fleet).lease_holder(run_id) == f"doomed@fault {run.attempt}"
        lose_node(worker, run.process_id)
        killed = time.monotonic()
        failed = wait_state(fleet, run_id, RunState.FAILED, timeout=30)
        timings.append(time.monotonic() - killed)
        assert failed.error_code is ErrorCode.NODE_LOST
        assert failed.status_message == "node lost: doomed@fault"
        assert run_id not in runs(fleet).active_ids()
        nodes = requests.get(f"{fleet.api_url}/v3/nodes", headers=fleet.headers(), timeout=5).json()
        assert {n["name"]: n["status"] for n in nodes["nodes"]}["doomed@fault"] == "lost"
        started.remove(worker)
        worker = fleet.start_worker("doomed@fault", LARGE_GPUS)
        started.append(worker)
    # Lease TTL 3 s + one more lease period of patience + reconcile interval 0.5 s.
    assert max(timings) < 3 + 3 + 0.5 + 3
    print(
        f"\nworker death -> FAILED: median {statistics.median(timings):.2f} s over {len(timings)}"
    )


def test_lost_node_with_retry_runs_again_elsewhere_and_completes_once(fleet, started, witness):
    first = fleet.start_worker("first@fault", LARGE_GPUS)
    started.append(first)
    started.append(fleet.start_reconciler("reconciler-retry", DLAAS_RUN_RETRIES="1"))
    side = witness / "finished.txt"
    run_id = submit(fleet, f"sleep 4; echo $TRAINING_ID >> {side}")
    run = wait_process(fleet, run_id)
    assert run.worker == "first@fault"
    second = fleet.start_worker("second@fault", LARGE_GPUS)
    started.append(second)
    lose_node(first, run.process_id)
    started.remove(first)
    done = wait_state(fleet, run_id, RunState.COMPLETED, RunState.FAILED, timeout=60)
    assert done.state is RunState.COMPLETED, done.status_message
    assert done.worker == "second@fault" and done.attempt == 2
    assert side.read_text() == f"{run_id}\n"
    messages = [h.message for h in runs(fleet).history(run_id)]
    assert "node lost: first@fault; queued again (attempt 1 of 2)" in messages


def test_redis_restart_mid_run_loses_nothing(fleet, started):
    started.append(fleet.start_worker("steady@fault", LARGE_GPUS))
    started.append(fleet.start_reconciler("reconciler-restart"))
    run_id = submit(fleet, "sleep 6; echo survived > $RESULT_DIR/survived.txt")
    wait_process(fleet, run_id)
    fleet.redis.stop()
    time.sleep(4.5)  # longer than the lease TTL: the worker must take its lease back
    fleet.redis.start()
    done = wait_state(fleet, run_id, RunState.COMPLETED, RunState.FAILED, timeout=60)
    assert done.state is RunState.COMPLETED, done.status_message
    assert [h.state for h in runs(fleet).history(run_id)] == EVERY_STATE_ONCE
    assert (results(fleet, run_id) / "survived.txt").read_text() == "survived\n"


def cancel(fleet, run_id: str, user: str = "alice") -> requests.Response:
    return requests.patch(
        f"{fleet.api_url}/v3/models/{run_id}",
        json={"status": "halt"},
        headers=fleet.headers(user),
        timeout=10,
    )


def test_cancel_pending_halts_at_once_and_the_message_is_skipped(fleet, started):
    run_id = submit(fleet, "echo never", resource="medium")
    shown = requests.get(f"{fleet.api_url}/v3/models/{run_id}", headers=fleet.headers(), timeout=5)
    assert shown.json()["waiting"] == {"position": 1, "of": 1, "reason": "no worker serves medium"}
    assert shown.json()["status_message"] == "1st of 1 medium run; no worker serves medium"
    assert cancel(fleet, run_id, "bob").status_code == 404
    answer = cancel(fleet, run_id)
    assert answer.status_code == 200 and answer.json()["state"] == "HALTED"
    assert runs(fleet).get(run_id).state is RunState.HALTED
    started.append(fleet.start_worker("medium@fault", "0,1"))
    log = fleet.home / "logs" / "medium@fault.log"
    deadline = time.monotonic() + 20
    while f"{run_id}: dropped" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"{run_id}: dropped, not PENDING any more" in log.read_text()
    assert runs(fleet).get(run_id).state is RunState.HALTED
    again = cancel(fleet, run_id)
    assert again.status_code == 409 and "already ended (HALTED)" in again.json()["error"]["message"]
    bad = requests.patch(
        f"{fleet.api_url}/v3/models/{run_id}",
        json={"status": "go"},
        headers=fleet.headers(),
        timeout=5,
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "status"


def test_cancel_while_downloading_never_starts_the_command(fleet, started):
    started.append(fleet.start_worker("stager@fault", LARGE_GPUS))
    slow = fleet.store_root / "tests" / "slowdata"
    slow.mkdir(parents=True, exist_ok=True)
    fifo = slow / "stream.bin"
    os.mkfifo(fifo)  # staging blocks reading it until this test writes: DOWNLOADING held
    manifest_text = manifest_yaml(
        "touch $RESULT_DIR/started", resource="large", data_bucket="slowdata"
    )
    answer = requests.post(
        f"{fleet.api_url}/v3/models",
        files={
            "model_definition": ("m.zip", make_zip({"a": "b"})),
            "manifest": ("m.yml", manifest_text),
        },
        headers=fleet.headers(),
        timeout=10,
    )
    run_id = answer.json()["model_id"]
    wait_state(fleet, run_id, RunState.DOWNLOADING)
    assert cancel(fleet, run_id).status_code == 202
    with open(fifo, "wb") as writer:
        writer.write(b"x" * 1000)
    halted = wait_state(fleet, run_id, RunState.HALTED, RunState.FAILED, RunState.COMPLETED)
    assert halted.state is RunState.HALTED, halted.status_message
    assert halted.status_message.startswith("cancelled by alice")
    assert RunState.PROCESSING not in [h.state for h in runs(fleet).history(run_id)]
    out = results(fleet, run_id)
    assert not (out / "started").exists()
    assert (
        "stopped before the command started: cancelled by alice"
        in (out / "learner-1" / "training-log.txt").read_text()
    )


ESCAPING = (
    # A child in its own session, a double-forked daemon whose parent exits, and a child
    # that ignores SIGTERM (so the SIGKILL after the grace period is needed).
    "setsid sleep 301 & echo $! >> $RESULT_DIR/pids; "
    "(setsid bash -c 'echo $$ >> $RESULT_DIR/pids; exec sleep 302' &); "
    "bash -c 'trap \"\" TERM; echo $$ >> $RESULT_DIR/pids; while true; do sleep 0.2; done' & "
    "echo $$ >> $RESULT_DIR/pids; echo started; sleep 303"
)


def test_cancel_while_processing_ends_every_process_and_keeps_the_log(fleet, started):
    started.append(fleet.start_worker("busy@fault", LARGE_GPUS))
    run_id = submit(fleet, ESCAPING)
    wait_process(fleet, run_id)
    workdir_pids = fleet.work_dir / run_id / "result" / "pids"
    deadline = time.monotonic() + 10
    while (
        not workdir_pids.exists() or len(workdir_pids.read_text().split()) < 4
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p) for p in workdir_pids.read_text().split()]
    assert len(pids) == 4 and len(living(pids)) == 4
    asked = time.monotonic()
    assert cancel(fleet, run_id).status_code == 202
    halted = wait_state(fleet, run_id, RunState.HALTED, timeout=30)
    took = time.monotonic() - asked
    assert living(pids) == [], f"survivors: {living(pids)}"
    assert halted.status_message.startswith("cancelled by alice; stored")
    log = (results(fleet, run_id) / "learner-1" / "training-log.txt").read_text()
    assert re.match(r"\S+Z started\n", log)
    assert "stopped: cancelled by alice (SIGTERM, then SIGKILL after 3 s)" in log
    print(f"\ncancel -> HALTED with every process gone: {took:.2f} s (grace 3 s)")


def test_delete_of_an_active_run_cancels_it_first(fleet, started):
    started.append(fleet.start_worker("deleter@fault", LARGE_GPUS))
    run_id = submit(fleet, "echo partial > $RESULT_DIR/partial.txt; sleep 300")
    run = wait_process(fleet, run_id)
    answer = requests.delete(
        f"{fleet.api_url}/v3/models/{run_id}", headers=fleet.headers(), timeout=10
    )
    assert answer.status_code == 202 and answer.json()["deleted"] is False
    deadline = time.monotonic() + 30
    while runs(fleet).get(run_id) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runs(fleet).get(run_id) is None
    assert not living([run.process_id])
    assert (results(fleet, run_id) / "partial.txt").read_text() == "partial\n"
    gone = requests.get(f"{fleet.api_url}/v3/models/{run_id}", headers=fleet.headers(), timeout=5)
    assert gone.status_code == 404


def test_time_limit_ends_the_run_failed_c202(fleet, started):
    started.append(fleet.start_worker("timed@fault", LARGE_GPUS))
    run_id = submit(fleet, "echo working; sleep 300", extra="    timeout: 2s\n")
    run = wait_process(fleet, run_id)
    failed = wait_state(fleet, run_id, RunState.FAILED, timeout=30)
    assert failed.error_code is ErrorCode.TIME_LIMIT
    assert failed.status_message.startswith("time limit of 2 s reached")
    assert not living([run.process_id])
    assert "working" in (results(fleet, run_id) / "learner-1" / "training-log.txt").read_text()


def test_sigterm_lets_the_run_finish_then_the_worker_exits(fleet, started):
    worker = fleet.start_worker("graceful@fault", LARGE_GPUS)
    started.append(worker)
    run_id = submit(fleet, "sleep 3; echo finished > $RESULT_DIR/finished.txt")
    wait_process(fleet, run_id)
    os.kill(worker, signal.SIGTERM)
    done = wait_state(fleet, run_id, RunState.COMPLETED, RunState.FAILED, timeout=30)
    assert done.state is RunState.COMPLETED, done.status_message
    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)
    assert (results(fleet, run_id) / "finished.txt").read_text() == "finished\n"


def test_sigterm_past_the_drain_timeout_fails_s105_with_the_log(fleet, started):
    worker = fleet.start_worker("hurried@fault", LARGE_GPUS, DLAAS_DRAIN_TIMEOUT_SECONDS="1")
    started.append(worker)
    run_id = submit(fleet, "echo long job; sleep 300")
    run = wait_process(fleet, run_id)
    os.kill(worker, signal.SIGTERM)
    failed = wait_state(fleet, run_id, RunState.FAILED, timeout=30)
    assert failed.error_code is ErrorCode.WORKER_SHUTDOWN
    assert failed.status_message.startswith("worker shut down: hurried@fault")
    assert not living([run.process_id])
    assert "long job" in (results(fleet, run_id) / "learner-1" / "training-log.txt").read_text()
    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def test_drained_node_takes_no_new_run(fleet, started):
    started.append(fleet.start_worker("drained@fault", LARGE_GPUS))
    nodes = requests.get(
        f"{fleet.api_url}/v3/nodes", headers=fleet.headers("bob"), timeout=5
    ).json()
    assert any(n["name"] == "drained@fault" and n["status"] == "ready" for n in nodes["nodes"])
    refused = requests.post(
        f"{fleet.api_url}/v3/nodes/drained@fault/drain", headers=fleet.headers("bob"), timeout=5
    )
    assert refused.status_code == 403
    answer = requests.post(
        f"{fleet.api_url}/v3/nodes/drained@fault/drain", headers=fleet.headers(), timeout=5
    )
    assert answer.status_code == 202
    nodes = requests.get(f"{fleet.api_url}/v3/nodes", headers=fleet.headers(), timeout=5).json()
    assert [n["status"] for n in nodes["nodes"] if n["name"] == "drained@fault"] == ["draining"]
    run_id = submit(fleet, "echo should wait")
    time.sleep(2.0)
    run = runs(fleet).get(run_id)
    assert run.state is RunState.PENDING
    shown = requests.get(f"{fleet.api_url}/v3/models/{run_id}", headers=fleet.headers(), timeout=5)
    waiting = shown.json()["waiting"]
    assert waiting["reason"] == "no worker serves large (draining: drained@fault)"
    assert shown.json()["status_message"].endswith(f"large run; {waiting['reason']}")
    # Lifting the drain (no restart): the node takes the waiting run.
    assert dlaas(fleet, "nodes", "undrain", "drained@fault", user="bob").returncode == 1
    undrained = dlaas(fleet, "nodes", "undrain", "drained@fault")
    assert undrained.returncode == 0, undrained.stderr
    assert undrained.stdout == "Node 'drained@fault' takes runs again.\nOK\n"
    again = dlaas(fleet, "nodes", "undrain", "drained@fault")
    assert again.returncode == 1 and "is not draining" in again.stderr
    nodes = requests.get(f"{fleet.api_url}/v3/nodes", headers=fleet.headers(), timeout=5).json()
    assert [n["status"] for n in nodes["nodes"] if n["name"] == "drained@fault"] == ["ready"]
    done = wait_state(fleet, run_id, RunState.COMPLETED, timeout=60)
    assert done.worker == "drained@fault"


def test_store_failing_while_storing_is_s303_with_results_kept(fleet, started):
    started.append(fleet.start_worker("unlucky@fault", LARGE_GPUS))
    bucket = fleet.store_root / "tests" / "results"
    # The run's results folder is blocked (a file where the run's folder goes; the run
    # itself cannot reach the store), so every write to the store fails: retried, then S303.
    run_id = submit(fleet, "echo precious > $RESULT_DIR/model.bin")
    (bucket / run_id).touch()
    failed = wait_state(fleet, run_id, RunState.FAILED, timeout=60)
    assert failed.error_code is ErrorCode.RESULT_UPLOAD
    assert "failed after 3 attempts" in failed.status_message
    kept = fleet.work_dir / "unstored" / run_id
    assert f"results kept on unlucky@fault at {kept}" in failed.status_message
    assert (kept / "result" / "model.bin").read_text() == "precious\n"
    assert not (kept / "data").exists()  # its input is in the data bucket still
    assert "Traceback" not in failed.status_message
    assert failed.kept_results == {"node": "unlucky@fault", "path": str(kept), "state": "kept"}
    shown = dlaas(fleet, "show", "training-runs", run_id)
    assert (
        f"on unlucky@fault at {kept} (`dlaas store training-runs {run_id}` stores them again)"
        in shown.stdout
    )
    _store_again_from_the_node_that_kept_them(fleet, started, run_id, kept, bucket / run_id)


def _store_again_from_the_node_that_kept_them(fleet, started, run_id, kept, blocked):
    """`dlaas store`: only the owner asks; a node that is down is said to be; a store that
    still fails keeps the files; once the store takes them they are in the bucket."""
    other = dlaas(fleet, "store", "training-runs", run_id, user="bob")
    assert other.returncode == 1 and f"no training run {run_id!r}" in other.stderr
    fleet.stop(started.pop())  # the node that kept them is down: nothing can be asked of it
    down = dlaas(fleet, "store", "training-runs", run_id)
    assert down.returncode == 1
    assert f"kept on unlucky@fault at {kept}, and unlucky@fault is not up" in down.stderr
    started.append(fleet.start_worker("unlucky@fault", LARGE_GPUS))
    wait_node(fleet, "unlucky@fault")
    still = dlaas(fleet, "store", "training-runs", run_id, timeout=60)  # the store still refuses it
    assert still.returncode == 1, still.stdout
    assert "unlucky@fault could not store them:" in still.stderr
    assert f"they stay kept at {kept}" in still.stderr
    assert (kept / "result" / "model.bin").read_text() == "precious\n"
    blocked.unlink()
    stored = dlaas(fleet, "store", "training-runs", run_id, timeout=60)
    assert stored.returncode == 0, stored.stderr
    assert "Store training-runs successful" in stored.stdout
    assert (blocked / "model.bin").read_text() == "precious\n"
    assert (blocked / "_submitted_code" / "model.zip").is_file()
    assert (
        "storing again, as alice asked" in (blocked / "learner-1" / "store-results.log").read_text()
    )
    assert "storing failed" in (blocked / "learner-1" / "store-results.log").read_text()
    assert not (blocked / "learner-1" / "log-chunks").exists() or not any(
        (blocked / "learner-1" / "log-chunks").iterdir()
    )
    assert not kept.exists()  # nothing left on the node
    run = runs(fleet).get(run_id)
    assert (run.state, run.error_code) == (RunState.FAILED, ErrorCode.RESULT_UPLOAD)
    assert run.kept_results["state"] == "stored" and run.kept_results["objects"] >= 3
    assert run.usage["stored_objects"] == run.kept_results["objects"]
    assert run.status_message.startswith(f"results stored again in local results/{run_id}/")
    assert runs(fleet).redis.ttl(f"dlaas:run:{run_id}") > 0  # it still expires
    again = dlaas(fleet, "store", "training-runs", run_id)
    assert again.returncode == 1 and "were stored again already" in again.stderr
    never = submit(fleet, "true")
    wait_state(fleet, never, RunState.COMPLETED)
    nothing = dlaas(fleet, "store", "training-runs", never)
    assert nothing.returncode == 1 and "no results of it are kept on a node" in nothing.stderr


def test_redis_outage_as_the_command_ends_keeps_every_state_change(fleet, started):
    started.append(fleet.start_worker("patient@fault", LARGE_GPUS))
    run_id = submit(fleet, "sleep 1; echo done")
    wait_process(fleet, run_id)
    fleet.redis.stop()  # the command ends, and the worker stores, while Redis is away
    time.sleep(4)
    fleet.redis.start()
    done = wait_state(fleet, run_id, RunState.COMPLETED, RunState.FAILED, timeout=60)
    assert done.state is RunState.COMPLETED, done.status_message
    assert [h.state for h in runs(fleet).history(run_id)] == EVERY_STATE_ONCE


def test_thousands_waiting_survive_a_worker_and_a_redis_restart_and_nothing_scans(fleet, started):
    client, store = fleet.redis.client(), runs(fleet)
    celery = make_celery(Settings.from_env(fleet.env))
    worker = fleet.start_worker("one-gpu@fault", "3")  # one GPU: it serves small only
    started.append(worker)
    waiting = []
    owner = ["bob" if i % 100 == 0 else "alice" for i in range(2000)]  # bob under his quota
    for i in range(2000):  # large runs, which no node here holds: they wait
        run = bare_run(ResourceSize.LARGE, owner[i])
        store.create(run)
        celery.send_task(RUN_TASK, args=[run.id], queue="dlaas.large")
        waiting.append(run.id)
    try:
        fleet.stop(worker)
        fleet.redis.stop()
        fleet.redis.start()
        started.append(fleet.start_worker("one-gpu@fault", "3"))
        client.config_resetstat()
        # The hot paths after the restarts: the worker's ticks, a run's place, the queues, a
        # small run through the whole pipeline.
        small = fleet.submit(manifest_yaml("echo small", resource="small"), user="bob")
        assert wait_state(fleet, small, RunState.COMPLETED).state is RunState.COMPLETED
        shown = requests.get(  # bob's (alice is an admin here: she sees every run named)
            f"{fleet.api_url}/v3/models/{waiting[1900]}", headers=fleet.headers("bob"), timeout=10
        ).json()
        assert shown["waiting"]["position"] == 1901 and shown["waiting"]["of"] == 2000
        queues = requests.get(
            f"{fleet.api_url}/v3/queues", headers=fleet.headers("bob"), timeout=10
        )
        large = next(q for q in queues.json()["queues"] if q["size"] == "large")
        assert large["pending"] == 2000 and len(large["runs"]) == 100
        # In the order they are served: bob's named, alice's counted.
        named = [run_id if owner[i] == "bob" else None for i, run_id in enumerate(waiting[:100])]
        assert [r["model_id"] for r in large["runs"]] == named
        time.sleep(2.0)  # a few more ticks
        stats = client.info("commandstats")
        assert "cmdstat_scan" not in stats, stats["cmdstat_scan"]
        # Nothing lost: every run still waits, in its place, with its message.
        assert client.zrange("dlaas:waiting:large", 0, -1) == waiting
        assert client.llen("dlaas.large") == 2000
        assert {r.state for r in store.records(waiting)} == {RunState.PENDING}
    finally:  # the other tests' workers serve large: none of these may reach them
        client.delete("dlaas.large")
        for run_id, user in zip(waiting, owner, strict=True):
            store.delete(run_id, user)
