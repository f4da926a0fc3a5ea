"""The fleet's reservation plan: which node holds GPUs back for each run that has waited past
the bound (common/fleet/packing.py, `plan_reservations`), made once for the whole fleet per
plan period and kept in Redis (keys.plan), where each node reads its own entry.

A node asks `held_for(me)` before it starts a run or decides which queues to consume: one
HMGET, its field of the plan and the plan's age. When the plan is older than a period (or
the oldest run waiting when it was made has passed the bound since), the
first node to take the plan's lock (one per period for the fleet) makes it again: it reads
the head of each size's index for runs past the bound (a range by score) and, only when
there are some, the fleet's records (every node's heartbeat and ledger: the only read of the
fleet, once a period, while a run waits past the bound). With no run past the bound the plan
is written empty, and no node reads the fleet.
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
DUE = "@due"  # when the oldest run then waiting passes the bound: the plan is old by then


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
        """The runs past the bound node `me` holds GPUs back for, as the fleet's plan says
        (one HMGET); the plan made again first when it is older than a period and no other
        node is making it (`my_node()`: this node's own view, which the plan uses over its
        heartbeat)."""
        at, due, mine = self.redis.hmget(keys.plan(), AT, DUE, me)
        now = time.time()
        if at is not None and now - float(at) < self.period and now < float(due or "inf"):
            return _decode(mine)
        lock = self.redis.set(keys.plan_lock(), me, nx=True, px=max(1, int(self.period * 1000)))
        if not lock:  # another node makes it now: the last plan's word meanwhile
            return _decode(mine)
        return self.make(now, me, my_node).get(me, [])

    def make(self, now: float, me: str, my_node: Callable[[], Node]) -> dict[str, list[Waiting]]:
        """Make the plan from the index's runs past the bound and, only when there are
        some, the fleet's records; store it (one transaction, an empty plan when no run is
        past the bound); {node name: the runs it holds back for}."""
        sizes = [size for size in ResourceSize if size in self.size_gpus]
        overdue = self.waitlist.waited_since(now - self.rule.after_seconds, MAX_PLANNED, sizes)
        # The next run to pass the bound among those waiting now: the plan is old then.
        due = self.waitlist.next_since(now - self.rule.after_seconds, sizes)
        due += self.rule.after_seconds
        by_node: dict[str, list[Waiting]] = {}
        if any(overdue.values()):
            heads = self.waitlist.heads(sizes, 1)  # which sizes wait at all: the fewest GPUs
            waiting = {
                queued.run_id: Waiting(queued.run_id, self.size_gpus[queued.size], queued.since)
                for found in (*overdue.values(), *heads.values())
                for queued in found
            }
            fleet = [*fleet_of(self.nodes.list(), me), my_node()]
            for run_id, node in plan_reservations(waiting.values(), fleet, now, self.rule).items():
                by_node.setdefault(node, []).append(waiting[run_id])
        mapping = {node: _encode(runs) for node, runs in by_node.items()}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.plan())
            pipe.hset(keys.plan(), mapping={AT: repr(now), DUE: repr(due), **mapping})
            pipe.pexpire(keys.plan(), max(1, int(KEPT_PERIODS * self.period * 1000)))
            pipe.delete(keys.plan_lock())  # made: the next is due by its age, not the lock
            pipe.execute()
        return by_node


def _encode(runs: list[Waiting]) -> str:
    return json.dumps([[w.run_id, w.gpus, w.since] for w in runs])


def _decode(text: str | None) -> list[Waiting]:
    return [Waiting(run_id, gpus, since) for run_id, gpus, since in json.loads(text or "[]")]
