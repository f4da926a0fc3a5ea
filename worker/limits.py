"""Per-run resource limits (processes, open files, memory), set in the run's child before exec,
and the words that name a limit when a run died of it."""

from __future__ import annotations

import re
import resource
from collections.abc import Callable
from dataclasses import dataclass

from common.fleet.sizes import ResourceSize
from common.settings import Settings


@dataclass(frozen=True)
class Limit:
    setting: str  # the DLAAS_* variable that sets it, named in messages
    what: str  # in the user's words
    rlimit: int
    value: int
    # What a program prints when it runs into this limit.
    symptom: re.Pattern

    def shown(self) -> str:
        return format_bytes(self.value) if self.rlimit == resource.RLIMIT_AS else str(self.value)


def run_limits(settings: Settings, size: ResourceSize) -> tuple[Limit, ...]:
    limits = [
        Limit(
            "DLAAS_RUN_MAX_PROCESSES",
            "processes and threads",
            resource.RLIMIT_NPROC,
            settings.run_max_processes,
            re.compile(r"fork.*Resource temporarily unavailable|Errno 11\]|can't start new thread"),
        ),
        Limit(
            "DLAAS_RUN_MAX_OPEN_FILES",
            "open files",
            resource.RLIMIT_NOFILE,
            settings.run_max_open_files,
            re.compile(r"Too many open files"),
        ),
    ]
    memory = settings.size_memory.get(ResourceSize(size))
    if memory:
        limits.append(
            Limit(
                "DLAAS_SIZE_MEMORY",
                f"memory of a {ResourceSize(size).value} run",
                resource.RLIMIT_AS,
                memory,
                re.compile(r"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory"),
            )
        )
    return tuple(limits)


def limits_setter(limits: tuple[Limit, ...]) -> Callable[[], None]:
    """The `preexec_fn` for the run's child: only `resource.setrlimit` calls. Values are
    clamped here, in the parent, to the hard limits the child inherits (after the switch
    to the run user it could not raise them)."""
    planned = []
    for limit in limits:
        _soft, hard = resource.getrlimit(limit.rlimit)
        value = limit.value if hard == resource.RLIM_INFINITY else min(limit.value, hard)
        planned.append((limit.rlimit, (value, value)))

    def apply() -> None:
        for rlimit, values in planned:
            resource.setrlimit(rlimit, values)

    return apply


def limit_hit(limits: tuple[Limit, ...], log_tail: str) -> Limit | None:
    """The limit a failed run's last lines say it ran into, if any."""
    for limit in limits:
        if limit.symptom.search(log_tail):
            return limit
    return None


def describe_hit(limit: Limit) -> str:
    return (
        f"the run hit its limit on {limit.what}: {limit.shown()} "
        f"({limit.setting}; ask the operator for more or use less)"
    )


def format_bytes(count: int) -> str:
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale}{unit}"
    return f"{count} bytes"
