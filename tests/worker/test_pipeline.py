"""The pipeline's machinery as pure logic: hooks in order and undone in reverse, a failing hook
logged and not raised, phases run until one fails, the failure kept for the end decision."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from common.runstore import LostClaim
from common.states import ErrorCode, RunState
from worker.attempt import RunFailed
from worker.pipeline import Hook, Phase, applied, run_phases


def _attempt():
    return SimpleNamespace(id="training-test", failure=None)


def _recording(seen: list, name: str, fail_before=False, fail_after=False):
    class Recording(Hook):
        def before(self, attempt):
            seen.append(f"{name}.before")
            if fail_before:
                raise OSError(f"{name} cannot start")

        def after(self, attempt):
            seen.append(f"{name}.after")
            if fail_after:
                raise OSError(f"{name} cannot finish")

    Recording.__name__ = name
    return Recording


def test_hooks_start_in_order_and_are_undone_in_reverse_even_when_the_body_raises():
    seen: list[str] = []
    hooks = [_recording(seen, name) for name in ("a", "b", "c")]
    with pytest.raises(ValueError), applied(hooks, _attempt()):
        seen.append("body")
        raise ValueError("the phase failed")
    assert seen == ["a.before", "b.before", "c.before", "body", "c.after", "b.after", "a.after"]


def test_a_failing_hook_is_logged_and_the_others_go_on(caplog):
    seen: list[str] = []
    hooks = [
        _recording(seen, "a", fail_after=True),
        _recording(seen, "b", fail_before=True),
        _recording(seen, "c"),
    ]
    with caplog.at_level(logging.ERROR), applied(hooks, _attempt()):
        seen.append("body")
    # b never started, so it is not undone; a's failing after is logged, not raised.
    assert seen == ["a.before", "b.before", "c.before", "body", "c.after", "a.after"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["training-test: b did not start", "training-test: a did not finish"]


class _Step(Phase):
    def __init__(self, seen: list, name: str, action=None, wanted=True, hooks=()):
        super().__init__(hooks)
        self.seen, self.name, self.action, self.is_wanted = seen, name, action, wanted

    def wanted(self, attempt) -> bool:
        return self.is_wanted

    def run(self, attempt) -> None:
        self.seen.append(self.name)
        if self.action is not None:
            self.action()


def _raise(exc: Exception):
    def action():
        raise exc

    return action


def test_phases_run_in_order_until_one_fails_and_the_failure_is_kept():
    seen: list[str] = []
    attempt = _attempt()
    failed = RunFailed(ErrorCode.DATA_STAGING, "data staging: the store is away")
    run_phases(
        attempt,
        [
            _Step(seen, "one"),
            _Step(seen, "skipped", wanted=False, hooks=[_recording(seen, "never")]),
            _Step(seen, "two", _raise(failed), hooks=[_recording(seen, "around-two")]),
            _Step(seen, "three"),
        ],
    )
    assert seen == ["one", "around-two.before", "two", "around-two.after"]
    assert attempt.failure is failed


def test_an_unexpected_error_is_a_worker_error_naming_it(caplog):
    attempt = _attempt()
    with caplog.at_level(logging.ERROR):
        run_phases(attempt, [_Step([], "one", _raise(KeyError("gpus")))])
    assert attempt.failure.code is ErrorCode.WORKER_ERROR
    assert attempt.failure.message == "worker error: KeyError: 'gpus'"
    assert "training-test: worker error" in caplog.text


def test_a_lost_claim_is_not_a_failure_of_the_run():
    attempt = _attempt()
    lost = LostClaim("training-test", RunState.PROCESSING, RunState.STORING, "claim lost")
    with pytest.raises(LostClaim):
        run_phases(attempt, [_Step([], "one", _raise(lost))])
    assert attempt.failure is None
