"""This machine's package sources, as pip is configured to use them (`pip config list`), in
the DLAAS_PACKAGE_* settings that environment builds read: uv reads no pip configuration, so
the stack and the tests pass pip's sources on explicitly.

When pip names only local indexes (`file://` extra indexes and no index of its own), the first
local index becomes the index: nothing is then fetched from PyPI (an air-gapped node). pip pools
all its indexes and takes the best version of a package from any of them; uv by default takes
a package from the first index that lists it (extra indexes first), so pip's sources are
passed with uv's `unsafe-best-match`, which is pip's behaviour."""

from __future__ import annotations

import subprocess
import sys


def pip_config() -> dict[str, str]:
    """`pip config list` as {name: value}, names without their section (`global.`, `:env:.`)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    values: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        section, _, key = name.rpartition(".")
        if section in ("global", "install", ":env:"):
            values.setdefault(key, value.strip().strip("'\""))
    return values


def package_settings(config: dict[str, str] | None = None) -> dict[str, str]:
    """The DLAAS_PACKAGE_* variables for pip's sources (only those pip sets)."""
    config = pip_config() if config is None else config
    index = config.get("index-url", "")
    extras = config.get("extra-index-url", "").split()
    if not index and extras and all(url.startswith("file:") for url in extras):
        index, extras = extras[0], extras[1:]
    settings = {
        "DLAAS_PACKAGE_INDEX_URL": index,
        "DLAAS_PACKAGE_EXTRA_INDEX_URLS": ",".join(extras),
        "DLAAS_PACKAGE_FIND_LINKS": ",".join(config.get("find-links", "").split()),
        "DLAAS_PACKAGE_CONSTRAINTS": config.get("constraint", ""),
        "DLAAS_PACKAGE_INDEX_STRATEGY": "unsafe-best-match" if extras else "",
    }
    return {name: value for name, value in settings.items() if value}


if __name__ == "__main__":
    for name, value in package_settings().items():
        print(f"{name}={value}")
