"""Runs the training command: `bash -c` in its own process group, a clean environment,
stdout and stderr into the run's log file, stopped as a whole tree when asked."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.manifest import DataStore, StoreType
from common.settings import Settings
from worker.limits import Limit, limits_setter
from worker.logpump import LogListener, LogPump, open_pipe
from worker.reaper import ProcessTree
from worker.rundirs import RunDirs
from worker.runuser import RunUser
from worker.supervisor import StopFlag, StopRequest
from worker.usage import UsageSampler

if TYPE_CHECKING:
    from worker.environments import Environment

log = logging.getLogger(__name__)

# How often the run's process tree is walked (membership, memory and CPU samples).
LOOK_SECONDS = 1.0


RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
# How a run's Python programs get their prints to the log: "flushed", block-buffered and
# flushed every 0.1 s by worker/runtime/sitecustomize.py (full speed, live within 0.1 s), or
# "unbuffered", one write per print (PYTHONUNBUFFERED=1: nothing held back, but a program
# that prints a lot runs at half speed; benchmarks/logs.py).
PYTHON_OUTPUT = {
    "flushed": {"PYTHONPATH": str(RUNTIME_DIR)},
    "unbuffered": {"PYTHONUNBUFFERED": "1"},
}


def run_environment(
    settings: Settings,
    run_id: str,
    dirs: RunDirs,
    gpus: tuple[int, ...],
    environment: Environment | None = None,
) -> dict:
    """Everything the command sees, built from nothing: none of the worker's own
    variables (its Redis URL, its key, the machine's proxy or CA settings) leak in. Its
    `python`, `python3` and console scripts are its environment's."""
    visible = ",".join(map(str, gpus))
    venv = {"VIRTUAL_ENV": str(environment.path)} if environment else {}
    path = f"{environment.bin}{os.pathsep}{settings.run_path}" if environment else settings.run_path
    return {
        "PATH": path,
        **venv,
        "HOME": str(dirs.home),
        "TMPDIR": str(dirs.tmp),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        **PYTHON_OUTPUT[settings.run_python_output],
        "TRAINING_ID": run_id,
        "DATA_DIR": str(dirs.data),
        "MODEL_DIR": str(dirs.model),
        "RESULT_DIR": str(dirs.result),
        "CHECKPOINT_DIR": str(dirs.checkpoint),
        "LOG_DIR": str(dirs.log),
        "GPU_COUNT": str(len(gpus)),
        "CUDA_VISIBLE_DEVICES": visible,
        "NVIDIA_VISIBLE_DEVICES": visible,
    }


# Connection fields -> the names the usual clients (boto3/aws, swift/openstack) read.
CREDENTIAL_NAMES: dict[StoreType, tuple[tuple[str, str], ...]] = {
    StoreType.S3: (
        ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ("endpoint_url", "AWS_ENDPOINT_URL"),
        ("region", "AWS_DEFAULT_REGION"),
        ("region_name", "AWS_DEFAULT_REGION"),
    ),
    StoreType.SWIFT: (
        ("auth_url", "OS_AUTH_URL"),
        ("user_name", "OS_USERNAME"),
        ("password", "OS_PASSWORD"),
        ("project_id", "OS_PROJECT_ID"),
        ("project_name", "OS_PROJECT_NAME"),
        ("region", "OS_REGION_NAME"),
        ("domain_name", "OS_USER_DOMAIN_NAME"),
        ("user_domain_name", "OS_USER_DOMAIN_NAME"),
    ),
}


def credential_environment(store: DataStore) -> dict[str, str]:
    """The data store's credentials under conventional names, for a manifest that asked for
    them (`execution.expose_credentials: true`); by default a run never sees them."""
    return {
        name: store.connection[key]
        for key, name in CREDENTIAL_NAMES.get(store.type, ())
        if store.connection.get(key)
    }


EXPANDED = ("DATA_DIR", "MODEL_DIR", "RESULT_DIR", "LOG_DIR", "TRAINING_ID", "GPU_COUNT")


def expand_command(command: str, env: dict) -> str:
    """Replace `${DATA_DIR}` and `$DATA_DIR` style references to the run's own variables,
    so the log and `show` carry the command as it ran; anything else is left to bash."""
    names = "|".join(EXPANDED)
    pattern = re.compile(r"\$\{(" + names + r")\}|\$(" + names + r")(?![A-Za-z0-9_])")
    return pattern.sub(lambda m: env[m.group(1) or m.group(2)], command)


@dataclass(frozen=True)
class Execution:
    exit_code: int
    # Why it was stopped before it ended by itself (None: it ended by itself).
    stopped: StopRequest | None = None
    # Seconds from the stop to the last process of the run gone.
    stop_seconds: float = 0.0
    # Every process seen in the run's tree.
    pids: frozenset[int] = frozenset()


def execute(
    command: str,
    env: dict,
    cwd: Path,
    log_file: Path,
    stop: StopFlag | None = None,
    grace_seconds: float = 30.0,
    on_start: Callable[[int], None] | None = None,
    listeners: Sequence[LogListener] = (),
    samplers: Sequence[UsageSampler] = (),
    tick_seconds: float = 0.1,
    user: RunUser | None = None,
    limits: tuple[Limit, ...] = (),
    before_stop: Sequence[Callable[[], None]] = (),
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> Execution:
    """Run the command to its end, or until `stop` is set: then SIGTERM to its whole tree,
    `grace_seconds`, SIGKILL. Exit code 128+N when killed by signal N. Whatever the run left
    behind is ended too, so nothing of it keeps holding the GPUs. Its output goes through the
    log pump (stamped lines into `log_file`, each write offered to `listeners`); `samplers`
    see its process tree once a second; each of `before_stop` is called when the stop comes,
    before the first signal. With `user`, it runs as that user with no supplementary groups;
    `limits` are set in the child before exec; `wrap` turns its argv into the sandbox's."""
    not_ours = ProcessTree.current_children()
    read_fd, write_fd = open_pipe()
    pump = LogPump(read_fd, log_file, listeners)
    try:
        argv = ["bash", "-c", command]
        proc = subprocess.Popen(
            wrap(argv) if wrap else argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the group can be ended as one
            **({"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}),
            preexec_fn=limits_setter(limits) if limits else None,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    pump.start()
    tree = ProcessTree(proc.pid, not_ours, sandboxed=wrap is not None)
    try:
        if on_start:
            on_start(proc.pid)
        code, stopped, stop_seconds = _watch(
            proc, tree, stop, grace_seconds, samplers, tick_seconds, before_stop
        )
    except BaseException:
        tree.end(grace_seconds)  # never a command left running by a worker that gave up on it
        pump.join(timeout=30)
        raise
    tree.end(1.0)  # children left behind after bash exited (they also hold the pipe)
    pump.join(timeout=30)
    return Execution(128 - code if code < 0 else code, stopped, stop_seconds, frozenset(tree.seen))


def _watch(proc, tree: ProcessTree, stop, grace_seconds, samplers, tick_seconds, before_stop):
    """Waits for the command's end, or ends its tree when `stop` is set; meanwhile looks at
    its tree once a second. Returns (exit status, the stop request, seconds the stop took)."""
    next_look = 0.0
    while True:
        try:
            return proc.wait(timeout=tick_seconds), None, 0.0
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                for call in before_stop:
                    try:
                        call()
                    except Exception:
                        log.exception("before the stop: %s failed", call)
                stop_seconds = tree.end(grace_seconds)
                return proc.wait(), stop.request, stop_seconds
            if time.monotonic() >= next_look:
                # Remember who belongs to the run while the tree is intact, and what it uses.
                members = tree.members()
                for sampler in samplers:
                    sampler.sample(members)
                next_look = time.monotonic() + LOOK_SECONDS


def tail(path: Path, lines: int = 10, max_chars: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    last = "\n".join(text.splitlines()[-lines:])
    return last[-max_chars:]
