"""The TCP ports of the stack's servers: free ones chosen so that a process never hands out the
same port twice (nor one it was told is taken by its own stack), each checked free before
anything starts, and, for one that is not, who holds it; a server is ready once it holds its
own port (`listening`).

All ports are on 127.0.0.1. A port is free when a server could bind it now: the check binds it
the way the servers do (SO_REUSEADDR, so a closed connection's TIME_WAIT does not count).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

HOST = "127.0.0.1"
# Every port this process has handed out or reserved: the kernel may give a port it gave
# before once that socket is closed, and a server that has not started yet holds nothing.
_TAKEN: set[int] = set()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Port:
    """A port a stack will bind: what binds it, and the setting that moves it (None: it is
    chosen free at each start)."""

    number: int
    what: str
    setting: str | None = None


def is_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port(host: str) -> int:
    """A port nothing holds right now, as the kernel picks one."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reserve(*ports: int) -> None:
    """Ports this process's stack will bind itself: never handed out by free_port()."""
    with _LOCK:
        _TAKEN.update(ports)


def free_port(host: str = HOST) -> int:
    """A free port, never one this process handed out or reserved before."""
    for _ in range(1000):
        port = _kernel_port(host)
        with _LOCK:
            if port not in _TAKEN:
                _TAKEN.add(port)
                return port
    raise OSError("no free port: the kernel kept offering ports already handed out")


def holder(port: int) -> str | None:
    """Who listens on `port`, in words ("redis-server (pid 4242)"), when this user may see
    it; None when it cannot be known."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                return f"pid {conn.pid}"
            return f"{name} (pid {conn.pid})"
    return None


def listening(pid: int, port: int) -> bool:
    """Whether process `pid`, or a child of it, listens on `port`: a server is ready when it
    holds its port, not when something (another stack's server, say) answers there."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        try:
            # net_connections from psutil 6; connections before.
            conns = getattr(proc, "net_connections", proc.connections)(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            return True
    return False


def describe_taken(port: Port) -> str:
    held = holder(port.number)
    by = f"held by {held}" if held else "in use (by a process this user cannot see)"
    if port.setting:
        fix = f"stop it, or set {port.setting} to a free port"
    else:
        fix = "it was chosen free at this start and taken since: start again"
    return f"port {port.number} ({port.what}) is {by}: {fix}"


def taken(ports: Iterable[Port], host: str = HOST) -> list[str]:
    """One line, in words, for each of `ports` that is not free (an empty list: all are)."""
    return [describe_taken(p) for p in ports if not is_free(p.number, host)]
