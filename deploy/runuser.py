"""Create the unprivileged users runs run as (DLAAS_RUN_AS), one per worker on a node, and
let them reach the folders runs need (the work directory, the service's Python).

    python -m deploy.runuser dlaas-run                      # the default run user
    python -m deploy.runuser dlaas-run-0-1 dlaas-run-2 --reach /var/lib/dlaas/work

Run as root. A user that exists is left as it is. `--reach PATH` grants search (x, never
read) on each directory above PATH that the user cannot pass: by ACL for that user when
`setfacl` is installed, otherwise to everyone (o+x); each change is printed.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
from pathlib import Path

# The worker checks the run user the same way: one definition of both.
from worker.runuser import USERADD, RunUser


class RunUserSetupError(Exception):
    pass


def ensure_user(name: str) -> bool:
    """Create `name` as a system user without home or login shell; True if it was created."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise RunUserSetupError(f"user {name!r} does not exist, and only root can create it")
    done = subprocess.run([*USERADD, name], capture_output=True, text=True)
    if done.returncode != 0:
        try:
            pwd.getpwnam(name)  # made at the same time by someone else
            return False
        except KeyError:
            raise RunUserSetupError(
                f"useradd {name}: {done.stderr.strip() or done.returncode}"
            ) from None
    return True


def grant_reach(name: str, path: Path) -> list[str]:
    """Let user `name` pass every directory on the way to `path` (search only), tried as the
    user itself (so ACLs count), as the worker tries it."""
    user = RunUser.named(name)
    changes: list[str] = []
    granted: set[Path] = set()
    while (folder := user.blocked_at(path)) is not None:
        if folder in granted:
            raise RunUserSetupError(f"{folder}: still not passable for {name} after the grant")
        granted.add(folder)
        if shutil.which("setfacl"):
            subprocess.run(["setfacl", "-m", f"u:{name}:x", str(folder)], check=True)
            changes.append(f"{folder}: search for {name} (ACL)")
        else:
            folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
            changes.append(f"{folder}: search for everyone (o+x; no setfacl here)")
    return changes


def python_paths() -> list[Path]:
    """What a run's Python must reach: this interpreter, its installed packages (numpy and
    the like, in the venv) and the worker's runtime folder (the sitecustomize on the run's
    PYTHONPATH). A checkout in a private folder (mktemp's are 0700) needs the last two."""
    from worker.process import RUNTIME_DIR

    packages = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    return [Path(sys.executable).resolve(), *packages, RUNTIME_DIR]


def ensure(name: str, reach: list[Path] = ()) -> list[str]:
    """The user, created if missing, able to reach `reach`; what was done, in words."""
    done = [f"created system user {name}"] if ensure_user(name) else []
    for path in reach:
        done += grant_reach(name, path)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.runuser", description=__doc__.splitlines()[0]
    )
    parser.add_argument("names", nargs="+", help="run users to create (DLAAS_RUN_AS values)")
    parser.add_argument(
        "--reach", action="append", default=[], type=Path, help="a folder they must reach"
    )
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            for line in ensure(name, args.reach):
                print(f"  {line}")
    except (RunUserSetupError, subprocess.CalledProcessError) as exc:
        print(f"runuser: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
