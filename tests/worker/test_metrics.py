"""Metrics collection (worker/metrics.py) over real files, and their Redis side against the
real Redis (common/metrics.py)."""

from __future__ import annotations

import json
import os

import pytest

from common.clock import iso, utcnow
from common.manifest import Manifest, ManifestError, parse_manifest
from common.metrics import Point, RunMetrics, Series, read_jsonl
from common.metricspec import goal_for
from tests.conftest import manifest_yaml
from worker.metrics import JsonLinesSource, LogSource, MetricsCollector, ValDictSource


def stamped(*lines: str) -> str:
    return "".join(f"{iso(utcnow())} {line}\n" for line in lines)


def patterns(extra: str):
    return parse_manifest(manifest_yaml() + extra).log_patterns


SAGEMAKER = """
MetricDefinitions:
- {Name: loss, Regex: "^step (?P<step>\\\\d+) loss=(\\\\S+)"}
- {Name: acc, Regex: "acc=(?P<value>[0-9.]+)"}
"""
FFDL = """
evaluation_metrics:
  type: regex_extractor
  in: "$JOB_STATE_DIR/logs"
  line_lookahead: 4
  groups:
    test:
      regex: "Test: epoch %{INT:epoch}, accuracy %{FLOAT:acc}, loss %{FLOAT:loss}"
      meta: {time: "$timestamp"}
      etimes: {epoch: {type: INT, value: $epoch}}
      values:
        accuracy: {type: FLOAT, value: $acc}
        loss: {type: FLOAT, value: $loss}
"""


def test_regexes_in_either_form_read_the_stamped_log(tmp_path):
    log = tmp_path / "training-log.txt"
    log.write_text(
        stamped(
            "step 10 loss=0.50 acc=0.61",
            "noise step 11 loss=9 (not at the line's start)",
            "Test: epoch 1, accuracy 0.875, loss 3.5e-1",
            "step 20 loss=0.25 acc=0.70",
        )
    )
    source = LogSource(patterns(SAGEMAKER + FFDL), log, 2.0)
    found = list(source.read())
    by_name = {}
    for name, step, value, seen, goal in found:
        by_name.setdefault(name, []).append((step, value, goal))
        assert seen.endswith("Z") and seen.startswith("20")
    assert by_name["loss"] == [(10, 0.5, "minimize"), (20, 0.25, "minimize")]
    assert by_name["acc"] == [(None, 0.61, "maximize"), (None, 0.7, "maximize")]
    assert by_name["test:accuracy"] == [(1, 0.875, "maximize")]
    assert by_name["test:loss"] == [(1, 0.35, "minimize")]
    # Only what is new is read the next time; an unfinished line waits for its end.
    with open(log, "a") as f:
        f.write(stamped("step 30 loss=0.125 acc=0.8") + f"{iso(utcnow())} step 40 lo")
    assert [(n, s) for n, s, *_ in source.read()] == [("loss", 30), ("acc", None)]
    with open(log, "a") as f:
        f.write("ss=0.1 acc=0.9\n")
    assert [(n, s, v) for n, s, v, *_ in source.read()] == [("loss", 40, 0.1), ("acc", None, 0.9)]


def test_a_regex_past_its_time_limit_is_skipped_and_counted(tmp_path):
    log = tmp_path / "training-log.txt"
    log.write_text(stamped("a" * 40 + "b", "loss 0.5"))
    bad = patterns(
        'metric_definitions:\n- {name: slow, regex: "(a|aa)+$"}\n'
        '- {name: loss, regex: "loss (\\\\S+)"}\n'
    )
    source = LogSource(bad, log, 0.2)
    found = [(name, value) for name, _, value, *_ in source.read()]
    assert source.timeouts == 1
    assert found == [("loss", 0.5)]


