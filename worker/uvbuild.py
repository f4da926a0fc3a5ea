"""How one run environment is built: uv finds the node's Python, makes a relocatable virtual
environment and installs the framework's packages and the run's requirements into it, from
the operator's package sources only. No resolution of our own: uv is the resolver."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

from common.settings import Settings

# What a build passes through from the worker's environment: proxies and CA files, so a
# node behind a proxy reaches its index. Nothing else of the worker's (no DLAAS_*, no keys).
PASSED_THROUGH = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# uv's words for a request that cannot be met as written: the user's fault.
USER_FAULTS = re.compile(
    r"No solution found when resolving|Failed to parse|not found in the package registry|"
    r"Failed to build|Failed to download and build|is not supported but|"
    r"No interpreter found|Invalid version request|no matching distribution"
)
# uv's words for an index it could not reach: the service's fault.
UNREACHABLE = re.compile(
    r"Failed to fetch|Request failed|error sending request|Connection refused|dns error|"
    r"tcp connect error|timed out|Could not connect"
)


# How long a Python found on the node is remembered (a cache hit then runs no subprocess).
PYTHON_KEPT = 300.0


class BuildFailed(Exception):
    """The environment cannot be built: `user_fault` says whose fault, `message` says what
    (uv's own words about the package at fault)."""

    def __init__(self, message: str, user_fault: bool):
        super().__init__(message)
        self.message, self.user_fault = message, user_fault


class BuildStopped(Exception):
    """The run was stopped (cancel, time limit, drain) while its environment was built."""


@dataclass(frozen=True)
class PackageSources:
    """Where packages come from: an index, more indexes, folders of wheels, a constraints
    file. Part of every environment's key: other sources, another environment."""

    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: Path | None = None
    index_strategy: str = "first-index"

    @classmethod
    def from_settings(cls, settings: Settings) -> PackageSources:
        return cls(
            settings.package_index_url,
            settings.package_extra_index_urls,
            settings.package_find_links,
            settings.package_constraints,
            settings.package_index_strategy,
        )

    def uv_args(self) -> list[str]:
        args = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for place in self.find_links:
            args += ["--find-links", place]
        if self.constraints:
            args += ["--constraint", str(self.constraints)]
        return [*args, "--index-strategy", self.index_strategy]

    def fingerprint(self) -> dict:
        constraints = ""
        if self.constraints:
            try:
                constraints = hashlib.sha256(Path(self.constraints).read_bytes()).hexdigest()
            except OSError:
                constraints = "unreadable"
        return {
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "find_links": list(self.find_links),
            "constraints": constraints,
            "index_strategy": self.index_strategy,
        }

    def describe(self) -> str:
        parts = [f"index {self.index_url or 'PyPI'}"]
        parts += [f"index {url}" for url in self.extra_index_urls]
        parts += [f"wheels {place}" for place in self.find_links]
        if self.constraints:
            parts.append(f"constraints {self.constraints}")
        return ", ".join([*parts, f"index strategy {self.index_strategy}"])


@dataclass(frozen=True)
class Python:
    path: str
    version: str  # the full version, e.g. 3.11.2


class Builder:
    """Runs uv for the environment cache: finding Pythons, making and filling environments."""

    def __init__(self, settings: Settings, uv: str | None = None):
        self.settings = settings
        self.sources = PackageSources.from_settings(settings)
        self.uv = uv or find_uv_bin()
        self._found: dict[str, tuple[float, Python]] = {}

    def _uv(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """uv, run from the environment folder (so no project or .venv of the worker's is
        seen)."""
        self.settings.environment_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [self.uv, *args],
            capture_output=True,
            text=True,
            env=self.environ(),
            cwd=self.settings.environment_dir,
            timeout=60,
            **kwargs,
        )

    def environ(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_THROUGH if os.environ.get(name)}
        env.update(
            PATH=self.settings.python_search_path,
            HOME=str(self.settings.environment_dir),
            UV_CACHE_DIR=str(self.settings.uv_cache_dir),
            UV_PYTHON_DOWNLOADS="never",  # only the node's own Pythons
            UV_NO_CONFIG="1",  # no uv.toml of the worker's user or folder
            LANG="C.UTF-8",
        )
        return env

    def find_python(self, wanted: str) -> Python:
        """The node's interpreter for Python `wanted` (looked up again after PYTHON_KEPT
        seconds); BuildFailed (the user's: the node cannot provide it) naming the Pythons
        the node has."""
        kept = self._found.get(wanted)
        if kept and time.monotonic() - kept[0] < PYTHON_KEPT:
            return kept[1]
        found = self._uv("python", "find", "--system", "--python-preference", "only-system", wanted)
        path = found.stdout.strip()
        if found.returncode != 0 or not path:
            raise BuildFailed(
                f"needs Python {wanted}, which this node does not have "
                f"(it has: {', '.join(self.pythons()) or 'none'})",
                user_fault=True,
            )
        version = subprocess.run(
            [path, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            env={"PATH": self.settings.python_search_path},
            timeout=60,
        )
        python = Python(path, version.stdout.strip() or wanted)
        self._found[wanted] = (time.monotonic(), python)
        return python

    def pythons(self) -> list[str]:
        """The Python versions found on the node's search path."""
        listed = self._uv(
            "python",
            "list",
            "--only-installed",
            "--python-preference",
            "only-system",
            "--output-format",
            "json",
        )
        try:
            return sorted({entry["version"] for entry in json.loads(listed.stdout or "[]")})
        except (ValueError, KeyError, TypeError):
            return []

    def build(
        self,
        python: Python,
        packages: tuple[str, ...],
        target: Path,
        log_path: Path,
        should_stop: Callable[[], bool],
        deadline: float,
        pinned: tuple[str, ...] = (),
    ) -> None:
        """A virtual environment at `target` with `packages` installed; its output appended
        to `log_path`; the `pinned` ones (the framework's) checked to be exactly what they
        name. BuildFailed or BuildStopped when it cannot finish."""
        make = [self.uv, "venv", "--relocatable", "--python", python.path, "--quiet", str(target)]
        self._run(make, log_path, should_stop, deadline)
        if not packages:
            return
        requirements = target.parent / f"{target.name}.requirements.txt"
        requirements.write_text("".join(f"{spec}\n" for spec in packages))
        try:
            install = [self.uv, "pip", "install", "--python", str(target / "bin" / "python")]
            install += [*self.sources.uv_args(), "-r", str(requirements)]
            self._run(install, log_path, should_stop, deadline)
        finally:
            requirements.unlink(missing_ok=True)
        self._check_pins(target, pinned)

    def _check_pins(self, target: Path, packages: tuple[str, ...]) -> None:
        """What a pin names is what got installed, build label included: `torch==2.13.0`
        also matches `2.13.0+cpu` (PEP 440), and a CPU build where the CUDA one was meant
        is never passed off as the framework asked for."""
        listed = self._uv(
            "pip", "list", "--python", str(target / "bin" / "python"), "--format", "json"
        )
        try:
            installed = {
                canonicalize_name(entry["name"]): entry["version"]
                for entry in json.loads(listed.stdout or "[]")
            }
        except (ValueError, KeyError, TypeError):
            return
        for spec in packages:
            requirement = Requirement(spec)
            pins = [s.version for s in requirement.specifier if s.operator in ("==", "===")]
            have = installed.get(canonicalize_name(requirement.name))
            if len(pins) != 1 or "*" in pins[0] or have is None:
                continue
            if "+" in have and "+" not in pins[0]:
                raise BuildFailed(
                    f"{requirement.name} {have} was installed for {spec}: the package sources "
                    f"hold another build of it ({have.split('+')[1]}) where this one was meant",
                    user_fault=False,
                )

    def compile(self, target: Path) -> None:
        """Byte-compile the environment's modules (after it is in place, at low priority):
        a read-only environment cannot cache them itself, and `import torch` takes 2.3 s
        with them, 6.2 s without."""
        python = target / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "compileall", "-q", "-j", "0", str(target / "lib")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={"PATH": self.settings.python_search_path, "LANG": "C.UTF-8"},
            cwd=target,
            preexec_fn=lambda: os.nice(19),
            timeout=self.settings.environment_build_seconds,
        )

    def _run(self, argv: list[str], log_path: Path, should_stop, deadline: float) -> None:
        with open(log_path, "a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            started = log.tell()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ(),
                cwd=self.settings.environment_dir,
                start_new_session=True,
            )
            try:
                code = _wait(proc, should_stop, deadline)
            except BaseException:
                _end(proc)
                raise
        if code != 0:
            with open(log_path) as log:
                log.seek(started)
                output = log.read()
            raise BuildFailed(_gist(output), user_fault=_is_user_fault(output))


def _wait(proc: subprocess.Popen, should_stop, deadline: float) -> int:
    while True:
        try:
            return proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            if should_stop():
                raise BuildStopped() from None
            if time.monotonic() > deadline:
                raise BuildFailed(
                    "the build took longer than DLAAS_ENVIRONMENT_BUILD_SECONDS", user_fault=False
                ) from None


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _is_user_fault(output: str) -> bool:
    return bool(USER_FAULTS.search(output)) and not UNREACHABLE.search(output)


def _gist(output: str, limit: int = 600) -> str:
    """uv's error and its causes, on one line: `error: ...; cause: ...`."""
    lines = [line.strip() for line in output.splitlines()]
    kept = [line for line in lines if line.startswith(("error:", "cause:", "×", "╰─▶"))]
    if not kept:
        kept = [line for line in lines if line][-3:]
    text = "; ".join(kept)
    return text if len(text) <= limit else text[: limit - 1] + "…"
