"""The run's Python environment, prepared beside staging: once the model zip is unpacked (its
requirements.txt read), the node's environment cache builds or reuses the environment for the
run's framework and requirements while the data is still coming in (worker/phases/stage.py
starts it and joins it)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from common.layout import ENVIRONMENT_LOG, LOAD_LOG
from common.requirements import REQUIREMENTS_FILE, RequirementsError, parse_requirements
from common.states import ErrorCode
from worker.attempt import Attempt, RunFailed
from worker.environments import Environment, Wanted
from worker.uvbuild import BuildFailed, BuildStopped


def wanted_by(attempt: Attempt) -> Wanted:
    """What the run asks for: its framework on this node's accelerator, its requirements."""
    ctx, run = attempt.ctx, attempt.run
    framework = ctx.frameworks.get(run.framework_name, run.framework_version)
    if framework is None:
        raise BuildFailed(
            f"framework {run.framework_name} {run.framework_version} is not in this node's "
            f"registry ({ctx.frameworks.source})",
            user_fault=True,
        )
    requirements: tuple[str, ...] = ()
    path = attempt.dirs.model / REQUIREMENTS_FILE
    if path.is_file() and not path.is_symlink():
        try:
            requirements = parse_requirements(path.read_text(errors="replace"))
        except RequirementsError as exc:
            raise BuildFailed(str(exc), user_fault=True) from None
    return Wanted(framework, ctx.accelerator, requirements)


def prepare_environment(attempt: Attempt, model_job: Future, abandon: threading.Event):
    """Once the model zip is staged (waits for it): the environment, or None when the model
    could not be staged. Raises BuildFailed or BuildStopped."""
    if model_job.exception() is not None:
        return None
    wanted = wanted_by(attempt)
    log_path = attempt.dirs.log / ENVIRONMENT_LOG
    with open(log_path, "a") as log:
        log.write(
            f"{wanted.framework.label} on {wanted.accelerator}, Python "
            f"{wanted.framework.python}; packages: {', '.join(wanted.packages) or '(none)'}\n"
            f"sources: {attempt.ctx.environments.builder.sources.describe()}\n"
        )
    env = attempt.ctx.environments.prepare(
        wanted, log_path, lambda: attempt.stop.is_set() or abandon.is_set()
    )
    attempt.environment = env
    attempt.environment_record = env.record(wanted)
    return env


def joined(attempt: Attempt, env_job: Future) -> Environment | None:
    """The environment job's end, in the main thread: its record on the run, or the run's
    failure kept for its end (C104: as asked, it cannot be built; S304: the service could
    not build it), its logs stored first."""
    try:
        env = env_job.result()
    except BuildStopped:
        return None  # the stop flag is set: the command will not start
    except BuildFailed as exc:
        code = ErrorCode.ENVIRONMENT if exc.user_fault else ErrorCode.ENVIRONMENT_BUILD
        attempt.note(f"environment: {exc.message}", LOAD_LOG)
        # The command never starts, but the logs are stored: the build's output is the answer.
        attempt.failure = RunFailed(
            code, f"environment: {exc.message} (full output: learner-1/{ENVIRONMENT_LOG})"
        )
        return None
    if env is None:
        return None
    record = attempt.environment_record
    attempt.note(
        f"environment {env.key} ({record['framework']}, Python {env.python}): "
        f"{record['status']} in {env.seconds:.2f} s",
        LOAD_LOG,
    )
    attempt.usage["environment_seconds"] = round(env.seconds, 3)
    attempt.update(environment=record)
    return env
