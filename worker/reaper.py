"""Ending a run's whole process tree, escaped children included, and checking its GPUs free.

The worker process becomes a child subreaper (Linux prctl), so a grandchild that starts its
own session and loses its parent is re-parented to the worker instead of to init, and stays
findable among the worker's descendants.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time

import psutil

log = logging.getLogger(__name__)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children_of(pid: int) -> set[int]:
    """The process's children, from the kernel's list of each of its threads' children
    (/proc/PID/task/TID/children): a read of its own, where psutil's children() reads every
    process of the machine. psutil's way where the kernel has no such list."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return set()
    found: set[int] = set()
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as listed:
                found.update(int(child) for child in listed.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            try:  # a kernel without CONFIG_PROC_CHILDREN
                return {child.pid for child in psutil.Process(pid).children()}
            except psutil.NoSuchProcess:
                return set()
        except (ProcessLookupError, PermissionError):
            continue
    return found


def descendants(roots: list[int]) -> list[int]:
    """The roots and every process below them, each once (a walk of children_of)."""
    seen: dict[int, None] = {}  # in the order met
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen[pid] = None
        todo.extend(children_of(pid))
    return list(seen)


class ProcessTree:
    """The processes of one run: the `bash -c` and everything it started, including
    processes re-parented to this worker after their parent exited."""

    def __init__(self, root_pid: int, not_ours: set[int], sandboxed: bool = False):
        self.root_pid = root_pid
        # Children this process had before the run started (a test runner's servers, say).
        self.not_ours = not_ours
        self.seen: set[int] = {root_pid}
        # The root is bwrap, and its child the sandbox's pid 1 (worker/sandbox.py): both end
        # when the command does; a SIGTERM to either would SIGKILL the command at once.
        self.sandboxed = sandboxed

    @staticmethod
    def current_children() -> set[int]:
        return children_of(os.getpid())

    def members(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        roots = [pid for pid in self.current_children() if pid not in self.not_ours]
        roots += [pid for pid in self.seen if pid not in roots]
        for pid in descendants(roots):
            try:
                found[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
        alive = [p for p in found.values() if _alive(p)]
        self.seen.update(p.pid for p in alive)
        return alive

    def end(self, grace: float) -> float:
        """SIGTERM every member and the root's group, wait up to `grace`, then SIGKILL what
        is left; returns the seconds it took until no member was alive."""
        started = time.monotonic()
        self._signal(signal.SIGTERM)
        deadline = started + grace
        while time.monotonic() < deadline:
            self._reap()
            if not self.members():
                return time.monotonic() - started
            time.sleep(0.05)
        survivors = self.members()
        if survivors:
            log.warning("SIGKILL to %d processes left after %.0f s", len(survivors), grace)
        for _ in range(100):
            self._signal(signal.SIGKILL)
            self._reap()
            if not self.members():
                break
            time.sleep(0.05)
        return time.monotonic() - started

    def _signal(self, sig: int) -> None:
        spared = set()
        if self.sandboxed and sig != signal.SIGKILL:
            spared = {self.root_pid, *children_of(self.root_pid)}
        else:
            try:
                os.killpg(self.root_pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.members():
            if proc.pid in spared:
                continue
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def _reap(self) -> None:
        """Collect the zombies that were re-parented to this process. Not the root: its
        Popen reaps it, and a status taken here would be lost to it (Popen then says 0, so a
        cancelled command read as one that exited 0)."""
        for pid in list(self.seen):
            if pid in self.not_ours or pid == self.root_pid:
                continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gpus_released(gpus: tuple[int, ...], pids: set[int], timeout: float = 10.0) -> bool:
    """True once no process of the run holds one of `gpus` (NVML), or at once without NVML
    (then the process tree being gone is the check)."""
    if not gpus:
        return True
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return True
    try:
        deadline = time.monotonic() + timeout
        while True:
            holding = set()
            for index in gpus:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    holding.add(proc.pid)
            if not holding & pids:
                return True
            if time.monotonic() > deadline:
                log.error("GPUs %s still held by run processes %s", gpus, sorted(holding & pids))
                return False
            time.sleep(0.2)
    finally:
        pynvml.nvmlShutdown()
