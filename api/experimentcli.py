"""`dlaas experiments ...`: submit a sweep, list them, show one's leaderboard, cancel, delete.
Each with `--json` (the HTTP answer as it came)."""

from __future__ import annotations

import time

from api.client import ClientError, DlaasClient
from api.commands import Printer, arg, group, verb
from common.clock import iso_seconds

EXPERIMENT_ID = arg("experiment_id", metavar="ID", help="the experiment's id (experiment-…)")
ENDED = ("COMPLETED", "FAILED", "HALTED")

group("experiments", "sweeps of training runs: run, list, show, cancel, delete", default="list")


@verb(
    "experiments run",
    "submit an experiment: the model zip, the manifest, and the experiment file",
    arg("model_zip", metavar="MODEL_ZIP", help="the model definition, a .zip"),
    arg("manifest", metavar="MANIFEST", help="the training manifest, YAML"),
    arg("experiment", metavar="EXPERIMENT", help="hyper_parameters_optimization, YAML"),
    arg("--wait", action="store_true", help="follow it until it ends"),
    arg("--timeout", type=float, default=7200, help="seconds --wait waits at most"),
)
def _run(client: DlaasClient, args, out: Printer) -> int:
    """Submit an experiment and print its id; with --wait, print each trial's end as it comes
    and the leaderboard at the end (exit 1 unless it completed)."""
    out.say("Starting the experiment ...")
    created = client.submit_experiment(args.model_zip, args.manifest, args.experiment)
    out.say("OK")
    out.say(f"Experiment-ID is '{created['experiment_id']}'")
    if not args.wait:
        out.data(created)
        return 0
    final = _wait(client, created["experiment_id"], args.timeout, out)
    out.data(final)
    _leaderboard(final, out)
    return 0 if final["state"] == "COMPLETED" else 1


def _wait(client: DlaasClient, experiment_id: str, timeout: float, out: Printer) -> dict:
    deadline = time.monotonic() + timeout
    told: set[tuple[int, str]] = set()
    while True:
        shown = client.experiment(experiment_id)
        for entry in sorted(shown["leaderboard"], key=lambda e: e["trial"]):
            if (entry["trial"], entry["state"]) not in told:
                told.add((entry["trial"], entry["state"]))
                out.say(f"Trial {entry['trial']}: {entry['state']} ({entry['run_id']})")
        if shown["state"] in ENDED:
            out.say(f"Experiment ended: {shown['state'].lower()}: {shown['status_message']}")
            return shown
        if time.monotonic() > deadline:
            raise ClientError(f"{experiment_id} still running after {timeout:.0f} s (it goes on)")
        time.sleep(1.0)


@verb("experiments list", "list your experiments (what `dlaas experiments` alone does)")
def _list(client: DlaasClient, args, out: Printer) -> int:
    """Your experiments, newest first: state, method, trials done of planned, the best."""
    found, offset = [], 0
    while offset is not None:  # every page
        page = client.experiments(offset)
        found += page["experiments"]
        offset = page["next_offset"]
    out.data({"experiments": found, "total": len(found)})
    width = max([len(e["name"]) for e in found] + [12]) + 2
    out.say(
        f"{'experiment':<23}{'name':<{width}}{'state':<11}{'method':<9}{'trials':<9}"
        f"{'objective':<22}best"
    )
    for e in found:
        trials = e["trials"]
        done = trials["started"] - trials["active"] - trials["creating"]
        best = e.get("best")
        shown_best = f"{best['objective']:.6g} (trial {best['trial']})" if best else "-"
        objective = f"{e['objective']} ({e['direction'][:3]})"
        progress = f"{done}/{trials['planned']}"
        out.say(
            f"{e['experiment_id']:<23}{e['name']:<{width}}{e['state'].lower():<11}"
            f"{e['method']:<9}{progress:<9}{objective:<22}{shown_best}"
        )
    out.say(f"{len(found)} experiments.")
    out.say("OK")
    return 0


@verb("experiments show", "show an experiment and its leaderboard", EXPERIMENT_ID)
def _show(client: DlaasClient, args, out: Printer) -> int:
    """An experiment's state, its search, and its trials sorted by the objective, the best
    marked with *."""
    shown = client.experiment(args.experiment_id)
    out.data(shown)
    rows = [
        ("ExperimentId", shown["experiment_id"]),
        ("Name", shown["name"]),
        ("State", shown["state"].lower()),
        ("Created_at", iso_seconds(shown["created_at"])),
        ("Method", f"{shown['method']} (sampler {shown['sampler']})"),
        ("Objective", f"{shown['objective']}, {shown['direction']}"),
        ("Trials", _trial_counts(shown["trials"])),
        ("Status", shown.get("status_message") or "-"),
    ]
    for label, value in rows:
        out.say(f"{label:<15}{value}")
    _leaderboard(shown, out)
    out.say("OK")
    return 0


def _trial_counts(trials: dict) -> str:
    counts = ", ".join(
        f"{trials[s]} {s}" for s in ("active", "completed", "pruned", "failed", "cancelled")
    )
    return f"{trials['started']} of {trials['planned']} started: {counts}"


def _leaderboard(shown: dict, out: Printer) -> None:
    out.say("Leaderboard")
    out.say(f"  {'':2}{'trial':<7}{'run':<20}{'state':<11}{'objective':>12}{'step':>6}  values")
    for e in shown["leaderboard"]:
        mark = "*" if e["best"] else ""
        objective = f"{e['objective']:.6g}" if e["objective"] is not None else "-"
        step = e["objective_step"] if e["objective_step"] is not None else "-"
        values = ", ".join(f"{k}={v}" for k, v in e["values"].items())
        note = f"  ({e['message']})" if e.get("message") else ""
        out.say(
            f"  {mark:<2}{e['trial']:<7}{e['run_id']:<20}{e['state']:<11}{objective:>12}"
            f"{step:>6}  {values}{note}"
        )


@verb("experiments cancel", "stop an experiment: its active trials are cancelled", EXPERIMENT_ID)
def _cancel(client: DlaasClient, args, out: Printer) -> int:
    """Stop an experiment: no more trials start, its active ones are cancelled (HALTED), and
    it ends HALTED once they have stopped."""
    answer = client.cancel_experiment(args.experiment_id)
    out.data(answer)
    out.say(f"Cancelling experiment '{args.experiment_id}' ...")
    out.say("OK")
    return 0


@verb(
    "experiments delete",
    "remove an experiment and its trial runs (their outputs stay in your bucket)",
    EXPERIMENT_ID,
)
def _delete(client: DlaasClient, args, out: Printer) -> int:
    """Remove an experiment and its trial runs from the service; a running one is cancelled
    first and goes once its trials have stopped. Their outputs stay in your bucket."""
    answer = client.delete_experiment(args.experiment_id)
    out.data(answer)
    if not answer.get("deleted"):
        out.say("It is running: it is being cancelled and goes once its trials have stopped.")
    out.say("OK")
    return 0
