"""The frameworks (and versions) a manifest may name: the seed era's, plus pytorch and python."""

from __future__ import annotations

FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("1.2-py3", "1.3-py3", "1.4-py3", "1.5-py3", "1.13-py3", "1.15-py3", "2.x"),
    "caffe": ("1.0-py2", "1.0-py3"),
    "torch": ("lua", "7"),
    "keras": ("2.0", "2.1", "2.2"),
    "mxnet": ("0.12", "1.0", "1.1"),
    "theano": ("0.9", "1.0"),
    "caffe2": ("0.8",),
    "pytorch": ("0.3", "0.4", "1.0", "1.13", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.x"),
    "python": ("3", "3.10", "3.11", "3.12", "3.13"),
}


def framework_problem(name: str, version: str) -> tuple[str, str] | None:
    """None when known; otherwise (the field at fault, a message naming what is known)."""
    if name not in FRAMEWORKS:
        return "name", f"unknown framework {name!r} (known: {', '.join(sorted(FRAMEWORKS))})"
    if version not in FRAMEWORKS[name]:
        return (
            "version",
            f"unknown version {version!r} of {name} (known: {', '.join(FRAMEWORKS[name])})",
        )
    return None
