"""The experiment file parser: WML's hyper_parameters_optimization as its users wrote it, the
experiment-definition shape, the grid, the round trip, and an error naming the field for each
kind of bad input."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from common.experiment import (
    EarlyStopping,
    ExperimentError,
    ExperimentSpec,
    HyperParameter,
    parse_experiment,
)

ORIGINAL = """
hyper_parameters_optimization:
  method:
    name: rbfopt
    parameters:
    - name: objective
      string_value: accuracy
    - name: maximize_or_minimize
      string_value: maximize
    - name: num_optimizer_steps
      int_value: 10
    - name: time_interval        # accepted and kept; seconds between the optimizer's looks
      int_value: 30
  hyper_parameters:
  - name: learning_rate
    double_range: {min_value: 0.005, max_value: 0.09, step: 0.01}
  - name: hidden
    int_values: [32, 64]
  - name: optimizer
    string_values: [sgd, adam]
  - name: batch
    int_range: {min_value: 16, max_value: 128, power: 2}
"""

HPO = "hyper_parameters_optimization"


def _doc(**changes) -> dict:
    """The original, with `a__b__0__c=value` set (None: removed)."""
    doc = yaml.safe_load(ORIGINAL)
    for path, value in changes.items():
        node = doc
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return doc


def _text(**changes) -> str:
    return yaml.safe_dump(_doc(**changes))


def _grid_text(hyper_parameters: list[dict], **section) -> str:
    return yaml.safe_dump(
        {
            HPO: {
                "method": {
                    "name": "grid",
                    "parameters": [{"name": "objective", "string_value": "loss"}],
                },
                "hyper_parameters": hyper_parameters,
                **section,
            }
        }
    )


def test_original_form_parses():
    spec = parse_experiment(ORIGINAL)
    assert (spec.method, spec.sampler) == ("rbfopt", "TPESampler")
    assert (spec.objective, spec.direction, spec.trials) == ("accuracy", "maximize", 10)
    assert spec.time_interval == 30
    assert (spec.max_concurrent_trials, spec.max_failed_trials) == (2, 3)
    assert spec.target is None and spec.early_stopping is None and spec.seed is None
    lr, hidden, optimizer, batch = spec.hyper_parameters
    assert lr == HyperParameter("learning_rate", "double_range", low=0.005, high=0.09, step=0.01)
    assert hidden == HyperParameter("hidden", "int_values", choices=(32, 64))
    assert optimizer == HyperParameter("optimizer", "string_values", choices=("sgd", "adam"))
    assert (batch.kind, batch.low, batch.high, batch.step, batch.log) == (
        "int_range",
        16,
        128,
        None,
        True,
    )
    assert batch.values() == (16, 32, 64, 128)
    assert lr.values() == (0.005, 0.015, 0.025, 0.035, 0.045, 0.055, 0.065, 0.075, 0.085)
    assert isinstance(lr.low, float) and isinstance(batch.low, int)


def test_wml_experiment_definition_shape_parses():
    section = yaml.safe_load(ORIGINAL)[HPO]
    text = yaml.safe_dump(
        {
            "settings": {
                "name": "mnist-hpo",
                "description": "tune the CNN",
                "author": {"name": "WML User", "email": "wmluser@ibm.com"},
            },
            "training_references": [
                {
                    "name": "mnist-cnn",
                    "training_definition_url": "https://example/v3/ml_assets/training_definitions/1",
                    "compute_configuration": {"name": "k80"},
                    HPO: dict(section, seed=7, target=0.99),
                }
            ],
        }
    )
    spec = parse_experiment(text.encode())
    assert (spec.name, spec.description) == ("mnist-hpo", "tune the CNN")
    assert (spec.author_name, spec.author_email) == ("WML User", "wmluser@ibm.com")
    assert spec.hyper_parameters == parse_experiment(ORIGINAL).hyper_parameters
    assert (spec.seed, spec.target) == (7, 0.99)


def test_top_level_name_and_the_added_options():
    doc = _doc()
    doc["name"] = "lr sweep"
    doc[HPO].update(
        max_concurrent_trials=4,
        max_failed_trials=0,
        target=0.5,
        seed=3,
        early_stopping={"method": "median", "startup_trials": 5},
    )
    doc[HPO]["method"]["parameters"][1]["string_value"] = "minimize"
    spec = parse_experiment(yaml.safe_dump(doc))
    assert spec.name == "lr sweep" and spec.direction == "minimize"
    assert (spec.max_concurrent_trials, spec.max_failed_trials, spec.target) == (4, 0, 0.5)
    assert spec.early_stopping == EarlyStopping("median", startup_trials=5, warmup_steps=1)
    assert parse_experiment(_text(**{f"{HPO}__early_stopping": False})).early_stopping is None


def test_defaults_for_direction_and_trials():
    spec = parse_experiment(
        _text(**{f"{HPO}__method__parameters": [{"name": "objective", "string_value": "acc"}]})
    )
    assert (spec.direction, spec.trials, spec.time_interval) == ("maximize", 10, None)


def test_grid_is_the_product_of_the_values():
    text = _text(**{f"{HPO}__method__name": "grid", f"{HPO}__method__parameters__2": None})
    spec = parse_experiment(text)
    assert spec.sampler == "GridSampler"
    expected = [
        dict(zip([hp.name for hp in spec.hyper_parameters], point, strict=True))
        for point in itertools.product(*(hp.values() for hp in spec.hyper_parameters))
    ]
    assert spec.grid() == expected
    assert spec.trials == len(expected) == spec.grid_size() == 9 * 2 * 2 * 4
    assert spec.grid() == spec.grid()  # stable
    assert len({json.dumps(p, sort_keys=True) for p in spec.grid()}) == len(expected)


def test_grid_may_run_fewer_trials_than_points_but_not_more():
    def steps(n: int) -> str:
        method = {
            "name": "grid",
            "parameters": [
                {"name": "objective", "string_value": "loss"},
                {"name": "num_optimizer_steps", "int_value": n},
            ],
        }
        return _grid_text([{"name": "x", "int_values": [1, 2, 3]}], method=method)

    assert parse_experiment(steps(2)).trials == 2
    with pytest.raises(ExperimentError) as err:
        parse_experiment(steps(4))
    assert err.value.field == f"{HPO}.method.parameters"
    assert "3 points" in err.value.problem


def test_grid_power_ranges_and_int_steps():
    spec = parse_experiment(
        _grid_text(
            [
                {"name": "lr", "double_range": {"min_value": 0.001, "max_value": 1, "power": 10}},
                {"name": "n", "int_range": {"min_value": 1, "max_value": 10, "step": 4}},
                {"name": "m", "int_range": {"min_value": 3, "max_value": 5}},
            ]
        )
    )
    lr, n, m = spec.hyper_parameters
    assert lr.values() == (0.001, 0.01, 0.1, 1.0) and lr.log and lr.power == 10
    assert n.values() == (1, 5, 9) and n.top() == 9
    assert m.values() == (3, 4, 5)
    assert spec.grid_size() == 4 * 3 * 3 == len(spec.grid())


def test_round_trip_through_json():
    doc = _doc()
    doc[HPO].update(target=0.9, seed=11, early_stopping={"method": "median"})
    doc[HPO]["hyper_parameters"].append({"name": "drop", "double_values": [0.1, 1, 0.5]})
    for spec in (parse_experiment(yaml.safe_dump(doc)), parse_experiment(ORIGINAL)):
        data = json.loads(json.dumps(spec.to_dict()))
        assert ExperimentSpec.from_dict(data) == spec
        assert ExperimentSpec.from_dict(data).to_dict() == spec.to_dict()
    drop = parse_experiment(yaml.safe_dump(doc)).hyper_parameters[-1]
    assert drop.choices == (0.1, 1.0, 0.5) and all(isinstance(c, float) for c in drop.choices)


def _bad(text: str, max_grid_trials: int = 1000) -> ExperimentError:
    with pytest.raises(ExperimentError) as err:
        parse_experiment(text, max_grid_trials=max_grid_trials)
    assert str(err.value).startswith(err.value.field)
    return err.value


HP = f"{HPO}.hyper_parameters"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({f"{HPO}__method__name": "bayes"}, f"{HPO}.method.name", "unknown method 'bayes'"),
        (
            {f"{HPO}__hyper_parameters__0__double_range__min_value": 0.5},
            f"{HP}[0].double_range",
            "empty range",
        ),
        (
            {f"{HPO}__hyper_parameters__0__double_range__step": 0},
            f"{HP}[0].double_range.step",
            "more than 0",
        ),
        (
            {f"{HPO}__hyper_parameters__3__int_range__step": 2},
            f"{HP}[3].int_range",
            "step or power, not both",
        ),
        (
            {f"{HPO}__hyper_parameters__1__name": "hidden-units"},
            f"{HP}[1].name",
            "not usable as a name",
        ),
        ({f"{HPO}__hyper_parameters__1__name": "class"}, f"{HP}[1].name", "keyword"),
        ({f"{HPO}__hyper_parameters__1__name": "2x"}, f"{HP}[1].name", "not usable"),
        (
            {f"{HPO}__hyper_parameters__2__name": "hidden"},
            f"{HP}[2].name",
            "already the name of hyper_parameters[1]",
        ),
        ({f"{HPO}__colour": "red"}, f"{HPO}.colour", "unknown field (known here: method,"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({f"{HPO}__hyper_parameters__1__int_values": []}, f"{HP}[1].int_values", "non-empty"),
        (
            {f"{HPO}__hyper_parameters__2__string_values": ["a", "a"]},
            f"{HP}[2].string_values[1]",
            "already",
        ),
        ({f"{HPO}__hyper_parameters__1__int_values": [1, 2.5]}, f"{HP}[1].int_values[1]", "whole"),
        (
            {f"{HPO}__hyper_parameters__2__string_values": ["a", 3]},
            f"{HP}[2].string_values[1]",
            "text",
        ),
        ({f"{HPO}__method__parameters__0": None}, f"{HPO}.method.parameters", "objective"),
        (
            {f"{HPO}__method__parameters__2__double_value": 3.0},
            f"{HPO}.method.parameters[2]",
            "exactly one of",
        ),
        (
            {f"{HPO}__method__parameters__2__name": "iterations"},
            f"{HPO}.method.parameters[2].name",
            "unknown parameter 'iterations'",
        ),
        (
            {f"{HPO}__method__parameters__1__string_value": "up"},
            f"{HPO}.method.parameters[1].string_value",
            "maximize or minimize",
        ),
        (
            {f"{HPO}__method__parameters__2__int_value": 0},
            f"{HPO}.method.parameters[2].int_value",
            "from 1",
        ),
        (
            {f"{HPO}__method__parameters__2": {"name": "num_optimizer_steps", "string_value": "9"}},
            f"{HPO}.method.parameters[2].string_value",
            "takes int_value, not string_value",
        ),
        (
            {f"{HPO}__method__parameters__3": {"name": "objective", "string_value": "loss"}},
            f"{HPO}.method.parameters[3].name",
            "given twice",
        ),
        (
            {f"{HPO}__hyper_parameters__3__int_range__min_value": 0},
            f"{HP}[3].int_range.min_value",
            "above 0",
        ),
        (
            {f"{HPO}__hyper_parameters__3__int_range__power": 1},
            f"{HP}[3].int_range.power",
            "more than 1",
        ),
        (
            {f"{HPO}__hyper_parameters__3__int_range__max_value": 99.5},
            f"{HP}[3].int_range.max_value",
            "whole number",
        ),
        (
            {f"{HPO}__hyper_parameters__0__double_range__max_value": float("inf")},
            f"{HP}[0].double_range.max_value",
            "finite",
        ),
        (
            {f"{HPO}__hyper_parameters__1": {"name": "hidden"}},
            f"{HP}[1]",
            "exactly one of int_range",
        ),
        (
            {f"{HPO}__hyper_parameters__1__double_values": [0.5]},
            f"{HP}[1]",
            "got int_values, double_values",
        ),
        ({f"{HPO}__hyper_parameters": []}, HP, "non-empty"),
        ({f"{HPO}__method": None}, f"{HPO}.method", "required"),
        (
            {f"{HPO}__early_stopping": {"method": "hyperband"}},
            f"{HPO}.early_stopping.method",
            "median",
        ),
        ({f"{HPO}__early_stopping": True}, f"{HPO}.early_stopping", "or false"),
        ({f"{HPO}__max_concurrent_trials": 0}, f"{HPO}.max_concurrent_trials", "from 1"),
        ({f"{HPO}__max_failed_trials": -1}, f"{HPO}.max_failed_trials", "from 0"),
        ({f"{HPO}__seed": "abc"}, f"{HPO}.seed", "whole number"),
        ({f"{HPO}__target": "high"}, f"{HPO}.target", "number"),
        ({HPO: None}, HPO, "required"),
    ],
)
def test_bad_input_names_the_field(changes, field, words):
    error = _bad(_text(**changes))
    assert error.field == field, str(error)
    assert words in error.problem, str(error)


def test_grid_over_the_limit_gives_its_size_and_the_limit():
    text = _grid_text(
        [
            {"name": "a", "int_range": {"min_value": 1, "max_value": 40}},
            {"name": "b", "int_range": {"min_value": 1, "max_value": 30}},
        ]
    )
    error = _bad(text)
    assert error.field == HP
    assert "1200 points" in error.problem and "limit of 1000" in error.problem
    assert parse_experiment(text, max_grid_trials=1200).trials == 1200


def test_grid_needs_a_step_or_power_on_double_ranges():
    error = _bad(_grid_text([{"name": "lr", "double_range": {"min_value": 0.1, "max_value": 1}}]))
    assert error.field == f"{HP}[0].double_range"
    assert "step or a power" in error.problem
    # Without a grid, a continuous range is fine.
    assert (
        not parse_experiment(_text(**{f"{HPO}__hyper_parameters__0__double_range__step": None}))
        .hyper_parameters[0]
        .finite
    )


def test_too_many_hyper_parameters():
    many = [{"name": f"p{i}", "int_values": [1, 2]} for i in range(21)]
    error = _bad(_grid_text(many), max_grid_trials=10**9)
    assert error.field == HP and "at most 20" in error.problem


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", ""),
        ("[1, 2]", ""),
        ("hyper_parameters_optimization: [1]", HPO),
        ("settings: {name: x}", "training_references"),
        ("training_references: []\nsettings: {name: x}", "training_references"),
        (f"training_references: [{{{HPO}: {{}}}}]", "settings"),
        (
            "settings: {name: x}\ntraining_references: [{colour: red}]",
            "training_references[0].colour",
        ),
        (f"settings: {{}}\ntraining_references: [{{{HPO}: {{}}}}]", "settings.name"),
        (
            f"settings: {{name: x}}\ntraining_references: [{{{HPO}: {{method: {{name: grid}}}}}}]",
            f"training_references[0].{HPO}.method.parameters",
        ),
        (f"{HPO}: {{method: 1}}\n{HPO}: {{}}", HPO),
        ("a: &a [1]\nb: [" + ", ".join(["*a"] * 60) + "]", ""),
        (b"\xff\xfe", ""),
    ],
)
def test_bad_documents(text, field):
    error = _bad(text)
    assert error.field == field, str(error)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "name",
                        "method",
                        "parameters",
                        "hyper_parameters",
                        "int_range",
                        "double_range",
                        "min_value",
                        "max_value",
                        "step",
                        "power",
                        "int_values",
                        "string_value",
                        "int_value",
                        "early_stopping",
                        "x",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_any_section_parses_or_is_an_experiment_error(section):
    """Whatever sits in the section, the answer is a spec or an ExperimentError, never a
    KeyError or TypeError."""
    try:
        spec = parse_experiment(yaml.safe_dump({HPO: section}))
    except ExperimentError:
        return
    assert ExperimentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@settings(max_examples=100, deadline=None)
@given(
    low=st.floats(-1e6, 1e6, allow_nan=False),
    width=st.floats(0, 1e6, allow_nan=False),
    step=st.floats(1e-3, 1e6, allow_nan=False),
)
def test_step_ranges_stay_inside_and_step_evenly(low, width, step):
    high = low + width
    hp = HyperParameter("x", "double_range", low=low, high=high, step=step)
    if hp.count() > 10_000:
        return
    values = hp.values()
    assert values[0] == low and len(values) == hp.count()
    assert all(v <= high for v in values)
    assert values[-1] + step > high or math.isclose(values[-1] + step, high)


def test_the_example_experiment_file_parses_and_searches_what_train_py_takes():
    example = Path(__file__).parents[2] / "examples" / "digits"
    spec = parse_experiment((example / "experiment.yml").read_text())
    assert (spec.sampler, spec.objective, spec.direction) == (
        "TPESampler",
        "test_accuracy",
        "maximize",
    )
    train = (example / "model" / "train.py").read_text()
    for hp in spec.hyper_parameters:
        assert f'"--{hp.name.replace("_", "-")}"' in train, hp.name
