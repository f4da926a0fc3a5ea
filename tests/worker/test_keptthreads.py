"""The threads a pool process keeps for its runs (worker/keptthreads.py), in real threads and
a real fork."""

from __future__ import annotations

import multiprocessing
import threading

from worker.keptthreads import kept_pool


def test_a_kept_pool_reuses_an_idle_thread_and_starts_one_only_when_none_is():
    pool = kept_pool("test-kept")
    assert kept_pool("test-kept") is pool
    first = pool.submit(threading.get_ident).result(timeout=5)
    assert pool.submit(threading.get_ident).result(timeout=5) == first
    gate = threading.Event()
    busy = pool.submit(gate.wait, 5)
    try:
        other = pool.submit(threading.get_ident).result(timeout=5)  # the first one is busy
    finally:
        gate.set()
    assert busy.result(timeout=5) is True
    assert other != first


def _job_in_child(answers) -> None:
    answers.put(kept_pool("test-kept").submit(lambda: 42).result(timeout=5))


def test_a_forked_child_gets_its_own_threads():
    kept_pool("test-kept").submit(threading.get_ident).result(timeout=5)  # the parent's, idle
    fork = multiprocessing.get_context("fork")
    answers = fork.Queue()
    child = fork.Process(target=_job_in_child, args=(answers,))
    child.start()
    child.join(timeout=20)
    assert child.exitcode == 0
    assert answers.get(timeout=5) == 42
