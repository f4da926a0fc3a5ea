"""Real servers for the suite: a redis-server on a free port, the API under gunicorn and
Celery workers as separate processes, each stopped by pid at the end."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from cryptography.fernet import Fernet

from common.clock import iso, utcnow
from common.fleet.sizes import DEFAULT_SIZE_GPUS, ResourceSize
from common.ids import new_run_id
from common.run import Run
from common.states import RunState
from common.tokens import write_tokens_file
from deploy.processes import (
    api_argv,
    free_port,
    http_ok,
    log_says,
    port_open,
    redis_argv,
    spawn,
    stop_pid,
    wait_until,
)

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RedisServer:
    port: int
    pid: int
    data: Path | None = None
    persist: bool = False
    # Clients must AUTH, as on the embedded stack: a run must not reach Redis by itself.
    password: str = field(default_factory=lambda: secrets.token_hex(16))

    def stop(self) -> None:
        stop_pid(self.pid)

    def start(self) -> None:
        """(Re)start on the same port and data folder (with AOF, the data comes back)."""
        log = self.data / "redis.log"
        argv = redis_argv(self.port, self.data, persist=self.persist, password=self.password)
        self.pid = spawn(argv, log)
        wait_until(lambda: port_open(self.port), 20, "redis-server", pid=self.pid, log_path=log)

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), decode_responses=True)


def start_redis(data: Path, persist: bool = False) -> RedisServer:
    data.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), 0, data, persist)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def swift(tmp_path_factory) -> dict:
    """A real Swift all-in-one (Swift API with tempauth, S3 API) on 127.0.0.1."""
    from deploy import swift as swift_aio

    home = tmp_path_factory.mktemp("swift")
    state = swift_aio.up(home)
    try:
        yield state
    finally:
        swift_aio.down(home)


@pytest.fixture(scope="session")
def keystone(swift, tmp_path_factory) -> dict:
    """A real Keystone v3 and a Swift proxy that authenticates with it (same storage)."""
    from deploy import keystone as keystone_aio

    home = tmp_path_factory.mktemp("keystone")
    state = keystone_aio.up(home, Path(swift["home"]))
    try:
        yield state
    finally:
        keystone_aio.down(home)


@pytest.fixture
def store_redis(redis_server) -> redis.Redis:
    """Database 1, flushed before each test: for run-store tests that need a clean slate.
    (Database 0 holds the broker that the integration workers consume, and is never flushed.)"""
    client = redis_server.client(1)
    client.flushdb()
    yield client
    client.flushdb()


@dataclass
class Stack:
    """One service instance for the integration tests: settings shared by API and workers."""

    redis: RedisServer
    home: Path
    secret_key: str
    tokens: dict[str, str]  # user -> token
    api_url: str = ""
    pids: list[int] = field(default_factory=list)
    work_dir: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)  # more DLAAS_* for its services

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
        env.update(
            {
                "DLAAS_HOME": str(self.home),
                "DLAAS_REDIS_URL": self.redis.url(0),
                "DLAAS_SECRET_KEY": self.secret_key,
                "DLAAS_TOKENS_FILE": str(self.home / "tokens.json"),
                "DLAAS_RETENTION_DAYS": "1",
                "DLAAS_ADMIN_USERS": "alice",
                # Short fault-detection times, so the fault tests stay quick.
                "DLAAS_LEASE_TTL_SECONDS": "3",
                "DLAAS_LEASE_REFRESH_SECONDS": "0.5",
                "DLAAS_RECONCILE_INTERVAL_SECONDS": "0.5",
                "DLAAS_CANCEL_GRACE_SECONDS": "3",
                "DLAAS_WORKER_HEARTBEAT_SECONDS": "1",
                "DLAAS_LOG_CHUNK_SECONDS": "0.5",
                "DLAAS_CONTROLLER_INTERVAL_SECONDS": "0.5",
                "DLAAS_METRICS_POLL_SECONDS": "0.3",
            }
        )
        if self.work_dir:
            env["DLAAS_WORK_DIR"] = str(self.work_dir)
        env.update(environment_env())
        env.update(self.settings)
        return env

    @property
    def store_root(self) -> Path:
        return self.home / "store"

    @property
    def artifact_dir(self) -> Path:
        return self.home / "artifacts" / "dlaas-artifacts"

    def bucket(self, name: str, path: str = "tests") -> Path:
        folder = self.store_root / path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def stop(self, pid: int, timeout: float = 20) -> None:
        stop_pid(pid, timeout=timeout)
        if pid in self.pids:
            self.pids.remove(pid)

    def stop_all(self) -> None:
        for pid in reversed(self.pids):
            stop_pid(pid, timeout=20)
        self.pids.clear()
        if self.work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def start(self, argv: list[str], name: str, ready, **env: str) -> int:
        log = self.home / "logs" / f"{name}.log"
        pid = spawn(argv, log, env=dict(self.env, **env), cwd=ROOT)
        self.pids.append(pid)
        wait_until(ready, 60, name, pid=pid, log_path=log)
        return pid

    def start_worker(self, name: str, gpus: str, *extra: str, **env: str) -> int:
        log = self.home / "logs" / f"{name}.log"
        argv = [str(BIN / "dlaas-worker"), "--name", name, "--gpus", gpus, *extra]
        return self.start(argv, name, lambda: log_says(log, "ready."), **env)

    def start_reconciler(self, name: str = "reconciler", **env: str) -> int:
        log = self.home / "logs" / f"{name}.log"
        return self.start(
            [str(BIN / "dlaas-reconciler")], name, lambda: log_says(log, "reconciler active"), **env
        )

    def start_controller(self, name: str = "controller", standby: bool = False, **env) -> int:
        """The experiment controller; `standby`: one started while another is active."""
        log = self.home / "logs" / f"{name}.log"
        says = "standing by" if standby else "controller active"
        return self.start([str(BIN / "dlaas-controller")], name, lambda: log_says(log, says), **env)

    def headers(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def submit(self, manifest: str, user: str = "alice") -> str:
        """POST /v3/models with `manifest` and a one-file zip; the new run's id (201 or fail)."""
        answer = requests.post(
            f"{self.api_url}/v3/models",
            files={
                "model_definition": ("m.zip", make_zip({"train.sh": "echo hi\n"})),
                "manifest": ("m.yml", manifest),
            },
            headers=self.headers(user),
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["model_id"]

    def wait_ended(self, run_id: str, timeout: float = 120, user: str = "alice") -> dict:
        """The run as `show` gives it once it has ended (polled, bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = requests.get(
                f"{self.api_url}/v3/models/{run_id}", headers=self.headers(user), timeout=5
            ).json()
            if shown["state"] in ("COMPLETED", "FAILED", "HALTED"):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{run_id} did not end")

    def start_api(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.start(api_argv(BIN, port), "api", lambda: http_ok(url + "/health"))
        self.api_url = url
        return url

    @contextmanager
    def api(self, name: str, **env: str):
        """Another API process of this service, with `env` added to its settings."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.home / "logs" / f"{name}.log"
        pid = spawn(api_argv(BIN, port, workers=1), log, env=dict(self.env, **env), cwd=ROOT)
        try:
            wait_until(lambda: port_open(port), 60, name, pid=pid, log_path=log)
            yield url
        finally:
            stop_pid(pid)


# Runs run as an unprivileged user when the suite runs as root (the default worker's user,
# and a second worker's, for the isolation tests).
RUN_USERS = ("dlaas-run", "dlaas-run-1", "dlaas-run-2", "dlaas-run-3")


class _SharedEnvironments:
    """One environment cache for the whole session (a folder the run users reach, uv's cache
    beside it) and this machine's package sources from pip's configuration: each test's
    worker or stack uses it, so an environment is built once a session."""

    root: Path | None = None

    @classmethod
    def values(cls) -> dict:
        if cls.root is None:
            from deploy.pipsources import package_settings

            cls.root = Path(tempfile.mkdtemp(prefix="dlaas-test-envs-"))
            cls.root.chmod(0o711)
            (cls.root / "environments").mkdir(mode=0o711)
            cls.sources = package_settings()
            if os.geteuid() == 0:
                from deploy import runuser

                for name in RUN_USERS:
                    runuser.ensure(name, [cls.root / "environments"])
        from common.settings import Settings

        # The sources read as a worker reads its DLAAS_PACKAGE_* variables.
        read = Settings.from_env(cls.sources, home=cls.root, secret_key="unused")
        sources = {
            name: getattr(read, name) for name in Settings.model_fields if "package_" in name
        }
        return {
            "environment_dir": cls.root / "environments",
            "uv_cache_dir": cls.root / "uv-cache",
            **sources,
        }


def environment_values() -> dict:
    """Settings keyword arguments for the session's environment cache and package sources."""
    return _SharedEnvironments.values()


def environment_env() -> dict[str, str]:
    """The same as DLAAS_* variables, for the processes a test starts."""
    from common.settings import variables

    out = {}
    for name, value in environment_values().items():
        if value:
            out[variables(name)[0]] = ",".join(value) if isinstance(value, tuple) else str(value)
    return out


@pytest.fixture(scope="session", autouse=True)
def _remove_shared_environments():
    yield
    if _SharedEnvironments.root is not None:
        subprocess.run(["chmod", "-R", "u+w", str(_SharedEnvironments.root)], check=False)
        shutil.rmtree(_SharedEnvironments.root, ignore_errors=True)


def reachable_work_dir() -> Path:
    """A fresh work directory the run users can reach (pytest's own temp folders are 0700),
    the run users created if missing and able to run this Python."""
    work = Path(tempfile.mkdtemp(prefix="dlaas-test-work-"))
    work.chmod(0o711)
    if os.geteuid() == 0:
        from deploy import runuser

        for name in RUN_USERS:
            runuser.ensure(name, [work, *runuser.python_paths()])
    return work


@pytest.fixture
def run_work_dir() -> Path:
    work = reachable_work_dir()
    yield work
    shutil.rmtree(work, ignore_errors=True)


def new_stack(redis_server: RedisServer, home: Path) -> Stack:
    tokens = {"alice": secrets.token_urlsafe(16), "bob": secrets.token_urlsafe(16)}
    write_tokens_file(home / "tokens.json", {t: u for u, t in tokens.items()})
    stack = Stack(redis_server, home, Fernet.generate_key().decode(), tokens)
    stack.work_dir = reachable_work_dir()
    return stack


@contextmanager
def module_stack(tmp_path_factory, name: str, persist: bool = False):
    """A stack of a test module's own (its Redis, with AOF when `persist`, and its API;
    local buckets data and results), so that what it kills and restarts, and the workers it
    starts, touch no other test."""
    redis_server = start_redis(tmp_path_factory.mktemp(f"{name}-redis"), persist=persist)
    stack = new_stack(redis_server, tmp_path_factory.mktemp(f"{name}-home"))
    stack.bucket("data")
    stack.bucket("results")
    stack.start_api()
    try:
        yield stack
    finally:
        stack.stop_all()
        redis_server.stop()


@contextmanager
def stopped_after(stack: Stack):
    """The processes a test starts on `stack` (workers, reconcilers), stopped when it ends."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            stack.stop(pid)


@pytest.fixture(scope="session")
def stack(redis_server, tmp_path_factory) -> Stack:
    st = new_stack(redis_server, tmp_path_factory.mktemp("dlaas-home"))
    try:
        yield st
    finally:
        st.stop_all()


@pytest.fixture(scope="session")
def api_url(stack) -> str:
    return stack.start_api()


@pytest.fixture(scope="session")
def workers(stack, api_url) -> dict[str, str]:
    """A one-GPU worker (serves small) and a two-GPU worker (serves medium), GPUs declared."""
    stack.start_worker("small-worker@test", "0")
    stack.start_worker("medium-worker@test", "1,2", "--sizes", "medium")
    return {"small": "small-worker@test", "medium": "medium-worker@test"}


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ", re.M)


def unstamped(log_text: str) -> str:
    """A stored log without the UTC stamp the pump puts before each line."""
    assert all(STAMP.match(line) for line in log_text.splitlines()), log_text[:500]
    return STAMP.sub("", log_text)


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def manifest_yaml(
    command: str = "echo hello",
    resource: str = "small",
    data_bucket: str = "data",
    results_bucket: str = "results",
    name: str = "test-run",
    store_path: str = "tests",
    framework: tuple[str, str] = ("python", "3.11"),
) -> str:
    return f"""
model_definition:
  name: {name}
  framework: {{name: {framework[0]}, version: "{framework[1]}"}}
  execution:
    command: {json.dumps(command)}
    resource: {resource}
training_data_reference:
- connection: {{path: {store_path}}}
  source: {{bucket: {data_bucket}, type: local}}
training_results_reference:
  connection: {{path: {store_path}}}
  target: {{bucket: {results_bucket}, type: local}}
"""


def bare_run(size: ResourceSize, user: str = "alice", gpu_count: int | None = None) -> Run:
    """A PENDING run record of `size` whose command is `true`, as the API would store it,
    without a zip or a manifest: for the stores, the index and the fleet's benchmarks."""
    return Run(
        id=new_run_id(),
        user=user,
        name="r",
        state=RunState.PENDING,
        framework_name="python",
        framework_version="3.11",
        resource=size,
        gpu_count=DEFAULT_SIZE_GPUS[size] if gpu_count is None else gpu_count,
        command="true",
        submitted_at=iso(utcnow()),
    )
