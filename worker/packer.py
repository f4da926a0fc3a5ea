"""Several runs at once on one node's GPUs: which GPUs a run gets when its message arrives
(`Packer.place`), and which size queues the node consumes so that it takes a message only
when it can start that run at once (`ConsumerControl`).

Both ask `common.fleet.packing.admit` with the node's own view: its GPU ledger in Redis
(written in one transaction per start, so no GPU is given to two runs) and the runs past the
reservation bound the fleet's plan gives this node to hold GPUs back for
(common/fleet/plan.py: one field of one record). Neither reads the waiting runs nor the other
nodes: a tick costs the same with no run waiting or ten thousand, on one node or a thousand.
Only when a reservation holds a size back does the consumer control read the head of that
size's index (BACKFILL_LOOKAHEAD runs) for one that may start around it.
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

from common.fleet.packing import Decision, Request, Reservation, Waiting, admit
from common.fleet.plan import ReservationPlan, node_of
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


class Packer:
    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx
        self.rule = Reservation(ctx.settings.reservation_after_seconds)
        self.distance = ctx.gpus.distance()
        self.plan = ReservationPlan(
            ctx.nodes.redis, ctx.nodes, ctx.settings.size_gpus, self.rule, ctx.settings.plan_seconds
        )

    def _gpus(self, count: int) -> int:
        """The GPUs a run of `count` takes here: none on a CPU node (it serves every size)."""
        return count if self.ctx.gpus.indices else 0

    def _node(self, held: dict[str, dict]):
        return node_of(self.ctx.name, self.ctx.gpus.indices, held, self.distance)

    def _held_for(self, held: dict[str, dict] | None = None) -> list[Waiting]:
        """The runs past the bound this node holds GPUs back for (the fleet's plan); `held`:
        the node's ledger when just read (else read should this node make the plan)."""
        if not self.ctx.gpus.indices:
            return []  # a CPU node's runs take no GPU: it holds nothing back
        return self.plan.held_for(
            self.ctx.name,
            lambda: self._node(self.ctx.nodes.held(self.ctx.name) if held is None else held),
        )

    def _admit(self, held, request, reserved, now, slots=True) -> tuple[Place | None, Decision]:
        """admit() on this node as the ledger `held` has it, with the slot it would get
        (`slots` False: as if one were free)."""
        taken = {entry.get("slot", 0) for entry in held.values()}
        free_slots = [slot for slot in range(self.ctx.slots) if slot not in taken]
        if not free_slots and slots:
            return None, Decision(
                False, reason=f"all {self.ctx.slots} run slots of {self.ctx.name} are busy"
            )
        free_slots = free_slots or [0]
        decision = admit(self._node(held), request, reserved, now, self.rule)
        if not decision.start:
            return None, decision
        return Place(tuple(decision.gpus), free_slots[0]), decision

    def place(self, run: Run) -> tuple[Place | None, str]:
        """Hold GPUs and a slot for `run` on this node now, or say why it cannot start."""
        reserved = self._held_for()
        limit = time_limit(run, self.ctx.settings)
        request = Request(run.id, self._gpus(run.gpu_count), limit)
        outcome: list = [None, ""]

        def decide(held: dict[str, dict]) -> dict | None:
            now = time.time()
            place, decision = self._admit(held, request, reserved, now)
            outcome[0], outcome[1] = place, decision.reason
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

    def startable(
        self, sizes: Iterable[ResourceSize], held: dict[str, dict] | None = None
    ) -> set[ResourceSize]:
        """The sizes of which this node could start a run now: a new one (no time limit), or,
        while a reservation holds that size back, one of its oldest PENDING runs (a backfill,
        by its time limit). Busy slots do not count: the pool takes no message while all its
        processes run (one per slot). `held`: the node's ledger, when just read."""
        held = self.ctx.nodes.held(self.ctx.name) if held is None else held
        reserved = self._held_for(held)
        now = time.time()
        table = self.ctx.settings.size_gpus
        yes: set[ResourceSize] = set()
        for size in sizes:
            new = Request("(next)", self._gpus(table[size]), 0.0)
            place, decision = self._admit(held, new, reserved, now, slots=False)
            if place is not None:
                yes.add(size)
                continue
            if decision.reserved_for is None:
                continue  # no room for it, reservation or not: no backfill either
            ids = [queued.run_id for queued in self.plan.waitlist.head(size, BACKFILL_LOOKAHEAD)]
            for run in self.ctx.runs.records(ids):
                limit = time_limit(run, self.ctx.settings)
                request = Request(run.id, self._gpus(run.gpu_count), limit)
                if self._admit(held, request, reserved, now, slots=False)[0] is not None:
                    yes.add(size)
                    break
        return yes

    def forget_dead(self, held: dict[str, dict] | None = None) -> list[str]:
        """Release ledger entries whose pool process is gone (killed under its run); `held`:
        the node's ledger, when just read."""
        gone = []
        held = self.ctx.nodes.held(self.ctx.name) if held is None else held
        for run_id, entry in held.items():
            if not psutil.pid_exists(entry.get("pid", 0)):
                self.release(run_id)
                gone.append(run_id)
        return gone


class ConsumerControl(threading.Thread):
    """From the worker's main process: consume the queue of a size only while the node can
    start a run of it at once; nothing while it drains (the drain owns its consumers).

    The switch is this worker's own: its Celery consumer is handed the change to make in its
    event loop (`call_soon`, as Celery's remote-control command does on arrival), never a
    remote-control broadcast, which on Redis is a PUBLISH every worker of the fleet receives."""

    def __init__(self, ctx: WorkerContext, sizes: list[ResourceSize]):
        super().__init__(name="dlaas-consumers", daemon=True)
        self.ctx, self.sizes = ctx, sizes
        self.packer = Packer(ctx)
        self.consumer = None  # Celery's consumer, once the worker is ready (start)
        self.consuming: set[ResourceSize] | None = set(sizes)  # Celery starts on all
        self._halt = threading.Event()

    def start(self, consumer=None) -> None:
        self.consumer = consumer
        super().start()

    def stop(self) -> None:
        self._halt.set()

    def tick(self) -> None:
        """One look: the node's ledger and drain (one round trip) and the plan's word for it
        (one HMGET); the same work however many runs wait and however many nodes there are."""
        held, drain = self.ctx.nodes.glance(self.ctx.name)
        dead = self.packer.forget_dead(held)
        for run_id in dead:
            log.warning("%s: its pool process is gone; its GPUs are free again", run_id)
            held.pop(run_id, None)
        if drain is not None:
            self.consuming = None  # unknown once the drain is lifted: set all again then
            return
        want = self.packer.startable(self.sizes, held)
        known = self.consuming
        for size in self.sizes:
            if size in want and (known is None or size not in known):
                self._switch(size, True)
            elif size not in want and (known is None or size in known):
                self._switch(size, False)
        self.consuming = want

    def _switch(self, size: ResourceSize, on: bool) -> None:
        consumer, queue = self.consumer, queue_name(size)
        if consumer is not None:
            change = consumer.add_task_queue if on else consumer.cancel_task_queue
            consumer.call_soon(change, queue)
        log.debug("%s %s", "consuming" if on else "not consuming", queue)

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
