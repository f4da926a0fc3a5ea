"""The log pump: reads the command's output pipe, stamps each line with the UTC time it was
read, and writes it to the durable log file on the node at once. Copies go to the live stream
in Redis (dropped when Redis is slow or away: bounded memory) and, every few seconds, as chunk
objects to the results bucket, so a crashed node loses at most the last few seconds.

The pump never slows the command: the pipe is enlarged, each read takes whatever is there,
and stamping is one bytes.replace per read.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import redis

from common.livelog import LiveLog

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PIPE_BYTES = 1024 * 1024
READ_BYTES = PIPE_BYTES
# After a read, wait before the next unless the pipe was filling up: a writer that finds no
# reader blocked on the pipe does not have to wake one for every line it prints. The rest is
# short enough that even a writer at a few hundred MB/s does not fill the pipe meanwhile.
REST_SECONDS = 0.002
BEHIND_BYTES = PIPE_BYTES // 4
MAX_LINE = 1024 * 1024  # a longer "line" is cut, so memory stays bounded


class LogListener(Protocol):
    """Gets every write of the pump: `pieces` together are `count` stamped lines, the first
    numbered `first_line`. Called on the pump's thread: it must not block."""

    def offer(self, first_line: int, pieces: tuple[bytes, ...], count: int) -> None: ...


def open_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # the default size still works, with less slack
    return read_fd, write_fd


def _stamp() -> bytes:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode()


class LogPump(threading.Thread):
    def __init__(self, read_fd: int, log_file: Path, listeners: Sequence[LogListener] = ()):
        super().__init__(name="log-pump", daemon=True)
        self.fd = read_fd
        self.log_file = log_file
        self.listeners = tuple(listeners)
        self.lines = 0

    def run(self) -> None:
        # Reads land after the unfinished line kept at the buffer's start: no joining copies.
        buffer = bytearray(READ_BYTES + MAX_LINE)
        view = memoryview(buffer)
        held = 0  # bytes of an unfinished line at the start of the buffer
        with open(self.log_file, "ab", buffering=0) as out:
            while True:
                try:
                    got = os.readv(self.fd, [view[held : held + READ_BYTES]])
                except InterruptedError:
                    continue
                if not got:
                    break
                if got < BEHIND_BYTES:
                    time.sleep(REST_SECONDS)
                total = held + got
                cut = buffer.rfind(b"\n", 0, total)
                if cut < 0:
                    held = total
                    if held < MAX_LINE:
                        continue
                    cut = total  # a "line" this long is cut here
                self._emit(out, _stamp(), bytes(view[:cut]))
                rest = buffer[cut + 1 : total] if cut < total else b""
                buffer[: len(rest)] = rest
                held = len(rest)
            if held:
                self._emit(out, _stamp(), bytes(view[:held]))
        view.release()
        os.close(self.fd)

    def _emit(self, out, stamp: bytes, lines: bytes) -> None:
        """`lines`: whole lines without the last newline; written stamped, in one writev."""
        pieces = (stamp, lines.replace(b"\n", b"\n" + stamp), b"\n")
        os.writev(out.fileno(), pieces)
        count = lines.count(b"\n") + 1
        for listener in self.listeners:
            listener.offer(self.lines, pieces, count)
        self.lines += count


class LiveStreamer(threading.Thread):
    """Sends the pump's pieces to the Redis stream; drops them (and counts) when it lags, or
    past `max_bytes_per_second`: a person following a run reads far less than that, and the
    durable log has every line."""

    def __init__(
        self, live: LiveLog, max_bytes_per_second: int = 1024 * 1024, max_pending: int = 256
    ):
        super().__init__(name="live-log", daemon=True)
        self.live = live
        self.pending: queue.Queue = queue.Queue(maxsize=max_pending)
        self.dropped_lines = 0
        self.max_bytes_per_second = max_bytes_per_second
        self._window = (0, 0)  # (second, bytes offered in it)
        self._closed = threading.Event()

    def offer(self, first_line: int, pieces: tuple[bytes, ...], count: int) -> None:
        """`pieces` together are `count` stamped lines; joined only if they are sent."""
        second, used = self._window
        now = int(time.monotonic())
        if now != second:
            second, used = now, 0
        size = sum(map(len, pieces))
        if used + size > self.max_bytes_per_second:
            self.dropped_lines += count
            self._window = (second, used)
            return
        self._window = (second, used + size)
        try:
            self.pending.put_nowait((first_line, b"".join(pieces).decode("utf-8", "replace")))
        except queue.Full:
            self.dropped_lines += count

    def close(self) -> None:
        self._closed.set()
        try:
            self.pending.put_nowait(None)  # wakes the thread now, not at its next timeout
        except queue.Full:
            pass  # it is busy sending, and sees the flag next
        self.join(timeout=10)

    def run(self) -> None:
        while not (self._closed.is_set() and self.pending.empty()):
            try:
                item = self.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [item] if item is not None else []
            while len(batch) < 100:
                try:
                    item = self.pending.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    batch.append(item)
            if not batch:
                continue
            try:
                self.live.append(batch)
            except redis.RedisError:
                self.dropped_lines += sum(text.count("\n") for _, text in batch)
                time.sleep(0.5)


class ChunkUploader(threading.Thread):
    """Every `every_seconds` (or `every_bytes` of new log), uploads the log's new whole lines
    as one object named by its first line: `<prefix><first-line:012d>.txt`."""

    def __init__(
        self,
        log_file: Path,
        upload: Callable[[Path, str], None],
        prefix: str,
        every_seconds: float = 5.0,
        every_bytes: int = 256 * 1024,
    ):
        super().__init__(name="log-chunks", daemon=True)
        self.log_file = log_file
        self.upload = upload
        self.prefix = prefix
        self.every_seconds = every_seconds
        self.every_bytes = every_bytes
        self.offset = 0
        self.line = 0
        self.uploaded: list[str] = []
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()
        self.join(timeout=60)

    def run(self) -> None:
        last = time.monotonic()
        while not self._closed.wait(0.2):
            size = self._size()
            if size - self.offset >= self.every_bytes or (
                size > self.offset and time.monotonic() - last >= self.every_seconds
            ):
                self._ship()
                last = time.monotonic()

    def _size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _ship(self) -> None:
        with open(self.log_file, "rb") as f:
            f.seek(self.offset)
            data = f.read(8 * 1024 * 1024)
        cut = data.rfind(b"\n")
        if cut < 0:
            return
        data = data[: cut + 1]
        chunk = self.log_file.with_name(f".chunk-{self.line:012d}")
        chunk.write_bytes(data)
        key = f"{self.prefix}{self.line:012d}.txt"
        try:
            self.upload(chunk, key)
        except Exception as exc:  # the store may be slow or away: try again next time
            log.warning("log chunk %s not uploaded yet: %s", key, exc)
            return
        finally:
            chunk.unlink(missing_ok=True)
        self.uploaded.append(key)
        self.offset += len(data)
        self.line += data.count(b"\n")
