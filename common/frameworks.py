"""The framework registry: the frameworks (and versions) a manifest may name, and the runtime
each stands for (a Python version and pinned packages, per accelerator). It is data the
operator edits: `common/frameworks.yaml` by default, DLAAS_FRAMEWORKS_FILE for their own."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement

DEFAULT_FILE = Path(__file__).with_name("frameworks.yaml")
ACCELERATORS = ("cpu", "gpu")


class RegistryError(ValueError):
    """The registry file cannot be used: it names the file and the entry at fault."""


@dataclass(frozen=True)
class Framework:
    """One name and version of the registry: what a run that asks for it gets."""

    name: str
    version: str
    python: str
    packages: tuple[str, ...] = ()
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unavailable: str = ""  # why no runtime is built for it ("": one is)
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def packages_for(self, accelerator: str) -> tuple[str, ...]:
        """The packages installed on a node with `accelerator` (`cpu` or `gpu`)."""
        return self.packages + self.variants.get(accelerator, ())

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "python": self.python,
            "packages": list(self.packages),
            "variants": {name: list(specs) for name, specs in self.variants.items()},
            "available": not self.unavailable,
            "unavailable": self.unavailable,
            "note": self.note,
        }


@dataclass(frozen=True)
class Registry:
    frameworks: dict[str, dict[str, Framework]]
    notes: dict[str, str]
    source: Path

    @classmethod
    def load(cls, path: Path | None = None) -> Registry:
        """The registry in `path` (default: the built-in one); RegistryError names what is
        wrong and where."""
        path = Path(path) if path else DEFAULT_FILE
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read the framework registry: {exc}") from None
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict) or not data:
            raise RegistryError(f"{path}: expected a mapping of framework names")
        frameworks, notes = {}, {}
        for name, entry in data.items():
            where = f"{path}: {name}"
            if not isinstance(entry, dict) or not isinstance(entry.get("versions"), dict):
                raise RegistryError(f"{where}: expected `versions:` (a mapping)")
            _only(entry, ("note", "versions"), where)
            notes[str(name)] = str(entry.get("note", ""))
            frameworks[str(name)] = {
                str(version): _framework(str(name), str(version), spec, f"{where}.{version}")
                for version, spec in entry["versions"].items()
            }
        return cls(frameworks, notes, path)

    def get(self, name: str, version: str) -> Framework | None:
        return self.frameworks.get(name, {}).get(version)

    def problem(self, name: str, version: str) -> tuple[str, str] | None:
        """None when the registry offers it; otherwise (the manifest field at fault, a
        message naming what is offered)."""
        if name not in self.frameworks:
            known = ", ".join(sorted(self.frameworks))
            return "name", f"unknown framework {name!r} (known: {known})"
        if version not in self.frameworks[name]:
            known = ", ".join(self.frameworks[name])
            return "version", f"unknown version {version!r} of {name} (known: {known})"
        return None

    def listing(self) -> list[dict]:
        """Every framework with its versions, for `GET /v3/frameworks`."""
        return [
            {
                "name": name,
                "note": self.notes.get(name, ""),
                "versions": [framework.to_dict() for framework in versions.values()],
            }
            for name, versions in self.frameworks.items()
        ]


@cache
def default_registry() -> Registry:
    return Registry.load(DEFAULT_FILE)


def _only(entry: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in entry if key not in known)
    if unknown:
        raise RegistryError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(known)})")


def _framework(name: str, version: str, spec, where: str) -> Framework:
    if not isinstance(spec, dict):
        raise RegistryError(f"{where}: expected a mapping with `python:`")
    _only(spec, ("python", "packages", "variants", "unavailable", "note"), where)
    python = spec.get("python")
    if not isinstance(python, str | int | float) or not str(python).strip():
        raise RegistryError(f'{where}.python: required (a version such as "3.11")')
    variants = spec.get("variants") or {}
    if not isinstance(variants, dict):
        raise RegistryError(f"{where}.variants: expected a mapping of cpu/gpu to packages")
    for accelerator in variants:
        if accelerator not in ACCELERATORS:
            raise RegistryError(
                f"{where}.variants: unknown accelerator {accelerator!r} "
                f"(known: {', '.join(ACCELERATORS)})"
            )
    return Framework(
        name=name,
        version=version,
        python=str(python),
        packages=_packages(spec.get("packages"), f"{where}.packages"),
        variants={
            str(acc): _packages(specs, f"{where}.variants.{acc}") for acc, specs in variants.items()
        },
        unavailable=str(spec.get("unavailable") or ""),
        note=str(spec.get("note") or ""),
    )


def _packages(specs, where: str) -> tuple[str, ...]:
    if specs is None:
        return ()
    if not isinstance(specs, list):
        raise RegistryError(f"{where}: expected a list of requirement specs")
    for spec in specs:
        try:
            Requirement(str(spec))
        except InvalidRequirement as exc:
            raise RegistryError(f"{where}: {spec!r} is not a requirement spec: {exc}") from None
    return tuple(str(spec) for spec in specs)
