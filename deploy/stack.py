"""The embedded single-machine stack: Swift, Keystone, Redis, the API (gunicorn), one worker,
the reconciler and Flower.

    python -m deploy.stack up       start what is not running; write .dlaas/env
    python -m deploy.stack down     stop every process it started, by pid
    python -m deploy.stack status

Every port it will bind is checked free before anything starts (a port taken fails `up` at
once, naming the port, its holder when it can be seen, and the setting that moves it); a
failed `up` stops what it started.

State lives in `.dlaas/` (DLAAS_HOME): config.env (generated key and passwords, mode 600),
tokens.json, pids/, logs/, redis/, artifacts/, work/, store/, environments/ (the run
environments the worker builds with uv), uv-cache/.

The worker builds run environments from this machine's package sources as pip is configured
(`python -m deploy.pipsources`), unless DLAAS_PACKAGE_* variables say otherwise.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
from functools import partial
from pathlib import Path

from common.settings import Settings, SettingsError, variables
from common.tokens import write_tokens_file
from deploy import keystone, pipsources, ports, runuser, swift
from deploy.processes import (
    StartError,
    alive,
    api_argv,
    http_ok,
    log_says,
    port_open,
    redis_argv,
    spawn,
    stop_pid,
    wait_until,
)
from worker.gpus import discover_gpus
from worker.runuser import slot_user

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("DLAAS_HOME", ROOT / ".dlaas")).resolve()
BIN = Path(sys.executable).parent
# The ports it binds that a setting moves: (setting, default; 0: a free one at each start).
# Swift's object, container and account servers and its memcached get free ones.
PORT_SETTINGS = {
    "redis": ("DLAAS_STACK_REDIS_PORT", 16379),
    "api": ("DLAAS_STACK_API_PORT", 18080),
    "flower": ("DLAAS_STACK_FLOWER_PORT", 15555),
    "swift": ("DLAAS_STACK_SWIFT_PORT", 18081),
    "keystone": ("DLAAS_STACK_KEYSTONE_PORT", 0),
    "keystone swift proxy": ("DLAAS_STACK_KEYSTONE_SWIFT_PORT", 0),
}


def _setting_port(name: str) -> int:
    setting, default = PORT_SETTINGS[name]
    raw = os.environ.get(setting, str(default)).strip()
    if not raw.isdigit() or int(raw) > 65535 or (int(raw) == 0 and default):
        raise StartError(f"{setting}: not a port number: {raw!r}")
    return int(raw)


ORDER = ("redis", "api", "worker", "reconciler", "controller", "flower")


def _pid_file(name: str) -> Path:
    return HOME / "pids" / f"{name}.pid"


def _log(name: str) -> Path:
    return HOME / "logs" / f"{name}.log"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _running(name: str) -> int | None:
    try:
        pid = int(_pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def _config() -> dict[str, str]:
    """Generated once, then kept: the encryption key, the demo token, Flower's password."""
    path = HOME / "config.env"
    if not path.exists():
        from cryptography.fernet import Fernet

        HOME.mkdir(parents=True, exist_ok=True)
        values = {
            "DLAAS_SECRET_KEY": Fernet.generate_key().decode(),
            "DLAAS_DEMO_TOKEN": secrets.token_urlsafe(24),
            "DLAAS_FLOWER_USER": "admin",
            "DLAAS_FLOWER_PASSWORD": secrets.token_urlsafe(12),
            "DLAAS_REDIS_PASSWORD": secrets.token_urlsafe(24),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in values.items())
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    if "DLAAS_REDIS_PASSWORD" not in values:  # a home made before Redis had a password
        values["DLAAS_REDIS_PASSWORD"] = secrets.token_urlsafe(24)
        with open(path, "a") as f:
            f.write(f"DLAAS_REDIS_PASSWORD={values['DLAAS_REDIS_PASSWORD']}\n")
    return values


