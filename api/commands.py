"""The CLI's declaration machinery: `@verb(words, help, *arguments, nouns=...)` above a
handler declares one command, `group(...)` words that lead to sub-commands; the argparse tree
is built from the declarations, and `run` parses a command line and calls its handler. The
verbs themselves are in api/cli.py."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from api.client import ClientError, DlaasClient, resolve_target

EPILOG = """\
Every command takes --json; on error (a refused command line included) it prints FAILED
and one line, and exits 1. The server is DLAAS_URL and the token DLAAS_TOKEN, else those
in $DLAAS_HOME/env or .dlaas/env."""


class UsageError(ClientError):
    """A command line the parser refused, said like any other error."""


@dataclass(frozen=True)
class Arg:
    """One `add_argument` call, kept until the parser is built."""

    names: tuple[str, ...]
    options: dict

    @property
    def required_positional(self) -> str | None:
        """The metavar of a positional that must be given, else None."""
        if self.names[0].startswith("-") or self.options.get("nargs") in ("?", "*"):
            return None
        return self.options.get("metavar", self.names[0].upper())


def arg(*names: str, **options) -> Arg:
    return Arg(names, options)


Handler = Callable[[DlaasClient, argparse.Namespace, "Printer"], int]


@dataclass(frozen=True)
class Command:
    """A verb or a sub-command (`admin tokens create`): its words, help, arguments, handler."""

    words: tuple[str, ...]
    help: str
    args: tuple[Arg, ...]
    handler: Handler
    nouns: tuple[str, ...] = ()

    @property
    def prog(self) -> str:
        return " ".join(("dlaas", *self.words))

    def example(self) -> str:
        """`dlaas show trained-models ID`: the command line with its required words."""
        positionals = [a.required_positional for a in self.args if a.required_positional]
        return " ".join((self.prog, *self.nouns[:1], *positionals))


@dataclass(frozen=True)
class Group:
    """Words that lead to sub-commands (`admin`, `admin tokens`, `nodes`)."""

    help: str
    default: str | None = None  # the sub-command run when none is named


COMMANDS: dict[tuple[str, ...], Command] = {}
GROUPS = {(): Group("dlaas: training runs on the dlaas service, with the classic `bx ml` verbs.")}


def _declare(words: tuple[str, ...]) -> None:
    if words in COMMANDS or words in GROUPS:
        raise ValueError(f"`dlaas {' '.join(words)}` is declared twice")


def verb(
    name: str, help: str, *args: Arg, nouns: tuple[str, ...] = ()
) -> Callable[[Handler], Handler]:
    """Declare the command `dlaas NAME` (NAME may be `admin tokens create`) and its handler."""
    words = tuple(name.split())

    def register(handler: Handler) -> Handler:
        _declare(words)
        COMMANDS[words] = Command(words, help, args, handler, nouns)
        return handler

    return register


def group(name: str, help: str, default: str | None = None) -> None:
    """Declare words that only lead to sub-commands; `default` runs when none is named."""
    words = tuple(name.split())
    _declare(words)
    GROUPS[words] = Group(help, default)


def _either(words: Sequence[str]) -> str:
    if len(words) <= 2:
        return " or ".join(words)
    return f"{', '.join(words[:-1])}, or {words[-1]}"


class _Parser(argparse.ArgumentParser):
    """Raises UsageError where argparse would print its usage and exit 2."""

    expected = ""  # a group's: the sub-commands that may follow its words

    def parse_known_args(self, args=None, namespace=None):
        given = sys.argv[1:] if args is None else args
        self._words = [a for a in given if not a.startswith("-")]
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        if self.expected:  # a group fails only for want of a known sub-command
            words = getattr(self, "_words", [])
            got = f", got {words[0]!r}" if words else ""
            raise UsageError(f"{self.prog}: expected {self.expected}{got}")
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _noun_of(command: Command) -> Callable[[str], str]:
    def check(word: str) -> str:
        if word not in command.nouns:
            raise UsageError(
                f"{command.prog}: expected {_either(command.nouns)}, got {word!r} "
                f"(as in `{command.example()}`)"
            )
        return word

    return check


def _add_json(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a sub-command's parser must not reset a --json given before its name.
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the service's JSON answer",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every declared group and command."""
    root = _Parser(
        prog="dlaas",
        description=GROUPS[()].help,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_json(root)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): root}
    subs: dict[tuple[str, ...], Any] = {}  # argparse's sub-parsers action of each group

    def add(words: tuple[str, ...], help: str, description: str) -> argparse.ArgumentParser:
        above = words[:-1]
        if above not in parsers:
            if above not in GROUPS:
                raise ValueError(f"`dlaas {' '.join(above)}` is used but not declared a group")
            add(above, GROUPS[above].help, GROUPS[above].help)
        if above not in subs:
            subs[above] = parsers[above].add_subparsers(metavar="COMMAND" if above else "VERB")
        made = subs[above].add_parser(words[-1], help=help, description=description)
        _add_json(made)
        parsers[words] = made
        return made

    for command in COMMANDS.values():
        parser = add(command.words, command.help, (command.handler.__doc__ or command.help))
        if command.nouns:
            parser.add_argument(
                "noun",
                metavar="|".join(command.nouns),
                type=_noun_of(command),
                help="the classic noun (a run and its trained model are one record here)",
            )
        for argument in command.args:
            parser.add_argument(*argument.names, **argument.options)
        parser.set_defaults(command=command)
    for words, declared in GROUPS.items():
        parser = parsers[words]
        parser.expected = _either(_what_follows(words))
        if declared.default is None:
            subs[words].required = True
            continue
        default = COMMANDS[(*words, declared.default)]
        if default.args or default.nouns:
            raise ValueError(f"{default.prog}: a default sub-command takes no arguments")
        parser.set_defaults(command=default)
    return root


