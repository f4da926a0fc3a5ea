"""The framework registry: the default's promises, and a bad registry file named clearly."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from common.frameworks import Registry, RegistryError, default_registry
from common.manifest import ManifestError, parse_manifest
from tests.conftest import manifest_yaml

SEED_ERA = {
    "tensorflow": ("1.2-py3", "1.3-py3", "1.4-py3", "1.5-py3", "1.13-py3", "1.15-py3", "2.x"),
    "caffe": ("1.0-py2", "1.0-py3"),
    "torch": ("lua", "7"),
    "keras": ("2.0", "2.1", "2.2"),
    "mxnet": ("0.12", "1.0", "1.1"),
    "theano": ("0.9", "1.0"),
    "caffe2": ("0.8",),
}


def test_every_seed_era_framework_is_still_accepted():
    registry = default_registry()
    for name, versions in SEED_ERA.items():
        for version in versions:
            assert registry.problem(name, version) is None, (name, version)
            entry = registry.get(name, version)
            # each is either built from pinned packages or says in words why it is not
            assert entry.unavailable or entry.packages_for("cpu"), (name, version)


def test_pytorch_213_pins_exactly_that_torch_a_cpu_build_off_gpu():
    entry = default_registry().get("pytorch", "2.13")
    assert entry.python == "3.11"
    assert entry.packages_for("cpu") == ("torch==2.13.0+cpu",)
    assert entry.packages_for("gpu") == ("torch==2.13.0",)
    for spec in entry.packages_for("cpu") + entry.packages_for("gpu"):
        assert str(Requirement(spec).specifier).startswith("==")  # pinned, never a range


def test_python_311_and_newer_are_offered_with_no_packages():
    registry = default_registry()
    for version in ("3.11", "3.12", "3.13"):
        assert registry.get("python", version).packages_for("cpu") == ()


def test_the_manifest_is_checked_against_the_registry_it_is_given(tmp_path):
    own = tmp_path / "frameworks.yaml"
    own.write_text('jax:\n  versions:\n    "0.4": {python: "3.11", packages: ["jax==0.4.30"]}\n')
    registry = Registry.load(own)
    text = manifest_yaml(framework=("jax", "0.4"))
    assert parse_manifest(text, frameworks=registry).framework_name == "jax"
    with pytest.raises(ManifestError) as refused:
        parse_manifest(text)  # the built-in registry has no jax
    assert refused.value.field == "model_definition.framework.name"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[1, 2]", "expected a mapping of framework names"),
        ("jax: {note: x}", "jax: expected `versions:`"),
        ('jax:\n  versions:\n    "1": {packages: []}', "jax.1.python: required"),
        ('jax:\n  versions:\n    "1": {python: "3.11", pins: []}', "unknown field 'pins'"),
        (
            'jax:\n  versions:\n    "1": {python: "3.11", packages: ["jax=="]}',
            "jax.1.packages: 'jax==' is not a requirement spec",
        ),
        (
            'jax:\n  versions:\n    "1": {python: "3.11", variants: {tpu: ["jax"]}}',
            "unknown accelerator 'tpu'",
        ),
        ("jax: [", "not valid YAML"),
    ],
)
def test_a_bad_registry_file_is_named_with_the_entry_at_fault(tmp_path, text, problem):
    bad = tmp_path / "frameworks.yaml"
    bad.write_text(text)
    with pytest.raises(RegistryError) as failed:
        Registry.load(bad)
    assert str(bad) in str(failed.value) and problem in str(failed.value)


def test_a_missing_registry_file_is_named(tmp_path):
    with pytest.raises(RegistryError, match="cannot read the framework registry"):
        Registry.load(tmp_path / "none.yaml")
