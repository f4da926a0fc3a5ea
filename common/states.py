"""Run states, the one transition table, and the error codes a run can end with."""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    PENDING = "PENDING"
    DOWNLOADING = "DOWNLOADING"
    PROCESSING = "PROCESSING"
    STORING = "STORING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    HALTED = "HALTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def cli_name(self) -> str:
        """The lower-case word the original CLI printed (PROCESSING showed as `running`)."""
        return "running" if self is RunState.PROCESSING else self.value.lower()


TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.HALTED})

# Every non-terminal state may also end FAILED or HALTED; a command that exits
# non-zero still goes through STORING (its log and results are kept) before FAILED.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.DOWNLOADING}),
    # DOWNLOADING -> STORING: stopped before its command started, the log is still stored.
    RunState.DOWNLOADING: frozenset({RunState.PROCESSING, RunState.STORING}),
    RunState.PROCESSING: frozenset({RunState.STORING}),
    RunState.STORING: frozenset({RunState.COMPLETED}),
}
TRANSITIONS = {
    state: nexts | {RunState.FAILED, RunState.HALTED} for state, nexts in TRANSITIONS.items()
}
# A run whose node was lost (or whose worker shut down) may be handed back to the queue,
# when its retry policy allows: the reconciler or the draining worker moves it to PENDING.
for _active in (RunState.DOWNLOADING, RunState.PROCESSING, RunState.STORING):
    TRANSITIONS[_active] = TRANSITIONS[_active] | {RunState.PENDING}
ACTIVE = frozenset({RunState.DOWNLOADING, RunState.PROCESSING, RunState.STORING})


def can_transition(current: RunState, new: RunState) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def cli_name(state: str) -> str:
    """The CLI's word for a state the API sent; one this version does not know, lower-cased."""
    try:
        return RunState(state).cli_name
    except ValueError:
        return state.lower()


def is_terminal(state: str) -> bool:
    """Whether a state the API sent is an end state (one this version does not know is not)."""
    try:
        return RunState(state).terminal
    except ValueError:
        return False


class ErrorCode(str, Enum):
    """C1xx/C2xx: the user's fault. S1xx/S3xx: the service's."""

    WORKER_ERROR = "S100"
    MANIFEST = "C101"
    MODEL_ZIP = "C102"
    CREDENTIALS = "C103"
    # The run's environment cannot be built as asked: a requirement that does not exist or
    # conflicts, a framework version (or Python) the node cannot provide.
    ENVIRONMENT = "C104"
    COMMAND_FAILED = "C201"
    TIME_LIMIT = "C202"
    NODE_LOST = "S104"
    WORKER_SHUTDOWN = "S105"
    MODEL_STAGING = "S301"
    DATA_STAGING = "S302"
    RESULT_UPLOAD = "S303"
    # The environment could not be built for the service's reasons (index unreachable, ...).
    ENVIRONMENT_BUILD = "S304"
