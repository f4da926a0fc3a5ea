"""The training manifest: YAML read safely into a validated `Manifest`, errors naming the field.

Both spellings of the seed are accepted: `training_data` / `training_data_reference` and
`training_results` / `training_results_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

from common.fields import FieldReader
from common.fields import join as _join
from common.fields import kind as _kind
from common.fleet.sizes import ResourceSize
from common.frameworks import Registry, default_registry
from common.metricspec import (
    LogPattern,
    MetricSpecError,
    read_log_patterns,
    read_tensorboard_folder,
)

MAX_ALIASES = 50
MAX_DEPTH = 100
MAX_INT_BITS = 1024
REDACTED = "<redacted>"


class ManifestError(ValueError):
    """A manifest problem, phrased `field.path: what is wrong`."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class StoreType(str, Enum):
    S3 = "s3"
    SWIFT = "bluemix_objectstore"
    LOCAL = "local"


# Per store type: required connection fields, optional ones, and which of them are secret.
CONNECTION_FIELDS: dict[StoreType, tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]] = {
    StoreType.S3: (
        ("endpoint_url", "aws_access_key_id", "aws_secret_access_key"),
        ("region", "region_name"),
        frozenset({"aws_secret_access_key"}),
    ),
    StoreType.SWIFT: (
        ("auth_url", "user_name", "password"),
        ("region", "domain_name", "project_id", "project_name", "user_domain_name"),
        frozenset({"password"}),
    ),
    StoreType.LOCAL: (("path",), (), frozenset()),
}


@dataclass(frozen=True)
class DataStore:
    type: StoreType
    bucket: str
    connection: dict[str, str]

    def to_dict(self, redact: bool = False) -> dict[str, Any]:
        secret = CONNECTION_FIELDS[self.type][2]
        connection = {
            k: (REDACTED if redact and k in secret else v) for k, v in self.connection.items()
        }
        return {"type": self.type.value, "bucket": self.bucket, "connection": connection}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataStore:
        return cls(StoreType(data["type"]), data["bucket"], dict(data["connection"]))


@dataclass(frozen=True)
class Manifest:
    name: str
    framework_name: str
    framework_version: str
    command: str
    resource: ResourceSize
    training_data: DataStore
    training_results: DataStore
    description: str = ""
    author_name: str = ""
    author_email: str = ""
    # execution.timeout: the run's own time limit in seconds (0: none).
    timeout_seconds: float = 0.0
    # execution.expose_credentials: the data store's credentials in the command's
    # environment (AWS_* / OS_*). Off: they are used for staging and storing only.
    expose_credentials: bool = False
    # metric_definitions / evaluation_metrics: the regexes that read metrics from the log.
    log_patterns: tuple[LogPattern, ...] = ()
    # evaluation_metrics {type: tensorboard, in}: the folder of the event files ("": anywhere).
    tensorboard_in: str = ""

    def to_dict(self, redact: bool = False) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "author": {"name": self.author_name, "email": self.author_email},
            "framework": {"name": self.framework_name, "version": self.framework_version},
            "execution": {
                "command": self.command,
                "resource": self.resource.value,
                **({"timeout": self.timeout_seconds} if self.timeout_seconds else {}),
                **({"expose_credentials": True} if self.expose_credentials else {}),
            },
            "training_data": self.training_data.to_dict(redact),
            "training_results": self.training_results.to_dict(redact),
            **({"metrics": [p.to_dict() for p in self.log_patterns]} if self.log_patterns else {}),
            **({"tensorboard_in": self.tensorboard_in} if self.tensorboard_in else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            author_name=data.get("author", {}).get("name", ""),
            author_email=data.get("author", {}).get("email", ""),
            framework_name=data["framework"]["name"],
            framework_version=data["framework"]["version"],
            command=data["execution"]["command"],
            resource=ResourceSize(data["execution"]["resource"]),
            timeout_seconds=float(data["execution"].get("timeout", 0)),
            expose_credentials=bool(data["execution"].get("expose_credentials", False)),
            training_data=DataStore.from_dict(data["training_data"]),
            training_results=DataStore.from_dict(data["training_results"]),
            log_patterns=tuple(LogPattern.from_dict(p) for p in data.get("metrics", ())),
            tensorboard_in=data.get("tensorboard_in", ""),
        )

    def secrets(self) -> dict[str, dict[str, str]]:
        """The full connections, for sealing with the run (never sent anywhere in clear)."""
        return {
            "training_data": dict(self.training_data.connection),
            "training_results": dict(self.training_results.connection),
        }

    def with_connections(self, connections: dict[str, dict[str, str]]) -> Manifest:
        """This manifest with the (unsealed) full connections put back."""
        data = self.to_dict()
        for part in ("training_data", "training_results"):
            data[part]["connection"] = dict(connections[part])
        return Manifest.from_dict(data)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents using more than MAX_ALIASES aliases (billion laughs),
    nested deeper than MAX_DEPTH, or with values its constructors cannot build."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ManifestError("", f"too many YAML aliases (more than {MAX_ALIASES})")
        # The composer recurses per level: refuse deep nesting before Python's stack runs out.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ManifestError("", f"nested too deeply (more than {MAX_DEPTH} levels)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        # SafeConstructor lets ValueError & co. escape (`2001-13-40`, `!!int abc`, ...).
        tag = node.tag.rsplit(":", 1)[-1]
        try:
            data = super().construct_object(node, deep)
        except (ValueError, TypeError, LookupError, AttributeError, ArithmeticError):
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {tag}", node.start_mark
            ) from None
        # Hex and base-60 ints have no digit limit, but str() of them has one.
        if isinstance(data, int) and data.bit_length() > MAX_INT_BITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"number too large (more than {MAX_INT_BITS} bits)", node.start_mark
            )
        return data


