"""A run's folder, and the spare one a pool process makes ahead for its next run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

from common.layout import RUN_LOGS
from worker import rundirs
from worker.rundirs import RunDirs, SpareFolder, remove_stale_spares, spare_folder


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_run_folder_made_here_has_its_folders_and_logs_the_workers_only(tmp_path):
    dirs = RunDirs(tmp_path / "run")
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "left-by-an-earlier-attempt").write_text("x")
    dirs.create()
    assert {p.name for p in dirs.root.iterdir()} == {
        "model", "data", "result", "checkpoint", "tmp", "home", "log",
    }  # fmt: skip
    assert sorted(p.name for p in dirs.log.iterdir()) == sorted(RUN_LOGS)
    assert not any(dirs.model.iterdir())
    assert {_mode(p) for p in (dirs.root, *dirs.owned_by_run, dirs.log)} == {0o700}


def test_the_spare_folder_is_renamed_into_place_and_made_again_only_when_asked(tmp_path):
    spare = SpareFolder(tmp_path)
    spare.make()
    assert spare.take(tmp_path / "first")  # waits for the one being made
    made_here = RunDirs(tmp_path / "made-here")
    made_here.create()
    assert _tree(tmp_path / "first") == _tree(made_here.root)
    assert _mode(tmp_path / "first") == 0o700
    assert not spare.path.exists()
    second = RunDirs(tmp_path / "second")
    second.create(spare)  # none: made by the run itself
    assert _tree(second.root) == _tree(made_here.root)
    spare.make()
    spare._job.result(timeout=10)
    inode = spare.path.stat().st_ino
    spare.make()  # one is there: not made again
    spare._job.result(timeout=10)
    assert spare.path.stat().st_ino == inode
    third = RunDirs(tmp_path / "third")
    third.create(spare)
    assert third.root.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "made-here", "second", "third"]


def test_a_run_waits_for_its_spare_folder_while_it_is_made(tmp_path, monkeypatch):
    release = threading.Event()
    real_build = rundirs.build

    def slow_build(dirs):
        release.wait(10)
        real_build(dirs)

    monkeypatch.setattr(rundirs, "build", slow_build)
    spare = SpareFolder(tmp_path)
    spare.make()
    threading.Timer(0.2, release.set).start()
    dirs = RunDirs(tmp_path / "run")
    assert spare.take(dirs.root)  # not made twice: the one being made is waited for
    assert sorted(p.name for p in dirs.log.iterdir()) == sorted(RUN_LOGS)


def test_spare_folders_are_per_process_and_those_of_ended_processes_are_removed(tmp_path):
    assert spare_folder(tmp_path) is spare_folder(tmp_path)
    assert spare_folder(tmp_path).path.name == f".spare-{os.getpid()}"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(ended.stdout)
    mine = spare_folder(tmp_path)
    mine.make()
    mine._job.result(timeout=10)
    for name in (f".spare-{dead}", f".spare-{dead}.building"):
        RunDirs(tmp_path / name).create()
    (tmp_path / "training-a-run").mkdir()
    removed = remove_stale_spares(tmp_path)
    assert sorted(removed) == [f".spare-{dead}", f".spare-{dead}.building"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.path.name, "training-a-run"]
    assert remove_stale_spares(tmp_path / "missing") == []
