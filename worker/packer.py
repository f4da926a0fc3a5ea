"""Several runs at once on one node's GPUs: which GPUs a run gets when its message arrives
(`Packer.place`), and which size queues the node consumes so that it takes a message only
when it can start that run at once (`ConsumerControl`).

Both ask `common.fleet.packing.admit` with the same view: the node's GPU ledger in Redis (written
in one transaction per start, so no GPU is given to two runs), the fleet's other nodes (their
ledgers), and every PENDING run (for the reservation that keeps large runs from starving).
A run holds its GPUs, and its slot (its place on the node: its run user), from its start
until its task ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from common.clock import parse_iso
from common.fleet.packing import Node, Request, Reservation, Running, Waiting, admit
from common.fleet.sizes import ResourceSize, queue_name
from common.run import Run
from worker.context import WorkerContext
from worker.phases.execute import time_limit

log = logging.getLogger(__name__)

# The oldest PENDING runs of a size the consumer control tries, looking for one it may start
# now (a backfill) while a reservation holds a new run of that size back.
BACKFILL_LOOKAHEAD = 20


@dataclass(frozen=True)
class Place:
    """Where a run starts on this node: its GPUs and its slot."""

    gpus: tuple[int, ...]
    slot: int


def waiting_runs(pending: Iterable[Run]) -> list[Waiting]:
    return [Waiting(r.id, r.gpu_count, parse_iso(r.submitted_at).timestamp()) for r in pending]


def node_of(name: str, gpus: Iterable[int], held: dict[str, dict], distance=None) -> Node:
    """The packing view of a node from its ledger (`distance`: its GPUs' topology)."""
    node = Node(name, tuple(gpus), distance)
    for run_id, entry in held.items():
        started, limit = entry.get("started_at", 0.0), entry.get("timeout_seconds", 0.0)
        ends_by = started + limit if limit else None
        node.running[run_id] = Running(run_id, tuple(entry["gpus"]), started, ends_by)
    return node


def fleet_of(records: list[dict], me: str) -> list[Node]:
    """The other ready nodes, from their records (NodeStore.list, ledgers included)."""
    fleet = []
    for record in records:
        if record["name"] == me or record.get("status") != "ready":
            continue
        held = {r["run_id"]: r for r in record.get("runs", [])}
        fleet.append(node_of(record["name"], record.get("gpus", []), held))
    return fleet


class Packer:
    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx
        self.rule = Reservation(ctx.settings.reservation_after_seconds)
        self.distance = ctx.gpus.distance()

    def _gpus(self, count: int) -> int:
        """The GPUs a run of `count` takes here: none on a CPU node (it serves every size)."""
        return count if self.ctx.gpus.indices else 0

    def _view(self) -> tuple[list[Run], list[Node]]:
        """The PENDING runs, and the other nodes: read only when a run waits past the bound
        (only a reservation looks at them)."""
        pending = self.ctx.runs.pending()
        since = time.time() - self.rule.after_seconds
        if all(parse_iso(r.submitted_at).timestamp() >= since for r in pending):
            return pending, []
        return pending, fleet_of(self.ctx.nodes.list(), self.ctx.name)

    def _admit(self, held, request, waiting, fleet, now, slots=True):
        """admit() on this node as the ledger `held` has it, with the slot it would get
        (`slots` False: as if one were free)."""
        taken = {entry.get("slot", 0) for entry in held.values()}
        free_slots = [slot for slot in range(self.ctx.slots) if slot not in taken]
        if not free_slots and slots:
            return None, f"all {self.ctx.slots} run slots of {self.ctx.name} are busy"
        free_slots = free_slots or [0]
        node = node_of(self.ctx.name, self.ctx.gpus.indices, held, self.distance)
        if all(w.run_id != request.run_id for w in waiting):
            # The run asking waits too (the plan holds for no run when none smaller waits).
            waiting = [*waiting, Waiting(request.run_id, request.gpus, now)]
        decision = admit(node, request, waiting, now, self.rule, fleet)
        if not decision.start:
            return None, decision.reason
        return Place(tuple(decision.gpus), free_slots[0]), decision.reason

    def place(self, run: Run) -> tuple[Place | None, str]:
        """Hold GPUs and a slot for `run` on this node now, or say why it cannot start."""
        pending, fleet = self._view()
        waiting = waiting_runs(pending)
        limit = time_limit(run, self.ctx.settings)
        request = Request(run.id, self._gpus(run.gpu_count), limit)
        outcome: list = [None, ""]

        def decide(held: dict[str, dict]) -> dict | None:
            now = time.time()
            place, outcome[1] = self._admit(held, request, waiting, fleet, now)
            outcome[0] = place
            if place is None:
                return None
            return {
                "gpus": list(place.gpus),
                "slot": place.slot,
                "size": run.resource.value,
                "started_at": now,
                "timeout_seconds": limit,
                "pid": os.getpid(),
            }

        self.ctx.nodes.hold(self.ctx.name, run.id, decide)
        return outcome[0], outcome[1]

    def release(self, run_id: str) -> None:
        """The run's GPUs and slot are free: the consumer control looks again at once."""
        self.ctx.nodes.release(self.ctx.name, run_id)
        self.ctx.nodes.wake(self.ctx.name)

    def startable(self, sizes: Iterable[ResourceSize]) -> set[ResourceSize]:
        """The sizes of which this node could start a run now: a new one (no time limit), or
        one of the oldest PENDING of that size (a backfill, by its time limit). Busy slots do
        not count: the pool takes no message while all its processes run (one per slot)."""
        pending, fleet = self._view()
        held = self.ctx.nodes.held(self.ctx.name)
        waiting = waiting_runs(pending)
        now = time.time()
        table = self.ctx.settings.size_gpus
        yes: set[ResourceSize] = set()
        for size in sizes:
            new = Request("(next)", self._gpus(table[size]), 0.0)
            if self._admit(held, new, waiting, fleet, now, slots=False)[0] is not None:
                yes.add(size)
                continue
            oldest = [r for r in pending if r.resource is size][:BACKFILL_LOOKAHEAD]
            for run in oldest:
                limit = time_limit(run, self.ctx.settings)
                request = Request(run.id, self._gpus(run.gpu_count), limit)
                if self._admit(held, request, waiting, fleet, now, slots=False)[0] is not None:
                    yes.add(size)
                    break
        return yes

    def forget_dead(self) -> list[str]:
        """Release ledger entries whose pool process is gone (killed under its run)."""
        gone = []
        for run_id, entry in self.ctx.nodes.held(self.ctx.name).items():
            if not psutil.pid_exists(entry.get("pid", 0)):
                self.release(run_id)
                gone.append(run_id)
        return gone


class ConsumerControl(threading.Thread):
    """From the worker's main process: consume the queue of a size only while the node can
    start a run of it at once; nothing while it drains (the drain owns its consumers)."""

    def __init__(self, ctx: WorkerContext, control, sizes: list[ResourceSize]):
        super().__init__(name="dlaas-consumers", daemon=True)
        self.ctx, self.control, self.sizes = ctx, control, sizes
        self.packer = Packer(ctx)
        self.consuming: set[ResourceSize] | None = set(sizes)  # Celery starts on all
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def tick(self) -> None:
        for run_id in self.packer.forget_dead():
            log.warning("%s: its pool process is gone; its GPUs are free again", run_id)
        if self.ctx.nodes.drain_deadline(self.ctx.name) is not None:
            self.consuming = None  # unknown once the drain is lifted: set all again then
            return
        want = self.packer.startable(self.sizes)
        known = self.consuming
        for size in self.sizes:
            if size in want and (known is None or size not in known):
                self._switch(size, True)
            elif size not in want and (known is None or size in known):
                self._switch(size, False)
        self.consuming = want

    def _switch(self, size: ResourceSize, on: bool) -> None:
        change = self.control.add_consumer if on else self.control.cancel_consumer
        change(queue_name(size), destination=[self.ctx.name], reply=False)
        log.debug("%s %s", "consuming" if on else "not consuming", queue_name(size))

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception as exc:  # Redis away: try again at the next tick
                log.warning("consumer control: %s", exc)
                self._halt.wait(self.ctx.settings.pack_interval_seconds)
                continue
            try:  # the next tick, or at once when a run of this node frees its GPUs
                self.ctx.nodes.wait_wake(self.ctx.name, self.ctx.settings.pack_interval_seconds)
            except Exception:
                self._halt.wait(self.ctx.settings.pack_interval_seconds)
