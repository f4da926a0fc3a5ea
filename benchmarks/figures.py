"""How the benchmarks state their figures: the machine they ran on, and percentiles."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """The start of each benchmark's `environment:` line: "CPython 3.11.2, 16 CPUs, load
    0.52" (the load average of the last minute, read now)."""
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` of `values` (0.95: the 95th percentile), by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
