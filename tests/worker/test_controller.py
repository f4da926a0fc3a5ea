"""The controller's pure parts: a trial's command, the best trial, the records' round trips."""

from __future__ import annotations

import shlex

from common.experimentstore import (
    Experiment,
    ExperimentState,
    Trial,
    TrialState,
    best_trial,
)
from worker.controller import trial_command


def test_trial_command_puts_each_value_in_and_quotes_text():
    command = "python3 train.py --lr ${learning_rate} --opt ${optimizer} --data ${DATA_DIR}"
    values = {"learning_rate": 0.05, "optimizer": "adam; rm -rf /", "unused": 3}
    done = trial_command(command, values)
    assert shlex.split(done) == [
        "python3",
        "train.py",
        "--lr",
        "0.05",
        "--opt",
        "adam; rm -rf /",
        "--data",
        "${DATA_DIR}",  # the worker's to expand
    ]


def test_best_trial_by_direction_among_completed_ones_only():
    trials = [
        Trial(0, "training-a", {}, TrialState.COMPLETED, objective=0.7),
        Trial(1, "training-b", {}, TrialState.PRUNED, objective=0.95),
        Trial(2, "training-c", {}, TrialState.COMPLETED, objective=0.9),
        Trial(3, "training-d", {}, TrialState.COMPLETED, objective=0.9),
        Trial(4, "training-e", {}, TrialState.FAILED),
    ]
    assert best_trial("maximize", trials).number == 2  # the first of equals
    assert best_trial("minimize", trials).number == 0
    assert best_trial("maximize", trials[4:]) is None


def test_records_round_trip():
    trial = Trial(3, "training-x", {"lr": 0.1, "name": "a"}, TrialState.ACTIVE, 0.5, 2, 2, "m")
    assert Trial.from_json(trial.to_json()) == trial
    experiment = Experiment(
        "experiment-abcdefghi",
        "alice",
        "sweep",
        ExperimentState.RUNNING,
        "2026-12-02T00:00:00Z",
        {"objective": "acc"},
        {"name": "m"},
        "sealed",
        "artifact-ref",
        delete_requested=True,
    )
    assert Experiment.from_dict(experiment.to_dict()) == experiment
