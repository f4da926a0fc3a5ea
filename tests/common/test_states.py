"""The one transition table and the size table."""

from __future__ import annotations

import pytest

from common.fleet.sizes import (
    DEFAULT_SIZE_GPUS,
    ResourceSize,
    parse_size_table,
    queue_name,
    sizes_for_gpus,
)
from common.states import TERMINAL, TRANSITIONS, RunState, can_transition

HAPPY = [
    RunState.PENDING,
    RunState.DOWNLOADING,
    RunState.PROCESSING,
    RunState.STORING,
    RunState.COMPLETED,
]


def test_happy_path_is_allowed_step_by_step():
    for current, new in zip(HAPPY, HAPPY[1:], strict=False):
        assert can_transition(current, new)


def test_no_skipping_and_no_going_back():
    assert not can_transition(RunState.PENDING, RunState.PROCESSING)
    assert not can_transition(RunState.STORING, RunState.PROCESSING)
    assert not can_transition(RunState.PROCESSING, RunState.COMPLETED)


@pytest.mark.parametrize("state", [s for s in RunState if not s.terminal])
def test_every_active_state_can_fail_or_halt(state):
    assert can_transition(state, RunState.FAILED)
    assert can_transition(state, RunState.HALTED)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_go_nowhere(state):
    assert state not in TRANSITIONS
    assert not any(can_transition(state, other) for other in RunState)


def test_cli_names():
    assert RunState.PROCESSING.cli_name == "running"
    assert RunState.FAILED.cli_name == "failed"


def test_queue_names_and_sizes_per_worker():
    assert queue_name(ResourceSize.MEDIUM) == "dlaas.medium"
    table = DEFAULT_SIZE_GPUS
    assert sizes_for_gpus(1, table) == [ResourceSize.SMALL]
    assert sizes_for_gpus(2, table) == [ResourceSize.MEDIUM]
    assert sizes_for_gpus(3, table) == [ResourceSize.MEDIUM]
    assert sizes_for_gpus(2, table, serve_smaller=True) == [ResourceSize.SMALL, ResourceSize.MEDIUM]
    assert sizes_for_gpus(8, table) == [ResourceSize.LARGE]
    assert sizes_for_gpus(0, table) == list(ResourceSize)


def test_size_table_parsing():
    assert parse_size_table("small=1,medium=4,large=8")[ResourceSize.MEDIUM] == 4
    with pytest.raises(ValueError, match="missing large"):
        parse_size_table("small=1,medium=2")
    with pytest.raises(ValueError, match="unknown size"):
        parse_size_table("small=1,medium=2,large=4,huge=8")
