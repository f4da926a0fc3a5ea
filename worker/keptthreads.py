"""Threads a pool process keeps for the runs it executes, one run after another, instead of
threads started per run: Thread.start waits until the new thread runs, a hand-over of the GIL
that took milliseconds on a busy node, and each run's way to its command paid for several.

A job goes to an idle kept thread of its kind, or to a new one when none is idle (so a job
never waits behind another, however long that one runs: a supervisor's loop lasts its run).
Threads stay, idle on their queue (no CPU), for the next runs; a forked pool child starts
its own. Not concurrent.futures' ThreadPoolExecutor: its count of idle threads can be too
high, and then a job waits for a busy thread instead of getting a new one."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future


class KeptThreads:
    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []
        self._started = 0

    def submit(self, job: Callable, *args) -> Future:
        """Run `job(*args)` on an idle kept thread, or a new one; its outcome in the Future."""
        future: Future = Future()
        with self._lock:
            jobs = self._idle.pop() if self._idle else None
            if jobs is None:
                self._started += 1
                number = self._started
        if jobs is None:
            jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(jobs,), name=f"{self.name}-{number}", daemon=True
            ).start()
        jobs.put((future, job, args))
        return future

    def _serve(self, jobs: queue.SimpleQueue) -> None:
        while True:
            future, job, args = jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._idle.append(jobs)


_kept: dict[str, KeptThreads] = {}
_kept_in = 0  # the process they belong to


def kept_pool(name: str) -> KeptThreads:
    """This process's kept threads for `name` (their name's prefix)."""
    global _kept_in
    if _kept_in != os.getpid():
        _kept.clear()  # a parent's: their threads did not survive the fork
        _kept_in = os.getpid()
    if name not in _kept:
        _kept[name] = KeptThreads(name)
    return _kept[name]
