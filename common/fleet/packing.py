"""Which GPUs of a node a run gets, and whether the node may start it now: best-fit packing
of several runs on disjoint GPU sets, with a reservation that keeps large runs from starving.

Pure decision logic, no I/O: the worker keeps a `Node` (its GPUs and the runs on them), reads
the fleet's waiting runs (`Waiting`) and the other nodes (their heartbeats) from Redis, and
asks `admit(node, request, waiting, now, reservation, fleet)` before it takes a run; the
answer (`Decision`) says start, on which GPUs, or why not, in words.

The rule. A waiting run R reserves GPUs once it has waited longer than the bound
(`Reservation.after_seconds`): the node holding for R (with the fleet's view, the one node
`plan_reservations` picks, where R could start first; without it, every node R fits) then
starts a smaller run only if that does not move R's earliest start on this node later
(backfill, as Slurm does it): the run ends, by its declared time limit, no later than R could
start here anyway, or it leaves enough GPUs free for R at that time. R's earliest start is
computed from the running runs' declared ends (start + time limit); a run without a time
limit ends at an unknown time, and nothing smaller is backfilled past an unknown end. Runs
of R's size or larger are not held for R; within a size the queue is first in, first out.

The wait that follows, for a run R of the largest size that passes the bound at t0 = its
arrival + bound, with k - 1 older runs of its size still waiting and k <= the number of nodes
it fits: every run holding GPUs at t0 ends by its time limit; after t0 the k nodes that
could first free R's GPUs (the planned ones, or all) start nothing smaller that would delay
that, so by t0 + L (L: the longest time limit among the runs holding GPUs at t0) k nodes have
each freed such a block and taken the oldest waiting run of R's size then; R starts by

    wait <= bound + L <= bound + the longest time limit any run declares.

When a run without a time limit holds GPUs on the nodes R fits, there is no bound: R waits
until such a run ends of its own accord. For a smaller size, a younger larger run may take
a node first, so its bound also counts the larger runs' time limits. The worker's kill grace
after a time limit adds a few seconds to each end, and a stale view of the fleet (two nodes
disagreeing on the plan) can leave a reserved run without a holding node for a heartbeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

# Lower is closer: e.g. NVML's common-ancestor level of two GPUs (10: one PCIe switch, ...,
# 50: across sockets), lowered for pairs joined by NVLink; any table the caller builds.
Distance = Callable[[int, int], int]

# Above this many candidate GPU sets, choose_gpus grows a set GPU by GPU instead of trying
# them all (C(16, 8) = 12,870; a node of up to 12 GPUs is always searched in full).
MAX_CANDIDATE_SETS = 1000


class PackingError(ValueError):
    """A GPU given twice, a GPU the node does not have, or a run the node does not hold."""


@dataclass(frozen=True)
class Reservation:
    """When a waiting larger run starts holding back smaller ones (proposed setting:
    DLAAS_RESERVATION_AFTER_SECONDS)."""

    after_seconds: float = 600.0


@dataclass(frozen=True)
class Request:
    """A run a node could take: its id, its GPUs, its declared time limit (0: none)."""

    run_id: str
    gpus: int
    timeout_seconds: float = 0.0


@dataclass(frozen=True)
class Waiting:
    """A run waiting anywhere in the fleet, since `since` (epoch seconds)."""

    run_id: str
    gpus: int
    since: float


@dataclass(frozen=True)
class Running:
    run_id: str
    gpus: tuple[int, ...]
    started_at: float
    # started_at + the declared time limit; None: no limit, the end is unknown.
    ends_by: float | None


@dataclass(frozen=True)
class Decision:
    start: bool
    gpus: tuple[int, ...] = ()
    reason: str = ""
    # The reserved run this request yields to (when held back) or fits around (backfill).
    reserved_for: str | None = None


def adjacent_distance(all_gpus: Sequence[int]) -> Distance:
    """Without a topology, GPUs next to each other in aligned blocks are close: positions
    0-1 and 2-3 are pairs (distance 1), 0-3 a quad (2), 0-7 an octet (3), as on the common
    boards where GPUs share NVLink or a PCIe switch in order."""
    position = {gpu: i for i, gpu in enumerate(all_gpus)}
    return lambda a, b: (position[a] ^ position[b]).bit_length()


def table_distance(levels: Mapping[tuple[int, int], int]) -> Distance:
    """A distance from a table of pairs (either order), e.g. NVML's common-ancestor level
    of each pair of GPUs; a GPU is at 0 from itself."""
    return lambda a, b: 0 if a == b else levels.get((a, b), levels.get((b, a), 0))


def choose_gpus(
    free: Iterable[int], count: int, all_gpus: Sequence[int], distance: Distance | None = None
) -> tuple[int, ...] | None:
    """The `count` free GPUs a run gets, in order; None when fewer are free.

    Best fit: the closest set first (the smallest largest distance between two of its GPUs,
    then the smallest sum), and among those the one that leaves the free GPUs in the largest
    close blocks (a 1-GPU run goes onto a pair already broken, a 2-GPU run onto a whole pair).
    """
    if count < 0:
        raise ValueError(f"GPU count must be 0 or more, got {count}")
    pool = sorted(free)
    if count > len(pool):
        return None
    if count == 0:
        return ()
    near = distance or adjacent_distance(all_gpus)
    levels = sorted({near(a, b) for a, b in combinations(pool, 2)}, reverse=True)

    def spread(chosen: Sequence[int]) -> tuple[int, int]:
        pairs = [near(a, b) for a, b in combinations(chosen, 2)]
        return (max(pairs, default=0), sum(pairs))

    def left_blocks(chosen: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        # The free blocks left, level by level from the loosest: bigger blocks sort first.
        left = [g for g in pool if g not in chosen]
        return tuple(tuple(-size for size in blocks(left, level, near)) for level in levels)

    def fit(chosen: Sequence[int]) -> tuple:
        closeness = spread(chosen)
        return (closeness[0], left_blocks(chosen), closeness[1], tuple(chosen))

    if math.comb(len(pool), count) <= MAX_CANDIDATE_SETS:
        return min(combinations(pool, count), key=fit)
    # Many GPUs: from each starting GPU, add the GPU that keeps the set closest and the
    # rest best; keep the best of those sets.
    grown = []
    for seed in pool:
        chosen = [seed]
        while len(chosen) < count:
            chosen.append(
                min((g for g in pool if g not in chosen), key=lambda g: fit(sorted([*chosen, g])))
            )
        grown.append(tuple(sorted(chosen)))
    return min(grown, key=fit)


def blocks(gpus: Sequence[int], level: int, distance: Distance) -> list[int]:
    """The sizes of the blocks `gpus` fall into when GPUs at most `level` apart are joined
    (and chained), largest first."""
    unseen, sizes = set(gpus), []
    while unseen:
        edge = [unseen.pop()]
        size = 1
        while edge:
            gpu = edge.pop()
            joined = {g for g in unseen if distance(gpu, g) <= level}
            unseen -= joined
            edge.extend(joined)
            size += len(joined)
        sizes.append(size)
    return sorted(sizes, reverse=True)


@dataclass
class Node:
    """One node's GPUs and the runs holding them; a GPU is held by at most one run."""

    name: str
    gpus: tuple[int, ...]
    distance: Distance | None = None
    running: dict[str, Running] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.gpus)) != len(self.gpus):
            raise PackingError(f"node {self.name}: a GPU is listed twice in {self.gpus}")

    @property
    def free(self) -> frozenset[int]:
        held = {gpu for run in self.running.values() for gpu in run.gpus}
        return frozenset(self.gpus) - held

    def choose(self, count: int) -> tuple[int, ...] | None:
        return choose_gpus(self.free, count, self.gpus, self.distance)

    def start(
        self, run_id: str, gpus: Iterable[int], now: float, timeout_seconds: float = 0.0
    ) -> Running:
        """Give `gpus` to the run; refused when one is not this node's or not free."""
        gpus = tuple(gpus)
        if run_id in self.running:
            raise PackingError(f"node {self.name}: run {run_id} is already running here")
        if len(set(gpus)) != len(gpus):
            raise PackingError(f"node {self.name}: GPUs {gpus} name one twice")
        taken = [g for g in gpus if g not in self.free]
        if taken:
            raise PackingError(
                f"node {self.name}: GPU {taken[0]} is not free (free: {sorted(self.free)})"
            )
        ends_by = now + timeout_seconds if timeout_seconds > 0 else None
        self.running[run_id] = run = Running(run_id, gpus, now, ends_by)
        return run

    def finish(self, run_id: str) -> tuple[int, ...]:
        """The run has ended: its GPUs, now free again."""
        run = self.running.pop(run_id, None)
        if run is None:
            raise PackingError(f"node {self.name}: run {run_id} is not running here")
        return run.gpus

    def earliest_start(self, count: int, now: float, also: Running | None = None) -> float:
        """When `count` GPUs are free here at the latest, if each run ends by its time limit
        (and `also` were running too): now, a time, or infinity (an unknown end is in the
        way, or the node has too few GPUs)."""
        runs = [*self.running.values(), *([also] if also else [])]
        free = len(self.gpus) - sum(len(run.gpus) for run in runs)
        if free >= count:
            return now
        for end, held in sorted((_end(run), len(run.gpus)) for run in runs):
            free += held
            if free >= count:
                return max(end, now)
        return math.inf


