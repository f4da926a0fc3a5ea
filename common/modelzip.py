"""Checks a model-definition archive before anything is stored, and unpacks it safely.

Only `.zip` is accepted. Refused: other formats, corrupt archives, encrypted entries,
absolute paths or `..`, symlinks, and archives past the entry, size or ratio limits.
"""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


class ModelZipError(ValueError):
    """Why an archive is refused, phrased for the person who sent it."""


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 10_000
    max_uncompressed_bytes: int = 1024 * 1024 * 1024
    max_ratio: float = 200.0

    @classmethod
    def from_settings(cls, settings) -> ZipLimits:
        """The service's limits (DLAAS_ZIP_*), the same where the API checks a zip and
        where the worker unpacks it."""
        return cls(
            settings.zip_max_entries, settings.zip_max_uncompressed_bytes, settings.zip_max_ratio
        )


@dataclass(frozen=True)
class ZipSummary:
    files: int
    uncompressed_bytes: int


_OTHER_FORMATS = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!", "rar"),
)


def _format_of(head: bytes) -> str | None:
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def check_zip(data: bytes, limits: ZipLimits) -> ZipSummary:
    """Return a summary of a safe archive, or raise ModelZipError saying what is wrong."""
    other = _format_of(data[:512])
    if other:
        raise ModelZipError(f"{other} archives are not supported; zip is the only supported format")
    if not data.startswith(b"PK"):
        raise ModelZipError("not a zip archive; zip is the only supported format")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ModelZipError(f"corrupt zip archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise ModelZipError(f"too many entries: {len(infos)} (limit {limits.max_entries})")
        total = 0
        files = 0
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ModelZipError(f"{info.filename}: symbolic links are not allowed")
            if info.flag_bits & 0x1:
                raise ModelZipError(f"{info.filename}: encrypted entries are not supported")
            if info.is_dir():
                continue
            files += 1
            total += info.file_size
            if total > limits.max_uncompressed_bytes:
                raise ModelZipError(
                    f"uncompressed size exceeds the limit of {limits.max_uncompressed_bytes} bytes"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > 1024 * 1024 and ratio > limits.max_ratio:
                raise ModelZipError(
                    f"{info.filename}: compression ratio {ratio:.0f}:1 exceeds the limit of "
                    f"{limits.max_ratio:.0f}:1 (zip bomb?)"
                )
        if files == 0:
            raise ModelZipError("the archive holds no files")
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as exc:
            raise ModelZipError(f"corrupt zip archive: {exc}") from None
        if bad is not None:
            raise ModelZipError(f"corrupt zip archive: {bad} fails its checksum")
    return ZipSummary(files=files, uncompressed_bytes=total)


def _check_name(name: str) -> None:
    if "\x00" in name:
        raise ModelZipError(f"{name!r}: NUL in entry name")
    normal = name.replace("\\", "/")
    path = PurePosixPath(normal)
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        raise ModelZipError(f"{name}: absolute paths are not allowed")
    if ".." in path.parts:
        raise ModelZipError(f"{name}: '..' in paths is not allowed")


def extract_zip(source: Path, dest: Path, limits: ZipLimits) -> ZipSummary:
    """Check again (the artifact may come from another node) and unpack into `dest`."""
    data = Path(source).read_bytes()
    summary = check_zip(data, limits)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            target = (root / info.filename.replace("\\", "/")).resolve()
            if root not in target.parents and target != root:
                raise ModelZipError(f"{info.filename}: escapes the model directory")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o100:
                target.chmod(0o755)
    return summary
