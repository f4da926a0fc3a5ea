"""The node's cache of run environments: one Python virtual environment per framework,
accelerator, requirements and package sources, content-addressed and shared by every worker
of the node.

    <environment_dir>/<key>/                        the environment: root's, read-only
    <environment_dir>/<key>/dlaas-environment.json  what it holds (written before it is renamed)
    <environment_dir>/<key>.use                     held shared by runs using it; mtime: last use
    <environment_dir>/.locks/<key>                  one build (or removal) of a key at a time
    <environment_dir>/.building/                    builds under way (renamed into place when done)

A half-built environment is never used: it is built under .building/ and renamed into place.
Past DLAAS_ENVIRONMENT_MAX_BYTES the least recently used environments are removed, never one
a run holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.clock import iso, utcnow
from common.frameworks import Framework
from common.settings import Settings
from worker.uvbuild import Builder, BuildFailed, BuildStopped

log = logging.getLogger(__name__)
META = "dlaas-environment.json"
KEY_LENGTH = 20


@dataclass(frozen=True)
class Wanted:
    """What a run asks for: its framework (on this node's accelerator) and its requirements."""

    framework: Framework
    accelerator: str
    requirements: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        return self.framework.packages_for(self.accelerator) + self.requirements


@dataclass
class Environment:
    """An environment a run holds: removed by no one until `release()`."""

    key: str
    path: Path
    built: bool  # False: it was in the cache already
    seconds: float
    python: str
    _held: int | None = field(default=None, repr=False)

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def record(self, wanted: Wanted) -> dict:
        """What the run's record says of it (`show`)."""
        return {
            "key": self.key,
            "framework": wanted.framework.label,
            "python": self.python,
            "accelerator": wanted.accelerator,
            "requirements": len(wanted.requirements),
            "status": "built" if self.built else "reused",
            "seconds": round(self.seconds, 3),
        }

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None


class EnvironmentCache:
    def __init__(self, settings: Settings, builder: Builder | None = None):
        self.settings = settings
        self.root = settings.environment_dir
        self.builder = builder or Builder(settings)

    def prepare(
        self, wanted: Wanted, log_path: Path, should_stop: Callable[[], bool] = lambda: False
    ) -> Environment:
        """The environment for `wanted`, built unless the cache has it; held for the caller
        until `release()`. Raises BuildFailed (whose fault it says) or BuildStopped."""
        began = time.monotonic()
        deadline = began + self.settings.environment_build_seconds
        if wanted.framework.unavailable:
            raise BuildFailed(wanted.framework.unavailable, user_fault=True)
        python = self.builder.find_python(wanted.framework.python)
        key = self.key(wanted, python.version)
        for folder in (self.root / ".locks", self.root / ".building"):
            folder.mkdir(parents=True, exist_ok=True)
        with _Lock(self.root / ".locks" / key, should_stop, deadline):
            target = self.root / key
            built = not (target / META).is_file()
            if built:
                self._build(wanted, python, key, log_path, should_stop, deadline)
            held = _hold(self.root / f"{key}.use", should_stop, deadline)
        env = Environment(key, target, built, time.monotonic() - began, python.version, held)
        if built:
            self.evict(keep=key)
            if wanted.packages:  # runs start now; their imports get faster once it is done
                threading.Thread(
                    target=self.builder.compile, args=(target,), name=f"compile-{key}", daemon=True
                ).start()
        return env

    def key(self, wanted: Wanted, python_version: str) -> str:
        """The content address: Python, registry entry, accelerator, requirements, sources."""
        content = {
            "python": python_version,
            "framework": [wanted.framework.name, wanted.framework.version],
            "packages": sorted(wanted.framework.packages_for(wanted.accelerator)),
            "accelerator": wanted.accelerator,
            "requirements": sorted(wanted.requirements),
            "sources": self.builder.sources.fingerprint(),
        }
        encoded = json.dumps(content, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:KEY_LENGTH]

    def _build(self, wanted, python, key, log_path, should_stop, deadline) -> None:
        staging = self.root / ".building" / f"{key}-{uuid.uuid4().hex[:8]}"
        began = time.monotonic()
        try:
            framework_packages = wanted.framework.packages_for(wanted.accelerator)
            self.builder.build(
                python,
                wanted.packages,
                staging,
                log_path,
                should_stop,
                deadline,
                framework_packages,
            )
            size = _seal(staging)
            meta = {
                "key": key,
                "framework": wanted.framework.name,
                "version": wanted.framework.version,
                "accelerator": wanted.accelerator,
                "python": python.version,
                "packages": list(wanted.packages),
                "requirements": len(wanted.requirements),
                "bytes": size,
                "built_at": iso(utcnow()),
                "build_seconds": round(time.monotonic() - began, 3),
            }
            (staging / META).write_text(json.dumps(meta, indent=1))
            (staging / META).chmod(0o444)
            staging.chmod(0o555)
            os.rename(staging, self.root / key)
        finally:
            if staging.exists():
                _remove(staging)

    def held(self) -> list[dict]:
        """What the cache holds: each environment's record, with its last use."""
        entries = []
        for meta_file in self.root.glob(f"*/{META}"):
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError):
                continue
            use = self.root / f"{meta_file.parent.name}.use"
            meta["last_used"] = use.stat().st_mtime if use.exists() else 0.0
            entries.append(meta)
        return sorted(entries, key=lambda meta: meta["last_used"])

    def evict(self, keep: str = "") -> list[str]:
        """Least recently used first, until the cache fits its size: never `keep` nor an
        environment a run holds. Returns the keys removed."""
        entries = self.held()
        total = sum(meta.get("bytes", 0) for meta in entries)
        removed = []
        for meta in entries:
            if total <= self.settings.environment_max_bytes:
                break
            key = meta["key"]
            if key == keep or not self._remove_unused(key):
                continue
            total -= meta.get("bytes", 0)
            removed.append(key)
            log.info("environment %s removed (least recently used, %s bytes)", key, meta["bytes"])
        return removed

    def _remove_unused(self, key: str) -> bool:
        """Remove environment `key` if no build holds its lock and no run holds it."""
        with open(self.root / ".locks" / key, "a") as lock:
            if not _try(lock.fileno(), fcntl.LOCK_EX):
                return False
            use_path = self.root / f"{key}.use"
            with open(use_path, "a") as use:
                if not _try(use.fileno(), fcntl.LOCK_EX):
                    return False
                target = self.root / key
                if target.exists():
                    trash = self.root / ".building" / f"{key}-removed-{uuid.uuid4().hex[:8]}"
                    os.rename(target, trash)
                    _remove(trash)
                use_path.unlink(missing_ok=True)
        return True


