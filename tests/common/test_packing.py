"""The GPU packer (common/fleet/packing.py): best-fit examples, the reasons in words, and property
tests over random arrivals, starts and ends on one or several nodes: no GPU given twice,
a run that fits starts unless an older larger run is reserved, and a reserved large run
starts within the stated bound while smaller runs keep arriving."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.fleet.packing import (
    Node,
    PackingError,
    Request,
    Reservation,
    Waiting,
    admit,
    choose_gpus,
    plan_reservations,
    table_distance,
    unplaceable,
    why_waiting,
)

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BOUND = Reservation(600.0)
QUAD = (0, 1, 2, 3)


# --- best fit -----------------------------------------------------------------------------


def test_one_gpu_goes_onto_a_broken_pair():
    assert choose_gpus({0, 2, 3}, 1, QUAD) == (0,)
    assert choose_gpus({0, 1, 3}, 1, QUAD) == (3,)


def test_two_gpus_go_onto_a_whole_free_pair():
    assert choose_gpus({0, 2, 3}, 2, QUAD) == (2, 3)
    assert choose_gpus({1, 2, 3}, 2, QUAD) == (2, 3)
    assert choose_gpus(set(QUAD), 2, QUAD) == (0, 1)


def test_eight_gpus_keep_a_free_quad_whole():
    gpus = tuple(range(8))
    assert choose_gpus(set(gpus) - {0}, 1, gpus) == (1,)
    assert choose_gpus(set(gpus) - {0}, 2, gpus) == (2, 3)
    assert choose_gpus(set(gpus) - {1}, 4, gpus) == (4, 5, 6, 7)


def test_the_node_order_of_gpus_not_their_numbers_says_which_are_adjacent():
    assert choose_gpus({4, 6, 7}, 1, (4, 5, 6, 7)) == (4,)


def test_a_topology_chooses_the_closest_set():
    # NVLink joins 0-2 and 1-3 (10); the rest go through the host bridge (30).
    nvlink = table_distance(
        {(0, 2): 10, (1, 3): 10, (0, 1): 30, (0, 3): 30, (1, 2): 30, (2, 3): 30}
    )
    assert choose_gpus(set(QUAD), 2, QUAD, nvlink) == (0, 2)
    assert choose_gpus({0, 1, 3}, 1, QUAD, nvlink) == (0,)
    assert choose_gpus({0, 1, 3}, 2, QUAD, nvlink) == (1, 3)


def test_a_run_that_cannot_fit_gets_none_and_no_gpu_run_gets_none_given():
    assert choose_gpus({0, 1}, 3, QUAD) is None
    assert choose_gpus(set(), 0, QUAD) == ()
    with pytest.raises(ValueError):
        choose_gpus({0}, -1, QUAD)


def test_a_large_node_is_searched_quickly():
    gpus = tuple(range(16))
    chosen = choose_gpus(set(gpus) - {1}, 8, gpus)
    assert chosen == tuple(range(8, 16))


# --- the node's ledger --------------------------------------------------------------------


def test_a_gpu_is_never_given_twice_and_finish_returns_the_runs_gpus():
    node = Node("node-a", QUAD)
    node.start("r1", (0, 1), now=0.0, timeout_seconds=60)
    with pytest.raises(PackingError, match="GPU 1 is not free"):
        node.start("r2", (1, 2), now=0.0)
    with pytest.raises(PackingError, match="already running"):
        node.start("r1", (2,), now=0.0)
    with pytest.raises(PackingError, match="GPU 9 is not free"):
        node.start("r3", (9,), now=0.0)
    assert node.finish("r1") == (0, 1)
    assert node.free == frozenset(QUAD)
    with pytest.raises(PackingError, match="not running here"):
        node.finish("r1")


def test_earliest_start_counts_declared_ends_and_stops_at_an_unknown_one():
    node = Node("node-a", QUAD)
    node.start("r1", (0,), now=0.0, timeout_seconds=100)
    node.start("r2", (1,), now=0.0, timeout_seconds=300)
    assert node.earliest_start(2, now=10.0) == 10.0
    assert node.earliest_start(3, now=10.0) == 100.0
    assert node.earliest_start(4, now=10.0) == 300.0
    node.start("r3", (2,), now=0.0)  # no time limit
    assert node.earliest_start(4, now=10.0) == math.inf
    assert node.earliest_start(5, now=10.0) == math.inf


# --- admit: the reasons -------------------------------------------------------------------


def busy_node() -> Node:
    """GPUs 0 and 1 held until 1,000 s; 2 and 3 free."""
    node = Node("node-a", QUAD)
    node.start("r-medium", (0, 1), now=0.0, timeout_seconds=1000)
    return node


def test_a_run_waits_for_free_gpus_and_says_how_many_are_free():
    decision = admit(busy_node(), Request("big", 4, 100), [], now=10.0)
    assert not decision.start
    assert decision.reason == "waiting for 4 free GPUs on one node; free on node-a now: 2"


def test_a_run_bigger_than_the_node_says_so():
    decision = admit(busy_node(), Request("huge", 8), [], now=10.0)
    assert decision.reason == "needs 8 GPUs; node node-a has 4"
    assert unplaceable(8, [4, 4, 2]) == "no node has 8 GPUs (the largest has 4)"
    assert unplaceable(4, [4, 2]) is None
    assert why_waiting(8, {"node-a": 1}, {"node-a": 4}).startswith("no node has 8 GPUs")
    assert (
        why_waiting(4, {"node-a": 1, "node-b": 2}, {"node-a": 4, "node-b": 4})
        == "waiting for 4 free GPUs on one node; largest free block now: 2 on node-b"
    )


def test_a_small_run_starts_on_the_best_fit_when_nothing_is_reserved():
    young = [Waiting("training-x", 4, since=0.0)]
    decision = admit(busy_node(), Request("small", 1, 5000), young, now=100.0, reservation=BOUND)
    assert decision.start and decision.gpus == (2,)
    assert decision.reason == "starts on GPUs 2"


def test_a_small_run_is_held_back_when_its_time_limit_ends_after_the_large_one_could_start():
    late = [Waiting("training-x", 4, since=0.0)]
    decision = admit(busy_node(), Request("small", 1, 5000), late, now=612.0, reservation=BOUND)
    assert not decision.start
    assert decision.reserved_for == "training-x"
    assert decision.reason == (
        "held back: run training-x (4 GPUs) has waited 612 s (bound 600 s); this run's time "
        "limit ends after that run could start here (in 388 s)"
    )
    no_limit = admit(busy_node(), Request("small", 1, 0), late, now=612.0, reservation=BOUND)
    assert "this run has no time limit" in no_limit.reason


def test_a_small_run_backfills_when_it_ends_before_the_large_one_could_start():
    late = [Waiting("training-x", 4, since=0.0)]
    decision = admit(busy_node(), Request("small", 1, 300), late, now=612.0, reservation=BOUND)
    assert decision.start and decision.gpus == (2,)
    assert decision.reason.startswith("starts on GPUs 2 (backfill: does not delay run training-x")


def test_nothing_smaller_backfills_past_a_run_without_a_time_limit():
    node = Node("node-a", QUAD)
    node.start("forever", (0, 1), now=0.0)
    late = [Waiting("training-x", 4, since=0.0)]
    decision = admit(node, Request("small", 1, 10), late, now=700.0, reservation=BOUND)
    assert not decision.start
    assert "a run without a time limit holds GPUs it needs here" in decision.reason


def test_with_the_fleet_view_only_the_node_where_the_large_run_starts_first_holds():
    soon, later = Node("node-a", QUAD), Node("node-b", QUAD)
    soon.start("r1", (0, 1), now=0.0, timeout_seconds=1000)
    later.start("r2", (0, 1), now=0.0, timeout_seconds=9000)
    late = [Waiting("training-x", 4, since=0.0), Waiting("small-y", 1, since=0.0)]
    assert plan_reservations(late, [soon, later], now=700.0, reservation=BOUND) == {
        "training-x": "node-a"
    }
    fleet = [soon, later]
    request = Request("small", 1, 10_000)
    assert not admit(soon, request, late, 700.0, BOUND, fleet).start
    assert admit(later, request, late, 700.0, BOUND, fleet).start
    # Without the view every node the large run fits holds back for it.
    held = admit(later, request, late, 700.0, BOUND)
    assert not held.start and held.reserved_for == "training-x"


# --- properties ---------------------------------------------------------------------------


@st.composite
def nodes(draw) -> Node:
    size = draw(st.integers(1, 8))
    gpus = tuple(draw(st.permutations(range(size + draw(st.integers(0, 2)))))[:size])
    topology = None
    if draw(st.booleans()):
        levels = {(a, b): draw(st.sampled_from([10, 20, 30, 50])) for a in gpus for b in gpus}
        topology = table_distance({(a, b): levels[min(a, b), max(a, b)] for a, b in levels})
    return Node("node-a", gpus, topology)


# Mostly runs a node of up to 8 GPUs can take; now and then none, or more than it has.
GPU_COUNTS = st.one_of(st.integers(1, 4), st.integers(1, 4), st.integers(0, 9))

# One step: ("arrive", gpus, timeout, age) asks admit and starts the run when it may;
# ("end", pick) ends a running run; ("wait", seconds) moves time on.
steps = st.one_of(
    st.tuples(
        st.just("arrive"),
        GPU_COUNTS,
        st.sampled_from([0.0, 30.0, 200.0, 1000.0, 5000.0]),
        st.floats(0, 2000),
    ),
    st.tuples(st.just("end"), st.integers(0, 100)),
    st.tuples(st.just("wait"), st.floats(0, 1500)),
)


def shadow(runs: list[tuple[int, float]], total: int, need: int, now: float) -> float:
    """The earliest time `need` GPUs are free, tried at each end in turn: the oracle."""
    for t in sorted({now, *(max(end, now) for _, end in runs if end < math.inf)}):
        if total - sum(held for held, end in runs if end > t) >= need:
            return t
    return math.inf


def expected_start(node: Node, request: Request, waiting: list[Waiting], now: float) -> bool:
    total = len(node.gpus)
    if request.gpus > len(node.free):
        return False
    runs = [
        (len(r.gpus), math.inf if r.ends_by is None else r.ends_by) for r in node.running.values()
    ]
    end = now + request.timeout_seconds if request.timeout_seconds > 0 else math.inf
    for w in waiting:
        if request.gpus < w.gpus <= total and now - w.since > BOUND.after_seconds:
            before = shadow(runs, total, w.gpus, now)
            after = shadow([*runs, (request.gpus, end)], total, w.gpus, now)
            if before == math.inf or after > before:
                return False
    return True


def check_ledger(node: Node) -> None:
    held = [gpu for run in node.running.values() for gpu in run.gpus]
    assert len(held) == len(set(held)), "a GPU given twice"
    assert set(held) | node.free == set(node.gpus) and not set(held) & node.free


@PROPERTY
@given(
    node=nodes(),
    script=st.lists(steps, max_size=40),
    pending=st.lists(st.tuples(GPU_COUNTS, st.floats(0, 3000)), max_size=4),
)
def test_admit_starts_a_run_exactly_when_it_fits_and_no_older_larger_run_is_reserved(
    node, script, pending
):
    now = 3000.0
    waiting = [Waiting(f"waiting-{i}", g, now - age) for i, (g, age) in enumerate(pending)]
    wanted: dict[str, int] = {}
    for n, step in enumerate(script):
        if step[0] == "arrive":
            _, gpus, timeout, age = step
            request = Request(f"run-{n}", gpus, timeout)
            decision = admit(node, request, waiting, now, BOUND)
            assert decision.start == expected_start(node, request, waiting, now), decision
            assert decision.reason
            if decision.start:
                assert len(decision.gpus) == gpus == len(set(decision.gpus))
                assert set(decision.gpus) <= node.free
                node.start(request.run_id, decision.gpus, now, timeout)
                wanted[request.run_id] = gpus
            else:
                waiting.append(Waiting(request.run_id, gpus, now - age))
        elif step[0] == "end" and node.running:
            run_id = sorted(node.running)[step[1] % len(node.running)]
            gpus = node.running[run_id].gpus
            free_before = node.free
            assert node.finish(run_id) == gpus and len(gpus) == wanted.pop(run_id)
            assert node.free == free_before | set(gpus)
        elif step[0] == "wait":
            now += step[1]
        check_ledger(node)


@dataclass
class Arrival:
    run_id: str
    gpus: int
    at: float
    duration: float
    timeout: float


def simulate_until_started(
    fleet: list[Node], target: str, arrivals: list[Arrival], fleet_view: bool, horizon: float
) -> float | None:
    """Arrivals (sorted by time) and ends by their durations; after each, every node takes
    the oldest runs admit lets it; the time `target` started, or None by `horizon`."""
    queue: list[Arrival] = []
    ends: list[tuple[float, str, Node]] = []
    pending = list(arrivals)
    while pending or ends:
        now = min([a.at for a in pending[:1]] + [e[0] for e in ends])
        if now > horizon:
            return None
        for end in [e for e in ends if e[0] == now]:
            ends.remove(end)
            end[2].finish(end[1])
        while pending and pending[0].at == now:
            queue.append(pending.pop(0))
        waiting = [Waiting(a.run_id, a.gpus, a.at) for a in queue]
        for node in fleet:
            for run in list(queue):
                if not any(a.gpus == run.gpus for a in queue[: queue.index(run)]):  # heads only
                    request = Request(run.run_id, run.gpus, run.timeout)
                    decision = admit(
                        node, request, waiting, now, BOUND, fleet if fleet_view else None
                    )
                    if decision.start:
                        node.start(run.run_id, decision.gpus, now, run.timeout)
                        queue.remove(run)
                        waiting = [w for w in waiting if w.run_id != run.run_id]
                        ends.append((now + run.duration, run.run_id, node))
                        if run.run_id == target:
                            return now
            check_ledger(node)
    return None


@settings(PROPERTY, max_examples=150)
@given(
    node_count=st.integers(1, 3),
    fleet_view=st.booleans(),
    smaller=st.lists(
        st.tuples(
            st.sampled_from([1, 1, 2]),
            st.floats(20, 300),  # the gap before it arrives
            st.floats(50, 2000),  # its duration
            st.floats(1, 3),  # its time limit over its duration
        ),
        min_size=1,
        max_size=30,
    ),
    large_at=st.floats(0, 3000),
)
def test_a_reserved_large_run_starts_within_the_bound_while_smaller_runs_keep_arriving(
    node_count, fleet_view, smaller, large_at
):
    longest = max([200.0] + [duration * factor for _, _, duration, factor in smaller])
    bound = BOUND.after_seconds + longest
    # Smaller runs keep coming (the drawn ones, over and over) until past the large run's bound.
    arrivals, at = [Arrival("training-x", 4, large_at, 100.0, 200.0)], 0.0
    while at <= large_at + bound:
        for gpus, gap, duration, factor in smaller:
            at += gap
            arrivals.append(
                Arrival(f"run-{len(arrivals):03d}", gpus, at, duration, duration * factor)
            )
    arrivals.sort(key=lambda a: a.at)
    fleet = [Node(f"node-{i}", QUAD) for i in range(node_count)]
    started = simulate_until_started(fleet, "training-x", arrivals, fleet_view, large_at + bound)
    assert started is not None, f"training-x did not start within {bound:.0f} s"