def _no_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    """A key given twice in one mapping is an error naming it (YAML keeps the last silently,
    so a second `model_definition:` would quietly replace the first)."""
    if id(node) in seen:  # aliases share nodes: each is looked at once
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            # By its resolved tag too: `null` and `'null'` are two keys (None and "null").
            key = (key_node.tag, key_node.value)
            where = _join(path, key_node.value or '""')
            if key in lines:
                raise ManifestError(
                    where,
                    f"given twice (lines {lines[key]} and {key_node.start_mark.line + 1})",
                )
            lines[key] = key_node.start_mark.line + 1
            _no_duplicate_keys(value_node, where, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _no_duplicate_keys(item, f"{path}[{index}]", seen)


def load_yaml(text: str | bytes) -> Any:
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader already checks the characters
        node = loader.get_single_node()
        if node is None:
            return None
        _no_duplicate_keys(node, "", set())
        return loader.construct_document(node)
    except ManifestError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ManifestError("", f"not valid YAML{where}: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_manifest(text: str | bytes, frameworks: Registry | None = None) -> Manifest:
    """The manifest in `text`, checked against the framework registry (default: built-in)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError("", "not UTF-8 text") from None
    return _Reader(frameworks or default_registry()).manifest(load_yaml(text))


class _Reader(FieldReader):
    """Walks the parsed document once, raising a ManifestError at the first bad field."""

    error = ManifestError

    def __init__(self, frameworks: Registry):
        self.frameworks = frameworks

    def manifest(self, doc: Any) -> Manifest:
        if doc is None:
            raise ManifestError("", "the manifest is empty")
        top = self.mapping(
            doc,
            "",
            (
                "model_definition",
                "training_data",
                "training_data_reference",
                "training_results",
                "training_results_reference",
                "metric_definitions",
                "MetricDefinitions",
                "evaluation_metrics",
            ),
        )
        if "model_definition" not in top:
            raise ManifestError("model_definition", "required")
        md = self.mapping(
            top["model_definition"],
            "model_definition",
            ("name", "description", "author", "framework", "execution"),
        )
        name = self.text(md, "name", "model_definition")
        description = self.text(md, "description", "model_definition", required=False)
        author_name = author_email = ""
        if md.get("author") is not None:
            author = self.mapping(md["author"], "model_definition.author", ("name", "email"))
            author_name = self.text(author, "name", "model_definition.author", required=False)
            author_email = self.text(author, "email", "model_definition.author", required=False)
        fw_name, fw_version = self.framework(md)
        command, resource, timeout, expose = self.execution(md)
        data, results = self.stores(top)
        try:
            patterns = read_log_patterns(top)
            tensorboard_in = read_tensorboard_folder(top)
        except MetricSpecError as exc:
            raise ManifestError(exc.field, exc.problem) from None
        return Manifest(
            name=name,
            description=description,
            author_name=author_name,
            author_email=author_email,
            framework_name=fw_name,
            framework_version=fw_version,
            command=command,
            resource=resource,
            training_data=data,
            training_results=results,
            timeout_seconds=timeout,
            expose_credentials=expose,
            log_patterns=patterns,
            tensorboard_in=tensorboard_in,
        )

    def framework(self, md: dict) -> tuple[str, str]:
        """model_definition.framework: a name and version the service offers."""
        if md.get("framework") is None:
            raise ManifestError("model_definition.framework", "required")
        fw = self.mapping(md["framework"], "model_definition.framework", ("name", "version"))
        fw_name = self.text(fw, "name", "model_definition.framework")
        fw_version = self.text(fw, "version", "model_definition.framework")
        problem = self.frameworks.problem(fw_name, fw_version)
        if problem:
            field, message = problem
            if field == "version" and isinstance(fw["version"], float):
                message += (
                    " (unquoted, YAML reads a version as a number, and 3.10 as 3.1: "
                    'write it in quotes, e.g. version: "3.10")'
                )
            raise ManifestError(f"model_definition.framework.{field}", message)
        return fw_name, fw_version

    def execution(self, md: dict) -> tuple[str, ResourceSize, float, bool]:
        """model_definition.execution: command, resource size, time limit, credentials."""
        if md.get("execution") is None:
            raise ManifestError("model_definition.execution", "required")
        ex = self.mapping(
            md["execution"],
            "model_definition.execution",
            ("command", "resource", "timeout", "expose_credentials"),
        )
        expose = ex.get("expose_credentials", False)
        if not isinstance(expose, bool):
            raise ManifestError(
                "model_definition.execution.expose_credentials",
                f"expected true or false, got {_kind(expose)}",
            )
        timeout = self.duration(ex, "timeout", "model_definition.execution")
        command = self.text(ex, "command", "model_definition.execution")
        resource_text = self.text(ex, "resource", "model_definition.execution", required=False)
        try:
            resource = ResourceSize(resource_text or "small")
        except ValueError:
            known = ", ".join(s.value for s in ResourceSize)
            raise ManifestError(
                "model_definition.execution.resource",
                f"unknown size {resource_text!r} (known: {known})",
            ) from None
        return command, resource, timeout, expose

    def stores(self, top: dict) -> tuple[DataStore, DataStore]:
        """The one data store and the one results store (either key spelling)."""
        data_key = self.one_of(top, "training_data_reference", "training_data")
        results_key = self.one_of(top, "training_results_reference", "training_results")
        data_list = top[data_key]
        if not isinstance(data_list, list):
            raise ManifestError(
                data_key, f"expected a list of one data store, got {_kind(data_list)}"
            )
        if len(data_list) != 1:
            raise ManifestError(
                data_key, f"exactly one data store is supported, got {len(data_list)}"
            )
        data = self.store(data_list[0], f"{data_key}[0]", "source")
        results_value = top[results_key]
        if isinstance(results_value, list):
            if len(results_value) != 1:
                raise ManifestError(
                    results_key, f"exactly one results store is supported, got {len(results_value)}"
                )
            return data, self.store(results_value[0], f"{results_key}[0]", "target")
        return data, self.store(results_value, results_key, "target")

    def duration(self, parent: dict, key: str, path: str) -> float:
        """Seconds from `3600`, `90s`, `30m`, `2h` or `1d`; 0 when absent."""
        value = parent.get(key)
        if value is None:
            return 0.0
        where = _join(path, key)
        text = str(value).strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        scale = units.get(text[-1:], 1) if text else 1
        number = text[:-1] if text[-1:] in units else text
        try:
            seconds = float(number) * scale
        except ValueError:
            seconds = -1.0
        if isinstance(value, bool) or not seconds > 0 or seconds == float("inf"):
            raise ManifestError(
                where, f"expected a positive duration like 3600, 90m, 2h or 1d, got {value!r}"
            )
        return seconds

    def one_of(self, top: dict, preferred: str, alternative: str) -> str:
        if preferred in top and alternative in top:
            raise ManifestError(alternative, f"give either {preferred} or {alternative}, not both")
        if preferred in top:
            return preferred
        if alternative in top:
            return alternative
        raise ManifestError(preferred, "required")

    def store(self, value: Any, path: str, role: str) -> DataStore:
        store = self.mapping(value, path, ("connection", role))
        if store.get(role) is None:
            raise ManifestError(_join(path, role), "required")
        where = self.mapping(store[role], _join(path, role), ("bucket", "type"))
        bucket = self.text(where, "bucket", _join(path, role))
        type_text = self.text(where, "type", _join(path, role))
        try:
            store_type = StoreType(type_text)
        except ValueError:
            known = ", ".join(t.value for t in StoreType)
            raise ManifestError(
                _join(path, role, "type"), f"unknown store type {type_text!r} (known: {known})"
            ) from None
        if "/" in bucket or bucket in (".", ".."):
            raise ManifestError(_join(path, role, "bucket"), f"invalid bucket name {bucket!r}")
        required, optional, _ = CONNECTION_FIELDS[store_type]
        conn_path = _join(path, "connection")
        if store.get("connection") is None:
            raise ManifestError(conn_path, "required")
        conn = self.mapping(store["connection"], conn_path, required + optional)
        connection = {k: self.text(conn, k, conn_path) for k in required}
        for key in optional:
            if value := self.text(conn, key, conn_path, required=False):
                connection[key] = value
        if store_type is StoreType.LOCAL:
            parts = connection["path"].replace("\\", "/").split("/")
            if ".." in parts:
                raise ManifestError(_join(conn_path, "path"), "must not contain '..'")
        return DataStore(store_type, bucket, connection)
