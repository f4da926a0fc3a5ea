"""How a run's metrics are read from its log: the manifest's regular expressions, in either form
users bring, turned into `LogPattern`s.

    metric_definitions:            # SageMaker's MetricDefinitions (also spelled so, Name/Regex)
    - name: loss
      regex: "loss (\\S+)"         # one group: the value; a group named step, epoch or
      goal: minimize               #   iteration gives the step; optional goal
    evaluation_metrics:            # FfDL's regex_extractor, as FfDL users write it
      type: regex_extractor
      line_lookahead: 4            # accepted; each regex is matched within a line
      groups:
        test:
          regex: "Epoch %{INT:epoch}: accuracy %{FLOAT:acc}"
          etimes: {epoch: {type: INT, value: $epoch}}
          values: {accuracy: {type: FLOAT, value: $acc}}     # series `test:accuracy`
    evaluation_metrics:            # FfDL's TensorBoard collector: the event files under `in`
      type: tensorboard            #   (worker/tensorboard.py reads event files anywhere under
      in: $LOG_DIR/tb              #   LOG_DIR and RESULT_DIR without it)

A metric's goal (which way is better) is given, or guessed from its name: loss, error and
the like are lower-is-better, anything else higher-is-better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import regex

MAX_PATTERNS = 20
MAX_REGEX_CHARS = 2000
STEP_GROUPS = ("step", "epoch", "iteration")
GOALS = ("minimize", "maximize")
# FfDL's pattern library (metrics/log_collectors/regex_extractor/src/patterns/common-patterns).
GROK = {
    "GLOG_STAMP": r"[EFIW]\d\d\d\d\s+\d\d\:\d\d\:\d*\.\d+",
    "TIMESTAMP": r"(?:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[.]\d+?Z|[-+]\d{2}:\d{2}?)",
    "FLOAT": r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?",
    "INT": r"[-+]?\d+",
    "INT_ANY": r"[-+]?(?:0[xX][\dA-Fa-f]+|0[0-7]*|\d+)",
    "HEX": r"[-+]?(?:0[xX])?[\dA-Fa-f]+",
}
GROK_REFERENCE = re.compile(r"%\{(\w+)(?::(\w+))?\}")
LOWER_IS_BETTER = {"loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl"}
LOWER_IS_BETTER |= {"wer", "cer"}
# Each line of the stored log starts with the pump's UTC stamp and a space (worker/logpump.py).
STAMP_CHARS = len("2026-01-01T00:00:00.000000Z ")
NON_METRIC_TYPES = ("tensorboard", "optimizer", "emetrics_file")
# Where `type: tensorboard`'s `in:` may point (worker/tensorboard.py reads the event files).
TENSORBOARD_ROOTS = ("$LOG_DIR", "$RESULT_DIR")


class MetricSpecError(ValueError):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class MetricValue:
    name: str  # the series' name
    group: str  # the regex group holding the value (a name, or a number as text)
    goal: str


@dataclass(frozen=True)
class LogPattern:
    """One regex over the log's lines, and the series it feeds."""

    regex: str
    values: tuple[MetricValue, ...]
    step_group: str = ""  # the group holding the step; none: each match is the next step

    def compiled(self) -> regex.Pattern:
        """Compiled to match within a line of the stamped log (a leading ^ skips the stamp)."""
        text = self.regex
        if text.startswith("^"):
            text = f"^.{{{STAMP_CHARS - 1}}} " + text[1:]
        return regex.compile(text, regex.MULTILINE | regex.VERSION0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "regex": self.regex,
            "step_group": self.step_group,
            "values": [{"name": v.name, "group": v.group, "goal": v.goal} for v in self.values],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogPattern:
        values = tuple(MetricValue(v["name"], v["group"], v["goal"]) for v in data["values"])
        return cls(data["regex"], values, data.get("step_group", ""))


def goal_for(name: str) -> str:
    """Lower is better for losses and errors (by a word of the name), higher for the rest."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    lower = any(w in LOWER_IS_BETTER or w.endswith("loss") for w in words)
    return "minimize" if lower else "maximize"


def read_log_patterns(top: dict[str, Any]) -> tuple[LogPattern, ...]:
    """The patterns of a manifest's `metric_definitions` (or `MetricDefinitions`) and
    `evaluation_metrics`; MetricSpecError naming the field at fault."""
    patterns: list[LogPattern] = []
    for key in ("metric_definitions", "MetricDefinitions"):
        if top.get(key) is not None:
            patterns += _definitions(top[key], key)
    if top.get("evaluation_metrics") is not None:
        patterns += _evaluation_metrics(top["evaluation_metrics"])
    if len(patterns) > MAX_PATTERNS:
        raise MetricSpecError(
            "metric_definitions", f"at most {MAX_PATTERNS} regexes, got {len(patterns)}"
        )
    names = [v.name for p in patterns for v in p.values]
    for name in names:
        if names.count(name) > 1:
            raise MetricSpecError("metric_definitions", f"metric {name!r} is defined twice")
    return tuple(patterns)


def read_tensorboard_folder(top: dict[str, Any]) -> str:
    """FfDL's `evaluation_metrics: {type: tensorboard, in: <folder>}`: the folder whose event
    files are read, as `$LOG_DIR[/path]` or `$RESULT_DIR[/path]` (FfDL's `$JOB_STATE_DIR/logs`
    is LOG_DIR); "" without one: event files are read anywhere under both."""
    value = top.get("evaluation_metrics")
    if not isinstance(value, dict) or value.get("type") != "tensorboard":
        return ""
    folder = value.get("in")
    if folder is None:
        return ""
    where = "evaluation_metrics.in"
    expected = (
        "expected a folder under $LOG_DIR or $RESULT_DIR (FfDL's $JOB_STATE_DIR/logs is $LOG_DIR)"
    )
    if not isinstance(folder, str) or not folder.strip():
        raise MetricSpecError(where, expected)
    text = re.sub(r"\$\{(\w+)\}", r"$\1", folder.strip())
    state_logs = "$JOB_STATE_DIR/logs"
    if text == state_logs or text.startswith(f"{state_logs}/"):
        text = "$LOG_DIR" + text[len(state_logs) :]
    root, _, rest = text.partition("/")
    parts = [part for part in rest.split("/") if part not in ("", ".")]
    if root not in TENSORBOARD_ROOTS or ".." in parts:
        raise MetricSpecError(where, f"{folder!r}: {expected}")
    return "/".join([root, *parts])


def _definitions(value: Any, path: str) -> list[LogPattern]:
    if not isinstance(value, list):
        raise MetricSpecError(path, "expected a list of {name, regex}")
    out = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise MetricSpecError(where, "expected a mapping with name and regex")
        # SageMaker users write Name and Regex.
        item = {k.lower() if isinstance(k, str) else k: v for k, v in item.items()}
        _known(item, where, ("name", "regex", "goal"))
        name = _text(item, "name", where)
        compiled = _compile(_text(item, "regex", where), f"{where}.regex")
        goal = _goal(item, where, name)
        step = next((g for g in STEP_GROUPS if g in compiled.groupindex), "")
        value_group = _value_group(compiled, step, f"{where}.regex")
        out.append(LogPattern(compiled.pattern, (MetricValue(name, value_group, goal),), step))
    return out


def _value_group(compiled: regex.Pattern, step: str, where: str) -> str:
    if "value" in compiled.groupindex:
        return "value"
    step_index = compiled.groupindex.get(step)
    others = [i for i in range(1, compiled.groups + 1) if i != step_index]
    if len(others) != 1:
        raise MetricSpecError(
            where,
            f"needs one group for the value, got {len(others)} "
            "(name it (?P<value>...) when there are more)",
        )
    index = others[0]
    named = {i: n for n, i in compiled.groupindex.items()}
    return named.get(index, str(index))


def _evaluation_metrics(value: Any) -> list[LogPattern]:
    path = "evaluation_metrics"
    if not isinstance(value, dict):
        raise MetricSpecError(path, "expected a mapping")
    _known(value, path, ("type", "in", "line_lookahead", "linelookahead", "groups", "event_types"))
    kind = _text(value, "type", path)
    if kind in NON_METRIC_TYPES:
        return []  # not from the log: tensorboard's event files (read_tensorboard_folder), or
        # FfDL's other collectors, accepted and read as event files and JSON are anyway
    if kind != "regex_extractor":
        known = ", ".join(("regex_extractor", *NON_METRIC_TYPES))
        raise MetricSpecError(f"{path}.type", f"unknown type {kind!r} (known: {known})")
    groups = value.get("groups")
    if not isinstance(groups, dict) or not groups:
        raise MetricSpecError(f"{path}.groups", "required: a mapping of label -> {regex, values}")
    return [_ffdl_group(label, group, f"{path}.groups.{label}") for label, group in groups.items()]


def _ffdl_group(label: Any, group: Any, where: str) -> LogPattern:
    if not isinstance(group, dict):
        raise MetricSpecError(where, "expected a mapping with regex and values")
    _known(group, where, ("regex", "meta", "etimes", "values", "scalars"))
    compiled = _compile(_grok(_text(group, "regex", where), f"{where}.regex"), f"{where}.regex")
    values_key = "values" if "values" in group else "scalars"
    values = group.get(values_key)
    if not isinstance(values, dict) or not values:
        raise MetricSpecError(f"{where}.values", "required: a mapping of metric -> {value: $group}")
    out = []
    for metric, item in values.items():
        ref = _reference(item, compiled, f"{where}.{values_key}.{metric}")
        name = f"{label}:{metric}"
        out.append(MetricValue(name, ref, goal_for(str(metric))))
    step = ""
    etimes = group.get("etimes") or {}
    if not isinstance(etimes, dict):
        raise MetricSpecError(f"{where}.etimes", "expected a mapping of name -> {value: $group}")
    for key, item in etimes.items():
        step = _reference(item, compiled, f"{where}.etimes.{key}")
        break
    return LogPattern(compiled.pattern, tuple(out), step)


def _reference(item: Any, compiled: regex.Pattern, where: str) -> str:
    """`{type: FLOAT, value: $group}` (or just `$group`): the group it names."""
    text = item.get("value") if isinstance(item, dict) else item
    if not isinstance(text, str) or not text.startswith("$"):
        raise MetricSpecError(where, "expected value: $<group of the regex>")
    group = text[1:]
    if group not in compiled.groupindex:
        known = ", ".join(compiled.groupindex) or "none"
        raise MetricSpecError(where, f"the regex has no group {group!r} (its groups: {known})")
    return group


def _grok(text: str, where: str) -> str:
    """FfDL's `%{FLOAT:loss}` references to its pattern library, expanded."""

    def expand(found: re.Match) -> str:
        symbol, name = found.group(1), found.group(2)
        if symbol not in GROK:
            raise MetricSpecError(
                where, f"unknown pattern %{{{symbol}}} (known: {', '.join(GROK)})"
            )
        return f"(?P<{name}>{GROK[symbol]})" if name else f"(?:{GROK[symbol]})"

    return GROK_REFERENCE.sub(expand, text)


def _compile(text: str, where: str) -> regex.Pattern:
    if len(text) > MAX_REGEX_CHARS:
        raise MetricSpecError(where, f"longer than {MAX_REGEX_CHARS} characters")
    try:
        return regex.compile(text, regex.MULTILINE | regex.VERSION0)
    except regex.error as exc:
        raise MetricSpecError(where, f"not a valid regular expression: {exc}") from None


def _goal(item: dict, where: str, name: str) -> str:
    goal = item.get("goal")
    if goal is None:
        return goal_for(name)
    if goal not in GOALS:
        raise MetricSpecError(f"{where}.goal", f"expected minimize or maximize, got {goal!r}")
    return goal


def _known(item: dict, where: str, known: tuple[str, ...]) -> None:
    for key in item:
        if key not in known:
            raise MetricSpecError(f"{where}.{key}", f"unknown field (known: {', '.join(known)})")


def _text(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MetricSpecError(f"{where}.{key}", "required: text")
    return value.strip() if key != "regex" else value