def redis_url(config: dict[str, str], port: int) -> str:
    return f"redis://:{config['DLAAS_REDIS_PASSWORD']}@127.0.0.1:{port}/0"


def _service_env(config: dict[str, str], redis_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DLAAS_HOME": str(HOME),
            "DLAAS_REDIS_URL": redis_url(config, redis_port),
            "DLAAS_SECRET_KEY": config["DLAAS_SECRET_KEY"],
            "DLAAS_TOKENS_FILE": str(HOME / "tokens.json"),
        }
    )
    return env


# Where environment builds take packages from: every DLAAS_PACKAGE_* setting.
PACKAGE_SETTINGS = tuple(name for name in Settings.model_fields if name.startswith("package_"))


def _package_env() -> dict[str, str]:
    """The worker's package sources: none added when the user set any DLAAS_PACKAGE_* (theirs
    stand as given), else this machine's pip configuration (so builds use its local indexes
    and wheels, and nothing is fetched from PyPI when pip names only local ones)."""
    names = [variable for name in PACKAGE_SETTINGS for variable in variables(name)]
    own = {name: os.environ[name] for name in names if os.environ.get(name)}
    if own:
        print(f"  {'packages':<11}sources as set: {', '.join(sorted(own))}")
        return {}
    found = pipsources.package_settings()
    shown = ", ".join(f"{k.removeprefix('DLAAS_PACKAGE_').lower()} {v}" for k, v in found.items())
    print(f"  {'packages':<11}sources from pip's configuration: {shown or 'none (PyPI)'}")
    return found


def _run_user(env: dict[str, str]) -> None:
    """As root, the worker runs runs as DLAAS_RUN_AS: make sure it exists and can reach the
    work directory, the environment cache (the runs' Pythons) and the service's Python, and
    that it can list nothing else of HOME."""
    if os.geteuid() != 0:
        print(f"  {'run user':<11}not root: runs will run as {os.environ.get('USER', 'you')}")
        return
    name = os.environ.get("DLAAS_RUN_AS", "dlaas-run")
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        raise StartError(f"settings: {exc}") from None
    work, environments = settings.work_dir, settings.environment_dir
    work.mkdir(parents=True, exist_ok=True)
    environments.mkdir(parents=True, exist_ok=True)
    HOME.chmod(0o711)
    for private in ("redis", "logs", "pids", "artifacts", "store"):
        (HOME / private).mkdir(exist_ok=True)
        (HOME / private).chmod(0o700)
    # The worker runs up to one run per GPU at once, each slot as its own run user.
    names = [slot_user(name, slot) for slot in range(max(1, len(discover_gpus())))]
    try:
        done = []
        for each in names:
            done += runuser.ensure(each, [work, environments, *runuser.python_paths()])
    except runuser.RunUserSetupError as exc:
        raise StartError(f"run user: {exc}") from None
    for line in done:
        print(f"  {'run user':<11}{line}")
    print(f"  {'run user':<11}runs run as {', '.join(names)}")


def _port_plan() -> tuple[dict[str, int], list[ports.Port], dict[str, dict[str, int]]]:
    """Every port this `up` will bind, for what is not running yet: (the stack's own ports by
    name, all of them with what binds each and its setting, Swift's and Keystone's by their
    names). The set ones are reserved first, so that none is chosen for another server."""
    own = {name: _setting_port(name) for name in PORT_SETTINGS}
    ports.reserve(*filter(None, own.values()))
    plan: list[ports.Port] = []

    def bind(name: str | None, what: str) -> int:
        """The port `what` will bind: the one PORT_SETTINGS[name] sets, else a free one."""
        if own.get(name):
            plan.append(ports.Port(own[name], what, PORT_SETTINGS[name][0]))
            return own[name]
        plan.append(ports.Port(ports.free_port(), what))
        return plan[-1].number

    for name in ("redis", "api", "flower"):
        if not _running(name):
            bind(name, name)
    chosen: dict[str, dict[str, int]] = {"swift": {}, "keystone": {}}
    if swift.running(HOME / "swift") is None:
        chosen["swift"] = {
            server: bind("swift" if server == "proxy" else None, what)
            for server, what in swift.PORTS.items()
        }
    if keystone.running(HOME / "keystone") is None:
        setting_of = {"keystone": "keystone", "proxy": "keystone swift proxy"}
        chosen["keystone"] = {
            server: bind(setting_of[server], what) for server, what in keystone.PORTS.items()
        }
    return own, plan, chosen


