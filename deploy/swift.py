"""A real OpenStack Swift all-in-one on 127.0.0.1, answering both the Swift API (tempauth)
and the S3 API (s3api), for development, the tests and the embedded stack.

    python -m deploy.swift up [--home DIR] [--port PORT]    start (idempotent); prints its env
    python -m deploy.swift down [--home DIR]                 stop exactly the pids it started

Swift comes from PyPI into its own venv (.dlaas/swift-venv, kept), memcached from Debian
(tempauth keeps its tokens there). One device on a local folder, rings with one replica built
at start, each server a single process (workers = 0). Accounts (tempauth):
  test:tester / testing   (.admin of AUTH_test; S3 access key "test:tester", secret "testing")
  test2:tester2 / testing2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from deploy.ports import free_port
from deploy.processes import (
    StartError,
    recorded_state,
    server_venv,
    spawn,
    stop_pid,
    stop_recorded,
    wait_listening,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
SWIFT_VERSION = "2.38.3"
SERVERS = ("object", "container", "account", "proxy")
# The ports it binds, by server: the proxy's is the one clients use (S3 and Swift API).
PORTS = {
    "proxy": "swift proxy",
    "object": "swift object server",
    "container": "swift container server",
    "account": "swift account server",
    "memcached": "swift's memcached",
}
S3_KEY, S3_SECRET = "test:tester", "testing"


def venv_bin() -> Path:
    """Swift's venv, shared by every Swift this checkout starts (tests, stack)."""
    venv = Path(os.environ.get("DLAAS_SWIFT_VENV", ROOT / ".dlaas" / "swift-venv"))
    return server_venv(venv, "swift-proxy-server", [f"swift=={SWIFT_VERSION}"])


def _memcached() -> str:
    found = shutil.which("memcached")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-qq", "memcached"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
        found = shutil.which("memcached")
    if not found:
        raise StartError("memcached is needed by Swift's tempauth: apt-get install memcached")
    return found


def _write_configs(home: Path, ports: dict[str, int]) -> None:
    etc, devices = home / "etc", home / "srv"
    (devices / "d1").mkdir(parents=True, exist_ok=True)
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = dlaas-test\nswift_hash_path_prefix = dlaas\n"
        "[storage-policy:0]\nname = default\ndefault = yes\n"
        "[swift-constraints]\nmax_file_size = 5368709122\n"
    )
    common = (
        f"[DEFAULT]\nbind_ip = 127.0.0.1\nworkers = 0\nmount_check = false\n"
        f"devices = {devices}\nswift_dir = {etc}\nlog_facility = LOG_LOCAL0\n"
        f"log_level = WARNING\nlog_address = /nonexistent\n"
    )
    for kind in ("object", "container", "account"):
        (etc / f"{kind}-server.conf").write_text(
            common + f"bind_port = {ports[kind]}\n\n[pipeline:main]\npipeline = {kind}-server\n\n"
            f"[app:{kind}-server]\nuse = egg:swift#{kind}\n"
            + (
                "\n[object-replicator]\n[object-updater]\n[object-auditor]\n"
                if kind == "object"
                else f"\n[{kind}-replicator]\n[{kind}-auditor]\n"
            )
        )
    (etc / "proxy-server.conf").write_text(
        common + f"bind_port = {ports['proxy']}\n\n"
        "[pipeline:main]\n"
        "pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
        "s3api tempauth copy slo dlo proxy-logging proxy-server\n\n"
        "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
        "[filter:catch_errors]\nuse = egg:swift#catch_errors\n"
        "[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n"
        "[filter:healthcheck]\nuse = egg:swift#healthcheck\n"
        "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n"
        "[filter:cache]\nuse = egg:swift#memcache\n"
        f"memcache_servers = 127.0.0.1:{ports['memcached']}\n"
        "[filter:listing_formats]\nuse = egg:swift#listing_formats\n"
        "[filter:s3api]\nuse = egg:swift#s3api\nlocation = us-east-1\n"
        "[filter:tempauth]\nuse = egg:swift#tempauth\n"
        "user_test_tester = testing .admin\nuser_test2_tester2 = testing2 .admin\n"
        "[filter:copy]\nuse = egg:swift#copy\n"
        "[filter:slo]\nuse = egg:swift#slo\n"
        "[filter:dlo]\nuse = egg:swift#dlo\n"
    )