def _end(run: Running) -> float:
    return math.inf if run.ends_by is None else run.ends_by


def admit(
    node: Node,
    request: Request,
    waiting: Iterable[Waiting],
    now: float,
    reservation: Reservation = Reservation(),
    fleet: Iterable[Node] | None = None,
) -> Decision:
    """May `node` start `request` now, and on which GPUs? It does not change the node: on a
    start the caller gives the GPUs with `node.start`.

    `fleet`: every node as last seen (their heartbeats), so that each reserved run is held
    for by one node only, the one where it could start first (`plan_reservations`); without
    it every node the reserved run fits holds back for it."""
    total = len(node.gpus)
    if request.gpus > total:
        return Decision(False, reason=f"needs {request.gpus} GPUs; node {node.name} has {total}")
    gpus = node.choose(request.gpus)
    if gpus is None:
        return Decision(
            False,
            reason=f"waiting for {request.gpus} free GPUs on one node; "
            f"free on {node.name} now: {len(node.free)}",
        )
    waiting = list(waiting)
    overdue = [w for w in waiting if now - w.since > reservation.after_seconds]
    if fleet is not None:
        plan = plan_reservations(waiting, [*fleet, node], now, reservation)
        overdue = [w for w in overdue if plan.get(w.run_id) == node.name]
    reserved = sorted(
        (w for w in overdue if request.gpus < w.gpus <= total), key=lambda w: (w.since, w.run_id)
    )
    on_gpus = "GPUs " + ",".join(map(str, gpus)) if gpus else "no GPU"
    if not reserved:
        return Decision(True, gpus, f"starts on {on_gpus}")
    as_if = Running(request.run_id, gpus, now, _ends_by(request, now))
    delayed: dict[int, float | None] = {}  # per reserved size: its earliest start if delayed
    for held_for in reserved:
        if held_for.gpus not in delayed:
            before = node.earliest_start(held_for.gpus, now)
            later = before == math.inf or node.earliest_start(held_for.gpus, now, as_if) > before
            delayed[held_for.gpus] = before if later else None
        before = delayed[held_for.gpus]
        if before is not None:
            return Decision(
                False,
                reason=_held_back(held_for, request, before, now, reservation),
                reserved_for=held_for.run_id,
            )
    first = reserved[0]
    return Decision(
        True,
        gpus,
        f"starts on {on_gpus} (backfill: does not delay run {first.run_id}, "
        f"{first.gpus} GPUs, waiting for {now - first.since:.0f} s)",
        reserved_for=first.run_id,
    )


