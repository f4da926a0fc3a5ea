"""GPU packing against today's static partitioning, in a simulation driven by the allocator
itself (common/fleet/packing.py: Node, admit, choose_gpus), and against the bound.

    .venv/bin/python -m benchmarks.packing [--runs 1000] [--nodes 8] [--seed 1] [--load 0.92]

The trace: Poisson arrivals at `--load` of the fleet's GPUs; sizes 60% small, 30% medium,
10% large (GPUs from the size table, 1/2/4 by default); durations log-normal (median 30 min,
sigma 1), independent of the size; each run declares a time limit of twice its duration
(`--no-limit SHARE`: that share of runs declares none).

The policies, on nodes of `--gpus-per-node` GPUs (4), all through the same event loop
(`simulate`): at each arrival or end the nodes, in a random order (workers race for
messages), each take the head of a size's queue, oldest head first, while `admit` lets them:
  static      today's model: each node split into fixed workers (4; 2+2; 2+1+1; 1+1+1+1 for
              4 GPUs), each a Node of its own running one run at a time of its size only, no
              reservation; every mix of splits over the fleet that serves every size is
              simulated, and the one with the lowest mean wait over all runs is shown (the
              best fixed mix for this trace, known afterwards);
  packing     one Node per machine packing runs on its free GPUs, with the reservation after
              `--reserve-after` seconds and backfill, admit given the fleet's view (one node
              holds for each reserved run);
  every node  the same without the fleet's view: every node a reserved run fits holds for it;
  bound       the most any policy could do: the trace's GPU-seconds that can fall inside the
              span (each run's work capped at the time from its arrival to the span's end),
              over the fleet's GPU-seconds in the span; nobody waits.
Utilisation is measured over the span from the first arrival to the last. The reservation
bound is common/fleet/packing.py's: bound + the longest declared time limit of the trace. The last
lines check each large run that waited past the reservation bound, where the wait bound is
claimed, against its own: the latest declared end of the runs holding GPUs when it passed.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from operator import attrgetter

from benchmarks.figures import machine, percentile
from common.fleet.packing import Node, Request, Reservation, Waiting, admit
from common.fleet.sizes import DEFAULT_SIZE_GPUS, ResourceSize

SIZE_SHARES = {ResourceSize.SMALL: 0.6, ResourceSize.MEDIUM: 0.3, ResourceSize.LARGE: 0.1}
MEDIAN_SECONDS = 30 * 60.0
SIGMA = 1.0
LIMIT_FACTOR = 2.0


@dataclass(frozen=True)
class Job:
    """One run of the trace."""

    run_id: str
    size: ResourceSize
    gpus: int
    arrival: float
    duration: float
    timeout: float  # the declared time limit, 0: none


@dataclass(frozen=True)
class Outcome:
    job: Job
    start: float
    node: str

    @property
    def wait(self) -> float:
        return self.start - self.job.arrival


def make_trace(
    runs: int,
    fleet_gpus: int,
    load: float,
    seed: int,
    size_gpus: dict[ResourceSize, int],
    no_limit_share: float = 0.0,
) -> list[Job]:
    rng = random.Random(seed)
    sizes, shares = list(SIZE_SHARES), list(SIZE_SHARES.values())
    mean_gpus = sum(size_gpus[s] * share for s, share in SIZE_SHARES.items())
    mean_duration = MEDIAN_SECONDS * math.exp(SIGMA**2 / 2)
    rate = load * fleet_gpus / (mean_gpus * mean_duration)  # arrivals per second
    jobs, now = [], 0.0
    for i in range(runs):
        size = rng.choices(sizes, shares)[0]
        duration = rng.lognormvariate(math.log(MEDIAN_SECONDS), SIGMA)
        timeout = 0.0 if rng.random() < no_limit_share else LIMIT_FACTOR * duration
        jobs.append(Job(f"run-{i:04d}", size, size_gpus[size], now, duration, timeout))
        now += rng.expovariate(rate)
    return jobs


def simulate(
    trace: Sequence[Job],
    nodes: list[Node],
    rng: random.Random,
    reservation: Reservation | None = None,
    fleet_view: bool = True,
    serves: dict[str, set[int]] | None = None,
) -> list[Outcome]:
    """Run the trace through `nodes`: at each arrival or end, the nodes in a random order
    (workers race for messages) each take, oldest first, the head of a size's queue while
    `admit` lets them. `reservation` None: none (admit sees no waiting run); `fleet_view`:
    admit sees every node (one node holds for each reserved run), else only its own;
    `serves`: the GPU counts each node takes (static workers), None: every count."""
    queues: dict[int, deque[Job]] = {g: deque() for g in {j.gpus for j in trace}}
    waiting: dict[str, Waiting] = {}
    ends: list[tuple[float, str, str]] = []  # a heap of (end, run id, node name)
    by_name = {node.name: node for node in nodes}
    arrivals = deque(sorted(trace, key=attrgetter("arrival")))
    outcomes: list[Outcome] = []
    rule = reservation or Reservation()
    while arrivals or ends:
        now = min(arrivals[0].arrival if arrivals else math.inf, ends[0][0] if ends else math.inf)
        while ends and ends[0][0] == now:
            _, run_id, name = heapq.heappop(ends)
            by_name[name].finish(run_id)
        while arrivals and arrivals[0].arrival == now:
            job = arrivals.popleft()
            queues[job.gpus].append(job)
            if reservation:
                waiting[job.run_id] = Waiting(job.run_id, job.gpus, job.arrival)
        order = nodes[:]
        rng.shuffle(order)
        for node in order:
            while node.free:
                heads = sorted(
                    (
                        q[0]
                        for g, q in queues.items()
                        if q and (not serves or g in serves[node.name])
                    ),
                    key=attrgetter("arrival"),
                )
                for job in heads:
                    request = Request(job.run_id, job.gpus, job.timeout)
                    fleet = nodes if fleet_view else None
                    decision = admit(node, request, waiting.values(), now, rule, fleet)
                    if decision.start:
                        break
                else:
                    break  # nothing more starts on this node now
                node.start(job.run_id, decision.gpus, now, job.timeout)
                queues[job.gpus].popleft()
                waiting.pop(job.run_id, None)
                outcomes.append(Outcome(job, now, node.name))
                heapq.heappush(ends, (now + job.duration, job.run_id, node.name))
    return outcomes


def splits(node_gpus: int, parts: set[int]) -> list[tuple[int, ...]]:
    """The ways to cut a node's GPUs into workers of the sizes' GPU counts, largest first."""
    if node_gpus == 0:
        return [()]
    found = []
    for part in sorted(parts, reverse=True):
        if part <= node_gpus:
            found += [
                (part, *rest) for rest in splits(node_gpus - part, parts) if rest[:1] <= (part,)
            ]
    return found


def static_fleet(mix: Sequence[tuple[int, ...]]) -> tuple[list[Node], dict[str, set[int]]]:
    nodes, serves = [], {}
    for n, split in enumerate(mix):
        first = 0
        for w, gpus in enumerate(split):
            name = f"node-{n}/worker-{w}"
            nodes.append(Node(name, tuple(range(first, first + gpus))))
            serves[name] = {gpus}
            first += gpus
    return nodes, serves


def best_static(
    trace: Sequence[Job], node_count: int, node_gpus: int, seed: int
) -> tuple[str, list[Outcome]]:
    counts = {j.gpus for j in trace}
    best: tuple[float, str, list[Outcome]] | None = None
    for mix in combinations_with_replacement(splits(node_gpus, counts), node_count):
        if not counts <= {g for split in mix for g in split}:
            continue  # a size nobody serves waits forever
        nodes, serves = static_fleet(mix)
        outcomes = simulate(trace, nodes, random.Random(seed), serves=serves)
        mean = statistics.fmean(o.wait for o in outcomes)
        if best is None or mean < best[0]:
            best = (mean, describe_mix(mix), outcomes)
    assert best is not None, "no static mix serves every size"
    return best[1], best[2]


def describe_mix(mix: Sequence[tuple[int, ...]]) -> str:
    names = ["+".join(map(str, split)) for split in mix]
    return ", ".join(f"{names.count(n)}x[{n}]" for n in dict.fromkeys(names))


def utilisation(outcomes: Sequence[Outcome], fleet_gpus: int, span: tuple[float, float]) -> float:
    first, last = span
    used = sum(
        o.job.gpus * max(0.0, min(o.start + o.job.duration, last) - max(o.start, first))
        for o in outcomes
    )
    return used / (fleet_gpus * (last - first))


def bound_utilisation(trace: Sequence[Job], fleet_gpus: int, span: tuple[float, float]) -> float:
    first, last = span
    work = sum(j.gpus * min(j.duration, last - j.arrival) for j in trace)
    return min(1.0, work / (fleet_gpus * (last - first)))


def past_own_bound(outcomes: Sequence[Outcome], gpus: int, after: float, nodes: int) -> tuple:
    """(runs of `gpus` GPUs that waited past the reservation bound and for which the wait
    bound is claimed, how many of them started after it). Claimed: every run holding GPUs
    when it passed the bound declared a time limit, and fewer older runs of its size than
    nodes still waited; its bound: the latest of those runs' declared ends."""
    claimed = late = 0
    for o in outcomes:
        if o.job.gpus != gpus or o.wait <= after:
            continue
        passed = o.job.arrival + after
        holding = [h for h in outcomes if h.start <= passed < h.start + h.job.duration]
        older = sum(
            1
            for h in outcomes
            if h.job.gpus == gpus and h.job.arrival < o.job.arrival and h.start > passed
        )
        if older >= nodes or any(h.job.timeout <= 0 for h in holding):
            continue
        claimed += 1
        late += o.start > max((h.start + h.job.timeout for h in holding), default=passed)
    return claimed, late


