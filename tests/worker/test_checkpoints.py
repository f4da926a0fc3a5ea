"""The checkpoint copier on its own: only what changed since the last copy, never through a
link or a pipe the run left in CHECKPOINT_DIR, and what was given back counts as copied; and
through the pipeline (real Redis, a local store): a stopped run's copy is taken before its
processes get the first signal."""

from __future__ import annotations

import os
import threading
import time

import pytest
from cryptography.fernet import Fernet

from common.settings import Settings
from tests.conftest import manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker.checkpoints import CheckpointCopier
from worker.training import run_training


def copier(tmp_path, removed: list[str] | None = None):
    top, scratch = tmp_path / "checkpoint", tmp_path / "scratch"
    top.mkdir()
    scratch.mkdir()
    sent: list[tuple[str, bytes]] = []
    made = CheckpointCopier(
        top,
        scratch,
        lambda path, rel: sent.append((rel, path.read_bytes())),
        60,
        (removed if removed is not None else []).append,
    )
    return made, top, sent


def test_a_deleted_file_is_removed_at_the_next_copy_unless_told_not_to(tmp_path):
    removed: list[str] = []
    made, top, sent = copier(tmp_path, removed)
    for step in (1, 2, 3):
        (top / f"ckpt-{step}.pt").write_bytes(b"w" * step)
    made.copy_changed()
    (top / "ckpt-1.pt").unlink()  # the program keeps its last two
    assert made.copy_changed() == 0 and removed == ["ckpt-1.pt"]
    assert made.copy_changed() == 0 and removed == ["ckpt-1.pt"]  # once
    (top / "ckpt-2.pt").unlink()
    made.close(deletions=False)  # a stopped program's cleanup stays in the bucket
    assert removed == ["ckpt-1.pt"] and made.removed == 1


def test_only_what_changed_is_copied_and_links_and_pipes_never(tmp_path):
    made, top, sent = copier(tmp_path)
    (top / "nested").mkdir()
    (top / "model.pt").write_bytes(b"weights-1")
    (top / "nested" / "opt.pt").write_bytes(b"opt-1")
    (top / "passwd").symlink_to("/etc/passwd")
    (top / "linked-dir").symlink_to("/etc")
    os.mkfifo(top / "pipe")
    assert made.copy_changed() == 2
    assert sorted(sent) == [("model.pt", b"weights-1"), ("nested/opt.pt", b"opt-1")]
    sent.clear()
    assert made.copy_changed() == 0 and sent == []
    (top / "model.pt").write_bytes(b"weights-22")
    assert made.copy_changed() == 1 and sent == [("model.pt", b"weights-22")]
    assert (made.copied.files, made.copied.bytes) == (3, 9 + 5 + 10)
    assert list((tmp_path / "scratch").iterdir()) == []  # no snapshot left behind


def test_a_checkpoint_given_back_is_not_copied_again(tmp_path):
    made, top, sent = copier(tmp_path)
    (top / "step").write_text("17")
    made.remember()
    assert made.copy_changed() == 0
    (top / ".step").write_text("18")
    (top / ".step").rename(top / "step")  # as programs write checkpoints: a new file
    assert made.copy_changed() == 1 and sent == [("step", b"18")]


@pytest.fixture
def ctx(tmp_path, store_redis, run_work_dir):
    settings = Settings(
        home=tmp_path,
        secret_key=Fernet.generate_key().decode(),
        work_dir=run_work_dir,
        checkpoint_seconds=600,  # no periodic copy within the test
        cancel_grace_seconds=5,
    )
    return worker_context(settings, store_redis, (0,), "ckpt-unit")


@pytest.mark.integration
def test_a_cancelled_run_is_copied_before_its_processes_get_the_first_signal(ctx):
    # The command removes its checkpoint when it gets SIGTERM: only a copy taken before the
    # signal can hold it (the last copy, after the processes ended, finds nothing to copy).
    root = ctx.settings.local_store_root / "tests"
    for bucket in ("data", "results"):
        (root / bucket).mkdir(parents=True, exist_ok=True)
    command = (
        "trap 'rm -f $CHECKPOINT_DIR/step; echo got TERM; exit 0' TERM; "
        "echo 7 > $CHECKPOINT_DIR/step; while true; do sleep 0.1; done"
    )
    run = submit_manifest(ctx, manifest_yaml(command))
    ended: list[str] = []
    thread = threading.Thread(target=lambda: ended.append(run_training(run.id, ctx)))
    thread.start()
    step = ctx.settings.work_dir / run.id / "checkpoint" / "step"
    deadline = time.monotonic() + 60
    while not step.exists():
        assert time.monotonic() < deadline and thread.is_alive(), "the command did not start"
        time.sleep(0.05)
    ctx.runs.request_cancel(run.id, "alice")
    thread.join(60)
    assert ended == ["HALTED"]
    assert (root / "results" / run.id / "checkpoints" / "step").read_text() == "7\n"
    log = (root / "results" / run.id / "learner-1" / "training-log.txt").read_text()
    assert "got TERM" in log  # the trap ran: the file was gone by the last copy
