"""The embedded single-machine stack: Redis, the API (gunicorn), one worker and Flower.

    python deploy/stack.py up       start what is not running; write .dlaas/env
    python deploy/stack.py down     stop every process it started, by pid
    python deploy/stack.py status

State lives in `.dlaas/` (DLAAS_HOME): config.env (generated key and passwords, mode 600),
tokens.json, pids/, logs/, redis/, artifacts/, work/, store/.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.tokens import write_tokens_file  # noqa: E402
from deploy import keystone, runuser, swift  # noqa: E402
from deploy.processes import (  # noqa: E402
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

HOME = Path(os.environ.get("DLAAS_HOME", ROOT / ".dlaas")).resolve()
BIN = Path(sys.executable).parent
REDIS_PORT = int(os.environ.get("DLAAS_STACK_REDIS_PORT", "16379"))
API_PORT = int(os.environ.get("DLAAS_STACK_API_PORT", "18080"))
FLOWER_PORT = int(os.environ.get("DLAAS_STACK_FLOWER_PORT", "15555"))
SWIFT_PORT = int(os.environ.get("DLAAS_STACK_SWIFT_PORT", "18081"))
ORDER = ("redis", "api", "worker", "reconciler", "flower")


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


def redis_url(config: dict[str, str]) -> str:
    return f"redis://:{config['DLAAS_REDIS_PASSWORD']}@127.0.0.1:{REDIS_PORT}/0"


def _service_env(config: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DLAAS_HOME": str(HOME),
            "DLAAS_REDIS_URL": redis_url(config),
            "DLAAS_SECRET_KEY": config["DLAAS_SECRET_KEY"],
            "DLAAS_TOKENS_FILE": str(HOME / "tokens.json"),
        }
    )
    return env


def _run_user() -> None:
    """As root, the worker runs runs as DLAAS_RUN_AS: make sure it exists and can reach the
    work directory and the service's Python, and that it can list nothing else of HOME."""
    if os.geteuid() != 0:
        print(f"  {'run user':<11}not root: runs will run as {os.environ.get('USER', 'you')}")
        return
    name = os.environ.get("DLAAS_RUN_AS", "dlaas-run")
    work = Path(os.environ.get("DLAAS_WORK_DIR", HOME / "work"))
    work.mkdir(parents=True, exist_ok=True)
    HOME.chmod(0o711)
    for private in ("redis", "logs", "pids", "artifacts", "store"):
        (HOME / private).mkdir(exist_ok=True)
        (HOME / private).chmod(0o700)
    try:
        done = runuser.ensure(name, [work, *runuser.python_paths()])
    except runuser.RunUserSetupError as exc:
        raise StartError(f"run user: {exc}") from None
    for line in done:
        print(f"  {'run user':<11}{line}")
    print(f"  {'run user':<11}runs run as {name}")


def up() -> None:
    # Swift (Swift API + S3 API) for runs whose manifests name s3 or bluemix_objectstore
    # stores; the embedded default (the example) uses the local store.
    started = swift.up(HOME / "swift", SWIFT_PORT)
    print(
        f"  {'swift':<11}{started['s3_endpoint']} (S3 key test:tester, secret testing; "
        f"Swift auth {started['auth_v1']})"
    )
    ks = keystone.up(HOME / "keystone", HOME / "swift")
    print(
        f"  {'keystone':<11}{ks['auth_url']} (user tester, password testerpw, project id "
        f"{ks['project_id']}, domain Default, region RegionOne)"
    )
    config = _config()
    _run_user()
    # Only the token's hash is kept on the server side; the demo user administers its stack.
    write_tokens_file(
        HOME / "tokens.json", {config["DLAAS_DEMO_TOKEN"]: "demo"}, {"demo": {"role": "admin"}}
    )
    env = _service_env(config)
    host = socket.gethostname()
    commands = {
        "redis": redis_argv(
            REDIS_PORT, HOME / "redis", persist=True, password=config["DLAAS_REDIS_PASSWORD"]
        ),
        "api": api_argv(BIN, API_PORT, workers=2, access_log=True),
        "worker": [str(BIN / "dlaas-worker"), "--name", f"dlaas-worker-1@{host}"],
        "reconciler": [str(BIN / "dlaas-reconciler")],
        # Its password and the broker URL go in its environment, not on its command line
        # (which every local user, a run included, can read in /proc).
        "flower": [
            str(BIN / "celery"),
            "flower",
            "--address=127.0.0.1",
            f"--port={FLOWER_PORT}",
        ],
    }
    own_env = {
        "flower": {
            "CELERY_BROKER_URL": env["DLAAS_REDIS_URL"],
            "CELERY_RESULT_BACKEND": env["DLAAS_REDIS_URL"],
            "FLOWER_BASIC_AUTH": f"{config['DLAAS_FLOWER_USER']}:{config['DLAAS_FLOWER_PASSWORD']}",
        }
    }
    flower_url = f"http://127.0.0.1:{FLOWER_PORT}/healthcheck"
    ready = {
        "redis": lambda: port_open(REDIS_PORT),
        "api": lambda: http_ok(f"http://127.0.0.1:{API_PORT}/health"),
        "worker": lambda: log_says(_log("worker"), "ready."),
        "reconciler": lambda: log_says(_log("reconciler"), "reconciler active"),
        "flower": lambda: http_ok(flower_url),
    }
    for name in ORDER:
        if _running(name):
            print(f"  {name:<11}already running (pid {_running(name)})")
            continue
        if name in ("worker", "reconciler") and _log(name).exists():
            _log(name).unlink()  # their readiness is read from their fresh log
        pid = spawn(commands[name], _log(name), env={**env, **own_env.get(name, {})}, cwd=ROOT)
        _pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        _pid_file(name).write_text(str(pid))
        wait_until(ready[name], 60, name, pid=pid, log_path=_log(name))
        print(f"  {name:<11}started (pid {pid}, log {_shown(_log(name))})")
    url = f"http://127.0.0.1:{API_PORT}"
    (HOME / "env").write_text(
        f"export DLAAS_URL={url}\nexport DLAAS_TOKEN={config['DLAAS_DEMO_TOKEN']}\n"
        f"export DLAAS_S3_ENDPOINT=http://127.0.0.1:{SWIFT_PORT}\n"
    )
    (HOME / "env").chmod(0o600)
    print(
        f"dlaas is up: API {url}, Flower http://127.0.0.1:{FLOWER_PORT} "
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


def main() -> int:
    verb = sys.argv[1] if len(sys.argv) > 1 else "status"
    try:
        if verb == "up":
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