def _what_follows(words: tuple[str, ...]) -> list[str]:
    """What may follow a group's words, in declaration order: each sub-command with its
    required words (`create USER`); after `dlaas` alone, the verbs' names."""
    follows: dict[str, str] = {}
    for command in COMMANDS.values():
        if len(command.words) > len(words) and command.words[: len(words)] == words:
            step = command.words[len(words)]
            whole = bool(words) and len(command.words) == len(words) + 1
            tail = command.example().split(" ", len(words) + 1)[-1]
            follows.setdefault(step, tail if whole else step)
    return list(follows.values())


def parse(argv: Sequence[str]) -> tuple[Command, argparse.Namespace]:
    """The declared command a command line names, and its arguments; UsageError if none."""
    args, extra = build_parser().parse_known_args(list(argv))
    command: Command = args.command
    if extra:
        raise UsageError(
            f"{command.prog}: unexpected {' '.join(map(repr, extra))} (see `{command.prog} --help`)"
        )
    args.json = getattr(args, "json", False)
    return command, args


def run(argv: Sequence[str] | None = None, client: DlaasClient | None = None) -> int:
    """Parse the command line, run its handler; the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        command, args = parse(argv)
    except UsageError as exc:
        Printer("--json" in argv).fail(str(exc))
        return 1
    out = Printer(args.json)
    try:
        return command.handler(client or DlaasClient(*resolve_target()), args, out)
    except ClientError as exc:
        out.fail(str(exc))
        return 1
    except BrokenPipeError:
        sys.stderr.close()  # the reader (head, say) went away: nothing to tell
        return 0
    except KeyboardInterrupt:
        print("\nstopped following; the run itself is untouched", file=sys.stderr)
        return 130


class Printer:
    """What a handler prints: text, or with --json the service's answer; errors to stderr."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def say(self, text: str = "") -> None:
        if not self.as_json:
            print(text, flush=True)

    def data(self, value) -> None:
        if self.as_json:
            print(json.dumps(value, indent=2))

    def fail(self, reason: str) -> None:
        if self.as_json:
            print(json.dumps({"error": reason}))
        else:
            print("FAILED")
        print(reason.splitlines()[0] if reason else "unknown error", file=sys.stderr)
