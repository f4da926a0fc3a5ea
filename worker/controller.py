"""`dlaas-controller`: keeps experiments moving. For each running experiment it starts trials
(ordinary runs) while its caps allow, reports their objective to the experiment's Optuna study
as it grows, stops the trials the pruner rules out, tells the study how each ended, and ends
the experiment: COMPLETED (its trials done, or the target reached), FAILED (too many failed
trials) or HALTED (cancelled).

One controller is active at a time (a Redis lock with a TTL); others stand by. Everything it
knows is in Redis (the experiment, its trials, the study's journal), so a controller killed at
any point loses nothing: a trial is written with its run id before its run is made, and the
next controller makes or queues that same run (a run is claimed once, whatever the messages),
so no trial runs twice. It wakes on news (a trial's run ended, an experiment was submitted or
cancelled: `dlaas:experiments:events`); each interval it looks again only at the running
experiments with early stopping (their running trials' objectives), and at every running
experiment once when it becomes the active controller.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import socket
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import optuna
import redis

from common import keys
from common import study as studies
from common.artifacts import ArtifactStore
from common.experiment import ExperimentSpec
from common.experimentstore import (
    Experiment,
    ExperimentState,
    ExperimentStore,
    Trial,
    TrialState,
    best_trial,
)
from common.ids import new_run_id
from common.manifest import Manifest
from common.metrics import RunMetrics
from common.run import Run
from common.runstore import InvalidTransition, RunNotFound, RunStore
from common.settings import Settings
from common.states import RunState
from common.submission import new_run, queue_run
from common.taskqueue import enqueue_run, make_celery
from worker.activelock import ActiveLock, start_service

log = logging.getLogger("dlaas.controller")

CONFIG_FILE = "config.json"  # the trial's values, in MODEL_DIR (as the original service gave)


class Controller:
    def __init__(self, settings: Settings, connection: redis.Redis, celery, identity: str = ""):
        self.settings = settings
        self.redis = connection
        self.celery = celery
        self.experiments = ExperimentStore(connection, settings.retention_seconds)
        self.runs = RunStore(connection, settings.retention_seconds, settings.lease_ttl_seconds)
        self.artifacts = ArtifactStore.from_settings(settings)
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lock = ActiveLock(
            connection,
            keys.controller_lock(),
            self.identity,
            3 * settings.controller_interval_seconds,
        )
        self._studies: dict[str, optuna.Study] = {}
        # Running experiments with early stopping: the only ones looked at periodically.
        self._pruning: set[str] = set()
        self._zips: dict[str, bytes] = {}

    # --- the loop ----------------------------------------------------------------------

    def serve(self, stop_after: float | None = None) -> None:
        deadline = None if stop_after is None else time.monotonic() + stop_after
        interval = self.settings.controller_interval_seconds
        active: bool | None = None  # so the first look is logged either way
        next_pass = 0.0
        while deadline is None or time.monotonic() < deadline:
            try:
                holding = self.lock.hold()
                if holding != active:
                    log.info(
                        "controller %s: %s", "active" if holding else "standing by", self.identity
                    )
                    active = holding
                    self._studies.clear()  # another may have moved them on meanwhile
                    if holding:  # every running experiment once: what it needs is learned
                        for experiment_id in self.experiments.active_ids():
                            self.step(experiment_id)
                if not holding:
                    time.sleep(interval)
                    continue
                now = time.monotonic()
                if now >= next_pass:
                    # Only experiments that prune need a periodic look (their running trials'
                    # objectives); every other change comes as an event.
                    for experiment_id in sorted(self._pruning):
                        self.step(experiment_id)
                    next_pass = now + interval
                news = self.experiments.wait_event(max(0.05, next_pass - time.monotonic()))
                if news is not None:
                    self.step(news)
            except redis.RedisError as exc:
                log.warning("Redis unreachable (%s); trying again", exc)
                time.sleep(interval)

    def step(self, experiment_id: str) -> None:
        """Moves one experiment on as far as it can go now."""
        experiment = self.experiments.get(experiment_id)
        if experiment is None or experiment.state.terminal:
            self.redis.srem(keys.active_experiments(), experiment_id)
            self._pruning.discard(experiment_id)
            return
        spec = ExperimentSpec.from_dict(experiment.spec)
        if spec.early_stopping is not None:
            self._pruning.add(experiment_id)
        study = self._study(experiment, spec)
        trials = self.experiments.trials(experiment_id)
        for trial in trials:
            if trial.state is TrialState.CREATING:
                self._make_run(experiment, trial)
            elif trial.state is TrialState.ACTIVE:
                self._follow(experiment, spec, study, trial)
        ending = self._ending(experiment, spec, trials)
        if ending is not None:
            self._finish(experiment, trials, *ending)
            return
        while self._room(spec, trials):
            trial = self._start(experiment, spec, study)
            if trial is None:
                break
            trials.append(trial)

    # --- trials --------------------------------------------------------------------------

    def _study(self, experiment: Experiment, spec: ExperimentSpec) -> optuna.Study:
        study = self._studies.get(experiment.id)
        if study is None:
            study = studies.open_study(self.settings.redis_url, experiment.id, spec)
            # A trial asked for but never written down (its controller died between the two)
            # never had a run: it is told failed, so the sampler may ask for its values again.
            known = {t.number for t in self.experiments.trials(experiment.id)}
            for frozen in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            ):
                if frozen.number not in known:
                    studies.tell(study, frozen.number, state="fail")
            self._studies[experiment.id] = study
        return study

    def _room(self, spec: ExperimentSpec, trials: list[Trial]) -> bool:
        active = sum(1 for t in trials if not t.state.ended)
        return active < spec.max_concurrent_trials and len(trials) < spec.trials

    def _start(self, experiment: Experiment, spec: ExperimentSpec, study) -> Trial | None:
        try:
            number, values = studies.ask(study, spec)
        except studies.GridExhausted:
            return None
        run_id = new_run_id()
        while self.runs.exists(run_id):
            run_id = new_run_id()
        trial = Trial(number, run_id, values)
        if not self._write_while_active(experiment.id, trial):
            studies.tell(study, number, state="fail")
            return None
        self._make_run(experiment, trial)
        return trial

    def _write_while_active(self, experiment_id: str, trial: Trial) -> bool:
        """Writes the trial only while this controller holds the lock (fenced by WATCH)."""
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.controller_lock())
                if pipe.get(keys.controller_lock()) != self.identity:
                    return False
                pipe.multi()
                self.experiments.put_trial(experiment_id, trial, pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def _make_run(self, experiment: Experiment, trial: Trial) -> None:
        """The trial's run, made and queued (again, if it was made but maybe not queued: a
        second message is dropped by the claim). Idempotent, so a new controller may redo it."""
        existing = self.runs.get(trial.run_id)
        if existing is not None:
            if existing.state is RunState.PENDING:
                enqueue_run(self.celery, existing.id, existing.resource)
        else:
            manifest = Manifest.from_dict(experiment.manifest)
            run = new_run(
                self.settings,
                experiment.user,
                manifest,
                experiment.credentials,
                trial.run_id,
                command=trial_command(manifest.command, trial.values),
                experiment={"id": experiment.id, "trial": trial.number, "values": trial.values},
            )
            queue_run(
                self.runs, self.artifacts, self.celery, run, self._trial_zip(experiment, trial)
            )
        trial.state = TrialState.ACTIVE
        self.experiments.put_trial(experiment.id, trial)
        log.info("%s: trial %d is %s %s", experiment.id, trial.number, trial.run_id, trial.values)

    def _trial_zip(self, experiment: Experiment, trial: Trial) -> bytes:
        """The experiment's model zip with the trial's values as config.json."""
        original = self._zips.get(experiment.id)
        if original is None:
            with tempfile.TemporaryDirectory() as tmp:
                original = self.artifacts.fetch(
                    experiment.artifact, Path(tmp) / "m.zip"
                ).read_bytes()
            self._zips[experiment.id] = original
        out = io.BytesIO()
        with (
            zipfile.ZipFile(io.BytesIO(original)) as source,
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
        ):
            for info in source.infolist():
                if info.filename != CONFIG_FILE:
                    target.writestr(info, source.read(info))
            target.writestr(CONFIG_FILE, json.dumps(trial.values, indent=2) + "\n")
        return out.getvalue()

    def _follow(self, experiment: Experiment, spec: ExperimentSpec, study, trial: Trial) -> None:
        run = self.runs.get(trial.run_id)
        if run is None:
            self._ended(experiment, study, trial, TrialState.CANCELLED, "its run was deleted")
        elif run.state.terminal:
            self._run_ended(experiment, spec, study, trial, run)
        elif spec.early_stopping is not None and not trial.message:
            self._maybe_prune(experiment, spec, study, trial)

    def _run_ended(self, experiment, spec: ExperimentSpec, study, trial: Trial, run: Run) -> None:
        summary = run.metrics.get(spec.objective) or {}
        best = summary.get("best")
        if best is not None:
            trial.objective, trial.objective_step = best["value"], best["step"]
        if trial.message.startswith("stopped early"):
            self._ended(experiment, study, trial, TrialState.PRUNED, trial.message)
        elif run.state is RunState.COMPLETED and best is not None:
            self._ended(experiment, study, trial, TrialState.COMPLETED, "", best["value"])
        elif run.state is RunState.COMPLETED:
            message = f"completed without reporting {spec.objective}"
            self._ended(experiment, study, trial, TrialState.FAILED, message)
        elif run.state is RunState.FAILED:
            first = (run.status_message or "").splitlines()[:1]
            message = f"its run failed: {first[0] if first else run.error_code}"
            self._ended(experiment, study, trial, TrialState.FAILED, message)
        else:
            self._ended(experiment, study, trial, TrialState.CANCELLED, run.status_message)

    def _ended(self, experiment, study, trial, state: TrialState, message: str, value=None):
        trial.state, trial.message = state, message or trial.message
        told = {TrialState.COMPLETED: "complete", TrialState.PRUNED: "pruned"}.get(state, "fail")
        studies.tell(study, trial.number, value, state=told)
        self.experiments.put_trial(experiment.id, trial)
        log.info("%s: trial %d %s %s", experiment.id, trial.number, state.value, message)

    def _maybe_prune(self, experiment, spec: ExperimentSpec, study, trial: Trial) -> None:
        """The objective's new points reported to the study; the trial stopped if the pruner
        says so."""
        metrics = RunMetrics(self.redis, trial.run_id)
        summary = metrics.summaries().get(spec.objective)
        if summary is None or summary["last"]["step"] <= trial.reported_step:
            return
        points = metrics.points({spec.objective: summary}, trial.reported_step + 1)[spec.objective]
        prune = False
        for point in points:
            prune = studies.report(study, trial.number, point["step"], point["value"])
            trial.reported_step = point["step"]
        self.experiments.put_trial(experiment.id, trial)
        if not prune:
            return
        step, value = trial.reported_step, points[-1]["value"]
        median = studies.median_of_earlier(study, trial.number, step)
        trial.message = (
            f"stopped early: {spec.objective} {value:.6g} at step {step} worse than the "
            f"median {median:.6g} of earlier trials"
        )
        self.experiments.put_trial(experiment.id, trial)
        self._cancel(trial.run_id, f"experiment {experiment.id}", trial.message)
        log.info("%s: trial %d %s", experiment.id, trial.number, trial.message)

    def _cancel(self, run_id: str, by: str, reason: str) -> None:
        try:
            self.runs.request_cancel(run_id, by, reason=reason)
        except (InvalidTransition, RunNotFound):
            pass  # it ended meanwhile: the next look tells the study

    # --- the end -------------------------------------------------------------------------

    def _ending(self, experiment: Experiment, spec: ExperimentSpec, trials: list[Trial]):
        """(state, message) when the experiment is to end now, else None."""
        if experiment.cancel_requested:
            return ExperimentState.HALTED, f"cancelled by {experiment.cancel_requested}"
        failed = [t for t in trials if t.state is TrialState.FAILED]
        if len(failed) > spec.max_failed_trials:
            return ExperimentState.FAILED, (
                f"{len(failed)} trials failed (more than max_failed_trials "
                f"{spec.max_failed_trials}); the last: trial {failed[-1].number}: "
                f"{failed[-1].message}"
            )
        best = best_trial(spec.direction, trials)
        if best is not None and spec.target is not None and reaches(spec, best.objective):
            return ExperimentState.COMPLETED, (
                f"target reached: {spec.objective} {best.objective:.6g} by trial {best.number} "
                f"({best.run_id})"
            )
        done = len(trials) >= spec.trials or self._grid_done(spec, trials)
        if done and all(t.state.ended for t in trials):
            if best is None:
                return ExperimentState.FAILED, f"no trial reported {spec.objective}"
            return ExperimentState.COMPLETED, (
                f"{len(trials)} trials done; best {spec.objective} {best.objective:.6g} by "
                f"trial {best.number} ({best.run_id})"
            )
        return None

    def _grid_done(self, spec: ExperimentSpec, trials: list[Trial]) -> bool:
        return spec.sampler == "GridSampler" and len(trials) >= spec.grid_size()

    def _finish(self, experiment: Experiment, trials: list[Trial], state, message: str) -> None:
        """Its active trials cancelled; once none is left, the experiment ends."""
        still = [t for t in trials if not t.state.ended]
        for trial in still:
            self._cancel(trial.run_id, f"experiment {experiment.id}", f"experiment {message}")
        if still:
            return  # each cancelled run's end brings the controller back
        self.experiments.end(experiment.id, state, message)
        self._studies.pop(experiment.id, None)
        self._pruning.discard(experiment.id)
        self._zips.pop(experiment.id, None)
        if experiment.artifact:
            self.artifacts.delete(experiment.artifact)
        log.info("%s: %s: %s", experiment.id, state.value, message)
        if experiment.delete_requested:
            for trial in trials:
                self.runs.delete(trial.run_id, experiment.user)
            self.experiments.delete(experiment)


def trial_command(command: str, values: dict) -> str:
    """The manifest's command with each `${name}` of a hyperparameter replaced by its value
    (text values quoted for the shell); `${DATA_DIR}` and the like are left to the worker."""
    for name, value in values.items():
        text = shlex.quote(value) if isinstance(value, str) else repr(value)
        command = command.replace("${" + name + "}", text)
    return command


def reaches(spec: ExperimentSpec, value: float) -> bool:
    return value >= spec.target if spec.direction == "maximize" else value <= spec.target


def main(argv: list[str] | None = None) -> int:
    started = start_service("dlaas-controller", __doc__, argv)
    if started is None:
        return 2
    settings, connection = started
    controller = Controller(settings, connection, make_celery(settings, main="dlaas-controller"))
    print(
        f"dlaas-controller {controller.identity}: every "
        f"{settings.controller_interval_seconds:g} s and on each trial's end",
        flush=True,
    )
    controller.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
