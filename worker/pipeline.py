"""The machinery of the run's pipeline: phases run in order over one Attempt, each wrapped
in its hooks, the whole attempt wrapped in the attempt's hooks, and the end state decided once
at the end (worker/outcome.py). The pipeline itself, as two lists, is in worker/training.py.

Hooks start in order and are undone in reverse; one that fails is logged, never raised
(Dramatiq's middleware is the model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from common.runstore import LostClaim, RunNotFound
from common.states import ErrorCode
from worker.attempt import Attempt, RunFailed
from worker.outcome import end

log = logging.getLogger(__name__)


class Hook:
    """A concern wrapped around a phase (or the whole attempt): `before` when it starts,
    `after` when it ends, whatever happened in it. One instance per attempt."""

    def before(self, attempt: Attempt) -> None:
        pass

    def after(self, attempt: Attempt) -> None:
        pass


class Phase:
    """One step of the run's life. `run` raises RunFailed when the run cannot go on."""

    name = "phase"

    def __init__(self, hooks: Sequence[Callable[[], Hook]] = ()):
        self.hooks = tuple(hooks)

    def wanted(self, attempt: Attempt) -> bool:
        return True

    def run(self, attempt: Attempt) -> None:
        raise NotImplementedError


@contextmanager
def applied(hooks: Sequence[Callable[[], Hook]], attempt: Attempt) -> Iterator[None]:
    """Each hook's `before` in order, then the body, then the `after` of each hook that
    started, in reverse. A failing hook is logged; the run goes on without it."""
    started = []
    for make in hooks:
        hook = make()
        try:
            hook.before(attempt)
            started.append(hook)
        except Exception:
            log.exception("%s: %s did not start", attempt.id, type(hook).__name__)
    try:
        yield
    finally:
        for hook in reversed(started):
            try:
                hook.after(attempt)
            except Exception:
                log.exception("%s: %s did not finish", attempt.id, type(hook).__name__)


def run_phases(attempt: Attempt, phases: Sequence[Phase]) -> None:
    """Every wanted phase in order until one fails; what failed is kept on the attempt."""
    try:
        for phase in phases:
            if phase.wanted(attempt):
                with applied(phase.hooks, attempt):
                    phase.run(attempt)
    except RunFailed as failed:
        attempt.failure = failed
    except (LostClaim, RunNotFound):
        raise
    except Exception as exc:
        log.exception("%s: worker error", attempt.id)
        attempt.failure = RunFailed(
            ErrorCode.WORKER_ERROR, f"worker error: {type(exc).__name__}: {exc}"
        )


def drive(attempt: Attempt, phases: Sequence[Phase], hooks: Sequence[Callable[[], Hook]]) -> bool:
    """The attempt from its claim to its end state. False when the claim was lost on the
    way (the run is another worker's now, or gone): nothing more is written then."""
    with applied(hooks, attempt):
        try:
            run_phases(attempt, phases)
            end(attempt)
        except (LostClaim, RunNotFound) as exc:
            log.warning(
                "%s: stopped here, the run is no longer this worker's (%s)", attempt.id, exc
            )
            return False
    return True
