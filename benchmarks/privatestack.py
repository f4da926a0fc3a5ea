"""A private embedded stack for a benchmark: `python -m deploy.stack` in a temporary DLAAS_HOME
on free ports (Redis, API, worker, reconciler, controller, Flower, Swift, Keystone), always
stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def private_stack(
    prefix: str, **settings: str
) -> Iterator[tuple[Path, dict[str, str], dict[str, int]]]:
    """Yields (its DLAAS_HOME, the environment it runs with, its ports by service);
    `settings` (DLAAS_* names) are added to its services' environment. The home goes with
    the stack (set DLAAS_BENCH_KEEP=1 to keep it for its logs): a benchmark's buckets and
    logs run to gigabytes."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    # Chosen here, all at once (never one twice); the stack reserves them before it chooses
    # its other servers' ports, so none of them is given one of these.
    ports = {name: free_port() for name in ("redis", "api", "flower", "swift")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env["DLAAS_HOME"] = str(home)
    env.update(settings)
    env.update({f"DLAAS_STACK_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    stack = [sys.executable, "-m", "deploy.stack"]
    up = subprocess.run([*stack, "up"], env=env, cwd=ROOT, capture_output=True, text=True)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"the stack did not start:\n{up.stdout}{up.stderr}")
        yield home, env, ports
    finally:
        subprocess.run([*stack, "down"], env=env, cwd=ROOT, capture_output=True)
        if os.environ.get("DLAAS_BENCH_KEEP") != "1":
            shutil.rmtree(home, ignore_errors=True)