def _build_rings(bin_dir: Path, home: Path, ports: dict[str, int]) -> None:
    etc = home / "etc"
    for kind in ("object", "container", "account"):
        builder = etc / f"{kind}.builder"
        for f in (builder, etc / f"{kind}.ring.gz"):
            f.unlink(missing_ok=True)
        ring = str(bin_dir / "swift-ring-builder")
        subprocess.run(
            [ring, str(builder), "create", "8", "1", "1"], check=True, capture_output=True
        )
        subprocess.run(
            [ring, str(builder), "add", f"r1z1-127.0.0.1:{ports[kind]}/d1", "100"],
            check=True,
            capture_output=True,
        )
        subprocess.run([ring, str(builder), "rebalance"], capture_output=True)


def _state_file(home: Path) -> Path:
    return home / "state.json"


def running(home: Path) -> dict | None:
    """The state of the Swift an earlier `up` started in `home`, if all of it still runs."""
    return recorded_state(_state_file(home))


def up(home: Path, ports: dict[str, int] | None = None) -> dict:
    """Starts Swift in `home` unless it runs there already. `ports` (by the names of PORTS)
    are bound as given; the others are chosen free."""
    home.mkdir(parents=True, exist_ok=True)
    state = running(home)
    if state is not None:
        return state
    bin_dir = venv_bin()
    ports = {name: (ports or {}).get(name) or free_port() for name in PORTS}
    _write_configs(home, ports)
    _build_rings(bin_dir, home, ports)
    pids: dict[str, int] = {}
    logs = home / "logs"
    try:
        pids["memcached"] = spawn(
            [
                _memcached(),
                "-l",
                "127.0.0.1",
                "-p",
                str(ports["memcached"]),
                "-U",
                "0",
                "-m",
                "64",
                "-u",
                "root",
            ],
            logs / "memcached.log",
        )
        for kind in SERVERS:
            pids[kind] = spawn(
                [str(bin_dir / f"swift-{kind}-server"), str(home / "etc" / f"{kind}-server.conf")],
                logs / f"{kind}.log",
            )
        for kind in ("memcached", *SERVERS):
            wait_listening(pids[kind], ports[kind], 30, f"swift {kind}", logs / f"{kind}.log")
        url = f"http://127.0.0.1:{ports['proxy']}"
        wait_until(lambda: _healthy(url), 30, "swift proxy healthcheck")
    except Exception:
        for pid in pids.values():
            stop_pid(pid)
        raise
    state = {
        "pids": pids,
        "ports": ports,
        "home": str(home),
        "url": f"http://127.0.0.1:{ports['proxy']}",
        "auth_v1": f"http://127.0.0.1:{ports['proxy']}/auth/v1.0",
        "s3_endpoint": f"http://127.0.0.1:{ports['proxy']}",
    }
    _state_file(home).write_text(json.dumps(state, indent=2))
    return state


def s3_client(endpoint: str, session=None):
    """A boto3 S3 client of this Swift's S3 API (path-style, account test:tester), made from
    `session` (default: boto3's own)."""
    import boto3
    from botocore.config import Config

    make = session.client if session is not None else boto3.client
    return make(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def down(home: Path) -> None:
    stop_recorded(_state_file(home))  # the proxy first, memcached last


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("verb", choices=("up", "down"))
    parser.add_argument("--home", type=Path, default=ROOT / ".dlaas" / "swift")
    parser.add_argument("--port", type=int, default=None, help="proxy port (default: free)")
    args = parser.parse_args()
    try:
        if args.verb == "up":
            started = time.monotonic()
            state = up(args.home.resolve(), {"proxy": args.port} if args.port else None)
            print(
                f"swift up in {time.monotonic() - started:.1f} s: {state['url']} "
                f"(Swift v1 auth {state['auth_v1']}, S3 endpoint {state['s3_endpoint']})"
            )
        else:
            down(args.home.resolve())
            print("swift down")
    except StartError as exc:
        print(f"swift: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
