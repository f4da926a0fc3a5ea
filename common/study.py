"""An experiment's Optuna study, kept in the service's Redis through Optuna's journal storage,
driven by ask-and-tell: `ask` for a trial's values, `report` its objective along the way (and
hear whether to stop it early), `tell` how it ended.

Every process that opens the same experiment id shares the one journal, so a controller that
takes over from a dead one continues the study where it stopped. What Optuna writes to Redis,
under `keys.experiment_study_prefix(id)` (`dlaas:experiment:<id>:study:`), which its backend
joins to its own names with another `:`:

    <prefix>:log_number   string  the number of the journal's last entry (INCR), from -1
    <prefix>:log:<n>      string  journal entry n, JSON (create study, create trial, set param,
                                  report a value, set state ...)
    <prefix>:snapshot     string  Optuna's pickled replay of the journal, rewritten every 100th
                                  trial, read when a storage opens (so: Redis must stay trusted)

No TTLs while the experiment runs; when it ends they get the retention of its record
(common/experimentstore.py), and its delete takes them at once.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalRedisBackend
from optuna.trial import TrialState

from common import keys
from common.experiment import ExperimentSpec, HyperParameter

# The service logs its own lines about trials; Optuna's INFO ("Trial 3 finished ...") is noise.
optuna.logging.set_verbosity(optuna.logging.WARNING)

STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "fail": TrialState.FAIL,
}


class GridExhausted(RuntimeError):
    """Every grid point has been asked for: another ask would repeat one."""


def distributions(spec: ExperimentSpec) -> dict[str, BaseDistribution]:
    """Each hyperparameter as the Optuna distribution its trials are drawn from."""
    return {hp.name: _distribution(hp) for hp in spec.hyper_parameters}


def _distribution(hp: HyperParameter) -> BaseDistribution:
    if hp.kind == "int_range":
        # top(): the last value the step reaches, so Optuna has no high to adjust (and warn of).
        return IntDistribution(hp.low, hp.top(), log=hp.log, step=hp.step or 1)
    if hp.kind == "double_range":
        return FloatDistribution(hp.low, hp.top(), log=hp.log, step=hp.step)
    return CategoricalDistribution(hp.choices)


def sampler(spec: ExperimentSpec, offset: int = 0) -> BaseSampler:
    """The sampler that runs the spec's method. `offset` shifts a random or TPE seed, so that
    a controller resuming a seeded study does not draw the first controller's values again."""
    if spec.sampler == "GridSampler":
        # The seed orders the grid and trial k takes the k-th point: every process must use
        # the same one (GridSampler reads None as 0), whatever the offset.
        return GridSampler(spec.grid_values(), seed=spec.seed)
    seed = None if spec.seed is None else (spec.seed + offset) % 2**32
    if spec.sampler == "RandomSampler":
        return RandomSampler(seed=seed)
    if spec.sampler == "TPESampler":
        return TPESampler(seed=seed)
    raise ValueError(f"unknown sampler {spec.sampler!r}")


def pruner(spec: ExperimentSpec) -> optuna.pruners.BasePruner:
    """early_stopping as Optuna's pruner: MedianPruner, or none."""
    early = spec.early_stopping
    if early is None:
        return optuna.pruners.NopPruner()
    if early.method == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=early.startup_trials, n_warmup_steps=early.warmup_steps
        )
    raise ValueError(f"unknown early stopping method {early.method!r}")


def storage(redis_url: str, experiment_id: str) -> JournalStorage:
    """Optuna's journal storage for the experiment, in Redis under the experiment's prefix."""
    with warnings.catch_warnings():
        # JournalRedisBackend is marked experimental (since 3.1); the warning says only that.
        warnings.simplefilter("ignore", ExperimentalWarning)
        backend = JournalRedisBackend(redis_url, prefix=keys.experiment_study_prefix(experiment_id))
        return JournalStorage(backend)


