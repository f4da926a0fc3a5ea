"""Property tests for the manifest parser: any YAML document (text or bytes) gives a valid
`Manifest` or a `ManifestError` naming the field at fault, never another exception.

The rule for `ManifestError.field`: empty exactly when the fault is the document as a whole
(not UTF-8, not one constructible YAML document, too many aliases, empty, the root not a
mapping of text keys); otherwise a path (`a.b[0].c`) that exists in the document, except
that its last step may be missing when the problem is that it is required.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from common.fleet.sizes import ResourceSize
from common.frameworks import default_registry
from common.manifest import (
    CONNECTION_FIELDS,
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_INT_BITS,
    REDACTED,
    Manifest,
    ManifestError,
    StoreType,
    parse_manifest,
)
from tests.conftest import manifest_yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEEDS = {
    "s3": (FIXTURES / "seed-s3-manifest.yml").read_text(),
    "swift": (FIXTURES / "seed-swift-manifest.yml").read_text(),
    "local": manifest_yaml(),
}

# Reproducible in CI: a fixed derandomized search, no example database.
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the properties -----------------------------------------------------------------------


def check(source: str | bytes) -> Manifest | None:
    """Parse `source`; any exception other than ManifestError fails the test."""
    try:
        manifest = parse_manifest(source)
    except ManifestError as exc:
        top = re.split(r"[.\[]", exc.field)[0]
        outcome(
            f"ManifestError at {top if top in TOP_LEVEL else top and 'another key' or '(document)'}"
        )
        check_error(source, exc)
        return None
    outcome("a Manifest")
    check_manifest(manifest)
    return manifest


def outcome(name: str) -> None:
    """Counted in `--hypothesis-show-statistics`, to see that both outcomes are reached."""
    if currently_in_test_context():
        event(name)


def check_error(source: str | bytes, exc: ManifestError) -> None:
    assert type(exc) is ManifestError
    assert isinstance(exc.field, str) and isinstance(exc.problem, str) and exc.problem
    assert str(exc) == (f"{exc.field}: {exc.problem}" if exc.field else exc.problem)
    doc = reference_load(source)
    if doc is DOCUMENT_FAULT:
        assert exc.field == "", f"document-level fault named a field: {exc}"
    else:
        assert exc.field, f"fault inside the document named no field: {exc}"
        assert resolves(doc, exc.field, missing_ok="required" in exc.problem), (
            f"{exc.field!r} is not where the fault is: {exc}"
        )


DOCUMENT_FAULT = object()


def reference_load(source: str | bytes) -> Any:
    """The document by plain safe loading, or DOCUMENT_FAULT when only a document-level
    error is possible."""
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            return DOCUMENT_FAULT
    try:
        aliases = depth = deepest = 0
        for event in yaml.parse(source):
            aliases += isinstance(event, yaml.AliasEvent)
            if isinstance(event, yaml.NodeEvent):  # a node, one level below the open ones
                deepest = max(deepest, depth + 1)
            depth += isinstance(event, yaml.CollectionStartEvent)
            depth -= isinstance(event, yaml.CollectionEndEvent)
        if aliases > MAX_ALIASES or deepest > MAX_DEPTH:
            return DOCUMENT_FAULT
        doc = yaml.safe_load(source)
    except Exception:  # anything that is not one constructible YAML document
        return DOCUMENT_FAULT
    if not isinstance(doc, dict) or any(too_large(value) for value in nodes(doc)):
        return DOCUMENT_FAULT
    # The root's keys are checked in order: the first bad one is a key that is not text
    # (no path can name it) or an unknown name (a path names it).
    bad = [key for key in doc if not isinstance(key, str) or key not in TOP_LEVEL]
    if bad and not isinstance(bad[0], str):
        return DOCUMENT_FAULT
    return doc


TOP_LEVEL = {
    "model_definition",
    "training_data",
    "training_data_reference",
    "training_results",
    "training_results_reference",
}


def resolves(node: Any, path: str, missing_ok: bool) -> bool:
    """Whether `path` names a node under `node`; keys may themselves hold '.' or '['."""
    if path == "":
        return True
    if isinstance(node, list):
        match = re.match(r"\[(\d+)\]\.?", path)
        return bool(
            match
            and int(match[1]) < len(node)
            and resolves(node[int(match[1])], path[match.end() :], missing_ok)
        )
    if not isinstance(node, dict):
        return False
    for key in node:
        if not isinstance(key, str):
            continue
        name = '""' if key == "" else key
        if path == name:
            return True
        if path.startswith(name + ".") and resolves(node[key], path[len(name) + 1 :], missing_ok):
            return True
        if path.startswith(name + "[") and resolves(node[key], path[len(name) :], missing_ok):
            return True
    # A required field that is absent: its parent exists, it does not.
    return missing_ok and "." not in path and "[" not in path


def check_manifest(m: Manifest) -> None:
    assert isinstance(m, Manifest)
    assert isinstance(m.resource, ResourceSize)
    assert default_registry().problem(m.framework_name, m.framework_version) is None
    for value in (m.name, m.command, m.framework_name, m.framework_version):
        assert isinstance(value, str) and value.strip() == value and value
    for value in (m.description, m.author_name, m.author_email):
        assert isinstance(value, str) and value.strip() == value
    assert isinstance(m.timeout_seconds, float)
    assert math.isfinite(m.timeout_seconds) and m.timeout_seconds >= 0
    for store in (m.training_data, m.training_results):
        assert isinstance(store.type, StoreType)
        assert store.bucket and "/" not in store.bucket and store.bucket not in (".", "..")
        required, optional, _ = CONNECTION_FIELDS[store.type]
        assert set(required) <= set(store.connection) <= set(required) | set(optional)
        for value in store.connection.values():
            assert isinstance(value, str) and value and value.strip() == value

    # Redaction: each secret field shows the placeholder, and no secret value shows up
    # anywhere unless the same text is also in a field that is not secret.
    shown = m.to_dict(redact=True)
    clear = m.to_dict()
    secret_values = set()
    for part in ("training_data", "training_results"):
        store = getattr(m, part)
        for key in CONNECTION_FIELDS[store.type][2]:
            assert shown[part]["connection"][key] == REDACTED
            secret_values.add(store.connection[key])
            del clear[part]["connection"][key]
    public = set(leaves(clear))
    for value in leaves(shown):
        assert value not in secret_values - public - {REDACTED}
    for part, connection in m.secrets().items():
        assert connection == getattr(m, part).connection

    # Round trips: JSON-safe dict, redacted dict plus sealed secrets, and the manifest
    # written back as a manifest parses to the same thing.
    data = m.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert Manifest.from_dict(data) == m
    assert Manifest.from_dict(shown).with_connections(m.secrets()) == m
    assert parse_manifest(yaml.safe_dump(as_manifest(m))) == m


def as_manifest(m: Manifest) -> dict:
    """`m` in the seed's manifest layout."""
    data = m.to_dict()
    stores = {}
    for part, role in (("training_data", "source"), ("training_results", "target")):
        store = data[part]
        stores[part] = {
            "connection": store["connection"],
            role: {"bucket": store["bucket"], "type": store["type"]},
        }
    return {
        "model_definition": {
            "name": data["name"],
            "description": data["description"],
            "author": data["author"],
            "framework": data["framework"],
            "execution": data["execution"],
        },
        "training_data_reference": [stores["training_data"]],
        "training_results_reference": stores["training_results"],
    }


