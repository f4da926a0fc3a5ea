"""`dlaas`: the command line, shaped on the classic `bx ml` verbs.

Each verb is one declaration, `@verb(words, help, *arguments, nouns=...)` above its handler;
the argparse tree (sub-commands such as `admin tokens create` included) is built from those
declarations. `dlaas --help` lists the verbs, `dlaas VERB --help` explains one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from api.client import ClientError, DlaasClient, resolve_target
from common.clock import iso_seconds
from common.states import RunState, cli_name, is_terminal

# The nouns of the classic `bx ml` verbs, which had both `show trained-models` and `show
# training-runs` for the two views of one run. Here the run and its trained model are one
# record, named by its Model-ID: every verb on a run takes either noun (as users of the
# original CLI write them), its documented one first in its usage, and refuses any other word.
TRAINED_MODELS = "trained-models"
TRAINING_RUNS = "training-runs"
EITHER = (TRAINED_MODELS, TRAINING_RUNS)
TRAINING_FIRST = (TRAINING_RUNS, TRAINED_MODELS)

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


Handler = Callable[[DlaasClient, argparse.Namespace, "_Printer"], int]


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


def main(argv: Sequence[str] | None = None, client: DlaasClient | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        command, args = parse(argv)
    except UsageError as exc:
        _Printer("--json" in argv).fail(str(exc))
        return 1
    out = _Printer(args.json)
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


class _Printer:
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


RUN_ID = arg("run_id", metavar="ID", help="the run's Model-ID (training-…)")


@verb(
    "train",
    "submit a training run",
    arg("model_zip", metavar="MODEL_ZIP", help="the model definition, a .zip"),
    arg("manifest", metavar="MANIFEST", help="the training manifest, YAML"),
    arg("--wait", action="store_true", help="follow the run until it ends"),
    arg("--timeout", type=float, default=1800, help="seconds --wait waits at most"),
)
def _train(client: DlaasClient, args, out: _Printer) -> int:
    """Submit a training run and print its Model-ID; with --wait, follow it until it ends
    (exit 1 unless it completed)."""
    out.say("Starting to train ...")
    created = client.submit(args.model_zip, args.manifest)
    out.say("OK")
    out.say(f"Model-ID is '{created['model_id']}'")
    if not args.wait:
        out.data(created)
        return 0
    final = _wait(client, created["model_id"], args.timeout, out)
    out.data(final)
    out.say(f"Final state: {cli_name(final['state'])}")
    loc = final.get("results_location") or {}
    out.say(f"Results: {loc.get('type')} bucket '{loc.get('bucket')}', folder {loc.get('prefix')}")
    if final["state"] != RunState.COMPLETED:
        out.say(f"Reason: {final.get('status_message', '')}")
        return 1
    return 0


def _wait(client: DlaasClient, run_id: str, timeout: float, out: _Printer) -> dict:
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        run = client.show(run_id)
        if run["state"] != seen:
            seen = run["state"]
            out.say(f"Status: {seen}")
        if is_terminal(seen):
            return run
        if time.monotonic() > deadline:
            raise ClientError(f"{run_id} still {seen} after {timeout:.0f} s (it goes on running)")
        time.sleep(0.5)


@verb(
    "list",
    "list your training runs",
    arg("--all", action="store_true", help="every user's runs, with their owner (admins)"),
    nouns=EITHER,
)
def _list(client: DlaasClient, args, out: _Printer) -> int:
    """List your training runs, finished or not (with --all, every user's)."""
    out.say("Fetching the list of trained models ...")
    models = client.list_all(every_user=args.all)
    out.data({"models": models, "total": len(models)})
    width = max([len(m["name"]) for m in models] + [24]) + 3
    owner = f"{'user':<12}" if args.all else ""
    out.say(f"{'SI No':<8}{'Name':<{width}}{'guid':<21}{'status':<12}{owner}submitted-at")
    for i, m in enumerate(models, 1):
        user = f"{m.get('user', '-'):<12}" if args.all else ""
        out.say(
            f"{i:<8}{m['name']:<{width}}{m['model_id']:<21}{cli_name(m['state']):<12}"
            f"{user}{iso_seconds(m['submitted_at'])}"
        )
    out.say()
    out.say(f"{len(models)} records found.")
    out.say("OK")
    out.say("List all trained-models successful")
    return 0


@verb("show", "show one training run", RUN_ID, nouns=EITHER)
def _show(client: DlaasClient, args, out: _Printer) -> int:
    """Show one run: its state, where it runs, its progress and usage, where its results go,
    and its history."""
    out.say(f"Fetching the trained model details with MODEL-ID '{args.run_id}' ...")
    run = client.show(args.run_id)
    out.data(run)
    rows = [
        ("ModelId", run["model_id"]),
        ("url", run["url"]),
        ("Name", run["name"]),
        ("State", cli_name(run["state"])),
        ("Submitted_at", iso_seconds(run["submitted_at"])),
        ("Framework", f"{run['framework']['name']} {run['framework']['version']}"),
        (
            "Resource",
            f"{run['resource']} ({run['gpu_count']} GPU{'s' if run['gpu_count'] != 1 else ''})",
        ),
        ("Worker", run.get("worker") or "-"),
        ("GPUs", ",".join(map(str, run.get("gpus") or [])) or "-"),
    ]
    if run.get("exit_code") is not None:
        rows.append(("Exit_code", str(run["exit_code"])))
    if run.get("error_code"):
        rows.append(("Error_code", run["error_code"]))
    if run.get("status_message"):
        rows.append(("Status", run["status_message"].splitlines()[0]))
    progress = run.get("progress") or {}
    if progress and run["state"] in (RunState.DOWNLOADING, RunState.STORING):
        rows.append(
            (
                "Progress",
                f"{progress['phase']}: {progress['objects_done']}/"
                f"{progress['objects_total']} objects, {progress['bytes_done'] / 1e6:.1f}/"
                f"{progress['bytes_total'] / 1e6:.1f} MB, "
                f"{progress['bytes_per_second'] / 1e6:.1f} MB/s",
            )
        )
    usage = run.get("usage") or {}
    if "peak_rss_bytes" in usage:
        rows.append(("Peak_memory", f"{usage['peak_rss_bytes'] / 2**20:.1f} MiB"))
        rows.append(("CPU_time", f"{usage['cpu_seconds']:.1f} s"))
    if "gpu_utilization_mean" in usage:
        rows.append(
            (
                "GPU_use",
                f"mean {usage['gpu_utilization_mean']}%, max "
                f"{usage['gpu_utilization_max']}%, memory peak "
                f"{usage['gpu_memory_peak_bytes'] / 2**20:.0f} MiB",
            )
        )
    if "staged_bytes" in usage:
        rows.append(
            (
                "Staged",
                f"{usage['staged_objects']} objects, {usage['staged_bytes']} bytes "
                f"in {usage['staging_seconds']} s",
            )
        )
    loc = run.get("results_location") or {}
    rows.append(("Results", f"{loc.get('type')} {loc.get('bucket')}/{loc.get('prefix')}"))
    for label, value in rows:
        out.say(f"{label:<15}{value}")
    out.say("History")
    for entry in run.get("history", []):
        code = f" [{entry['error_code']}]" if entry.get("error_code") else ""
        first = (entry.get("message") or "").splitlines()[:1]
        out.say(
            f"  {iso_seconds(entry['at'])}  {cli_name(entry['state']):<12}{code} "
            f"{first[0] if first else ''}".rstrip()
        )
    message = run.get("status_message") or ""
    if run["state"] == RunState.FAILED and "\n" in message:
        out.say("Last lines of the log")
        for line in message.split("\n", 1)[1].splitlines():
            out.say(f"  {line}")
    out.say("OK")
    out.say("Show trained-models details successful")
    return 0


@verb(
    "delete",
    "remove a run from the service (its outputs stay in your bucket)",
    RUN_ID,
    nouns=EITHER,
)
def _delete(client: DlaasClient, args, out: _Printer) -> int:
    """Remove a run from the service; an active run is cancelled first and goes once it has
    stopped. Its trained model and log stay in your results bucket."""
    out.say(f"Deleting the trained model '{args.run_id}' ...")
    answer = client.delete(args.run_id)
    out.data(answer)
    if not answer.get("deleted"):
        out.say("The run is active: it is being cancelled and goes once it has stopped.")
    out.say("OK")
    out.say("Delete trained-models successful")
    return 0


@verb(
    "cancel",
    "stop a run (SIGTERM, a grace period, SIGKILL); it ends HALTED",
    RUN_ID,
    nouns=TRAINING_FIRST,
)
def _cancel(client: DlaasClient, args, out: _Printer) -> int:
    """Stop a run: its processes get SIGTERM, a grace period, then SIGKILL; its log and
    results so far are stored, and it ends HALTED."""
    out.say(f"Canceling training for MODEL-ID '{args.run_id}'...")
    answer = client.cancel(args.run_id)
    out.data(answer)
    out.say("OK")
    out.say("Cancel training successful")
    return 0


@verb(
    "logs",
    "print a run's log (stamped lines), or follow it until the run ends",
    RUN_ID,
    arg("--follow", "-f", action="store_true", help="keep printing until the run ends"),
    arg("--since", type=int, default=0, help="first line to print (from 0)"),
)
def _logs(client: DlaasClient, args, out: _Printer) -> int:
    """Print a run's log, each line stamped; with --follow, go on until the run ends
    (Ctrl-C stops following and leaves the run alone)."""
    if not args.follow:
        text, next_line = client.logs(args.run_id, args.since)
        if out.as_json:
            out.data({"lines": text.splitlines(), "next_line": next_line})
        else:
            sys.stdout.write(text)
        return 0
    return _follow(client, args.run_id, args.since, out, show_status=False)


@verb(
    "monitor",
    "follow a run's state changes and log until it ends",
    RUN_ID,
    nouns=TRAINING_FIRST,
)
def _monitor(client: DlaasClient, args, out: _Printer) -> int:
    """Follow a run's state changes and its log until it ends (exit 1 unless it completed;
    Ctrl-C stops following and leaves the run alone)."""
    out.say("Starting to fetch status messages...")
    return _follow(client, args.run_id, 0, out, show_status=True)


def _follow(client: DlaasClient, run_id: str, since: int, out: _Printer, show_status: bool) -> int:
    """Print events as they come; Ctrl-C stops following and leaves the run alone."""
    final = None
    for kind, data in client.follow(run_id, since):
        if kind == "log":
            for line in data:
                if out.as_json:
                    print(json.dumps({"log": line}), flush=True)
                else:
                    print(line, flush=True)
        elif kind in ("status", "end"):
            final = data[0] if data else None
            if out.as_json:
                print(json.dumps({kind: final}), flush=True)
            elif show_status and kind == "status":
                out.say(f"Status: {cli_name(final)}" if final else "Status: unknown")
    if show_status:
        out.say(f"Run ended: {cli_name(final) if final else 'unknown'}")
        out.say("OK")
    return 0 if final in (RunState.COMPLETED, None) or not show_status else 1


group("nodes", "list the fleet's workers, or drain one (admins)", default="list")


@verb("nodes list", "list the fleet's workers (what `dlaas nodes` alone does)")
def _nodes_list(client: DlaasClient, args, out: _Printer) -> int:
    """List the fleet's workers: their status, the sizes they serve, their GPUs, their host."""
    nodes = client.nodes()["nodes"]
    out.data({"nodes": nodes})
    out.say(f"{'Name':<36}{'status':<10}{'sizes':<20}{'GPUs':<10}host")
    for node in nodes:
        gpus = ",".join(map(str, node.get("gpus", []))) or "-"
        out.say(
            f"{node['name']:<36}{node['status']:<10}{','.join(node.get('sizes', [])) or '-':<20}"
            f"{gpus:<10}{node.get('host', '-')}"
        )
    out.say(f"{len(nodes)} nodes found.")
    out.say("OK")
    return 0


@verb(
    "nodes drain",
    "drain a worker: it takes no new run (admins)",
    arg("name", metavar="NAME", help="the node, as `dlaas nodes` names it"),
)
def _nodes_drain(client: DlaasClient, args, out: _Printer) -> int:
    """Drain a worker (admins): it takes no new run; the run it has finishes."""
    answer = client.drain(args.name)
    out.data(answer)
    out.say(f"Draining node '{args.name}': it takes no new run; its running run finishes.")
    out.say("OK")
    return 0


group("admin", "tokens, key rotation and the audit log (admins)")
group("admin tokens", "make, list and revoke API tokens (admins)", default="list")


@verb(
    "admin tokens create",
    "make a token for a user; it is shown only once",
    arg("user", metavar="USER", help="who the token acts as"),
    arg("--note", default="", help="a note kept with the token"),
)
def _tokens_create(client: DlaasClient, args, out: _Printer) -> int:
    """Make an API token for USER (admins); the token is printed only now."""
    made = client.create_token(args.user, args.note)
    out.data(made)
    out.say(f"Token for '{made['user']}' (id {made['id']}); it is shown only now:")
    out.say(made["token"])
    out.say("OK")
    return 0


@verb("admin tokens list", "list the tokens (what `dlaas admin tokens` alone does)")
def _tokens_list(client: DlaasClient, args, out: _Printer) -> int:
    """List the API tokens (admins): id, user, where it is kept, when and by whom it was made."""
    tokens = client.tokens()["tokens"]
    out.data({"tokens": tokens})
    out.say(f"{'id':<14}{'user':<16}{'source':<8}{'created-at':<22}created-by")
    for t in tokens:
        created = iso_seconds(t["created_at"]) if t.get("created_at") else "-"
        out.say(
            f"{t['id']:<14}{t['user']:<16}{t['source']:<8}{created:<22}{t.get('created_by', '-')}"
        )
    out.say(f"{len(tokens)} tokens found.")
    out.say("OK")
    return 0


@verb(
    "admin tokens revoke",
    "revoke a token",
    arg("token_id", metavar="ID", help="the token's id, from `dlaas admin tokens list`"),
)
def _tokens_revoke(client: DlaasClient, args, out: _Printer) -> int:
    """Revoke an API token (admins); requests with it are refused from now on."""
    out.data(client.revoke_token(args.token_id))
    out.say(f"Token {args.token_id} revoked.")
    out.say("OK")
    return 0


@verb("admin rotate-key", "re-encrypt every run's credentials with the newest key")
def _rotate_key(client: DlaasClient, args, out: _Printer) -> int:
    """Re-encrypt the stored credentials of every run with the newest configured key (admins),
    and name the runs no configured key can read."""
    done = client.rotate_key()
    out.data(done)
    out.say(
        f"Re-encrypted the credentials of {done['resealed']} runs with the newest of "
        f"{done['keys_configured']} keys."
    )
    if done["unreadable"]:
        out.say(f"Unreadable with the configured keys: {', '.join(done['unreadable'])}")
    out.say("OK")
    return 0


@verb(
    "admin audit",
    "who did what, from where",
    arg("actor", metavar="ACTOR", nargs="?", help="only this user's actions"),
    arg("--limit", type=int, default=50, help="how many entries, newest first (default 50)"),
)
def _audit(client: DlaasClient, args, out: _Printer) -> int:
    """Print the audit log (admins): time, actor, action, target, address, and the details."""
    entries = client.audit(args.limit, args.actor)["entries"]
    out.data({"entries": entries})
    for e in entries:
        extra = " ".join(
            f"{k}={v}"
            for k, v in e.items()
            if k not in ("id", "time", "actor", "action", "target", "address")
        )
        out.say(
            f"{iso_seconds(e['time'])}  {e['actor']:<12}{e['action']:<14}{e['target']:<22}"
            f"{e['address']:<16}{extra}"
        )
    out.say(f"{len(entries)} entries.")
    out.say("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