def open_study(redis_url: str, experiment_id: str, spec: ExperimentSpec) -> optuna.Study:
    """The experiment's study, created on first use and loaded (shared) after that."""
    study = optuna.create_study(
        storage=storage(redis_url, experiment_id),
        sampler=sampler(spec),
        pruner=pruner(spec),
        study_name=experiment_id,
        direction=spec.direction,
        load_if_exists=True,
    )
    if spec.seed is not None:
        asked = len(study.get_trials(deepcopy=False))
        if asked:
            study.sampler = sampler(spec, offset=asked)
    return study


def ask(study: optuna.Study, spec: ExperimentSpec) -> tuple[int, dict[str, Any]]:
    """A new trial: its number and its hyperparameter values (plain JSON-safe values)."""
    if spec.sampler == "GridSampler":
        # Trial k takes grid point k; past the grid's end GridSampler repeats a point.
        size = spec.grid_size()
        if len(study.get_trials(deepcopy=False)) >= size:
            raise GridExhausted(f"all {size} grid points have been asked for")
    trial = study.ask(distributions(spec))
    return trial.number, {
        hp.name: _plain(hp, trial.params[hp.name]) for hp in spec.hyper_parameters
    }


def _plain(hp: HyperParameter, value: Any) -> int | float | str:
    if hp.kind in ("int_range", "int_values"):
        return int(value)
    if hp.kind in ("double_range", "double_values"):
        return hp.snap(float(value))
    return str(value)


def report(study: optuna.Study, trial_number: int, step: int, value: float) -> bool:
    """Record the running trial's objective `value` at `step`; whether the pruner says to stop
    it. Works from any process that opened the study. A step already reported keeps its
    first value (a resent report changes nothing)."""
    trial, reported = _running_trial(study, trial_number)
    if step not in reported:  # Trial.report would warn, and ignore it
        trial.report(value, step)
    return bool(trial.should_prune())  # MedianPruner answers with a numpy bool


def _running_trial(study: optuna.Study, trial_number: int) -> tuple[optuna.Trial, dict]:
    """The live trial with that number, and the steps it has reported so far."""
    # Optuna has no public "trial by number" for a live trial; its maintainers' answer to
    # reporting from another process (optuna#2176, #2987) is rebuilding `Trial(study, id)`,
    # with the id looked up as Study.tell does for a number.
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial_number
        )
    except KeyError:
        raise ValueError(f"there is no trial {trial_number} in {study.study_name}") from None
    frozen = study._storage.get_trial(trial_id)
    if frozen.state is not TrialState.RUNNING:
        raise ValueError(f"trial {trial_number} has already ended ({frozen.state.name})")
    # Trial() calls the sampler's before_trial: GridSampler keeps the grid point it already
    # gave the trial, the others do nothing.
    return optuna.Trial(study, trial_id), frozen.intermediate_values


def tell(
    study: optuna.Study,
    trial_number: int,
    value: float | None = None,
    state: str = "complete",
) -> None:
    """End a trial: "complete" with its objective value, "pruned" or "fail". A trial already
    ended is left as it is (a controller taking over may tell it again)."""
    if state not in STATES:
        raise ValueError(f"unknown trial state {state!r} (known: {', '.join(STATES)})")
    if state == "complete" and value is None:
        raise ValueError("a completed trial needs its objective value")
    values = value if state == "complete" else None
    try:
        study.tell(trial_number, values, state=STATES[state], skip_if_finished=True)
    except RuntimeError as exc:
        # GridSampler calls Study.stop() after the last point, which raises outside
        # Study.optimize (optuna#4121, #5141); the trial's state is saved before that.
        if not (isinstance(study.sampler, GridSampler) and "Study.stop" in str(exc)):
            raise


def median_of_earlier(study: optuna.Study, trial_number: int, step: int) -> float | None:
    """The median of the completed trials' objective at `step`, other than this trial: what
    MedianPruner compares against (it looks at completed trials only). None if none has one."""
    values = [
        t.intermediate_values[step]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number != trial_number
        and step in t.intermediate_values
        and not math.isnan(t.intermediate_values[step])
    ]
    return statistics.median(values) if values else None
