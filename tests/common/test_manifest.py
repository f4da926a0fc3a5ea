"""The manifest parser: the seed's two manifests as written, and an error naming the field
for each kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.fleet.sizes import ResourceSize
from common.manifest import REDACTED, Manifest, ManifestError, StoreType, parse_manifest
from tests.conftest import manifest_yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_seed_s3_manifest_with_short_spellings():
    m = parse_manifest((FIXTURES / "seed-s3-manifest.yml").read_text())
    assert m.name == "tf-mnist-showtest1"
    assert (m.framework_name, m.framework_version) == ("tensorflow", "1.2-py3")
    assert m.resource is ResourceSize.SMALL
    assert m.command.startswith("python3 convolutional_network.py --trainImagesFile ${DATA_DIR}/")
    assert m.command.endswith("--trainingIters 2000000")
    assert m.training_data.type is StoreType.S3
    assert m.training_data.bucket == "mnist-training-data"
    assert m.training_data.connection["aws_secret_access_key"] == "<password>"
    assert m.training_results.bucket == "mnist-training-models"
    assert m.author_email == "wmluser@ibm.com"


def test_seed_swift_manifest_with_reference_spellings():
    m = parse_manifest((FIXTURES / "seed-swift-manifest.yml").read_text())
    assert m.training_data.type is StoreType.SWIFT
    assert m.training_data.connection == {
        "auth_url": "<auth-url>",
        "user_name": "<username>",
        "password": "<password>",
        "region": "<region>",
        "domain_name": "<domain-name>",
        "project_id": "<project-id>",
    }
    assert m.training_results.type is StoreType.SWIFT


def test_redaction_hides_secrets_and_round_trips():
    m = parse_manifest((FIXTURES / "seed-swift-manifest.yml").read_text())
    shown = m.to_dict(redact=True)
    assert shown["training_data"]["connection"]["password"] == REDACTED
    assert shown["training_data"]["connection"]["user_name"] == "<username>"
    assert "<password>" not in repr(shown)
    back = Manifest.from_dict(shown).with_connections(m.secrets())
    assert back == m


def _seed(**changes) -> str:
    doc = yaml.safe_load((FIXTURES / "seed-swift-manifest.yml").read_text())
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is None:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        (
            {"training_data_reference__0__source__bucket": None},
            "training_data_reference[0].source.bucket",
            "required",
        ),
        ({"model_definition__name": None}, "model_definition.name", "required"),
        (
            {"model_definition__execution__command": None},
            "model_definition.execution.command",
            "required",
        ),
        (
            {"model_definition__framework__name": "chainer"},
            "model_definition.framework.name",
            "known: caffe, caffe2",
        ),
        (
            {"model_definition__framework__version": "9.9"},
            "model_definition.framework.version",
            "1.2-py3",
        ),
        (
            {"model_definition__execution__resource": "huge"},
            "model_definition.execution.resource",
            "small, medium, large",
        ),
        (
            {"training_data_reference__0__source__type": "ftp"},
            "training_data_reference[0].source.type",
            "unknown store type 'ftp'",
        ),
        (
            {"training_data_reference__0__connection__password": None},
            "training_data_reference[0].connection.password",
            "required",
        ),
        (
            {"training_results_reference__target": None},
            "training_results_reference.target",
            "required",
        ),
        (
            {"training_results_reference__connection__colour": "red"},
            "training_results_reference.connection.colour",
            "unknown field",
        ),
        (
            {"model_definition__execution": "run it"},
            "model_definition.execution",
            "expected a mapping, got text",
        ),
        ({"training_data_reference": {"a": 1}}, "training_data_reference", "expected a list"),
        (
            {"training_data_reference__0__source__bucket": "a/b"},
            "training_data_reference[0].source.bucket",
            "invalid bucket name",
        ),
        ({"model_definition__name": ["x"]}, "model_definition.name", "expected text"),
        ({"training_results_reference": None}, "training_results_reference", "required"),
    ],
)
def test_each_bad_field_is_named(changes, field, words):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_seed(**changes))
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith(field + ":")


def test_exactly_one_data_store():
    doc = yaml.safe_load((FIXTURES / "seed-swift-manifest.yml").read_text())
    doc["training_data_reference"].append(doc["training_data_reference"][0])
    with pytest.raises(
        ManifestError, match=r"training_data_reference: exactly one data store is supported, got 2"
    ):
        parse_manifest(yaml.safe_dump(doc))


def test_both_spellings_at_once_is_refused():
    doc = yaml.safe_load((FIXTURES / "seed-swift-manifest.yml").read_text())
    doc["training_data"] = doc["training_data_reference"]
    with pytest.raises(ManifestError) as caught:
        parse_manifest(yaml.safe_dump(doc))
    assert caught.value.field == "training_data"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("model_definition: [unclosed", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping, got a list"),
        ("!!python/object/apply:os.system ['true']", "not valid YAML"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_documents_that_are_not_manifests(text, words):
    with pytest.raises(ManifestError, match=words):
        parse_manifest(text)


def test_alias_bomb_is_refused():
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(
            f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]"
        )
    with pytest.raises(ManifestError, match="too many YAML aliases"):
        parse_manifest("\n".join(lines))


def test_local_store_path_may_not_climb():
    text = _seed(
        training_data_reference=[
            {"connection": {"path": "../../etc"}, "source": {"bucket": "b", "type": "local"}}
        ]
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert caught.value.field == "training_data_reference[0].connection.path"


def test_resource_defaults_to_small_and_results_may_be_a_one_item_list():
    doc = yaml.safe_load((FIXTURES / "seed-s3-manifest.yml").read_text())
    del doc["model_definition"]["execution"]["resource"]
    doc["training_results"] = [doc["training_results"]]
    m = parse_manifest(yaml.safe_dump(doc))
    assert m.resource is ResourceSize.SMALL
    assert m.training_results.bucket == "mnist-training-models"


def test_a_key_given_twice_is_an_error_naming_it():
    doubled = manifest_yaml() + "model_definition:\n  name: x\n"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(doubled)
    assert caught.value.field == "model_definition"
    assert "given twice (lines 2 and " in str(caught.value)
    nested = manifest_yaml().replace("name: test-run", "name: test-run\n  name: again")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(nested)
    assert caught.value.field == "model_definition.name"


def test_an_unquoted_version_read_as_a_number_is_explained():
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest_yaml().replace('version: "3.11"', "version: 3.10"))
    assert caught.value.field == "model_definition.framework.version"
    assert 'write it in quotes, e.g. version: "3.10"' in str(caught.value)