def wait_rows(outcomes: Sequence[Outcome], sizes: Sequence[ResourceSize]) -> dict[str, float]:
    rows = {"mean wait, all runs": statistics.fmean(o.wait for o in outcomes)}
    for size in sizes:
        waits = [o.wait for o in outcomes if o.job.size is size] or [0.0]
        rows[f"mean wait {size.value}"] = statistics.fmean(waits)
        rows[f"p95 wait {size.value}"] = percentile(waits, 0.95)
    rows[f"longest wait {sizes[-1].value}"] = max(
        (o.wait for o in outcomes if o.job.size is sizes[-1]), default=0.0
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.92)
    parser.add_argument("--reserve-after", type=float, default=Reservation().after_seconds)
    parser.add_argument("--no-limit", type=float, default=0.0, metavar="SHARE")
    args = parser.parse_args()

    began = time.perf_counter()
    size_gpus = dict(DEFAULT_SIZE_GPUS)
    sizes = sorted(SIZE_SHARES, key=size_gpus.__getitem__)
    fleet_gpus = args.nodes * args.gpus_per_node
    trace = make_trace(args.runs, fleet_gpus, args.load, args.seed, size_gpus, args.no_limit)
    span = (trace[0].arrival, trace[-1].arrival)
    reservation = Reservation(args.reserve_after)
    mix, static = best_static(trace, args.nodes, args.gpus_per_node, args.seed)
    policies = {"static": static}
    for label, fleet_view in (("packing", True), ("every node", False)):
        nodes = [Node(f"node-{n}", tuple(range(args.gpus_per_node))) for n in range(args.nodes)]
        rng = random.Random(args.seed)
        policies[label] = simulate(trace, nodes, rng, reservation, fleet_view)
    took = time.perf_counter() - began

    largest = sizes[-1]
    limits = [j.timeout for j in trace]
    fits = size_gpus[largest] <= args.gpus_per_node
    stated = args.reserve_after + max(limits) if min(limits) > 0 and fits else math.inf
    columns = {
        label: {"GPU utilisation": utilisation(outcomes, fleet_gpus, span)}
        | wait_rows(outcomes, sizes)
        | {"reservation bound": None if label == "static" else stated}
        for label, outcomes in policies.items()
    }
    bound = bound_utilisation(trace, fleet_gpus, span)
    columns["bound"] = dict.fromkeys(columns["static"], 0.0) | {
        "GPU utilisation": bound,
        "reservation bound": None,
    }

    shares = ", ".join(f"{SIZE_SHARES[s]:.0%} {s.value}" for s in sizes)
    gpus = "/".join(str(size_gpus[s]) for s in sizes)
    limit = f"a time limit of {LIMIT_FACTOR:g}x its duration"
    if args.no_limit:
        limit += f", except {args.no_limit:.0%} of runs (none)"
    print(
        f"packing benchmark: {args.runs} runs ({shares}: {gpus} GPUs) on {args.nodes} nodes "
        f"of {args.gpus_per_node} GPUs, load {args.load:.2f}, seed {args.seed}"
    )
    print(
        f"trace: Poisson arrivals over {(span[1] - span[0]) / 3600:.1f} h; durations "
        f"log-normal (median {MEDIAN_SECONDS / 60:.0f} min, sigma {SIGMA:g}); each run "
        f"declares {limit}; reservation after {args.reserve_after:.0f} s"
    )
    print(f"static: the best fixed mix by mean wait over all runs: {mix}")
    print("every node: packing without the fleet view (each node holds for a reserved run)")
    print(f"environment: {machine()}; a simulation (no GPUs, no Redis), took {took:.1f} s")
    print(f"  {'':<22}" + "".join(f"{label:>12}" for label in columns))
    for row in columns["static"]:
        print(f"  {row:<22}" + "".join(f"{cell(row, c[row]):>12}" for c in columns.values()))
    for label in ("packing", "every node"):
        claimed, late = past_own_bound(
            policies[label], size_gpus[largest], args.reserve_after, args.nodes
        )
        print(
            f"  {label}: utilisation {columns[label]['GPU utilisation'] / bound:.1%} of the "
            f"bound's; {largest.value} runs past the reservation bound with the wait bound "
            f"claimed: {claimed}, started after their own bound: {late}"
        )
    return 0


def cell(row: str, value: float | None) -> str:
    if value is None:
        return "-"
    if row == "GPU utilisation":
        return f"{value:.1%}"
    if value == math.inf:
        return "none"
    return f"{value:,.0f} s"


if __name__ == "__main__":
    sys.exit(main())
