"""A real Keystone v3 on 127.0.0.1 (PyPI keystone, SQLite, fernet tokens, under gunicorn) and
a second Swift proxy that authenticates with it (keystonemiddleware's authtoken, then Swift's
keystoneauth), sharing the rings and storage servers of a running deploy/swift.py.

    python -m deploy.keystone up --swift-home DIR [--home DIR]
    python -m deploy.keystone down [--home DIR]

Accounts: admin / adminpw (project admin); tester / testerpw, member of project `dlaas`
(its Swift account AUTH_<project id>); the proxy's service user swift / swiftpw.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from deploy import swift
from deploy.ports import free_port
from deploy.processes import (
    StartError,
    recorded_state,
    server_venv,
    spawn,
    stop_pid,
    stop_recorded,
    wait_listening,
)

ROOT = Path(__file__).resolve().parents[1]
KEYSTONE_VERSION = "30.0.0"
# The ports it binds: Keystone's own (the auth URL), and its Swift proxy's (the catalog's).
PORTS = {"keystone": "keystone", "proxy": "keystone's swift proxy"}
WSGI = """import sys
sys.argv = sys.argv[:1]  # keystone reads argv with oslo.config: hide gunicorn's flags
from keystone.wsgi.api import application  # noqa: E402,F401
"""


def _venvs() -> tuple[Path, Path]:
    """Keystone's venv, and Swift's with keystonemiddleware added (for its second proxy)."""
    keystone = Path(os.environ.get("DLAAS_KEYSTONE_VENV", ROOT / ".dlaas" / "keystone-venv"))
    keystone_bin = server_venv(
        keystone, "keystone-manage", [f"keystone=={KEYSTONE_VERSION}", "gunicorn"]
    )
    swift_bin = swift.venv_bin()
    check = [str(swift_bin / "python"), "-c", "import keystonemiddleware"]
    if subprocess.run(check, capture_output=True).returncode != 0:
        subprocess.run(
            [str(swift_bin / "python"), "-m", "pip", "install", "-q", "keystonemiddleware"],
            check=True,
        )
    return keystone_bin, swift_bin


class _Admin:
    def __init__(self, url: str):
        self.url = url
        answer = requests.post(
            f"{url}/auth/tokens", timeout=30, json=_auth("admin", "adminpw", "admin")
        )
        answer.raise_for_status()
        self.headers = {"X-Auth-Token": answer.headers["X-Subject-Token"]}

    def create(self, kind: str, body: dict) -> str:
        answer = requests.post(
            f"{self.url}/{kind}s", json={kind: body}, headers=self.headers, timeout=30
        )
        answer.raise_for_status()
        return answer.json()[kind]["id"]

    def role(self, name: str) -> str:
        answer = requests.get(
            f"{self.url}/roles", params={"name": name}, headers=self.headers, timeout=30
        )
        answer.raise_for_status()
        return answer.json()["roles"][0]["id"]

    def grant(self, project: str, user: str, role: str) -> None:
        requests.put(
            f"{self.url}/projects/{project}/users/{user}/roles/{role}",
            headers=self.headers,
            timeout=30,
        ).raise_for_status()


def _auth(user: str, password: str, project: str) -> dict:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }
    }


def running(home: Path) -> dict | None:
    """The state of the Keystone an earlier `up` started in `home`, if all of it still runs."""
    return recorded_state(home / "state.json")


def up(home: Path, swift_home: Path, ports: dict[str, int] | None = None) -> dict:
    """Starts Keystone and its Swift proxy in `home` unless they run there already. `ports`
    (by the names of PORTS) are bound as given; the others are chosen free."""
    home.mkdir(parents=True, exist_ok=True)
    state = running(home)
    if state is not None:
        return state
    keystone_bin, swift_bin = _venvs()
    port = (ports or {}).get("keystone") or free_port()
    proxy_port = (ports or {}).get("proxy") or free_port()
    url = f"http://127.0.0.1:{port}/v3"
    conf = home / "keystone.conf"
    conf.write_text(
        f"[DEFAULT]\nlog_file = {home / 'keystone.log'}\n"
        f"[database]\nconnection = sqlite:///{home / 'keystone.db'}\n"
        f"[token]\nprovider = fernet\n"
        f"[fernet_tokens]\nkey_repository = {home / 'fernet-keys'}\n"
        f"[fernet_receipts]\nkey_repository = {home / 'fernet-keys'}\n"
        f"[credential]\nkey_repository = {home / 'credential-keys'}\n"
    )
    (home / "keystone_wsgi.py").write_text(WSGI)
    # Each start gets new ports, and with them new endpoints: the identities are made anew
    # too (a database kept from an earlier start would refuse them as duplicates, 409).
    (home / "keystone.db").unlink(missing_ok=True)
    manage = [str(keystone_bin / "keystone-manage"), "--config-file", str(conf)]
    user = ["--keystone-user", "root", "--keystone-group", "root"]
    for step in (
        ["db_sync"],
        ["fernet_setup", *user],
        ["credential_setup", *user],
        [
            "bootstrap",
            "--bootstrap-password",
            "adminpw",
            "--bootstrap-region-id",
            "RegionOne",
            "--bootstrap-admin-url",
            url,
            "--bootstrap-public-url",
            url,
            "--bootstrap-internal-url",
            url,
        ],
    ):
        subprocess.run([*manage, *step], check=True, capture_output=True)
    env = dict(os.environ, OS_KEYSTONE_CONFIG_FILES=str(conf))
    pids = {
        "keystone": spawn(
            [
                str(keystone_bin / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--chdir",
                str(home),
                "keystone_wsgi:application",
            ],
            home / "gunicorn.log",
            env=env,
        )
    }
    try:
        wait_listening(pids["keystone"], port, 60, "keystone", home / "gunicorn.log")
        admin = _Admin(url)
        service_project = admin.create("project", {"name": "service", "domain_id": "default"})
        project = admin.create("project", {"name": "dlaas", "domain_id": "default"})
        swift_user = admin.create(
            "user", {"name": "swift", "password": "swiftpw", "domain_id": "default"}
        )
        tester = admin.create(
            "user", {"name": "tester", "password": "testerpw", "domain_id": "default"}
        )
        admin.grant(service_project, swift_user, admin.role("admin"))
        admin.grant(project, tester, admin.role("member"))
        service = admin.create("service", {"name": "swift", "type": "object-store"})
        for interface in ("public", "internal", "admin"):
            admin.create(
                "endpoint",
                {
                    "service_id": service,
                    "interface": interface,
                    "region_id": "RegionOne",
                    "url": f"http://127.0.0.1:{proxy_port}/v1/AUTH_%(project_id)s",
                },
            )

        swift_conf = (swift_home / "etc" / "proxy-server.conf").read_text()
        swift_conf = re.sub(r"bind_port = \d+", f"bind_port = {proxy_port}", swift_conf)
        swift_conf = swift_conf.replace("s3api tempauth", "authtoken keystoneauth")
        swift_conf += (
            "[filter:authtoken]\npaste.filter_factory = keystonemiddleware.auth_token:"
            f"filter_factory\nwww_authenticate_uri = {url}\nauth_url = {url}\n"
            "auth_type = password\nproject_domain_name = Default\nuser_domain_name = Default\n"
            "project_name = service\nusername = swift\npassword = swiftpw\n"
            "delay_auth_decision = True\ninterface = public\n"
            "[filter:keystoneauth]\nuse = egg:swift#keystoneauth\n"
            "operator_roles = admin, member\n"
        )
        proxy_conf = home / "proxy-keystone.conf"
        proxy_conf.write_text(swift_conf)
        pids["proxy"] = spawn(
            [str(swift_bin / "swift-proxy-server"), str(proxy_conf)], home / "proxy.log"
        )
        wait_listening(pids["proxy"], proxy_port, 30, "keystone swift proxy", home / "proxy.log")
    except Exception:
        for pid in pids.values():
            stop_pid(pid)
        raise
    state = {
        "pids": pids,
        "auth_url": url,
        "project_id": project,
        "swift_url": f"http://127.0.0.1:{proxy_port}",
        "user": "tester",
        "password": "testerpw",
        "domain": "Default",
        "region": "RegionOne",
    }
    (home / "state.json").write_text(json.dumps(state, indent=2))
    return state


def down(home: Path) -> None:
    stop_recorded(home / "state.json")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("verb", choices=("up", "down"))
    parser.add_argument("--home", type=Path, default=ROOT / ".dlaas" / "keystone")
    parser.add_argument("--swift-home", type=Path, default=ROOT / ".dlaas" / "swift")
    args = parser.parse_args()
    try:
        if args.verb == "up":
            state = up(args.home.resolve(), args.swift_home.resolve())
            print(
                f"keystone up: {state['auth_url']} (project {state['project_id']}); "
                f"swift with keystone auth: {state['swift_url']}"
            )
        else:
            down(args.home.resolve())
            print("keystone down")
    except StartError as exc:  # one line naming what is missing, as swift.py says it
        print(f"keystone: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