def too_large(value: Any) -> bool:
    return isinstance(value, int) and value.bit_length() > MAX_INT_BITS


def nodes(node: Any):
    """Every value in the document, keys included (aliases may repeat one: seen once)."""
    seen, todo = set(), [node]
    while todo:
        node = todo.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                continue
            seen.add(id(node))
            todo.extend(node.items() if isinstance(node, dict) else node)
        elif isinstance(node, tuple):
            todo.extend(node)
        else:
            yield node


def leaves(node: Any):
    if isinstance(node, dict):
        for value in node.values():
            yield from leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from leaves(value)
    else:
        yield node


# --- strategies: arbitrary YAML -----------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=20),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["", " ", "~", "null", "yes", "no", "0x1F", "0o17", "1_000", "1:30:00"]),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["model_definition", "training_data", "training_results", "name", ""]),
    st.integers(),
    st.booleans(),
    st.none(),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=20,
)


@st.composite
def shared_values(draw) -> Any:
    """A value used several times in one document: safe_dump writes anchors and aliases."""
    part = draw(st.lists(values, min_size=1, max_size=3))
    times = draw(st.integers(min_value=2, max_value=MAX_ALIASES + 5))
    return {"model_definition": part, "training_data": [part] * times}


def deep(draw_depth: int, opener: str, closer: str) -> str:
    return opener * draw_depth + "x" + closer * draw_depth


