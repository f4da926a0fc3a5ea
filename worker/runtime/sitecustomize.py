"""Imported by every Python process of a run: the worker puts this folder first on the run's
PYTHONPATH (DLAAS_RUN_PYTHON_OUTPUT=flushed, the default).

Python block-buffers stdout into a pipe, so a training script's prints would reach the live
log only when 8 KB had piled up; PYTHONUNBUFFERED=1 fixes that with one write per print,
which makes a program that prints a lot three times slower. Instead, here stdout is
block-buffered (64 KB) and a daemon thread flushes it every FLUSH_SECONDS (0.1 s): full
speed, and every line in the live log within a tenth of a second. When stderr is the same pipe as
stdout (as the worker starts runs), stderr writes go through stdout's buffer, so the two stay
in the order they were printed. The flushing stops at exit (atexit) before Python's own final
flush; a fork flushes first (or the child would print the parent's buffer again), and the
child flushes as the parent does. A sitecustomize module further down the path
(the system's) is still run.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import importlib.util
import io
import os
import sys
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
FLUSH_SECONDS = 0.1
BUFFER_BYTES = 64 * 1024


def _take_over_stdout() -> None:
    """stdout with a 64 KB buffer (Python's 8 KB means ten times more writes into the pipe),
    and stderr through it when both are the same pipe. A terminal, or a stdout the program's
    environment made unbuffered (PYTHONUNBUFFERED), is left as it is."""
    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper) or out.line_buffering or out.write_through:
        return
    try:
        fd = out.fileno()
        if os.isatty(fd):
            return
        out.flush()
        buffered = io.BufferedWriter(io.FileIO(fd, "w", closefd=False), BUFFER_BYTES)
        sys.stdout = io.TextIOWrapper(buffered, encoding=out.encoding, errors=out.errors)
        if sys.stderr is not None and os.path.sameopenfile(fd, sys.stderr.fileno()):
            sys.stderr = sys.stdout
    except (OSError, ValueError, AttributeError):
        pass


def _start_flushing() -> None:
    out = sys.stdout
    if out is None or not hasattr(out, "flush"):
        return
    stop = threading.Event()

    def flush_now_and_then() -> None:
        while not stop.wait(FLUSH_SECONDS):
            try:
                out.flush()
            except Exception:  # closed or replaced by the program: nothing left to do
                return

    flusher = threading.Thread(target=flush_now_and_then, name="dlaas-flush", daemon=True)
    flusher.start()

    def stop_flushing() -> None:
        stop.set()
        flusher.join(timeout=1.0)

    atexit.register(stop_flushing)


def _run_the_next_sitecustomize() -> None:
    path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _flush_before_fork() -> None:
    # What is still buffered would otherwise be printed again by the child.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


_take_over_stdout()
_start_flushing()
os.register_at_fork(before=_flush_before_fork, after_in_child=_start_flushing)
_run_the_next_sitecustomize()
