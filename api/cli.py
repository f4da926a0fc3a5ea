"""`dlaas`: the command line, shaped on the classic `bx ml` verbs.

Each verb is one declaration, `@verb(words, help, *arguments, nouns=...)` above its handler
(api/commands.py builds the argparse tree from them, sub-commands such as `admin tokens create`
included). `dlaas --help` lists the verbs, `dlaas VERB --help` explains one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from api.client import ClientError, DlaasClient
from api.commands import COMMANDS, GROUPS, Printer, arg, group, parse, run, verb
from common.clock import iso_seconds
from common.states import RunState, cli_name, is_terminal
from common.storage import StorageError
from common.storage.base import target_inside

# The nouns of the classic `bx ml` verbs, which had both `show trained-models` and `show
# training-runs` for the two views of one run. Here the run and its trained model are one
# record, named by its Model-ID: every verb on a run takes either noun (as users of the
# original CLI write them), its documented one first in its usage, and refuses any other word.
TRAINED_MODELS = "trained-models"
TRAINING_RUNS = "training-runs"
EITHER = (TRAINED_MODELS, TRAINING_RUNS)
TRAINING_FIRST = (TRAINING_RUNS, TRAINED_MODELS)

PROGRESS_FROM = 8 << 20  # files from this size on get a progress bar on stderr
RUN_ID = arg("run_id", metavar="ID", help="the run's Model-ID (training-…)")


@verb(
    "train",
    "submit a training run",
    arg("model_zip", metavar="MODEL_ZIP", help="the model definition, a .zip"),
    arg("manifest", metavar="MANIFEST", help="the training manifest, YAML"),
    arg("--wait", action="store_true", help="follow the run until it ends"),
    arg("--timeout", type=float, default=1800, help="seconds --wait waits at most"),
)
def _train(client: DlaasClient, args, out: Printer) -> int:
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


def _wait(client: DlaasClient, run_id: str, timeout: float, out: Printer) -> dict:
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
def _list(client: DlaasClient, args, out: Printer) -> int:
    """List your training runs, finished or not (with --all, every user's)."""
    out.say("Fetching the list of trained models ...")
    models = client.list_all(every_user=args.all)
    out.data({"models": models, "total": len(models)})
    width = max([len(m["name"]) for m in models] + [24]) + 3
    owner = f"{'user':<12}" if args.all else ""
    # Trials say their experiment and number, when any run listed is one.
    trials = [_trial_of(m["experiment"]) for m in models if m.get("experiment")]
    across = max(map(len, trials), default=0) + 3
    of = f"{'experiment':<{across}}" if trials else ""
    out.say(f"{'SI No':<8}{'Name':<{width}}{'guid':<21}{'status':<12}{owner}{of}submitted-at")
    for i, m in enumerate(models, 1):
        user = f"{m.get('user', '-'):<12}" if args.all else ""
        trial = m.get("experiment") or {}
        of = f"{_trial_of(trial) if trial else '-':<{across}}" if trials else ""
        out.say(
            f"{i:<8}{m['name']:<{width}}{m['model_id']:<21}{cli_name(m['state']):<12}"
            f"{user}{of}{iso_seconds(m['submitted_at'])}"
        )
    out.say()
    out.say(f"{len(models)} records found.")
    out.say("OK")
    out.say("List all trained-models successful")
    return 0


@verb("show", "show one training run", RUN_ID, nouns=EITHER)
def _show(client: DlaasClient, args, out: Printer) -> int:
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
    if run.get("experiment"):
        values = " ".join(f"{k}={v}" for k, v in sorted(run["experiment"]["values"].items()))
        rows.append(("Experiment", f"{_trial_of(run['experiment'])}: {values}"))
    rows += _activity_rows(run)
    rows += [("Metric", _metric_text(n, m)) for n, m in sorted((run.get("metrics") or {}).items())]
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
    if len(run.get("attempts") or []) > 1:
        out.say("Attempts")
        for each in run["attempts"]:
            ended = iso_seconds(each["ended_at"]) if each.get("ended_at") else "running"
            resumed = each.get("resumed_from")
            got = f"; resumed from {resumed['from']} ({resumed['files']} files)" if resumed else ""
            why = f" ({each['ended']})" if each.get("ended") else ""
            out.say(
                f"  {each['attempt']}  {each['node']}  {iso_seconds(each['started_at'])} -> "
                f"{ended}{why}{got}"
            )
    message = run.get("status_message") or ""
    if run["state"] == RunState.FAILED and "\n" in message:
        out.say("Last lines of the log")
        for line in message.split("\n", 1)[1].splitlines():
            out.say(f"  {line}")
    out.say("OK")
    out.say("Show trained-models details successful")
    return 0


def _trial_of(trial: dict) -> str:
    """`experiment-a1B2c3D4e trial 3`."""
    return f"{trial['id']} trial {trial['trial']}"


def _activity_rows(run: dict) -> list[tuple[str, str]]:
    """What `show` says of a run's work: the transfer going on, what it used and staged, its
    environment."""
    rows = []
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
    if "cached_objects" in usage:
        rows.append(
            (
                "Data_cache",
                f"{usage['cached_objects']} objects ({usage['cached_bytes']} bytes) from the "
                f"node's cache, {usage['fetched_objects']} ({usage['fetched_bytes']} bytes) "
                "from the store",
            )
        )
    environment = run.get("environment")
    if environment:
        rows.append(("Environment", _environment(environment)))
    kept = run.get("kept_results")
    if kept:
        rows.append(("Results_kept", _kept(run["model_id"], kept)))
    return rows


def _kept(run_id: str, kept: dict) -> str:
    """What became of results a run could not store: `on node at path (...)`."""
    where = f"on {kept['node']} at {kept['path']}"
    if kept["state"] == "kept":
        return f"{where} (`dlaas store training-runs {run_id}` stores them again)"
    if kept["state"] == "stored":
        return f"stored again at {iso_seconds(kept['at'])}: {kept['message']}"
    if kept["state"] == "failed":
        return f"{where}; storing again failed: {kept['message']}"
    return f"{where}; {kept['state']} again (asked by {kept.get('requested_by')})"


def _environment(env: dict) -> str:
    """`pytorch 2.13, Python 3.11.2 (cpu): built in 3.41 s, key 1a2b…`."""
    return (
        f"{env.get('framework')}, Python {env.get('python')} ({env.get('accelerator')}): "
        f"{env.get('status')} in {float(env.get('seconds') or 0):.2f} s, key {env.get('key')}"
    )


def _metric_text(name: str, summary: dict) -> str:
    """`loss: last 0.1234 (step 12), best 0.1100 (step 10, lowest)`."""
    last, best = summary.get("last") or {}, summary.get("best") or {}
    way = "lowest" if summary.get("goal") == "minimize" else "highest"
    return (
        f"{name}: last {last.get('value', '-'):.6g} (step {last.get('step')}), "
        f"best {best.get('value', '-'):.6g} (step {best.get('step')}, {way})"
    )


@verb(
    "metrics",
    "a run's training metrics (last, best and step of each), or several runs' side by side",
    arg("run_id", metavar="ID", nargs="+", help="the run's Model-ID; several: compared"),
    arg("--name", help="only this metric, with its points"),
    arg("--since", type=int, default=0, help="points from this step on (with --name)"),
)
def _metrics(client: DlaasClient, args, out: Printer) -> int:
    """A table of the run's metrics (each one's last and best value, and their steps), live
    while it runs; with --name, that metric's points too. --json gives the points of all.
    Several runs: each metric's last and best of every run side by side; with --name, that
    metric's value at each step, a column a run."""
    answers = [client.metrics(run_id, args.name, args.since) for run_id in args.run_id]
    if len(answers) > 1:
        out.data({"runs": answers})
        _compared(args.run_id, answers, args.name, out)
        return 0
    answer = answers[0]
    out.data(answer)
    series = answer["metrics"]
    if not series:
        out.say(f"No metrics for {args.run_id[0]} yet ({cli_name(answer['state'])}).")
        return 0
    width = max(len(n) for n in series) + 2
    out.say(f"{'metric':<{width}}{'last':>12}{'step':>8}{'best':>12}{'step':>8}  {'goal':<9}points")
    for name, s in sorted(series.items()):
        last, best = s.get("last") or {}, s.get("best") or {}
        out.say(
            f"{name:<{width}}{last.get('value', 0):>12.6g}{last.get('step', 0):>8}"
            f"{best.get('value', 0):>12.6g}{best.get('step', 0):>8}  {s['goal']:<9}{s['count']}"
        )
    if args.name:
        out.say()
        out.say(f"{'step':>8}  {'value':>12}  seen at")
        for point in series[args.name]["points"]:
            out.say(f"{point['step']:>8}  {point['value']:>12.6g}  {iso_seconds(point['time'])}")
    return 0


def _compared(run_ids: Sequence[str], answers: list[dict], name: str | None, out: Printer) -> None:
    """Runs side by side: per metric, each run's `last (step) / best (step)`; with `name`,
    that metric's value at each step any of them has, a column a run ("-": none there)."""
    column = max(24, *(len(r) + 2 for r in run_ids))
    names = sorted({n for answer in answers for n in answer["metrics"]})
    if not names:
        out.say("No metrics for these runs yet.")
        return
    if name is None:
        width = max(len(n) for n in names) + 2
        out.say(f"{'metric':<{width}}" + "".join(f"{r:>{column}}" for r in run_ids))
        for metric in names:
            cells = [_last_best(answer["metrics"].get(metric)) for answer in answers]
            out.say(f"{metric:<{width}}" + "".join(f"{c:>{column}}" for c in cells))
        out.say("(each: last value (its step) / best value (its step))")
        return
    by_step = [{p["step"]: p["value"] for p in a["metrics"].get(name, {}).get("points", [])}
               for a in answers]  # fmt: skip
    out.say(f"{'step':>8}" + "".join(f"{r:>{column}}" for r in run_ids))
    for step in sorted(set().union(*by_step)):
        cells = [f"{values[step]:.6g}" if step in values else "-" for values in by_step]
        out.say(f"{step:>8}" + "".join(f"{c:>{column}}" for c in cells))


def _last_best(summary: dict | None) -> str:
    if not summary:
        return "-"
    last, best = summary.get("last") or {}, summary.get("best") or {}
    return (
        f"{last.get('value', 0):.4g} ({last.get('step')}) / {best.get('value', 0):.4g} "
        f"({best.get('step')})"
    )


@verb(
    "download",
    "download a run's results through the service: all, one file, or a folder",
    RUN_ID,
    arg("path", metavar="PATH", nargs="?", help="a file or folder of its results (default: all)"),
    arg("--to", metavar="DIR", help="the folder they go in, as in the bucket (default: ./ID)"),
)
def _download(client: DlaasClient, args, out: Printer) -> int:
    """Download the run's result files (what it wrote to RESULT_DIR, its logs under
    learner-1/, its submitted code) from its results store, whatever its type; a progress bar
    for each large file."""
    listing = client.results(args.run_id)
    chosen = _chosen(listing, args.path)
    root = Path(args.to or args.run_id)
    done = 0
    for f in chosen:
        try:
            dest = target_inside(root, f["path"])
        except StorageError as exc:
            raise ClientError(f"{f['path']}: {exc}") from None
        with tqdm(
            total=f["size"],
            unit="B",
            unit_scale=True,
            desc=f["path"],
            file=sys.stderr,
            disable=out.as_json or f["size"] < PROGRESS_FROM,
            leave=True,
        ) as bar:
            done += client.download(args.run_id, f["path"], dest, bar.update)
        out.say(f"  {f['path']}  {f['size']} bytes")
    out.data({**listing, "files": chosen, "to": str(root)})
    out.say(f"Downloaded {len(chosen)} files ({done} bytes) to {root}")
    out.say("OK")
    return 0


def _chosen(listing: dict, path: str | None) -> list[dict]:
    """The listed files that PATH names: itself, or those in the folder it names; all without."""
    files = listing["files"]
    if path is None:
        return files
    folder = path.strip("/") + "/"
    chosen = [f for f in files if f["path"] == path.strip("/") or f["path"].startswith(folder)]
    if not chosen:
        known = ", ".join(f["path"] for f in files[:5]) + (", ..." if len(files) > 5 else "")
        raise ClientError(
            f"{listing['model_id']} has no result file or folder {path!r} "
            f"(its files: {known or 'none yet'})"
        )
    return chosen


@verb(
    "delete",
    "remove a run from the service (its outputs stay in your bucket)",
    RUN_ID,
    nouns=EITHER,
)
def _delete(client: DlaasClient, args, out: Printer) -> int:
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
def _cancel(client: DlaasClient, args, out: Printer) -> int:
    """Stop a run: its processes get SIGTERM, a grace period, then SIGKILL; its log and
    results so far are stored, and it ends HALTED."""
    out.say(f"Canceling training for MODEL-ID '{args.run_id}'...")
    answer = client.cancel(args.run_id)
    out.data(answer)
    out.say("OK")
    out.say("Cancel training successful")
    return 0


@verb(
    "store",
    "store again the results a run could not store (FAILED S303), from the node that kept them",
    RUN_ID,
    arg("--no-wait", action="store_true", help="ask, and do not wait for the node"),
    arg("--timeout", type=float, default=600, help="seconds to wait for the node at most"),
    nouns=TRAINING_FIRST,
)
def _store(client: DlaasClient, args, out: Printer) -> int:
    """Ask the node that kept a run's results (the run ended FAILED S303: they could not be
    stored) to store them in the run's results bucket again, and wait until it has (exit 1
    when it could not: the results stay kept, and you may ask again)."""
    out.say(f"Asking the node that kept the results of '{args.run_id}' to store them again ...")
    answer = client.store_again(args.run_id)
    out.say(f"Asked {answer['node']}.")
    if args.no_wait:
        out.data(answer)
        out.say("OK")
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        run = client.show(args.run_id)
        kept = run.get("kept_results") or {}
        if kept.get("state") in ("stored", "failed"):
            break
        if time.monotonic() > deadline:
            raise ClientError(
                f"{args.run_id}: {answer['node']} still {kept.get('state')} after "
                f"{args.timeout:.0f} s (it goes on; `dlaas show {args.run_id}` tells)"
            )
        time.sleep(0.5)
    out.data(kept)
    if kept["state"] == "failed":
        raise ClientError(
            f"{kept['node']} could not store them: {kept['message']}; they stay kept at "
            f"{kept['path']} (ask again once that is fixed)"
        )
    out.say(f"Stored {kept['objects']} objects ({kept['bytes']} bytes): {kept['message']}")
    out.say("OK")
    out.say("Store training-runs successful")
    return 0


@verb(
    "logs",
    "print a run's log (stamped lines), or follow it until the run ends",
    RUN_ID,
    arg("--follow", "-f", action="store_true", help="keep printing until the run ends"),
    arg("--since", type=int, default=0, help="first line to print (from 0)"),
)
def _logs(client: DlaasClient, args, out: Printer) -> int:
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
def _monitor(client: DlaasClient, args, out: Printer) -> int:
    """Follow a run's state changes and its log until it ends (exit 1 unless it completed;
    Ctrl-C stops following and leaves the run alone)."""
    out.say("Starting to fetch status messages...")
    return _follow(client, args.run_id, 0, out, show_status=True)


def _follow(client: DlaasClient, run_id: str, since: int, out: Printer, show_status: bool) -> int:
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


group("nodes", "list the fleet's workers, or drain or undrain one (admins)", default="list")
NODE_NAME = arg("name", metavar="NAME", help="the node, as `dlaas nodes` names it")


@verb("nodes list", "list the fleet's workers (what `dlaas nodes` alone does)")
def _nodes_list(client: DlaasClient, args, out: Printer) -> int:
    """List the fleet's workers: their status, the sizes they serve, their GPUs, their host."""
    nodes = client.nodes()["nodes"]
    out.data({"nodes": nodes})
    out.say(f"{'Name':<36}{'status':<10}{'sizes':<20}{'GPUs':<10}{'host':<16}{'sandbox':<9}GPU use")
    for node in nodes:
        gpus = ",".join(map(str, node.get("gpus", []))) or "-"
        isolation = node.get("isolation") or {}
        sandbox = "-" if not isolation else "bwrap" if isolation.get("sandbox") else "none"
        out.say(
            f"{node['name']:<36}{node['status']:<10}{','.join(node.get('sizes', [])) or '-':<20}"
            f"{gpus:<10}{node.get('host', '-'):<16}{sandbox:<9}{_gpu_use(node)}"
        )
    out.say(f"{len(nodes)} nodes found.")
    out.say("OK")
    return 0


def _gpu_use(node: dict) -> str:
    """Which run each GPU of the node runs (`0:training-x 1:free`); a CPU node's run."""
    if node["status"] == "lost":
        return "-"
    if not node.get("gpus"):
        return node.get("run") or "idle"
    holder = {gpu: held["run_id"] for held in node.get("runs", []) for gpu in held["gpus"]}
    return " ".join(f"{gpu}:{holder.get(gpu, 'free')}" for gpu in node["gpus"])


@verb(
    "nodes drain",
    "drain a worker: it takes no new run (admins)",
    NODE_NAME,
)
def _nodes_drain(client: DlaasClient, args, out: Printer) -> int:
    """Drain a worker (admins): it takes no new run; the run it has finishes."""
    answer = client.drain(args.name)
    out.data(answer)
    out.say(f"Draining node '{args.name}': it takes no new run; its running run finishes.")
    out.say("OK")
    return 0


@verb(
    "nodes undrain",
    "lift a worker's drain: it takes runs again (admins)",
    NODE_NAME,
)
def _nodes_undrain(client: DlaasClient, args, out: Printer) -> int:
    """Lift a drain (admins): the worker takes new runs again."""
    out.data(client.undrain(args.name))
    out.say(f"Node '{args.name}' takes runs again.")
    out.say("OK")
    return 0


@verb("frameworks", "list the frameworks a manifest may name, and where each is built")
def _frameworks(client: DlaasClient, args, out: Printer) -> int:
    """List the frameworks a manifest may name: each version's Python and packages (per
    accelerator where they differ), and the live nodes that hold its environment built, or
    why the service does not build it."""
    answer = client.frameworks()
    out.data(answer)
    accelerators = {n["name"]: n.get("accelerator") for n in answer.get("live_nodes", [])}
    rows, notes, available = [], [], 0
    for framework in answer["frameworks"]:
        if framework.get("note"):
            notes.append(f"{framework['name']}: {framework['note']}")
        for version in framework["versions"]:
            if version.get("note"):
                notes.append(f"{framework['name']} {version['version']}: {version['note']}")
            if not version["available"]:
                where = f"unavailable: {version['unavailable']}"
            else:
                available += 1
                where = ", ".join(_node_label(n, accelerators) for n in version["nodes"]) or "-"
            rows.append(
                (
                    framework["name"],
                    version["version"],
                    version["python"],
                    _packages(version),
                    where,
                )
            )
    header = ("framework", "version", "python", "packages", "built on")
    widths = [max(len(row[i]) for row in [header, *rows]) + 2 for i in range(len(header) - 1)]
    for *cells, last in [header, *rows]:
        out.say("".join(f"{cell:<{w}}" for cell, w in zip(cells, widths, strict=True)) + last)
    if notes:
        out.say()
        out.say("Notes")
        for note in notes:
            out.say(f"  {note}")
    out.say()
    out.say(f"{len(rows)} framework versions, {available} available.")
    out.say("OK")
    return 0


def _packages(version: dict) -> str:
    """What a version installs: one list, or the cpu and the gpu node's where they differ."""
    variants = version.get("variants") or {}
    cpu = ", ".join([*version["packages"], *variants.get("cpu", [])]) or "-"
    gpu = ", ".join([*version["packages"], *variants.get("gpu", [])]) or "-"
    return cpu if cpu == gpu else f"{cpu} (cpu) / {gpu} (gpu)"


def _node_label(name: str, accelerators: dict[str, str | None]) -> str:
    accelerator = accelerators.get(name)
    return f"{name} ({accelerator})" if accelerator else name


group("admin", "tokens, key rotation and the audit log (admins)")
group("admin tokens", "make, list and revoke API tokens (admins)", default="list")


@verb(
    "admin tokens create",
    "make a token for a user; it is shown only once",
    arg("user", metavar="USER", help="who the token acts as"),
    arg("--note", default="", help="a note kept with the token"),
)
def _tokens_create(client: DlaasClient, args, out: Printer) -> int:
    """Make an API token for USER (admins); the token is printed only now."""
    made = client.create_token(args.user, args.note)
    out.data(made)
    out.say(f"Token for '{made['user']}' (id {made['id']}); it is shown only now:")
    out.say(made["token"])
    out.say("OK")
    return 0


@verb("admin tokens list", "list the tokens (what `dlaas admin tokens` alone does)")
def _tokens_list(client: DlaasClient, args, out: Printer) -> int:
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
def _tokens_revoke(client: DlaasClient, args, out: Printer) -> int:
    """Revoke an API token (admins); requests with it are refused from now on."""
    out.data(client.revoke_token(args.token_id))
    out.say(f"Token {args.token_id} revoked.")
    out.say("OK")
    return 0


@verb("admin rotate-key", "re-encrypt every run's credentials with the newest key")
def _rotate_key(client: DlaasClient, args, out: Printer) -> int:
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
def _audit(client: DlaasClient, args, out: Printer) -> int:
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


# The `experiments` verbs, declared after the others so that usage lists them last.
from api import experimentcli  # noqa: E402, F401


def main(argv: Sequence[str] | None = None, client: DlaasClient | None = None) -> int:
    """`dlaas`: every verb above (and in api/experimentcli.py) is declared; parse the command
    line and run it."""
    return run(argv, client)


__all__ = ["COMMANDS", "GROUPS", "TRAINED_MODELS", "TRAINING_RUNS", "main", "parse"]

if __name__ == "__main__":
    sys.exit(main())
