"""Why a PENDING run waits, in words: its place among the runs of its size, and what it waits
for on the fleet (`2nd of 3 large runs; waiting for 4 free GPUs on one node; largest free
block now: 2 on node-b`). Pure: the API passes the run's place in the index of waiting runs
(WaitList.place) and the nodes' heartbeats."""

from __future__ import annotations

from dataclasses import dataclass

from common.fleet.packing import why_waiting
from common.run import Run


@dataclass(frozen=True)
class Wait:
    position: int  # 1: the next of its size
    of: int  # the PENDING runs of its size
    size: str
    reason: str

    @property
    def message(self) -> str:
        runs = "run" if self.of == 1 else "runs"
        return f"{ordinal(self.position)} of {self.of} {self.size} {runs}; {self.reason}"

    def to_dict(self) -> dict:
        return {"position": self.position, "of": self.of, "reason": self.reason}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def explain_wait(run: Run, place: tuple[int | None, int], nodes: list[dict]) -> Wait:
    """`place`: the run's position among the waiting runs of its size (None: not in the
    index, as for a run just handed back) and how many wait (WaitList.place); `nodes`:
    NodeStore.list()."""
    size = run.resource.value
    position, of = place
    position = of + 1 if position is None else position
    of = max(of, position)
    serving = [n for n in nodes if n["name"] in _serving(nodes, size, "ready")]
    return Wait(position, of, size, _reason(run, size, position, serving, nodes))


def _reason(run: Run, size: str, position: int, serving: list[dict], nodes: list[dict]) -> str:
    if not serving:
        draining = sorted(_serving(nodes, size, "draining"))
        if draining:
            return f"no worker serves {size} (draining: {', '.join(draining)})"
        return f"no worker serves {size}"
    with_gpus = {n["name"]: n for n in serving if n.get("gpus")}
    if run.gpu_count and with_gpus:
        free = {name: len(_free(n)) for name, n in with_gpus.items()}
        return why_waiting(run.gpu_count, free, {n: len(w["gpus"]) for n, w in with_gpus.items()})
    idle = [n["name"] for n in serving if not n.get("run")]
    if idle and position <= len(idle):
        return f"a worker is free ({idle[0]}): it takes the run next"
    count = len(serving)
    if idle:  # the free workers take the runs before it first
        ahead = position - 1
        return (
            f"waiting for a free worker serving {size} ({count} serve it, {len(idle)} free; "
            f"{ahead} {'run' if ahead == 1 else 'runs'} ahead)"
        )
    return f"waiting for a free worker serving {size} ({count} serve it, all busy)"


def _free(node: dict) -> list[int]:
    """A node's free GPUs: as its heartbeat says, else all of them when it runs nothing."""
    if "free_gpus" in node:
        return list(node["free_gpus"])
    return [] if node.get("run") else list(node["gpus"])


def _serving(nodes: list[dict], size: str, status: str) -> set[str]:
    return {n["name"] for n in nodes if n.get("status") == status and size in n.get("sizes", [])}
