"""Archive checks: only safe zips pass; every refusal says why."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile

import pytest

from common.modelzip import ModelZipError, ZipLimits, check_zip, extract_zip
from tests.conftest import make_zip

LIMITS = ZipLimits(max_entries=20, max_uncompressed_bytes=10 * 1024 * 1024, max_ratio=50)


def _zip_with(info: zipfile.ZipInfo, content: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, content)
    return buffer.getvalue()


def test_good_zip_passes_and_extracts(tmp_path):
    data = make_zip({"train.py": "print('hi')\n", "lib/util.py": "X = 1\n"})
    summary = check_zip(data, LIMITS)
    assert (summary.files, summary.uncompressed_bytes) == (2, 18)
    (tmp_path / "m.zip").write_bytes(data)
    extract_zip(tmp_path / "m.zip", tmp_path / "out", LIMITS)
    assert (tmp_path / "out" / "lib" / "util.py").read_text() == "X = 1\n"


def test_gzip_is_refused_naming_zip():
    with pytest.raises(ModelZipError, match="gzip archives are not supported; zip is the only"):
        check_zip(gzip.compress(b"print(1)"), LIMITS)


def test_tar_is_refused_naming_zip():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("train.py")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ModelZipError, match="tar archives are not supported"):
        check_zip(buffer.getvalue(), LIMITS)


def test_plain_text_is_refused():
    with pytest.raises(ModelZipError, match="not a zip archive"):
        check_zip(b"print('not an archive')", LIMITS)


@pytest.mark.parametrize("name", ["/etc/passwd", "../evil.py", "a/../../evil.py", "C:/x.py"])
def test_escaping_paths_are_refused(name):
    with pytest.raises(ModelZipError, match="absolute paths|'..'"):
        check_zip(_zip_with(zipfile.ZipInfo(name)), LIMITS)


def test_symlinks_are_refused():
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(ModelZipError, match="link: symbolic links are not allowed"):
        check_zip(_zip_with(info, b"/etc/passwd"), LIMITS)


def test_too_many_entries():
    data = make_zip({f"f{i}.py": "" for i in range(21)})
    with pytest.raises(ModelZipError, match="too many entries: 21 \\(limit 20\\)"):
        check_zip(data, LIMITS)


def test_uncompressed_total_limit():
    data = make_zip({"a.bin": b"\x00" * (6 * 1024 * 1024), "b.bin": b"\x00" * (6 * 1024 * 1024)})
    with pytest.raises(ModelZipError, match="uncompressed size exceeds"):
        check_zip(data, ZipLimits(20, 10 * 1024 * 1024, 100_000))


def test_compression_ratio_bomb():
    data = make_zip({"bomb.bin": b"\x00" * (5 * 1024 * 1024)})
    with pytest.raises(
        ModelZipError, match="bomb.bin: compression ratio .* exceeds the limit of 50:1"
    ):
        check_zip(data, LIMITS)


def test_corrupt_archive():
    data = bytearray(make_zip({"train.py": "print('hello world ' * 100)\n" * 50}))
    data[60:80] = b"\xff" * 20  # inside the compressed stream
    with pytest.raises(ModelZipError, match="corrupt zip archive"):
        check_zip(bytes(data), LIMITS)


def test_truncated_archive():
    data = make_zip({"train.py": "print(1)\n"})
    with pytest.raises(ModelZipError, match="corrupt zip archive"):
        check_zip(data[: len(data) // 2], LIMITS)


def test_empty_archive():
    with pytest.raises(ModelZipError, match="holds no files"):
        check_zip(make_zip({}), LIMITS)


def test_encrypted_entry():
    data = bytearray(make_zip({"train.py": "print(1)\n"}))
    # Set the "encrypted" flag bit in the local and central headers.
    data[6] |= 1
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 1
    with pytest.raises(ModelZipError, match="encrypted entries are not supported"):
        check_zip(bytes(data), LIMITS)