deep_nesting = st.builds(
    deep,
    st.integers(min_value=1, max_value=400),
    st.sampled_from(["[", "{a: ", "- ", "a:\n "]),
    st.sampled_from(["]", "}", ""]),
)

# Pieces of YAML syntax, joined at random: tags safe loading must refuse or cannot build,
# anchors, aliases, merge keys, directives, several documents, duplicate keys.
TOKENS = [
    "model_definition",
    "training_data",
    "name",
    "a",
    "b",
    "x",
    ": ",
    ":",
    "- ",
    "? ",
    ", ",
    "\n",
    "\n  ",
    "\n- ",
    " ",
    "\t",
    "[",
    "]",
    "{",
    "}",
    "'",
    '"',
    "#",
    "|",
    ">",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "*c",
    "<<: ",
    "<<: *a",
    "!!python/object:os.system ",
    "!!python/object/apply:os.system ['true'] ",
    "!!python/name:os.system ",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!str ",
    "!!null ",
    "!!timestamp ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!!pairs ",
    "!!map ",
    "!!seq ",
    "!!merge ",
    "!local ",
    "!<tag:yaml.org,2002:int> ",
    "2001-13-40",
    "2001-02-30 25:61:61",
    "2001-1-1",
    "1:59:59",
    "0x",
    "0b12",
    "0o9",
    "1e999",
    "-.inf",
    ".NaN",
    "~",
    "true",
    "yes",
    "Off",
    "AAAA",
    "A===",
    "1_0",
    "+",
    "-",
    "0",
    "12345678901234567890",
    "\\x00",
    "\u0000",
    "\ufeff",
    "\U0001f600",
    "é",
    "\ud800",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)

TAGS = ["int", "float", "bool", "timestamp", "binary", "null", "str", "set", "omap", "pairs"]
tagged = st.builds(
    "{}: !!{} {}".format,
    st.sampled_from(["a", "model_definition", "training_data"]),
    st.sampled_from(TAGS),
    st.one_of(
        st.sampled_from(["abc", "", "1", "2001-13-40", "2001-02-29", "1:60", "[1]", "{a: 1}"]),
        st.text(alphabet="0123456789-:_.eE+xob ", max_size=12),
    ),
)
duplicate_keys = st.lists(
    st.tuples(st.sampled_from(["model_definition", "training_data", "a"]), values),
    max_size=4,
).map(lambda pairs: "".join(yaml.safe_dump({k: v}, sort_keys=False) for k, v in pairs))
several_documents = st.lists(values, min_size=2, max_size=3).map(
    lambda docs: yaml.safe_dump_all(docs, sort_keys=False)
)

# Numbers past Python's 4300-digit limit for int() and str(), as values and as keys.
huge_numbers = st.builds(
    "{}{}{}".format,
    st.sampled_from(["a: ", "? ", "model_definition: {name: "]),
    st.builds(
        str.__mul__,
        st.sampled_from(["1", "f", ":59", "9_"]),
        st.integers(min_value=1000, max_value=6000),
    ).map(lambda digits: {"f": "0x", ":": "1"}.get(digits[0], "1") + digits),
    st.sampled_from(["", "\n: 1", "}"]),
)

