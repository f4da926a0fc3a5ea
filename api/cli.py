"""`dlaas`: the command line, shaped on the classic `bx ml` verbs.

    dlaas train MODEL.zip MANIFEST.yml [--wait]
    dlaas list trained-models
    dlaas show trained-models ID
    dlaas delete trained-models ID
    dlaas cancel training-runs ID
    dlaas logs ID [--follow] [--since N]
    dlaas monitor training-runs ID
    dlaas nodes [drain NAME]

Every command takes --json; on error it prints FAILED and one line, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from api.client import ClientError, DlaasClient, resolve_target
from common.clock import iso_seconds

NOUNS = ("trained-models", "training-runs")
TERMINAL = ("COMPLETED", "FAILED", "HALTED")


def _cli_state(state: str) -> str:
    return "running" if state == "PROCESSING" else state.lower()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlaas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print the service's JSON answer")
        return p

    train = verb("train", "submit a training run")
    train.add_argument("model_zip")
    train.add_argument("manifest")
    train.add_argument("--wait", action="store_true", help="follow the run until it ends")
    train.add_argument("--timeout", type=float, default=1800, help="seconds --wait waits at most")
    lister = verb("list", "list your training runs")
    lister.add_argument("noun", choices=NOUNS)
    lister.add_argument("--all", action="store_true", help="every user's runs (admins)")
    show = verb("show", "show one training run")
    show.add_argument("noun", choices=NOUNS)
    show.add_argument("run_id")
    delete = verb("delete", "remove a run from the service (its outputs stay in your bucket)")
    delete.add_argument("noun", choices=NOUNS)
    delete.add_argument("run_id")
    cancel = verb("cancel", "stop a run (SIGTERM, a grace period, SIGKILL); it ends HALTED")
    cancel.add_argument("noun", choices=NOUNS)
    cancel.add_argument("run_id")
    logs = verb("logs", "print a run's log (stamped lines), or follow it until the run ends")
    logs.add_argument("run_id")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--since", type=int, default=0, help="first line to print (from 0)")
    monitor = verb("monitor", "follow a run's state changes and log until it ends")
    monitor.add_argument("noun", choices=NOUNS)
    monitor.add_argument("run_id")
    nodes = verb("nodes", "list the fleet's workers, or drain one (admins)")
    nodes.add_argument("action", nargs="?", choices=("list", "drain"), default="list")
    nodes.add_argument("name", nargs="?")
    admin = verb("admin", "tokens, key rotation and the audit log (admins)")
    admin.add_argument(
        "action", choices=("tokens", "rotate-key", "audit"), help="what to administer"
    )
    admin.add_argument(
        "what", nargs="*", help="tokens: create USER | list | revoke ID; audit: [ACTOR]"
    )
    admin.add_argument("--note", default="", help="tokens create: a note kept with the token")
    admin.add_argument("--limit", type=int, default=50, help="audit: how many entries")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    url, token = resolve_target()
    client = DlaasClient(url, token)
    out = _Printer(args.json)
    try:
        return COMMANDS[args.verb](client, args, out)
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


def _train(client: DlaasClient, args, out: _Printer) -> int:
    out.say("Starting to train ...")
    created = client.submit(args.model_zip, args.manifest)
    out.say("OK")
    out.say(f"Model-ID is '{created['model_id']}'")
    if not args.wait:
        out.data(created)
        return 0
    final = _wait(client, created["model_id"], args.timeout, out)
    out.data(final)
    out.say(f"Final state: {_cli_state(final['state'])}")
    loc = final.get("results_location") or {}
    out.say(f"Results: {loc.get('type')} bucket '{loc.get('bucket')}', folder {loc.get('prefix')}")
    if final["state"] != "COMPLETED":
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
        if seen in TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise ClientError(f"{run_id} still {seen} after {timeout:.0f} s (it goes on running)")
        time.sleep(0.5)


def _list(client: DlaasClient, args, out: _Printer) -> int:
    out.say("Fetching the list of trained models ...")
    models = client.list_all(every_user=args.all)
    out.data({"models": models, "total": len(models)})
    width = max([len(m["name"]) for m in models] + [24]) + 3
    owner = f"{'user':<12}" if args.all else ""
    out.say(f"{'SI No':<8}{'Name':<{width}}{'guid':<21}{'status':<12}{owner}submitted-at")
    for i, m in enumerate(models, 1):
        user = f"{m.get('user', '-'):<12}" if args.all else ""
        out.say(
            f"{i:<8}{m['name']:<{width}}{m['model_id']:<21}{_cli_state(m['state']):<12}"
            f"{user}{iso_seconds(m['submitted_at'])}"
        )
    out.say()
    out.say(f"{len(models)} records found.")
    out.say("OK")
    out.say("List all trained-models successful")
    return 0


def _show(client: DlaasClient, args, out: _Printer) -> int:
    out.say(f"Fetching the trained model details with MODEL-ID '{args.run_id}' ...")
    run = client.show(args.run_id)
    out.data(run)
    rows = [
        ("ModelId", run["model_id"]),
        ("url", run["url"]),
        ("Name", run["name"]),
        ("State", _cli_state(run["state"])),
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
    if progress and run["state"] in ("DOWNLOADING", "STORING"):
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
            f"  {iso_seconds(entry['at'])}  {_cli_state(entry['state']):<12}{code} "
            f"{first[0] if first else ''}".rstrip()
        )
    message = run.get("status_message") or ""
    if run["state"] == "FAILED" and "\n" in message:
        out.say("Last lines of the log")
        for line in message.split("\n", 1)[1].splitlines():
            out.say(f"  {line}")
    out.say("OK")
    out.say("Show trained-models details successful")
    return 0


def _delete(client: DlaasClient, args, out: _Printer) -> int:
    out.say(f"Deleting the trained model '{args.run_id}' ...")
    answer = client.delete(args.run_id)
    out.data(answer)
    if not answer.get("deleted"):
        out.say("The run is active: it is being cancelled and goes once it has stopped.")
    out.say("OK")
    out.say("Delete trained-models successful")
    return 0


def _cancel(client: DlaasClient, args, out: _Printer) -> int:
    out.say(f"Canceling training for MODEL-ID '{args.run_id}'...")
    answer = client.cancel(args.run_id)
    out.data(answer)
    out.say("OK")
    out.say("Cancel training successful")
    return 0


def _logs(client: DlaasClient, args, out: _Printer) -> int:
    if not args.follow:
        text, next_line = client.logs(args.run_id, args.since)
        if args.json:
            out.data({"lines": text.splitlines(), "next_line": next_line})
        else:
            sys.stdout.write(text)
        return 0
    return _follow(client, args.run_id, args.since, out, show_status=False)


def _monitor(client: DlaasClient, args, out: _Printer) -> int:
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
                out.say(f"Status: {_cli_state(final)}" if final else "Status: unknown")
    if show_status:
        out.say(f"Run ended: {_cli_state(final) if final else 'unknown'}")
        out.say("OK")
    return 0 if final in ("COMPLETED", None) or not show_status else 1


def _nodes(client: DlaasClient, args, out: _Printer) -> int:
    if args.action == "drain":
        if not args.name:
            raise ClientError("nodes drain: name the node (see `dlaas nodes`)")
        answer = client.drain(args.name)
        out.data(answer)
        out.say(f"Draining node '{args.name}': it takes no new run; its running run finishes.")
        out.say("OK")
        return 0
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


def _admin(client: DlaasClient, args, out: _Printer) -> int:
    what = args.what
    if args.action == "tokens":
        if what[:1] == ["create"] and len(what) == 2:
            made = client.create_token(what[1], args.note)
            out.data(made)
            out.say(f"Token for '{made['user']}' (id {made['id']}); it is shown only now:")
            out.say(made["token"])
        elif what in ([], ["list"]):
            tokens = client.tokens()["tokens"]
            out.data({"tokens": tokens})
            out.say(f"{'id':<14}{'user':<16}{'source':<8}{'created-at':<22}created-by")
            for t in tokens:
                created = iso_seconds(t["created_at"]) if t.get("created_at") else "-"
                out.say(
                    f"{t['id']:<14}{t['user']:<16}{t['source']:<8}{created:<22}"
                    f"{t.get('created_by', '-')}"
                )
            out.say(f"{len(tokens)} tokens found.")
        elif what[:1] == ["revoke"] and len(what) == 2:
            out.data(client.revoke_token(what[1]))
            out.say(f"Token {what[1]} revoked.")
        else:
            raise ClientError("admin tokens: expected create USER, list, or revoke ID")
    elif args.action == "rotate-key":
        if what:
            raise ClientError("admin rotate-key takes no arguments")
        done = client.rotate_key()
        out.data(done)
        out.say(
            f"Re-encrypted the credentials of {done['resealed']} runs with the newest of "
            f"{done['keys_configured']} keys."
        )
        if done["unreadable"]:
            out.say(f"Unreadable with the configured keys: {', '.join(done['unreadable'])}")
    else:
        if len(what) > 1:
            raise ClientError("admin audit: at most one ACTOR")
        entries = client.audit(args.limit, what[0] if what else None)["entries"]
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


COMMANDS = {
    "train": _train,
    "list": _list,
    "show": _show,
    "delete": _delete,
    "cancel": _cancel,
    "logs": _logs,
    "monitor": _monitor,
    "nodes": _nodes,
    "admin": _admin,
}


if __name__ == "__main__":
    sys.exit(main())