@pytest.mark.parametrize(
    "section, field",
    [
        ('metric_definitions: [{name: x, regex: "(unclosed"}]', "metric_definitions[0].regex"),
        ('metric_definitions: [{name: x, regex: "no group"}]', "metric_definitions[0].regex"),
        ('metric_definitions: [{name: x, regex: "(a)(b)"}]', "metric_definitions[0].regex"),
        ('metric_definitions: [{name: x, regex: "(a)", goal: up}]', "metric_definitions[0].goal"),
        ('metric_definitions: [{name: x, regex: "(a)", colour: red}]', "metric_definitions[0]"),
        (
            'metric_definitions: [{name: x, regex: "(a)"}, {name: x, regex: "(b)"}]',
            "metric_definitions",
        ),
        ("evaluation_metrics: {type: magic}", "evaluation_metrics.type"),
        ("evaluation_metrics: {type: regex_extractor}", "evaluation_metrics.groups"),
        (
            'evaluation_metrics: {type: regex_extractor, groups: {g: {regex: "%{NUMBER:x}", '
            "values: {x: $x}}}}",
            "evaluation_metrics.groups.g.regex",
        ),
        (
            'evaluation_metrics: {type: regex_extractor, groups: {g: {regex: "(?P<a>1)", '
            "values: {x: {type: FLOAT, value: $b}}}}}",
            "evaluation_metrics.groups.g.values.x",
        ),
    ],
)
def test_bad_metric_definitions_name_the_field(section, field):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest_yaml() + section)
    assert caught.value.field.startswith(field), caught.value
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize(
    "folder, kept",
    [
        ('"$JOB_STATE_DIR/logs/tb"', "$LOG_DIR/tb"),  # FfDL's own spelling of LOG_DIR
        ('"${LOG_DIR}/tb/./runs/"', "$LOG_DIR/tb/runs"),
        ("$RESULT_DIR", "$RESULT_DIR"),
    ],
)
def test_ffdls_tensorboard_collector_names_the_folder_its_event_files_are_read_from(folder, kept):
    manifest = parse_manifest(
        manifest_yaml() + f"evaluation_metrics: {{type: tensorboard, in: {folder}}}"
    )
    assert manifest.log_patterns == () and manifest.tensorboard_in == kept
    assert Manifest.from_dict(manifest.to_dict()).tensorboard_in == kept
    assert parse_manifest(manifest_yaml()).tensorboard_in == ""  # read anywhere under both


@pytest.mark.parametrize("folder", ["/var/log/tb", "$LOG_DIR/../../etc", "$HOME/tb", "''", "[a]"])
def test_a_tensorboard_folder_outside_the_runs_folders_is_refused_naming_the_field(folder):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest_yaml() + f"evaluation_metrics: {{type: tensorboard, in: {folder}}}")
    assert caught.value.field == "evaluation_metrics.in"
    assert "expected a folder under $LOG_DIR or $RESULT_DIR" in str(caught.value)


def test_other_ffdl_collectors_are_accepted_and_read_nothing_from_the_log():
    for kind in ("optimizer", "emetrics_file"):
        section = f'evaluation_metrics: {{type: {kind}, in: "$JOB_STATE_DIR/logs/tb"}}'
        assert parse_manifest(manifest_yaml() + section).log_patterns == ()


def test_goals_by_name():
    assert [goal_for(n) for n in ("loss", "val_loss", "test:error", "mse")] == ["minimize"] * 4
    assert [goal_for(n) for n in ("accuracy", "test:accuracy", "f1", "glossary")] == [
        "maximize"
    ] * 4


def test_json_lines_in_either_form_and_bad_lines_counted(tmp_path):
    path = tmp_path / "evaluation-metrics.txt"
    ffdl = {
        "meta": {"training_id": "t", "time": 1, "rindex": 1},
        "grouplabel": "test",
        "etimes": {"iteration": {"type": "INT", "value": 100}},
        "values": {"accuracy": {"type": "FLOAT", "value": 0.9}, "note": {"value": "text"}},
    }
    path.write_text(
        json.dumps(ffdl) + "\n{not json\n" + json.dumps({"epoch": 2, "loss": 0.3}) + "\n"
    )
    source = JsonLinesSource(path)
    found = [(n, s, v) for n, s, v, *_ in source.read()]
    assert found == [("test:accuracy", 100, 0.9), ("loss", 2, 0.3)]
    assert source.bad_lines == 1
    with open(path, "a") as f:
        f.write(json.dumps({"loss": float("nan"), "accuracy": 0.5}).replace("NaN", '"nan"'))
        f.write("\n")
    assert [(n, s, v) for n, s, v, *_ in source.read()] == [("accuracy", None, 0.5)]