class _Lock:
    """An exclusive flock on `path`, waited for while `should_stop` is false, until
    `deadline`."""

    def __init__(self, path: Path, should_stop, deadline: float):
        self.path, self.should_stop, self.deadline = path, should_stop, deadline
        self.fd = -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            _wait_for(self.fd, fcntl.LOCK_EX, self.should_stop, self.deadline)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _hold(path: Path, should_stop, deadline: float) -> int:
    """A shared lock on the environment's use file (and its mtime set): in use from now."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _wait_for(fd, fcntl.LOCK_SH, should_stop, deadline)
        os.utime(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _wait_for(fd: int, kind: int, should_stop, deadline: float) -> None:
    while not _try(fd, kind):
        if should_stop():
            raise BuildStopped()
        if time.monotonic() > deadline:
            raise BuildFailed(
                "waited longer than DLAAS_ENVIRONMENT_BUILD_SECONDS for another build of the "
                "same environment",
                user_fault=False,
            )
        time.sleep(0.1)


def _try(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _seal(folder: Path) -> int:
    """Every file read-only (executables stay executable), every folder passable and not
    writable, for everyone; returns the bytes its files hold."""
    size = 0
    for top, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            if os.path.islink(path):
                continue
            size += info.st_size
            os.chmod(path, 0o555 if info.st_mode & 0o111 else 0o444)
        for name in dirs:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555)
    return size


def _remove(folder: Path) -> None:
    """rmtree of a sealed folder: its folders writable again first (needed when not root)."""
    for top, dirs, _ in os.walk(folder):
        os.chmod(top, 0o755)
        for name in dirs:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
    shutil.rmtree(folder, ignore_errors=True)
