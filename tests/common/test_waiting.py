"""Why a PENDING run waits (common/fleet/waiting.py): its place among the runs of its size and the
reason, from its place in the index (WaitList.place) and the nodes' heartbeat records as
NodeStore.list() gives them."""

from __future__ import annotations

import pytest

from common.fleet.sizes import ResourceSize
from common.fleet.waiting import explain_wait, ordinal
from tests.conftest import bare_run


def _node(name: str, gpus: list[int], sizes: list[str], run=None, status="ready", **extra):
    return {"name": name, "status": status, "gpus": gpus, "sizes": sizes, "run": run, **extra}


@pytest.mark.parametrize(
    ("n", "word"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (101, "101st"),
        (111, "111th"),
    ],
)
def test_ordinals(n, word):
    assert ordinal(n) == word


def test_its_place_is_said_among_the_runs_of_its_size():
    runs = [
        bare_run(ResourceSize.LARGE),
        bare_run(ResourceSize.SMALL),
        bare_run(ResourceSize.LARGE),
        bare_run(ResourceSize.LARGE),
    ]
    nodes = [
        _node(
            "node-a", [0, 1, 2, 3], ["small", "medium", "large"], run="training-x", free_gpus=[2, 3]
        ),
        _node("node-b", [0, 1, 2, 3], ["large"], run="training-y", free_gpus=[1]),
    ]
    wait = explain_wait(runs[2], (2, 3), nodes)
    assert (wait.position, wait.of) == (2, 3)
    assert wait.message == (
        "2nd of 3 large runs; waiting for 4 free GPUs on one node; largest free block now: 2 on "
        "node-a"
    )
    assert explain_wait(runs[1], (1, 1), nodes).message.startswith("1st of 1 small run; ")


def test_a_run_bigger_than_every_node_says_so():
    run = bare_run(ResourceSize.LARGE, gpu_count=8)
    nodes = [_node("node-a", [0, 1, 2, 3], ["large"]), _node("node-b", [0, 1], ["large"])]
    assert explain_wait(run, (1, 1), nodes).reason == "no node has 8 GPUs (the largest has 4)"


def test_a_node_running_a_run_has_no_free_gpu_unless_its_heartbeat_says():
    run = bare_run(ResourceSize.MEDIUM)
    nodes = [
        _node("node-a", [0, 1], ["medium"], run="training-x"),
        _node("node-b", [0, 1, 2, 3], ["medium", "large"], run="training-y", free_gpus=[3]),
    ]
    assert explain_wait(run, (1, 1), nodes).reason == (
        "waiting for 2 free GPUs on one node; largest free block now: 1 on node-b"
    )


def test_no_worker_serving_the_size_names_the_draining_ones():
    run = bare_run(ResourceSize.LARGE)
    nodes = [
        _node("node-a", [0], ["small"]),
        _node("node-b", [0, 1, 2, 3], ["large"], status="draining"),
        {"name": "node-c", "status": "lost", "last_heartbeat": 0},
    ]
    assert explain_wait(run, (1, 1), nodes).reason == "no worker serves large (draining: node-b)"
    assert explain_wait(run, (1, 1), nodes[:1]).reason == "no worker serves large"


def test_cpu_nodes_wait_for_a_free_worker():
    run = bare_run(ResourceSize.SMALL)
    busy = [_node("cpu-a", [], ["small"], run="training-x"), _node("cpu-b", [], ["small"], run="y")]
    assert explain_wait(run, (1, 1), busy).reason == (
        "waiting for a free worker serving small (2 serve it, all busy)"
    )
    idle = busy[:1] + [_node("cpu-b", [], ["small"])]
    assert (
        explain_wait(run, (1, 1), idle).reason == "a worker is free (cpu-b): it takes the run next"
    )


def test_a_free_worker_takes_only_as_many_runs_next_as_there_are_free_workers():
    run = bare_run(ResourceSize.SMALL)
    nodes = [_node("cpu-a", [], ["small"]), _node("cpu-b", [], ["small"], run="training-x")]
    assert explain_wait(run, (1, 4224), nodes).reason.endswith("it takes the run next")
    far = explain_wait(run, (4224, 4224), nodes)
    assert (
        far.reason
        == "waiting for a free worker serving small (2 serve it, 1 free; 4223 runs ahead)"
    )
    assert far.message.startswith("4224th of 4224 small runs; ")