def test_files_behind_links_are_not_read(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps([{"steps": 1, "password": 1234}]) + "\n")
    (tmp_path / "val_dict_list.json").symlink_to(secret)
    assert list(ValDictSource(tmp_path / "val_dict_list.json").read()) == []
    os.link(secret, tmp_path / "evaluation-metrics.txt")  # a hard link: two names
    assert list(JsonLinesSource(tmp_path / "evaluation-metrics.txt").read()) == []


def test_val_dict_list_gives_new_entries_only(tmp_path):
    path = tmp_path / "val_dict_list.json"
    source = ValDictSource(path)
    path.write_text(json.dumps([{"steps": 1, "accuracy": 0.5}]))
    assert [(n, s, v) for n, s, v, *_ in source.read()] == [("accuracy", 1, 0.5)]
    assert list(source.read()) == []  # unchanged
    path.write_text(json.dumps([{"steps": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": 0.6}])[:-5])
    assert list(source.read()) == []  # half written: read again later
    path.write_text(json.dumps([{"steps": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": 0.6}]))
    assert [(n, s, v) for n, s, v, *_ in source.read()] == [("accuracy", 2, 0.6)]


def test_a_series_past_its_cap_is_thinned_evenly_and_keeps_its_summary():
    series = Series("loss", 0, "minimize", cap=10)
    values = [1.0 / (1 + (i * 7919) % 103) for i in range(1000)]
    for step, value in enumerate(values, start=1):
        series.add(Point("loss", step, value, "t"))
    steps = [p.step for p in series.kept]
    assert len(steps) <= 10 and steps[0] == 1
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    assert gaps == {series.stride}  # evenly spaced over the whole run
    assert steps[-1] > 1000 - 2 * series.stride
    assert series.count == 1000
    assert series.best.value == min(values) and series.last.step == 1000
    assert series.best.step == values.index(min(values)) + 1


def test_collector_writes_every_point_to_the_file_and_a_capped_copy_to_redis(tmp_path, store_redis):
    log = tmp_path / "training-log.txt"
    lines = [f"step {i} loss={1 / i:.6f}" for i in range(1, 301)]
    log.write_text(stamped(*lines))
    source = LogSource(
        patterns('metric_definitions: [{name: loss, regex: "loss=(\\\\S+)"}]'), log, 2
    )
    store = RunMetrics(store_redis, "training-metrics1")
    out = tmp_path / "metrics.jsonl"
    collector = MetricsCollector([source], out, store, max_points=50, poll_seconds=0.05)
    collector.start()
    with open(log, "a") as f:
        f.write(stamped("step 301 loss=0.000001"))
    collector.close()
    stored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["step"] for p in stored] == list(range(1, 302))
    summaries = store.summaries()
    assert summaries["loss"]["count"] == 301
    assert summaries["loss"]["best"]["value"] == 0.000001
    assert summaries["loss"]["last"]["step"] == 301
    points = store.points(summaries)["loss"]
    assert 25 <= len(points) <= 50
    assert [p["step"] for p in points] == [p.step for p in collector.series["loss"].kept]
    assert store.points(summaries, since=200)["loss"][0]["step"] >= 200
    # The stored file gives the same summaries back, for runs whose Redis keys expired.
    with open(out) as f:
        again, all_points = read_jsonl(f)
    assert again["loss"]["best"] == summaries["loss"]["best"]
    assert len(all_points["loss"]) == 301
    store.close(60)
    assert 0 < store_redis.ttl(store.key) <= 60