yaml_texts = st.one_of(
    huge_numbers,
    st.text(),
    st.builds(yaml.safe_dump, values, allow_unicode=st.booleans(), sort_keys=st.just(False)),
    st.builds(yaml.safe_dump, shared_values(), sort_keys=st.just(False)),
    deep_nesting,
    token_soup,
    tagged,
    duplicate_keys,
    several_documents,
)


@settings(PROPERTY, max_examples=1500)
@given(yaml_texts)
@example("")
@example("- a\n- b\n")
@example("!!python/object/apply:os.system ['true']")
@example("null:\n'null':")  # two keys (None and "null"), not one given twice
def test_any_text_gives_a_manifest_or_a_manifest_error(text):
    check(text)


@settings(PROPERTY, max_examples=1000)
@given(st.one_of(st.binary(), yaml_texts.map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(b"\xff\xfe\x00")
def test_any_bytes_give_a_manifest_or_a_manifest_error(data):
    check(data)


# --- strategies: almost valid manifests ---------------------------------------------------

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.just(""),
    st.text(alphabet=" \t\u3000\xa0", min_size=1, max_size=3),  # blank
    st.sampled_from([" ", "\t", "..", ".", "a/b", "../x", "/abs", "0", "1h", "-5m", "inf"]),
    st.text(max_size=20),
    st.text(min_size=500, max_size=2000),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.dates(),
    st.binary(max_size=8),
)
KNOWN_NAMES = [
    "model_definition",
    "training_data",
    "training_data_reference",
    "training_results",
    "training_results_reference",
    "name",
    "description",
    "author",
    "email",
    "framework",
    "version",
    "execution",
    "command",
    "resource",
    "timeout",
    "connection",
    "source",
    "target",
    "bucket",
    "type",
    "path",
    "expose_credentials",
    "endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "auth_url",
    "user_name",
    "password",
    "region",
    "domain_name",
    "project_id",
]
GOOD_VALUES = [
    "small",
    "medium",
    "large",
    "s3",
    "bluemix_objectstore",
    "local",
    "tensorflow",
    "1.2-py3",
    "python",
    "3.11",
    "pytorch",
    "2.x",
    "90m",
    "2h",
    3600,
    True,
    "bucket-name",
    "some/path",
]
SPELLINGS = {
    "training_data": "training_data_reference",
    "training_data_reference": "training_data",
    "training_results": "training_results_reference",
    "training_results_reference": "training_results",
}


def places(node: Any, path: tuple = ()) -> list[tuple]:
    """Every (container path, key or index) in the document."""
    found = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return found
    for key, value in items:
        found.append((path, key))
        found.extend(places(value, path + (key,)))
    return found


def at(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutation(draw, doc: Any) -> None:
    """Change `doc` in place once: drop, replace, rename, duplicate, re-spell, wrap, unwrap."""
    spots = places(doc)
    if not spots:
        return
    parent_path, key = draw(st.sampled_from(spots))
    parent = at(doc, parent_path)
    how = draw(
        st.sampled_from(
            ["drop", "replace", "good", "rename", "respell", "duplicate", "wrap", "unwrap"]
        )
    )
    if how == "drop":
        del parent[key]
    elif how == "replace":
        parent[key] = draw(odd_values)
    elif how == "good":
        parent[key] = draw(st.sampled_from(GOOD_VALUES))
    elif how == "wrap":
        parent[key] = [parent[key]] * draw(st.integers(min_value=1, max_value=2))
    elif how == "unwrap":
        value = parent[key]
        if isinstance(value, list) and value:
            parent[key] = value[0]
        elif isinstance(value, dict) and value:
            parent[key] = next(iter(value.values()))
    elif isinstance(parent, dict):
        value = parent.pop(key) if how != "duplicate" else parent[key]
        if how == "respell" and key in SPELLINGS:
            new_key = SPELLINGS[key]
        else:
            new_key = draw(st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=10)))
        if how == "duplicate" and isinstance(value, (dict, list)):
            value = json.loads(json.dumps(value, default=str))  # a copy, not an alias
        parent[new_key] = value
    else:  # rename / respell / duplicate inside a list: repeat the item
        parent.append(parent[key])


