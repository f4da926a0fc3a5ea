"""The checkpoint copier on its own: only what changed since the last copy, never through a
link or a pipe the run left in CHECKPOINT_DIR, and what was given back counts as copied."""

from __future__ import annotations

import os

from worker.checkpoints import CheckpointCopier


def copier(tmp_path):
    top, scratch = tmp_path / "checkpoint", tmp_path / "scratch"
    top.mkdir()
    scratch.mkdir()
    sent: list[tuple[str, bytes]] = []
    made = CheckpointCopier(
        top, scratch, lambda path, rel: sent.append((rel, path.read_bytes())), 60
    )
    return made, top, sent


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
