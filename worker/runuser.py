"""The unprivileged user a worker runs its runs as (DLAAS_RUN_AS), and the hand-over of a run's
directory to it and back.

The worker runs as root; each run's command runs as the run user with no supplementary
groups. Everything of a run is root's while data and model are staged; while the command runs
its folders are the run user's (0700) and the run directory and LOG_DIR stay root's (passable
and, for LOG_DIR, sticky and writable by the run user's group only), so the run can add logs
but never swap the files the worker writes and uploads for links to the worker's own files;
after it, all is root's again before anything is read back. A run user serves one worker.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from worker.rundirs import RunDirs

log = logging.getLogger(__name__)
USERADD = ("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin")
CREATE_COMMAND = " ".join(USERADD) + " {name}"
HELPER_COMMAND = "python -m deploy.runuser {name} --reach {path}"


class RunUserError(Exception):
    """The run user cannot be used: missing, or unable to reach the run directories."""


@dataclass(frozen=True)
class RunUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> RunUser:
        """The system user `name`; KeyError when there is none."""
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def can_search(self, folder: Path) -> bool:
        """Whether this user may pass through `folder` (tried as the user: ACLs count)."""
        check = ["test", "-x", str(folder)]
        kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(check, capture_output=True, **kwargs).returncode == 0

    def blocked_at(self, path: Path) -> Path | None:
        """The first directory above (or at) `path` this user cannot pass, or None."""
        path = Path(path).resolve()
        if self.can_search(path):
            return None
        for folder in reversed([path, *path.parents]):
            if folder.is_dir() and not self.can_search(folder):
                return folder
        return None


def run_user(name: str) -> RunUser | None:
    """The user runs run as: None when this process is not root (runs then run as the
    worker's own user). Raises RunUserError when root and the user does not exist."""
    if os.geteuid() != 0:
        return None
    try:
        user = RunUser.named(name)
    except KeyError:
        raise RunUserError(
            f"DLAAS_RUN_AS: user {name!r} does not exist; create it with "
            f"`{CREATE_COMMAND.format(name=name)}` (or `python -m deploy.runuser {name}`)"
        ) from None
    if user.uid == 0:
        raise RunUserError(f"DLAAS_RUN_AS: {name!r} is root; name an unprivileged user")
    return user


def slot_user(run_as: str, slot: int) -> str:
    """The run user of a worker's slot (its place for one of the runs it runs at once):
    DLAAS_RUN_AS for the first, then `<name>-1`, `<name>-2`, ..."""
    return run_as if slot == 0 else f"{run_as}-{slot}"


_REACHABLE: set[tuple[int, Path]] = set()


def check_reachable(user: RunUser, work_dir: Path) -> None:
    """Refuse a work directory the run user could not reach (its commands use absolute
    DATA_DIR/RESULT_DIR paths). Once found reachable, not tried again in this process (the
    try costs a fork, each run)."""
    if (user.uid, Path(work_dir)) in _REACHABLE:
        return
    blocked = user.blocked_at(work_dir)
    if blocked is not None:
        raise RunUserError(
            f"DLAAS_WORK_DIR: run user {user.name!r} cannot reach {work_dir} ({blocked} has "
            f"no search permission for it); choose another DLAAS_WORK_DIR or run "
            f"`{HELPER_COMMAND.format(name=user.name, path=work_dir)}`"
        )
    _REACHABLE.add((user.uid, Path(work_dir)))


def describe(user: RunUser | None, run_as: str) -> str:
    if user is None:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return (
            f"not root: runs run as this worker's own user {me!r} (uid {os.geteuid()}), "
            f"NOT as DLAAS_RUN_AS={run_as!r}; they can read what this worker can read"
        )
    return f"runs run as {user.name!r} (uid {user.uid}, gid {user.gid})"


def prepare_work_dir(work_dir: Path) -> None:
    """Root's, and passable but not listable: a run user reaches its own run's directory by
    name and can list no other."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(work_dir, 0, 0)
        work_dir.chmod(0o711)


def hand_over(dirs: RunDirs, log_names: tuple[str, ...], user: RunUser) -> None:
    """Give the staged run to the run user: its own folders (MODEL_DIR, DATA_DIR, RESULT_DIR,
    TMPDIR, HOME) 0700 with what they hold (but the links to the node's data cache), the run
    directory root's but passable by the user's group only, and LOG_DIR root's, sticky and
    group-writable (the worker's log files cannot be swapped)."""
    for name in log_names:
        (dirs.log / name).touch()
        os.chown(dirs.log / name, 0, 0)
        (dirs.log / name).chmod(0o644)
    for top in dirs.owned_by_run:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames:
                os.lchown(Path(dirpath) / name, user.uid, user.gid)
            for name in filenames:
                path = Path(dirpath) / name
                if path.lstat().st_nlink > 1:
                    continue  # a link to the node's data cache: root's and read-only
                os.lchown(path, user.uid, user.gid)
        os.chown(top, user.uid, user.gid)
        top.chmod(0o700)
    os.chown(dirs.log, 0, user.gid)
    dirs.log.chmod(0o1770)
    os.chown(dirs.root, 0, user.gid)
    dirs.root.chmod(0o710)


LOCK_DIR = Path("/run/dlaas")


def hold_user(user: RunUser) -> int:
    """A shared lock on the run user (an open fd), held while this run's command runs: every
    run as that user on this node holds one, so none ends the others' processes by uid."""
    LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
    fd = os.open(LOCK_DIR / f"{user.name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def alone_as(user: RunUser, fd: int) -> bool:
    """Whether no other run's command runs as the user on this node now (the shared lock
    made exclusive): only then are this run's leftovers ended by uid. (A conversion that
    fails drops the shared lock: harmless, this run's command has ended.)"""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        log.warning(
            "run user %s is running another run on this node too: its leftovers are not "
            "ended by uid; give each worker its own DLAAS_RUN_AS (see deploy/README.md)",
            user.name,
        )
        return False


def end_processes(user: RunUser, grace: float = 2.0) -> list[int]:
    """End every process of the run user: a run user serves one worker, which runs one run
    at a time, so anything still running as it is left over from the run."""
    procs = [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and user.uid in p.info["uids"]
    ]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        _gone, procs = psutil.wait_procs(procs, timeout=grace)
        if not procs:
            break
    return [p.pid for p in procs]


def reclaim(dirs: RunDirs, user: RunUser | None) -> list[str]:
    """Take the run directory back for root before anything is read from it: the run user's
    leftover processes ended, every entry root's again (0700), and the links and pipes the run
    left in LOG_DIR removed (the worker reads whole files there). Returns what was removed."""
    removed: list[str] = []
    if user is not None:
        left = end_processes(user)
        if left:
            log.error("processes of %s still alive after SIGKILL: %s", user.name, left)
    if not dirs.root.exists():
        return removed
    if os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(dirs.root):
            for name in dirnames + filenames:
                os.lchown(Path(dirpath) / name, 0, 0)
        os.chown(dirs.root, 0, 0)
    dirs.root.chmod(0o700)
    if dirs.log.is_dir():
        for path in dirs.log.iterdir():
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                path.unlink()
                removed.append(f"LOG_DIR/{path.name}")
    return removed
