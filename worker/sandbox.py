"""A sandbox per run: the command runs inside bubblewrap (`bwrap`, Debian's `bubblewrap`, the
sandbox Flatpak runs on), which needs no daemon and works as root and unprivileged alike.

    its own PID, IPC and UTS namespaces   `ps` shows the run's processes only
    a read-only view of the system        `/` bound read-only
    its run folder writable               MODEL_DIR, DATA_DIR, RESULT_DIR, ... as on the node
    a private /tmp and a sized /dev/shm   tmpfs (DLAAS_SANDBOX_SHM_BYTES)
    /dev with its own GPUs only           the minimal /dev bwrap makes, plus /dev/nvidiaN of the
                                          run's GPUs and the control nodes CUDA needs, from
                                          DLAAS_DEVICE_DIR
    no capabilities, its own session      --cap-drop ALL, --new-session, --die-with-parent

Paths the run reads that a private /tmp would hide (its environment, the worker's runtime
folder on its PYTHONPATH, when they live under /tmp) are bound again, read-only. The run's
contract (its variables, paths and results) does not change: every path it is given is the
same inside.

A root worker starts bwrap as root, without a user namespace, and bwrap's command is
`setpriv` to the run user (its uid and gid, no other group), which then holds no
capability: files keep their real owners inside (in a user namespace root's would show as
`nobody`). An unprivileged worker's bwrap makes a user namespace of its own user.

A stop's SIGTERM goes to the command's processes, not to bwrap (which would take them down
at once with SIGKILL): worker/reaper.py spares the two bwrap processes until the SIGKILL.

Why bubblewrap, not a container runtime or systemd-run: no daemon and no image, a run's
environment is a folder on the node already, and it runs unprivileged here and on the nodes
(user namespaces). Why not unshare(1) and mounts of our own: bwrap does the mount order,
the pid 1 that reaps, and the dying with its parent, and is kept by the projects that use it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.settings import Settings

log = logging.getLogger(__name__)

# The control nodes CUDA opens besides a GPU's own (libnvidia-container's list).
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"  # util-linux
ENV = shutil.which("env") or "/usr/bin/env"  # coreutils


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Sandbox:
    """How this node sandboxes runs: bwrap's path, or None (off)."""

    bwrap: str | None
    reason: str  # said at the worker's start: what it has, or why not

    @property
    def on(self) -> bool:
        return self.bwrap is not None

    def wrap(
        self,
        argv: Sequence[str],
        settings: Settings,
        run_root: Path,
        cwd: Path,
        gpus: Sequence[int],
        read_only: Sequence[Path] = (),
        user: tuple[int, int] | None = None,
    ) -> list[str]:
        """`argv` run inside the sandbox: `run_root` writable, `read_only` paths bound again
        over the private /tmp, `gpus`' device nodes (and the control nodes) from the device
        folder; as `user` (uid, gid), switched to inside by setpriv (bwrap started as root)."""
        if self.bwrap is None:
            return list(argv)
        out = [
            self.bwrap,
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname", "dlaas-run",
            "--cap-drop", "ALL",
            # setpriv's own, lost with the switch to the run user (all uids non-zero).
            *(["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if user else []),
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(settings.sandbox_shm_bytes), "--tmpfs", "/dev/shm",
        ]  # fmt: skip
        devices = settings.device_dir
        for name in [f"nvidia{g}" for g in gpus] + list(CONTROL_NODES):
            out += ["--dev-bind-try", str(devices / name), f"/dev/{name}"]
        made: set[Path] = set()
        for path in read_only:
            if Path(path).is_relative_to("/tmp"):  # elsewhere, `/` shows it already
                out += _folders_to(Path(path), made)
                out += ["--ro-bind-try", str(path), str(path)]
        out += [*_folders_to(run_root, made), "--bind", str(run_root), str(run_root)]
        if not user:
            return [*out, "--chdir", str(cwd), "--", *argv]
        # As root without CAP_DAC_OVERRIDE, bwrap cannot enter the run user's 0700 folder:
        # the run user does, once setpriv made it so (coreutils' env -C).
        uid, gid = user
        switch = [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        return [*out, "--chdir", "/", "--", *switch, ENV, "-C", str(cwd), "--", *argv]


def _folders_to(path: Path, made: set[Path]) -> list[str]:
    """The folders above `path` in the private /tmp, passable by anyone (bwrap would make
    them 0700 when run as root): `--perms 0711 --dir` each, once."""
    out = []
    for folder in reversed(path.parents):
        if folder.is_relative_to("/tmp") and folder != Path("/tmp") and folder not in made:
            made.add(folder)
            out += ["--perms", "0711", "--dir", str(folder)]
    return out


def find_sandbox(settings: Settings, as_user: tuple[int, int] | None = None) -> Sandbox:
    """The node's sandbox as the setting asks: `off`; `auto`, bwrap when it works here (else
    off, saying why); `bwrap`, bwrap or SandboxUnavailable. It works when `bwrap` runs `true`
    in the namespaces a run gets, as the run user (`as_user`: uid, gid) when there is one."""
    if settings.sandbox == "off":
        return Sandbox(None, "off (DLAAS_SANDBOX=off)")
    found = shutil.which("bwrap")
    problem = None if found else "bwrap is not installed (Debian: apt install bubblewrap)"
    if found:
        problem = _try(found, as_user)
    if problem is None:
        return Sandbox(found, f"bubblewrap ({found}): own processes, read-only system, own GPUs")
    if settings.sandbox == "bwrap":
        raise SandboxUnavailable(f"DLAAS_SANDBOX=bwrap: {problem}")
    return Sandbox(None, f"none: {problem} (DLAAS_SANDBOX=auto)")


def _try(bwrap: str, as_user: tuple[int, int] | None) -> str | None:
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/", "--proc",
            "/proc", "--dev", "/dev", "--", "true"]  # fmt: skip
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            **({"user": as_user[0], "group": as_user[1], "extra_groups": []} if as_user else {}),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run: {exc}"
    if done.returncode != 0:
        return f"bwrap cannot make a run's namespaces here: {done.stderr.strip()[:200]}"
    return None