def plan_reservations(
    waiting: Iterable[Waiting],
    fleet: Iterable[Node],
    now: float,
    reservation: Reservation = Reservation(),
) -> dict[str, str]:
    """Which node holds back for each run past the bound ({run id: node name}): the runs of
    the most GPUs first, oldest first within a size (so that no smaller run moves a larger
    one's node), each on the node not yet holding for one where it could start first (ties
    by name). Left out: a run no node fits, and a run of the fewest GPUs waiting (nothing
    smaller waits to be held back for it). Every node computes the same plan from the same
    view."""
    waiting = list(waiting)
    fewest = min((w.gpus for w in waiting), default=0)
    nodes = {n.name: n for n in fleet}  # a name given twice: the last one counts
    plan: dict[str, str] = {}
    for run in sorted(waiting, key=lambda w: (-w.gpus, w.since, w.run_id)):
        if run.gpus == fewest or now - run.since <= reservation.after_seconds:
            continue
        holding = set(plan.values())
        fits = [n for n in nodes.values() if n.name not in holding and run.gpus <= len(n.gpus)]
        if fits:
            first = min(fits, key=lambda n: (n.earliest_start(run.gpus, now), n.name))
            plan[run.run_id] = first.name
    return plan


def _ends_by(request: Request, now: float) -> float | None:
    return now + request.timeout_seconds if request.timeout_seconds > 0 else None


def _held_back(
    held_for: Waiting, request: Request, could_start: float, now: float, rule: Reservation
) -> str:
    head = (
        f"held back: run {held_for.run_id} ({held_for.gpus} GPUs) has waited "
        f"{now - held_for.since:.0f} s (bound {rule.after_seconds:.0f} s)"
    )
    if could_start == math.inf:
        return (
            f"{head}; a run without a time limit holds GPUs it needs here, "
            "so nothing smaller starts"
        )
    if request.timeout_seconds <= 0:
        return f"{head}; this run has no time limit and would keep GPUs that run needs"
    return (
        f"{head}; this run's time limit ends after that run could start here "
        f"(in {could_start - now:.0f} s)"
    )


def unplaceable(count: int, node_gpus: Iterable[int]) -> str | None:
    """Why a run of `count` GPUs can never start in a fleet whose nodes have `node_gpus`
    GPUs each (`no node has 8 GPUs (the largest has 4)`), or None when one node could take it."""
    largest = max(node_gpus, default=0)
    if count <= largest:
        return None
    return f"no node has {count} GPUs (the largest has {largest})"


def why_waiting(
    count: int, free_by_node: Mapping[str, int], gpus_by_node: Mapping[str, int]
) -> str:
    """A waiting run's reason across the fleet: `waiting for 4 free GPUs on one node; largest
    free block now: 2 on node-b`, or `no node has 8 GPUs ...`."""
    never = unplaceable(count, gpus_by_node.values())
    if never:
        return never
    if not free_by_node:
        return f"waiting for {count} free GPUs on one node; no node is up"
    name = max(sorted(free_by_node), key=lambda n: free_by_node[n])
    return (
        f"waiting for {count} free GPUs on one node; "
        f"largest free block now: {free_by_node[name]} on {name}"
    )
