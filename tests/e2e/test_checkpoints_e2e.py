"""Checkpoints with real workers: a run that counts steps in CHECKPOINT_DIR loses its node
near step 20 and resumes on another worker from the last copied step; a drained worker's
last copy, taken when its run was stopped, is what the next attempt resumes from.

Its own Redis and API (as test_faults), so that its workers take only its runs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from common.states import RunState
from tests.conftest import module_stack, stopped_after, unstamped
from tests.e2e.test_cli_e2e import dlaas
from tests.e2e.test_faults import lose_node, results, runs, submit, wait_state

pytestmark = pytest.mark.integration

STEP_SECONDS = 0.25
# Counts to 40, a step each STEP_SECONDS, its step kept in CHECKPOINT_DIR; starts from it.
COUNTER = (
    "step=0; [ -f $CHECKPOINT_DIR/step ] && step=$(cat $CHECKPOINT_DIR/step); "
    "echo attempt=$DLAAS_ATTEMPT resumed=$DLAAS_RESUMED from=$step; "
    "while [ $step -lt 40 ]; do step=$((step+1)); "
    "echo $step > $CHECKPOINT_DIR/.step && mv $CHECKPOINT_DIR/.step $CHECKPOINT_DIR/step; "
    f"sleep {STEP_SECONDS}; done; echo done at $step"
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with module_stack(tmp_path_factory, "ckpt") as stack:
        yield stack


@pytest.fixture
def started(fleet):
    """Processes a test starts (workers, reconcilers), stopped when it ends."""
    with stopped_after(fleet) as pids:
        yield pids


def copied_step(fleet, run_id: str) -> int | None:
    """The step in the run's copied checkpoint, in its results bucket."""
    path = results(fleet, run_id) / "checkpoints" / "step"
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def live_step(fleet, run_id: str) -> int:
    """The step the command has reached, in its CHECKPOINT_DIR on the worker (0: none yet,
    the command is only starting)."""
    try:
        return int((Path(fleet.work_dir) / run_id / "checkpoint" / "step").read_text())
    except FileNotFoundError:
        return 0


def first_line(fleet, run_id: str) -> str:
    log = (results(fleet, run_id) / "learner-1" / "training-log.txt").read_text()
    return unstamped(log).splitlines()[0]


def test_a_lost_node_resumes_on_another_worker_from_the_last_copied_step(fleet, started):
    period = 1.0
    env = {"DLAAS_CHECKPOINT_SECONDS": str(period), "DLAAS_RUN_RETRIES": "1"}
    first = fleet.start_worker("ckpt-first@test", "0-3", **env)
    started.append(first)
    started.append(fleet.start_reconciler("ckpt-reconciler", DLAAS_RUN_RETRIES="1"))
    run_id = submit(fleet, COUNTER, "small")
    run = wait_state(fleet, run_id, RunState.PROCESSING, timeout=60)
    deadline = time.monotonic() + 30
    while (copied_step(fleet, run_id) or 0) < 18:
        assert time.monotonic() < deadline, "no checkpoint copied near step 20"
        time.sleep(0.05)
    started.append(fleet.start_worker("ckpt-second@test", "4-7", **env))
    run = runs(fleet).get(run_id)
    reached = live_step(fleet, run_id)
    lose_node(first, run.process_id)
    started.remove(first)
    kept = copied_step(fleet, run_id)
    # At most one copy period of work is lost.
    assert reached - kept <= period / STEP_SECONDS + 1, (reached, kept)
    done = wait_state(fleet, run_id, RunState.COMPLETED, RunState.FAILED, timeout=90)
    assert done.state is RunState.COMPLETED, done.status_message
    assert done.worker == "ckpt-second@test" and done.attempt == 2
    assert first_line(fleet, run_id) == f"attempt=2 resumed=1 from={kept}"
    shown = dlaas(fleet, "show", "trained-models", run_id, "--json")
    attempts = json.loads(shown.stdout)["attempts"]
    assert [a["node"] for a in attempts] == ["ckpt-first@test", "ckpt-second@test"]
    assert attempts[0]["ended"].startswith("PENDING: node lost: ckpt-first@test")
    assert attempts[0]["resumed_from"] is None
    assert attempts[1]["ended"].startswith("COMPLETED")
    assert attempts[1]["resumed_from"]["files"] == 1
    assert attempts[1]["resumed_from"]["from"] == f"results/{run_id}/checkpoints/"
    text = dlaas(fleet, "show", "trained-models", run_id).stdout
    assert "Attempts" in text and f"resumed from results/{run_id}/checkpoints/" in text


def test_a_drained_worker_copies_the_checkpoint_at_the_stop_for_the_next_attempt(fleet, started):
    # No periodic copy within the test: only the one taken when the run is stopped.
    env = {
        "DLAAS_CHECKPOINT_SECONDS": "600",
        "DLAAS_RUN_RETRIES": "1",
        "DLAAS_DRAIN_TIMEOUT_SECONDS": "2",
    }
    worker = fleet.start_worker("ckpt-drained@test", "0-3", **env)
    started.append(worker)
    run_id = submit(fleet, COUNTER, "small")
    wait_state(fleet, run_id, RunState.PROCESSING, timeout=60)
    deadline = time.monotonic() + 30
    while live_step(fleet, run_id) < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert copied_step(fleet, run_id) is None
    os.kill(worker, signal.SIGTERM)
    at_sigterm = live_step(fleet, run_id)
    handed = wait_state(fleet, run_id, RunState.PENDING, timeout=30)
    assert handed.status_message.startswith("handed back to the queue: ckpt-drained@test")
    kept = copied_step(fleet, run_id)
    assert kept is not None and kept >= at_sigterm  # it ran on until the drain timeout
    started.append(fleet.start_worker("ckpt-next@test", "4-7", **env))
    done = wait_state(fleet, run_id, RunState.COMPLETED, RunState.FAILED, timeout=90)
    assert done.state is RunState.COMPLETED, done.status_message
    assert first_line(fleet, run_id) == f"attempt=2 resumed=1 from={kept}"
