"""The fleet's reservation plan: which node holds GPUs back for each run that has waited past
the bound (common/fleet/packing.py, `plan_reservations`), made once for the whole fleet per
plan period and kept in Redis (keys.plan), where each node reads its own entry.

A node asks `held_for(me)` before it starts a run or decides which queues to consume. That is
one round trip: its field of the plan, the plan's age, and whether the head of any size's
index has waited past the bound. Only when a run has, and the plan is older than a period, is
the plan made again: by the first node to take the plan's lock (one per period for the
fleet), which reads the fleet's records then (every node's heartbeat and ledger: the only
read of the fleet, once a period, while a run waits past the bound). Nothing waiting past
the bound: no plan is made and no node reads the fleet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping

import redis

from common import keys
from common.fleet.nodes import NodeStore
from common.fleet.packing import Node, Reservation, Running, Waiting, plan_reservations
from common.fleet.sizes import ResourceSize
from common.fleet.waitlist import WaitList

# The runs past the bound of each size a plan considers, oldest first: a plan gives each a
# node of its own, so more than a fleet's worth would find none; the next plan takes the
# next ones as these start.
MAX_PLANNED = 256

# A plan is kept this many periods (then it expires: no node holds back on an old word).
KEPT_PERIODS = 5

AT = "@at"  # the plan's field that says when it was made (epoch seconds)


def node_of(name: str, gpus: Iterable[int], held: Mapping[str, dict], distance=None) -> Node:
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


class ReservationPlan:
    def __init__(
        self,
        connection: redis.Redis,
        nodes: NodeStore,
        size_gpus: Mapping[ResourceSize, int],
        rule: Reservation,
        period_seconds: float,
    ):
        self.redis = connection
        self.nodes = nodes
        self.waitlist = WaitList(connection)
        self.size_gpus = dict(size_gpus)
        self.rule = rule
        self.period = period_seconds

    def held_for(self, me: str, my_node: Callable[[], Node]) -> list[Waiting]:
        """The runs past the bound node `me` holds GPUs back for, as the fleet's plan says;
        the plan made again first when it is older than a period and a run is past the bound
        (`my_node()`: this node's own view, which the plan uses over its heartbeat)."""
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.plan(), AT, me)
            for size in ResourceSize:
                pipe.zrangebyscore(
                    keys.waiting(size.value), "-inf", now - self.rule.after_seconds, 0, 1
                )
            (at, mine), *overdue = pipe.execute()
        if at is not None and now - float(at) < self.period:
            return _decode(mine)
        if not any(overdue):
            return []
        lock = self.redis.set(keys.plan_lock(), me, nx=True, px=max(1, int(self.period * 1000)))
        if not lock:  # another node makes it now: the last plan's word meanwhile
            return _decode(mine)
        return self.make(now, me, my_node()).get(me, [])

    def make(self, now: float, me: str, my_node: Node) -> dict[str, list[Waiting]]:
        """Make the plan from the index's runs past the bound and the fleet's records, and
        store it (one transaction); {node name: the runs it holds back for}."""
        sizes = [size for size in ResourceSize if size in self.size_gpus]
        overdue = self.waitlist.waited_since(now - self.rule.after_seconds, MAX_PLANNED, sizes)
        heads = self.waitlist.heads(sizes, 1)  # which sizes wait at all: the fewest GPUs
        waiting = {
            queued.run_id: Waiting(queued.run_id, self.size_gpus[queued.size], queued.since)
            for found in (*overdue.values(), *heads.values())
            for queued in found
        }
        fleet = [*fleet_of(self.nodes.list(), me), my_node]
        plan = plan_reservations(waiting.values(), fleet, now, self.rule)
        by_node: dict[str, list[Waiting]] = {}
        for run_id, node in plan.items():
            by_node.setdefault(node, []).append(waiting[run_id])
        mapping = {node: _encode(runs) for node, runs in by_node.items()}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.plan())
            pipe.hset(keys.plan(), mapping={AT: repr(now), **mapping})
            pipe.pexpire(keys.plan(), max(1, int(KEPT_PERIODS * self.period * 1000)))
            pipe.execute()
        return by_node


def _encode(runs: list[Waiting]) -> str:
    return json.dumps([[w.run_id, w.gpus, w.since] for w in runs])


def _decode(text: str | None) -> list[Waiting]:
    return [Waiting(run_id, gpus, since) for run_id, gpus, since in json.loads(text or "[]")]
