"""The README's first command, for real: `python -m deploy.stack up`, the demo run, `down`,
and `up` once more in the same home.

Runs in its own DLAAS_HOME on free ports, so it never touches a developer's `.dlaas/`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psutil
import pytest

from deploy.ports import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_up_demo_down(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env.update(
        {
            "DLAAS_HOME": str(tmp_path / "home"),
            "DLAAS_STACK_REDIS_PORT": str(free_port()),
            "DLAAS_STACK_API_PORT": str(free_port()),
            "DLAAS_STACK_FLOWER_PORT": str(free_port()),
            "DLAAS_STACK_SWIFT_PORT": str(free_port()),
        }
    )

    def stack(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    pids: set[int] = set()
    try:
        # Inside the try: an `up` that times out may have started some of it.
        up = stack("-m", "deploy.stack", "up")
        pids = {int(p.read_text()) for p in (tmp_path / "home" / "pids").glob("*.pid")}
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(pids) == 6 and all(psutil.pid_exists(p) for p in pids)
        saved = (tmp_path / "home" / "env").read_text()
        assert re.fullmatch(
            r"export DLAAS_URL=http://127\.0\.0\.1:\d+\n"
            r"export DLAAS_TOKEN=\S+\n"
            r"export DLAAS_S3_ENDPOINT=http://127\.0\.0\.1:\d+\n",
            saved,
        )
        again = stack("-m", "deploy.stack", "up")
        assert again.stdout.count("already running") == 6

        demo = stack("-m", "deploy.demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert re.search(r"^Model-ID is 'training-\w{9}'$", demo.stdout, re.M)
        assert "Final state: completed" in demo.stdout
        assert "learner-1/training-log.txt" in demo.stdout and "model.npz" in demo.stdout
        assert re.search(r"epoch 12  loss \d\.\d+  accuracy", demo.stdout)
        # Its metrics, read from its log and its files: the last test_loss is epoch 12's.
        row = re.search(r"^test_loss\s+(\S+)\s+12\s+\S+\s+\d+\s+minimize\s+12$", demo.stdout, re.M)
        last = re.findall(r"^  epoch 12 .*test_loss (\S+)", demo.stdout, re.M)
        assert row and last and float(row.group(1)) == float(last[-1]), demo.stdout
    finally:
        down = stack("-m", "deploy.stack", "down")
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped") == 8  # and Keystone, and Swift
    gone = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert gone == []
    # Up again in the same home (what `make demo` after `make down` does): Keystone's and
    # Swift's kept state must not stand in the way.
    try:
        restarted = stack("-m", "deploy.stack", "up")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    finally:
        assert stack("-m", "deploy.stack", "down").returncode == 0
