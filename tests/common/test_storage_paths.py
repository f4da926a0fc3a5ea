"""Where staged objects land, and how S3 timestamps are read: pure logic, no server."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from botocore.utils import parse_timestamp

from common.storage.base import StorageError, target_inside
from common.storage.s3 import S3Store, _parse_timestamp, _Sessions, _StagedFile

ROOT = Path("/work/run/data")


@pytest.mark.parametrize(
    "key, lands",
    [
        ("a.bin", "a.bin"),
        ("nested/deeper/b.csv", "nested/deeper/b.csv"),
        ("a/./b", "a/b"),
        ("a//b", "a/b"),
        ("a/../b", "b"),
        ("..a/b", "..a/b"),
        ("a/..b", "a/..b"),
    ],
)
def test_a_key_lands_under_the_data_dir(key, lands):
    assert target_inside(ROOT, key) == ROOT / lands


@pytest.mark.parametrize("key", ["../x", "a/../../x", "..", "/etc/passwd", ".", "a/.."])
def test_a_key_that_would_climb_out_is_the_users_error(key):
    with pytest.raises(StorageError) as caught:
        target_inside(ROOT, key)
    assert caught.value.user_fault
    assert repr(key) in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 27 Nov 2026 10:54:05 GMT",
        "Mon, 01 Jan 2024 00:00:00 GMT",
        "2026-11-27T10:54:05.123Z",
        "2026-11-27T10:54:05Z",
        "2026-11-27T10:54:05.123456+00:00",
        "2026-11-27T12:54:05+02:00",
        "1700000000",
        1700000000,
        1700000000.5,
    ],
)
def test_s3_timestamps_read_as_botocore_reads_them(value):
    ours, theirs = _parse_timestamp(value), parse_timestamp(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset() == datetime.timedelta(0) or "+02" in str(value)


def test_a_timestamp_botocore_refuses_is_refused_too():
    with pytest.raises(ValueError):
        parse_timestamp("not a date")
    with pytest.raises(ValueError):
        _parse_timestamp("not a date")


def test_a_staged_file_opens_at_its_first_write_and_goes_if_its_transfer_failed(tmp_path):
    staged = _StagedFile(tmp_path / "part.bin")
    assert not staged.path.exists()  # no file held open before its bytes arrive
    staged.seek(4)
    staged.write(b"tail")
    staged.seek(0)
    staged.write(b"head")
    staged.finish(failed=True)
    assert not staged.path.exists()

    assert staged.landed() is None

    whole = _StagedFile(tmp_path / "whole.bin")
    whole.seek(4)
    whole.write(b"5678")
    # on disk at once (a full disk fails the write, not a close nobody checks)
    assert whole.path.read_bytes() == b"\0\0\0\x005678"
    whole.seek(0)
    whole.write(b"1234")
    whole.finish(failed=False)
    assert whole.path.read_bytes() == b"12345678"
    assert whole.landed() == 8

    empty = _StagedFile(tmp_path / "empty.bin")
    empty.finish(failed=False)
    assert empty.path.read_bytes() == b""
    assert empty.landed() == 0


def test_a_broken_aws_config_on_the_node_is_a_storage_error(monkeypatch, tmp_path):
    """botocore reads the node's AWS config when it makes a client: a broken one is the
    store's error (the run fails with it), not an exception out of the worker."""
    config = tmp_path / "config"
    config.write_text("[default\nregion=")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setattr(_Sessions, "session", None)  # a session made now reads it
    with pytest.raises(StorageError) as caught:
        S3Store("http://127.0.0.1:9", "key", "secret")
    assert not caught.value.user_fault
    assert "cannot make a client" in str(caught.value)
    assert str(config) in str(caught.value)
