"""The experiment's Optuna study against a real Redis (database 2): grid points asked once
across study objects, sampled values inside their distributions, the best trial, the median
pruner, and reporting from a second study object as after a controller failover."""

from __future__ import annotations

import json
import statistics

import optuna
import pytest
import redis
import yaml

from common import keys
from common.experiment import ExperimentSpec, parse_experiment
from common.study import (
    GridExhausted,
    ask,
    distributions,
    median_of_earlier,
    open_study,
    pruner,
    report,
    sampler,
    tell,
)

pytestmark = pytest.mark.integration

DB = 2


@pytest.fixture
def redis_url(redis_server) -> str:
    """Database 2, flushed before and after each test."""
    client = redis_server.client(DB)
    client.flushdb()
    yield redis_server.url(DB)
    client.flushdb()


@pytest.fixture
def client(redis_server, redis_url) -> redis.Redis:
    return redis_server.client(DB)


def _spec(method: str, hyper_parameters: list[dict], **section) -> ExperimentSpec:
    parameters = [{"name": "objective", "string_value": "accuracy"}]
    direction = section.pop("direction", None)
    if direction:
        parameters.append({"name": "maximize_or_minimize", "string_value": direction})
    if "trials" in section:
        parameters.append({"name": "num_optimizer_steps", "int_value": section.pop("trials")})
    doc = {
        "hyper_parameters_optimization": {
            "method": {"name": method, "parameters": parameters},
            "hyper_parameters": hyper_parameters,
            **section,
        }
    }
    return parse_experiment(yaml.safe_dump(doc))


GRID = [
    {"name": "lr", "double_range": {"min_value": 0.005, "max_value": 0.03, "step": 0.01}},
    {"name": "hidden", "int_values": [32, 64]},
    {"name": "optimizer", "string_values": ["sgd", "adam"]},
    {"name": "batch", "int_range": {"min_value": 16, "max_value": 64, "power": 2}},
]

SAMPLED = [
    {"name": "lr", "double_range": {"min_value": 0.0001, "max_value": 0.1, "power": 10}},
    {"name": "dropout", "double_range": {"min_value": 0.0, "max_value": 0.5}},
    {"name": "momentum", "double_range": {"min_value": 0.5, "max_value": 0.95, "step": 0.1}},
    {"name": "layers", "int_range": {"min_value": 1, "max_value": 8, "step": 3}},
    {"name": "batch", "int_range": {"min_value": 16, "max_value": 512, "power": 2}},
    {"name": "hidden", "int_values": [32, 64, 128]},
    {"name": "scale", "double_values": [0.5, 1.0, 2.0]},
    {"name": "optimizer", "string_values": ["sgd", "adam"]},
]


def _key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def test_grid_asks_every_point_once_across_two_study_objects(redis_url, client):
    spec = _spec("grid", GRID)
    points = spec.grid()
    assert spec.trials == len(points) == 3 * 2 * 2 * 3
    first = open_study(redis_url, "exp-grid", spec)
    asked: dict[int, dict] = {}
    for _ in range(5):
        number, values = ask(first, spec)
        asked[number] = values
    tell(first, 0, 0.5)
    tell(first, 1, state="fail")
    # The controller dies; another one opens the same study and goes on asking.
    second = open_study(redis_url, "exp-grid", spec)
    while len(asked) < spec.trials:
        for study in (second, first):  # both objects share the one journal
            if len(asked) < spec.trials:
                number, values = ask(study, spec)
                assert number not in asked
                asked[number] = values
    assert sorted(asked) == list(range(spec.trials))
    assert sorted(map(_key, asked.values())) == sorted(map(_key, points))
    for values in asked.values():
        assert isinstance(values["hidden"], int) and isinstance(values["lr"], float)
    with pytest.raises(GridExhausted):
        ask(second, spec)
    # Telling the last point is fine (GridSampler's Study.stop() outside optimize is absorbed).
    for number in range(2, spec.trials):
        tell(second, number, float(number))
    states = {t.state for t in first.get_trials()}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}

    prefix = keys.experiment_study_prefix("exp-grid")
    names = set(client.keys("*"))
    assert all(name.startswith(prefix) for name in names), names
    assert f"{prefix}:log_number" in names and f"{prefix}:log:0" in names
    assert int(client.get(f"{prefix}:log_number")) == len(names) - 2  # entries 0..n


def test_grid_sampler_points_follow_the_spec_values():
    spec = _spec("grid", GRID, seed=5)
    grid_sampler = sampler(spec)
    assert isinstance(grid_sampler, optuna.samplers.GridSampler)
    values = spec.grid_values()
    assert values["batch"] == [16, 32, 64] and values["lr"] == [0.005, 0.015, 0.025]
    assert values == {hp.name: list(hp.values()) for hp in spec.hyper_parameters}


def _inside(spec: ExperimentSpec, values: dict) -> None:
    for hp in spec.hyper_parameters:
        value = values[hp.name]
        if hp.choices:
            assert value in hp.choices
            continue
        assert hp.low <= value <= hp.high, (hp, value)
        if hp.kind == "int_range":
            assert isinstance(value, int)
        if hp.step:
            k = (value - hp.low) / hp.step
            assert abs(k - round(k)) < 1e-8, (hp, value)
            # ... and exactly the point as the user would write it (0.7, not 0.7000000000000001)
            assert value in hp.values(), (hp, value)


