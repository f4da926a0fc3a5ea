"""The `dlaas` command line without a server: its declarations, parsing, usage errors, nouns,
and how it shows run states (a stand-in client answers)."""

from __future__ import annotations

import json

import pytest

from api import cli
from api.cli import COMMANDS, GROUPS, TRAINED_MODELS, TRAINING_RUNS, main, parse
from common.states import RunState, cli_name, is_terminal

# The contract: the README's "Using it" list, one command line per declared command.
CONTRACT = {
    ("train",): ["train", "model.zip", "manifest.yml", "--wait"],
    ("list",): ["list", "trained-models"],
    ("show",): ["show", "trained-models", "training-abc"],
    ("metrics",): ["metrics", "training-abc", "--name", "loss", "--since", "10"],
    ("download",): ["download", "training-abc", "learner-1/", "--to", "out"],
    ("delete",): ["delete", "trained-models", "training-abc"],
    ("cancel",): ["cancel", "training-runs", "training-abc"],
    ("store",): ["store", "training-runs", "training-abc", "--no-wait", "--timeout", "60"],
    ("logs",): ["logs", "training-abc", "--follow", "--since", "3"],
    ("monitor",): ["monitor", "training-runs", "training-abc"],
    ("nodes", "list"): ["nodes"],
    ("nodes", "drain"): ["nodes", "drain", "worker-1"],
    ("nodes", "undrain"): ["nodes", "undrain", "worker-1"],
    ("frameworks",): ["frameworks"],
    ("admin", "tokens", "create"): ["admin", "tokens", "create", "gina", "--note", "ci"],
    ("admin", "tokens", "list"): ["admin", "tokens", "list"],
    ("admin", "tokens", "revoke"): ["admin", "tokens", "revoke", "tok-1"],
    ("admin", "rotate-key"): ["admin", "rotate-key"],
    ("admin", "audit"): ["admin", "audit", "alice", "--limit", "5"],
    ("experiments", "run"): ["experiments", "run", "m.zip", "manifest.yml", "exp.yml", "--wait"],
    ("experiments", "list"): ["experiments", "list"],
    ("experiments", "show"): ["experiments", "show", "experiment-abc"],
    ("experiments", "cancel"): ["experiments", "cancel", "experiment-abc"],
    ("experiments", "delete"): ["experiments", "delete", "experiment-abc"],
}


def test_every_command_is_declared_once_and_the_contract_reaches_each():
    assert set(COMMANDS) == set(CONTRACT)
    for words, argv in CONTRACT.items():
        command, _ = parse(argv)
        assert command is COMMANDS[words]
    with pytest.raises(ValueError, match="declared twice"):
        cli.verb("show", "again")(lambda client, args, out: 0)
    with pytest.raises(ValueError, match="declared twice"):
        cli.group("admin", "again")
    assert set(COMMANDS) == set(CONTRACT)


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_command_takes_json_and_has_help(words, capsys):
    command = COMMANDS[words]
    _, args = parse([*CONTRACT[words], "--json"])
    assert args.json is True
    _, args = parse(CONTRACT[words])
    assert args.json is False
    with pytest.raises(SystemExit) as done:
        parse([*words, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {command.prog} ")
    assert command.handler.__doc__.split()[0] in text  # the handler's docstring explains it
    assert "--json" in text


def test_groups_list_their_sub_commands_in_help(capsys):
    for words in GROUPS:
        with pytest.raises(SystemExit):
            parse([*words, "--help"])
        text = capsys.readouterr().out
        below = {c.words[len(words)] for c in COMMANDS.values() if c.words[: len(words)] == words}
        assert all(name in text for name in below)


def test_admin_has_real_sub_commands():
    command, args = parse(["admin", "tokens", "create", "gina", "--note", "ci"])
    assert command.handler is cli._tokens_create and (args.user, args.note) == ("gina", "ci")
    command, args = parse(["admin", "audit"])
    assert command.handler is cli._audit and (args.actor, args.limit) == (None, 50)
    command, args = parse(["admin", "tokens", "revoke", "tok-1"])
    assert args.token_id == "tok-1"
    # `admin tokens` and `nodes` alone list, as before.
    assert parse(["admin", "tokens"])[0].handler is cli._tokens_list
    assert parse(["nodes"])[0].handler is cli._nodes_list
    # --json before the sub-command's name counts too.
    assert parse(["admin", "--json", "tokens", "list"])[1].json is True


def _run(capsys, *argv: str, client=None) -> tuple[int, str, str]:
    code = main(list(argv), client=client or _Unreachable())
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class _Unreachable:
    """A refused command line must never reach the service."""

    def __getattr__(self, name):
        raise AssertionError(f"the client was called ({name}) for a refused command line")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["admin", "tokens", "frobnicate"],
            "dlaas admin tokens: expected create USER, list, or revoke ID, got 'frobnicate'",
        ),
        (["admin"], "dlaas admin: expected tokens, rotate-key, or audit"),
        (
            ["nodes", "reboot"],
            "dlaas nodes: expected list, drain NAME, or undrain NAME, got 'reboot'",
        ),
        (
            ["fly"],
            "dlaas: expected train, list, show, metrics, download, delete, cancel, store, logs, "
            "monitor, "
            "nodes, frameworks, admin, or experiments, got 'fly'",
        ),
        ([], "dlaas: expected train, list,"),
        (["show", "trained-models"], "dlaas show: the following arguments are required: ID"),
        (["nodes", "drain"], "dlaas nodes drain: the following arguments are required: NAME"),
        (["train", "model.zip"], "dlaas train: the following arguments are required: MANIFEST"),
        (["admin", "rotate-key", "now"], "dlaas admin rotate-key: unexpected 'now'"),
        (["admin", "audit", "a", "b"], "dlaas admin audit: unexpected 'b'"),
        (["logs", "training-abc", "--since", "x"], "dlaas logs: argument --since: invalid int"),
        (["download"], "dlaas download: the following arguments are required: ID"),
        (["download", "training-abc", "a", "b"], "dlaas download: unexpected 'b'"),
        (
            ["experiments", "frob"],
            "dlaas experiments: expected run MODEL_ZIP MANIFEST EXPERIMENT, list, show ID, "
            "cancel ID, or delete ID, got 'frob'",
        ),
        (
            ["experiments", "run", "a.zip"],
            "dlaas experiments run: the following arguments are required: MANIFEST, EXPERIMENT",
        ),
    ],
)
def test_a_refused_command_line_fails_with_one_line(argv, message, capsys):
    code, out, err = _run(capsys, *argv)
    assert code == 1 and out == "FAILED\n"
    assert err.startswith(message) and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "verb, expected",
    [
        ("show", "trained-models or training-runs"),
        ("delete", "trained-models or training-runs"),
        ("list", "trained-models or training-runs"),
        ("cancel", "training-runs or trained-models"),
        ("monitor", "training-runs or trained-models"),
    ],
)
def test_a_verb_on_runs_refuses_a_word_that_is_no_noun(verb, expected, capsys):
    code, out, err = _run(capsys, verb, "models", "training-abc")
    assert code == 1 and out == "FAILED\n"
    example = COMMANDS[(verb,)].example()
    assert err.strip() == f"dlaas {verb}: expected {expected}, got 'models' (as in `{example}`)"