def _check_ports(plan: list[ports.Port]) -> None:
    """Refuses, before anything starts, a port named twice or one something else holds."""
    problems = []
    seen: dict[int, ports.Port] = {}
    for port in plan:
        if port.number in seen:
            other = seen[port.number]
            problems.append(
                f"port {port.number} is set for both {other.what} ({other.setting}) and "
                f"{port.what} ({port.setting}): give each its own"
            )
        seen[port.number] = port
    problems += ports.taken(plan)
    if problems:
        raise StartError("nothing started:\n  " + "\n  ".join(problems))


def up() -> None:
    own, plan, chosen = _port_plan()
    _check_ports(plan)
    started: list[str] = []
    try:
        _start(own, chosen, started)
    except BaseException:
        # Leave nothing half up: what this `up` started is stopped (what ran before stays).
        for name in reversed(started):
            if name == "swift":
                swift.down(HOME / "swift")
            elif name == "keystone":
                keystone.down(HOME / "keystone")
            else:
                pid = _running(name)
                if pid:
                    stop_pid(pid, timeout=10)
                _pid_file(name).unlink(missing_ok=True)
            print(f"  {name:<11}stopped (up failed)")
        raise


def _start(own: dict[str, int], chosen: dict[str, dict[str, int]], started: list[str]) -> None:
    # Swift (Swift API + S3 API) for runs whose manifests name s3 or bluemix_objectstore
    # stores; the embedded default (the example) uses the local store.
    if chosen["swift"]:
        started.append("swift")
    swift_state = swift.up(HOME / "swift", chosen["swift"])
    print(
        f"  {'swift':<11}{swift_state['s3_endpoint']} (S3 key test:tester, secret testing; "
        f"Swift auth {swift_state['auth_v1']})"
    )
    if chosen["keystone"]:
        started.append("keystone")
    ks = keystone.up(HOME / "keystone", HOME / "swift", chosen["keystone"])
    print(
        f"  {'keystone':<11}{ks['auth_url']} (user tester, password testerpw, project id "
        f"{ks['project_id']}, domain Default, region RegionOne)"
    )
    config = _config()
    env = _service_env(config, own["redis"])
    _run_user(env)
    # Only the token's hash is kept on the server side; the demo user administers its stack.
    write_tokens_file(
        HOME / "tokens.json", {config["DLAAS_DEMO_TOKEN"]: "demo"}, {"demo": {"role": "admin"}}
    )
    host = socket.gethostname()
    commands = {
        "redis": redis_argv(
            own["redis"], HOME / "redis", persist=True, password=config["DLAAS_REDIS_PASSWORD"]
        ),
        "api": api_argv(BIN, own["api"], workers=2, access_log=True),
        "worker": [str(BIN / "dlaas-worker"), "--name", f"dlaas-worker-1@{host}"],
        "reconciler": [str(BIN / "dlaas-reconciler")],
        "controller": [str(BIN / "dlaas-controller")],
        # Its password and the broker URL go in its environment, not on its command line
        # (which every local user, a run included, can read in /proc).
        "flower": [
            str(BIN / "celery"),
            "flower",
            "--address=127.0.0.1",
            f"--port={own['flower']}",
        ],
    }
    own_env = {
        "worker": _package_env() if not _running("worker") else {},
        "flower": {
            "CELERY_BROKER_URL": env["DLAAS_REDIS_URL"],
            "CELERY_RESULT_BACKEND": env["DLAAS_REDIS_URL"],
            "FLOWER_BASIC_AUTH": f"{config['DLAAS_FLOWER_USER']}:{config['DLAAS_FLOWER_PASSWORD']}",
        },
    }
    flower_url = f"http://127.0.0.1:{own['flower']}/healthcheck"
    # Each server is ready once it holds its own port (not when another answers there).
    ready = {
        "redis": lambda pid: ports.listening(pid, own["redis"]) and port_open(own["redis"]),
        "api": lambda pid: (
            ports.listening(pid, own["api"]) and http_ok(f"http://127.0.0.1:{own['api']}/health")
        ),
        "worker": lambda pid: log_says(_log("worker"), "ready."),
        "reconciler": lambda pid: log_says(_log("reconciler"), "reconciler active"),
        "controller": lambda pid: log_says(_log("controller"), "controller active"),
        "flower": lambda pid: ports.listening(pid, own["flower"]) and http_ok(flower_url),
    }
    for name in ORDER:
        if _running(name):
            print(f"  {name:<11}already running (pid {_running(name)})")
            continue
        if name in ("worker", "reconciler", "controller") and _log(name).exists():
            _log(name).unlink()  # their readiness is read from their fresh log
        pid = spawn(commands[name], _log(name), env={**env, **own_env.get(name, {})}, cwd=ROOT)
        _pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        _pid_file(name).write_text(str(pid))
        started.append(name)
        try:
            wait_until(partial(ready[name], pid), 60, name, pid=pid, log_path=_log(name))
        except StartError as exc:
            # Taken since the check (a server exits when it cannot bind): say by whom.
            if name in PORT_SETTINGS and not alive(pid) and not ports.is_free(own[name]):
                port = ports.Port(own[name], name, PORT_SETTINGS[name][0])
                raise StartError(f"{exc}\n{ports.describe_taken(port)}") from None
            raise
        print(f"  {name:<11}started (pid {pid}, log {_shown(_log(name))})")
    url = f"http://127.0.0.1:{own['api']}"
    (HOME / "env").write_text(
        f"export DLAAS_URL={url}\nexport DLAAS_TOKEN={config['DLAAS_DEMO_TOKEN']}\n"
        f"export DLAAS_S3_ENDPOINT={swift_state['s3_endpoint']}\n"
    )
    (HOME / "env").chmod(0o600)
    print(
        f"dlaas is up: API {url}, Flower http://127.0.0.1:{own['flower']} "
        f"(user {config['DLAAS_FLOWER_USER']}, password in .dlaas/config.env)"
    )
    print("  source .dlaas/env   # DLAAS_URL and the demo user's DLAAS_TOKEN")


def down() -> None:
    for name in reversed(ORDER):
        pid = _running(name)
        if pid:
            stop_pid(pid, timeout=30)
            print(f"  {name:<11}stopped (pid {pid})")
        _pid_file(name).unlink(missing_ok=True)
    keystone.down(HOME / "keystone")
    print(f"  {'keystone':<11}stopped")
    swift.down(HOME / "swift")
    print(f"  {'swift':<11}stopped")


def status() -> int:
    down_count = 0
    for name in ORDER:
        pid = _running(name)
        print(f"  {name:<11}{f'running (pid {pid})' if pid else 'stopped'}")
        down_count += not pid
    return 1 if down_count else 0


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)  # so that a stopped `up` stops what it started


def main() -> int:
    verb = sys.argv[1] if len(sys.argv) > 1 else "status"
    try:
        if verb == "up":
            signal.signal(signal.SIGTERM, _terminated)
            up()
        elif verb == "down":
            down()
        elif verb == "status":
            return status()
        else:
            print(__doc__)
            return 2
    except StartError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