@st.composite
def almost_valid(draw) -> str | bytes:
    doc = yaml.safe_load(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    if draw(st.booleans()):  # the other spelling of the top-level sections
        for key in [k for k in doc if k in SPELLINGS]:
            doc[SPELLINGS[key]] = doc.pop(key)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        draw(mutation(doc))
    text = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()))
    again = draw(st.lists(st.sampled_from(sorted(TOP_LEVEL)), max_size=2, unique=True))
    if again:  # sections written twice: YAML keeps the last one, silently
        text += yaml.safe_dump({key: yaml.safe_load(SEEDS["swift"]).get(key) for key in again})
    return text.encode("utf-8") if draw(st.booleans()) else text


@settings(PROPERTY, max_examples=2000)
@given(almost_valid())
def test_almost_valid_manifests_give_a_manifest_or_a_named_field(source):
    check(source)


@settings(PROPERTY, max_examples=50)
@given(st.sampled_from(sorted(SEEDS)), st.booleans())
def test_seed_manifests_parse_as_text_and_bytes(which, as_bytes):
    text = SEEDS[which]
    assert check(text.encode("utf-8") if as_bytes else text) is not None


# --- what the properties found: each was an exception other than ManifestError, or a field
# that did not name the fault, before the fix in common/manifest.py -----------------------

SWIFT = yaml.safe_load(SEEDS["swift"])


def _swift(**execution) -> str:
    doc = json.loads(json.dumps(SWIFT))
    doc["model_definition"]["execution"].update(execution)
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        # ValueError from datetime: a date the timestamp pattern matches but that is no date.
        ("a: 2001-13-40", "", "line 1, column 4: not a valid timestamp"),
        # ValueError, KeyError, AttributeError from explicit tags on text they cannot read.
        ("a: !!int abc", "", "not a valid int"),
        ("a: !!float abc", "", "not a valid float"),
        ("a: !!bool abc", "", "not a valid bool"),
        ("a: !!timestamp abc", "", "not a valid timestamp"),
        # ValueError: more than Python's 4300-digit limit for int().
        ("a: " + "1" * 5000, "", "not a valid int"),
        # ValueError later, from str()/repr() of hex or base-60 ints (they have no digit limit).
        ("model_definition: {name: 0x" + "f" * 5000 + "}", "", "number too large"),
        ("? 1" + ":59" * 3000 + "\n: 1", "", "number too large"),
        (
            SEEDS["swift"].replace(
                "resource: small", "resource: small\n    timeout: 0x" + "f" * 5000
            ),
            "",
            "number too large",
        ),
        # RecursionError from the composer.
        ("[" * 2000 + "]" * 2000, "", "nested too deeply"),
        ("".join(" " * i + "a:\n" for i in range(150)) + " " * 150 + "x", "", "nested too deeply"),
        # An empty key was joined away: no field at the root, its parent's name below it.
        ('"": 1', '""', "unknown field"),
        ('model_definition: {"": 1}', 'model_definition.""', "unknown field"),
        # Blank text passed as a required value (and became an empty name).
        (_swift(command="   "), "model_definition.execution.command", "required"),
    ],
)
def test_found_by_the_properties(text, field, words):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert caught.value.field == field
    assert words in str(caught.value)
    check(text)


def test_blank_optional_connection_field_is_left_out():
    doc = json.loads(json.dumps(SWIFT))
    doc["training_data_reference"][0]["connection"]["region"] = "  "
    m = check(yaml.safe_dump(doc))
    assert m is not None and "region" not in m.training_data.connection