def test_a_forgotten_noun_is_named(capsys):
    _, _, err = _run(capsys, "show", "training-abc")
    assert "expected trained-models or training-runs, got 'training-abc'" in err
    assert "`dlaas show trained-models ID`" in err


def test_both_nouns_name_the_same_runs_as_the_classic_cli_wrote_them():
    for verb in ("list", "show", "delete", "cancel", "monitor"):
        assert set(COMMANDS[(verb,)].nouns) == {TRAINED_MODELS, TRAINING_RUNS}
    for noun in (TRAINED_MODELS, TRAINING_RUNS):
        assert parse(["list", noun, "--all"])[1].all is True
        assert parse(["show", noun, "training-abc"])[1].run_id == "training-abc"
    # the documented noun comes first in the usage
    assert COMMANDS[("show",)].example() == "dlaas show trained-models ID"
    assert COMMANDS[("cancel",)].example() == "dlaas cancel training-runs ID"


def test_a_usage_error_with_json_answers_json(capsys):
    code, out, _ = _run(capsys, "list", "models", "--json")
    assert code == 1 and json.loads(out)["error"].startswith("dlaas list: expected")


def test_state_display_comes_from_common_states():
    assert cli_name("PROCESSING") == "running"
    assert [cli_name(s.value) for s in RunState] == [s.cli_name for s in RunState]
    assert cli_name("PAUSED") == "paused"  # a state a newer service might send
    assert {s for s in RunState if is_terminal(s.value)} == {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.HALTED,
    }
    assert not is_terminal("PAUSED")


class _Service:
    """Answers like the API, for the handlers' output."""

    def __init__(self, states: list[str]):
        self.states = states

    def submit(self, model_zip, manifest):
        return {"model_id": "training-abc", "location": "/v3/models/training-abc"}

    def show(self, run_id):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"model_id": run_id, "state": state, "results_location": {}}

    def list_all(self, every_user=False):
        return [
            {
                "name": "digits",
                "model_id": "training-abc",
                "state": "PROCESSING",
                "submitted_at": "2026-12-02T03:00:00.123456Z",
            }
        ]

    def follow(self, run_id, since):
        yield "status", ["PROCESSING"]
        yield "log", ["2026-12-02T03:00:01Z line 1"]
        yield "end", ["FAILED"]


def test_train_waits_until_a_terminal_state(capsys, monkeypatch):
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    service = _Service(["PENDING", "PROCESSING", "COMPLETED"])
    code, out, _ = _run(capsys, "train", "m.zip", "m.yml", "--wait", client=service)
    assert code == 0
    assert out.splitlines()[:3] == ["Starting to train ...", "OK", "Model-ID is 'training-abc'"]
    assert "Status: PROCESSING\nStatus: COMPLETED\nFinal state: completed\n" in out


def test_list_and_monitor_show_the_cli_names(capsys):
    code, out, _ = _run(capsys, "list", "training-runs", client=_Service(["PROCESSING"]))
    assert code == 0
    row = out.splitlines()[2].split()
    assert row == ["1", "digits", "training-abc", "running", "2026-12-02T03:00:00Z"]
    code, out, _ = _run(capsys, "monitor", "training-runs", "training-abc", client=_Service([]))
    assert code == 1  # it ended FAILED
    assert out.splitlines() == [
        "Starting to fetch status messages...",
        "Status: running",
        "2026-12-02T03:00:01Z line 1",
        "Run ended: failed",
        "OK",
    ]
