"""Each run in its bubblewrap sandbox (worker/sandbox.py), with real runs: its own processes
only, a read-only system, its folders writable, a private /tmp, its own GPUs' device nodes
(stand-ins in a device folder the settings name), and no reach to another process of its
user. And how a worker finds its sandbox, or says why it has none."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest
from cryptography.fernet import Fernet

from common.settings import Settings
from tests.conftest import RUN_USERS, manifest_yaml, unstamped
from tests.worker.runs import submit_manifest, worker_context
from worker import sandbox as sandboxes
from worker.runuser import run_user
from worker.sandbox import SandboxUnavailable, find_sandbox
from worker.training import run_training

pytestmark = pytest.mark.integration

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (make test installs it)"
)


@pytest.fixture
def make_ctx(tmp_path, store_redis, run_work_dir):
    def make(gpus=(0,), **settings):
        config = Settings(
            home=tmp_path,
            secret_key=Fernet.generate_key().decode(),
            work_dir=run_work_dir,
            run_as=RUN_USERS[0],
            **{"sandbox": "bwrap", **settings},
        )
        return worker_context(config, store_redis, gpus, "sandbox-worker")

    return make


def _run(ctx, command: str) -> tuple[str, str]:
    root = ctx.settings.local_store_root / "tests"
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "results").mkdir(parents=True, exist_ok=True)
    run = submit_manifest(ctx, manifest_yaml(command))
    state = run_training(run.id, ctx)
    log = (root / "results" / run.id / "learner-1" / "training-log.txt").read_text()
    return state, unstamped(log)


@needs_bwrap
def test_a_run_sees_its_own_processes_a_read_only_system_and_a_private_tmp(make_ctx):
    ctx = make_ctx()
    marker = f"/tmp/dlaas-host-only-{secrets.token_hex(4)}"
    open(marker, "w").close()
    try:
        state, log = _run(
            ctx,
            f"ps -e -o comm=; echo ---; ls {marker} 2>/dev/null || echo NO-MARKER; "
            "touch /usr/x 2>/dev/null || echo SYSTEM-READ-ONLY; "
            "touch $RESULT_DIR/w $TMPDIR/t /tmp/t /dev/shm/s && echo WRITABLE; "
            "id -un; cat /proc/self/status | grep CapEff",
        )
    finally:
        os.unlink(marker)
    assert state == "COMPLETED", log
    processes, rest = log.split("---\n")
    assert set(processes.split()) <= {"bwrap", "bash", "ps"}, processes  # nothing of the node
    assert rest.split("\n")[:5] == [
        "NO-MARKER",
        "SYSTEM-READ-ONLY",
        "WRITABLE",
        RUN_USERS[0],
        "CapEff:\t0000000000000000",
    ]


@needs_bwrap
def test_a_run_that_unsets_cuda_visible_devices_sees_only_its_own_gpus_node(make_ctx, tmp_path):
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm"):
        (devices / name).write_text(name)  # stand-ins for the driver's device nodes
    ctx = make_ctx(gpus=(0, 1, 2, 3), device_dir=devices)
    state, log = _run(ctx, "echo $CUDA_VISIBLE_DEVICES; unset CUDA_VISIBLE_DEVICES; ls /dev")
    assert state == "COMPLETED", log
    lines = log.split()
    gpu = int(lines[0])
    assert sorted(n for n in lines[1:] if n.startswith("nvidia")) == sorted(
        [f"nvidia{gpu}", "nvidiactl", "nvidia-uvm"]
    )


@needs_bwrap
def test_a_run_cannot_signal_another_process_of_its_user(make_ctx):
    user = run_user(RUN_USERS[0])
    for sandbox, expected in (("bwrap", "APART"), ("off", "REACHED")):
        # Started anew each time: a run's end ends every process of its user (runuser.py).
        other = subprocess.Popen(
            ["sleep", "60"], user=user.uid, group=user.gid, extra_groups=[], start_new_session=True
        )
        try:
            state, log = _run(
                make_ctx(sandbox=sandbox),
                f"kill -0 {other.pid} 2>/dev/null && echo REACHED || echo APART",
            )
        finally:
            other.kill()
            other.wait()
        assert (state, log.strip()) == ("COMPLETED", expected)  # "off": what it takes away


def test_the_sandbox_is_found_or_refused_as_the_setting_says(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path, secret_key="k", sandbox="off")
    assert find_sandbox(settings).reason == "off (DLAAS_SANDBOX=off)"
    monkeypatch.setattr(sandboxes.shutil, "which", lambda name: None)
    auto = find_sandbox(settings.model_copy(update={"sandbox": "auto"}))
    assert not auto.on
    assert auto.reason == (
        "none: bwrap is not installed (Debian: apt install bubblewrap) (DLAAS_SANDBOX=auto)"
    )
    with pytest.raises(SandboxUnavailable, match=r"^DLAAS_SANDBOX=bwrap: bwrap is not installed"):
        find_sandbox(settings.model_copy(update={"sandbox": "bwrap"}))