@pytest.mark.parametrize("method", ["random", "tpe", "rbfopt"])
def test_sampled_values_are_inside_the_distributions(redis_url, method):
    spec = _spec(method, SAMPLED, seed=1, trials=14)
    study = open_study(redis_url, f"exp-{method}", spec)
    assert type(study.sampler).__name__ == spec.sampler
    assert set(distributions(spec)) == {hp["name"] for hp in SAMPLED}
    seen = []
    for _ in range(spec.trials):  # past TPE's 10 startup trials, so its model runs too
        number, values = ask(study, spec)
        json.dumps(values)
        _inside(spec, values)
        seen.append(values)
        tell(study, number, values["lr"] * values["scale"])
    assert len({_key(v) for v in seen}) == len(seen)


@pytest.mark.parametrize(("direction", "best"), [("maximize", max), ("minimize", min)])
def test_best_trial_follows_the_direction(redis_url, direction, best):
    spec = _spec("random", SAMPLED, direction=direction, seed=2)
    study = open_study(redis_url, f"exp-best-{direction}", spec)
    told = {}
    for value in (0.3, 0.9, 0.1, 0.5):
        number, _ = ask(study, spec)
        tell(study, number, value)
        told[number] = value
    number, _ = ask(study, spec)
    tell(study, number, state="pruned")
    assert study.best_trial.value == best(told.values())
    assert told[study.best_trial.number] == best(told.values())


def test_a_resumed_seeded_study_does_not_repeat_the_first_draws(redis_url):
    spec = _spec("random", SAMPLED, seed=3)
    first = open_study(redis_url, "exp-resume", spec)
    drawn = [ask(first, spec)[1] for _ in range(3)]
    second = open_study(redis_url, "exp-resume", spec)
    again = [ask(second, spec)[1] for _ in range(3)]
    assert not {_key(v) for v in drawn} & {_key(v) for v in again}


def _median_spec() -> ExperimentSpec:
    return _spec(
        "random",
        SAMPLED,
        seed=4,
        early_stopping={"method": "median", "startup_trials": 3, "warmup_steps": 1},
    )


def test_median_pruner_stops_a_clearly_worse_trial(redis_url):
    spec = _median_spec()
    assert isinstance(pruner(spec), optuna.pruners.MedianPruner)
    study = open_study(redis_url, "exp-median", spec)
    for good in range(3):
        number, _ = ask(study, spec)
        for step in range(4):
            assert report(study, number, step, 0.7 + 0.05 * good + 0.01 * step) is False
        tell(study, number, 0.75 + 0.05 * good)
        if good < 2:
            # Before the third trial has completed, nothing is stopped however bad.
            bad, _ = ask(study, spec)
            assert report(study, bad, 1, 0.01) is False
            tell(study, bad, state="fail")
    number, _ = ask(study, spec)
    assert report(study, number, 0, 0.01) is False  # warm-up step
    assert report(study, number, 1, 0.02) is True
    earlier = [
        t.intermediate_values[1]
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    ]
    assert len(earlier) == 3
    assert median_of_earlier(study, number, 1) == statistics.median(earlier)
    assert median_of_earlier(study, number, 9) is None
    tell(study, number, state="pruned")
    assert study.trials[number].state is optuna.trial.TrialState.PRUNED


def test_report_from_a_second_study_object_after_failover(redis_url):
    spec = _median_spec()
    controller = open_study(redis_url, "exp-failover", spec)
    for _ in range(3):
        number, _ = ask(controller, spec)
        report(controller, number, 1, 0.9)
        report(controller, number, 2, 0.9)
        tell(controller, number, 0.9)
    number, values = ask(controller, spec)
    assert report(controller, number, 1, 0.88) is True  # 0.88 < median 0.9
    # The controller dies; the one taking over opens the study and reports the next steps.
    successor = open_study(redis_url, "exp-failover", spec)
    assert successor.trials[number].params == values
    # MedianPruner compares the trial's best value so far (0.95) with the median at the step.
    assert report(successor, number, 2, 0.95) is False
    assert report(successor, number, 2, 0.1) is False  # a resent step keeps its first value
    assert controller.trials[number].intermediate_values == {1: 0.88, 2: 0.95}
    tell(successor, number, 0.95)
    tell(controller, number, 0.5)  # told twice (e.g. by both): the first telling stands
    assert controller.trials[number].value == 0.95
    with pytest.raises(ValueError, match="already ended"):
        report(successor, number, 3, 0.5)
    with pytest.raises(ValueError, match="no trial 99"):
        report(successor, 99, 1, 0.5)


def test_tell_refuses_what_it_cannot_record(redis_url):
    spec = _spec("random", SAMPLED)
    study = open_study(redis_url, "exp-tell", spec)
    number, _ = ask(study, spec)
    with pytest.raises(ValueError, match="unknown trial state"):
        tell(study, number, 1.0, state="done")
    with pytest.raises(ValueError, match="needs its objective"):
        tell(study, number)
    assert report(study, number, 0, 0.5) is False  # the NopPruner never stops a trial


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_stepped_values_come_back_as_written(redis_url, method):
    # Optuna gives min + k * step in floats (0.35000000000000003 for 0.05 + 6 * 0.05); a trial's
    # values, its command and its config.json carry the point as its user would write it.
    rates = [{"name": "lr", "double_range": {"min_value": 0.05, "max_value": 0.5, "step": 0.05}}]
    spec = _spec(method, rates, seed=3, trials=30)
    study = open_study(redis_url, f"exp-stepped-{method}", spec)
    points = spec.hyper_parameters[0].values()
    assert 0.35 in points
    seen = set()
    for _ in range(spec.trials):
        number, values = ask(study, spec)
        assert values["lr"] in points, values
        seen.add(values["lr"])
        tell(study, number, values["lr"])
    assert len(seen) >= 5
