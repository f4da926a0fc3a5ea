"""Log pump overhead and live-follow delay, on a private embedded stack.

    .venv/bin/python -m benchmarks.logs [--lines 1000000]

1. A command printing N lines of 80 bytes as fast as it can (a Python loop) runs through
   the service, and, in the same run, the same command with its output to /dev/null on this
   machine, and into a bare pipe whose reader only reads; each times its own printing.
   Three ways: `print` (sys.stdout.write per line, as the run's environment handles it:
   block-buffered and flushed every 0.1 s by worker/runtime/sitecustomize.py), `unbuffered`
   (one write per line, as under PYTHONUNBUFFERED=1 or a program that flushes every line) and
   `64k` (64 KB writes). The /dev/null and bare-pipe runs get the run's Python settings too.
   Prints the times, their ratios, and checks the stored training-log.txt holds exactly N
   lines, in order. In print mode, also the same command through the service with three
   metric regexes declared (every 100th line a metric line, matched by all three), in the
   same rounds: the metrics' cost on the command, and every metric point counted; and the
   same command while the worker reads 100,000 TensorBoard scalars (an event file written
   here by tensorboard's own writer, copied into the run's LOG_DIR 0.9 s before it prints,
   so that the printing spans the metrics thread's first read of it): their cost on the
   command (the reader takes at most 0.2 s of CPU a poll), every point read.
2. A command printing a line every 20 ms (plain print, no flush), each carrying its print
   time, is followed with
   `logs --follow` (server-sent events); prints the median and 95th percentile of the delay
   from print to arrival.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from api.client import DlaasClient, read_env_file
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common.layout import TRAINING_LOG_KEY
from worker.process import PYTHON_OUTPUT

EMIT = """
import os, sys, time
n = int(sys.argv[1])
# print: sys.stdout as the environment sets it up; unbuffered: one write per line;
# 64k: 64 KB writes.
mode = sys.argv[2]
if mode == "unbuffered":
    out = open(1, "w", buffering=1, closefd=False)  # line-buffered: one write per line
elif mode == "64k":
    out = open(1, "w", buffering=65536, closefd=False)
else:
    out = sys.stdout
metrics = len(sys.argv) > 3  # every 100th line a metric line (same length, same prefix)
start = time.perf_counter()
for i in range(n):
    if metrics and i % 100 == 99:
        out.write("line %09d step=%07d loss=%.6f acc=%.6f lr=%.4e" % (i, i, 1 / i, i / n, 0.1 / i)
                  + "\\n")
    else:
        out.write("line %09d " % i + "x" * 64 + "\\n")
out.flush()
took = time.perf_counter() - start
with open(os.path.join(os.environ.get("RESULT_DIR", "."), "elapsed.txt"), "w") as f:
    f.write(repr(took))
"""

TICK = """
import sys, time
for i in range(int(sys.argv[1])):
    print("tick %d %.6f" % (i, time.time()))  # no flush: as training scripts print
    time.sleep(0.02)
"""

MANIFEST = """
model_definition:
  name: bench-logs
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "{command}", resource: small}}
{metrics}training_data_reference:
- connection: {{path: bench}}
  source: {{bucket: data, type: local}}
training_results_reference:
  connection: {{path: bench}}
  target: {{bucket: results, type: local}}
"""


# Three regexes, each matching every metric line of EMIT's metrics variant.
METRIC_DEFINITIONS = """metric_definitions:
- {name: loss, regex: "step=(?P<step>\\\\d+) loss=(\\\\S+)"}
- {name: acc, regex: " acc=(?P<value>[0-9.]+)"}
- {name: lr, regex: " lr=(\\\\S+)$"}
"""

MODE: list[str] = ["print"]  # the printing command's way of writing (see EMIT)


def devnull_run(home: Path, lines: int) -> float:
    # The same Python settings as a run's (worker/process.py PYTHON_OUTPUT).
    clean = {"PATH": os.environ["PATH"], "RESULT_DIR": str(home), **PYTHON_OUTPUT["flushed"]}
    with open(os.devnull, "w") as devnull:
        subprocess.run(
            [sys.executable, "-c", EMIT, str(lines), *MODE], stdout=devnull, env=clean, check=True
        )
    return float((home / "elapsed.txt").read_text())


def bare_pipe_run(home: Path, lines: int) -> float:
    """The same, into a pipe whose reader only reads: what capturing output costs at all."""
    clean = {"PATH": os.environ["PATH"], "RESULT_DIR": str(home), **PYTHON_OUTPUT["flushed"]}
    proc = subprocess.Popen(
        [sys.executable, "-c", EMIT, str(lines), *MODE], stdout=subprocess.PIPE, env=clean
    )
    while proc.stdout.read(65536):
        pass
    proc.wait()
    return float((home / "elapsed.txt").read_text())


def wait_done(client: DlaasClient, run_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.show(run_id)
        if run["state"] in ("COMPLETED", "FAILED", "HALTED"):
            return run
        time.sleep(0.2)
    raise RuntimeError(f"{run_id} did not end")


TENSORBOARD_SCALARS = 100_000
EVENT_FILE = "events.out.tfevents.1.bench"
# The event file in place, then printing from 0.9 s on: across the metrics thread's first
# poll (each DLAAS_METRICS_POLL_SECONDS, 1 s), which reads for 0.2 s of CPU meanwhile.
WITH_EVENTS = f"mkdir -p $LOG_DIR/tb && cp {EVENT_FILE} $LOG_DIR/tb/ && sleep 0.9 && "


def write_event_file(path: Path, scalars: int) -> None:
    """`scalars` points of one series, as SummaryWriter writes them (simple_value)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(path.parent), max_queue_size=1000, filename_suffix=".w")
    for step in range(scalars):
        value = summary_pb2.Summary.Value(tag="loss", simple_value=1 / (step + 1))
        summary = summary_pb2.Summary(value=[value])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()
    next(path.parent.glob("*tfevents*.w")).rename(path)


def _service_run(client: DlaasClient, submit, home: Path, args, metrics: bool, before=""):
    run_id = submit(before + " ".join(["python3 emit.py", str(args.lines), *MODE]), metrics)
    run = wait_done(client, run_id)
    if run["state"] != "COMPLETED":
        raise RuntimeError(f"{run_id}: {run['status_message']}")
    results = home / "store" / "bench" / "results" / run_id
    return run_id, results, float((results / "elapsed.txt").read_text())


def _stored_in_order(stored: Path) -> tuple[int, bool]:
    """Lines of the stored log, and whether they are every printed line in order."""
    count, in_order = 0, True
    pattern = re.compile(rb"^\S+Z line (\d{9}) (?:x{64}|step=)")
    with open(stored, "rb") as f:
        for expected, raw in enumerate(f):
            found = pattern.match(raw.rstrip(b"\n"))
            if not found or int(found.group(1)) != expected:
                in_order = False
                break
            count += 1
    return count, in_order


def measure_overhead(home: Path, client: DlaasClient, submit, args) -> dict:
    """Rounds of: through the service, (in print mode) through the service with three
    regexes, to /dev/null, into a bare pipe; interleaved, so each round shares the noise."""
    with_regexes = MODE == ["print"]
    if with_regexes:
        MODE.append("metrics")  # every run of this mode prints the metric lines
    times: dict[str, list[float]] = {
        "service": [], "regexes": [], "tensorboard": [], "baseline": [], "pipe": []
    }  # fmt: skip
    points: list[int] = []
    scalars: list[int] = []
    for _ in range(args.repeat):
        _, results, took = _service_run(client, submit, home, args, metrics=False)
        times["service"].append(took)
        if with_regexes:
            run_id, regex_results, took = _service_run(client, submit, home, args, metrics=True)
            times["regexes"].append(took)
            found = client.metrics(run_id)["metrics"]
            points.append(min((found.get(n) or {}).get("count", 0) for n in ("loss", "acc", "lr")))
            run_id, _, took = _service_run(client, submit, home, args, False, WITH_EVENTS)
            times["tensorboard"].append(took)
            scalars.append(client.metrics(run_id)["metrics"]["loss"]["count"])
        times["baseline"].append(devnull_run(home, args.lines))
        times["pipe"].append(bare_pipe_run(home, args.lines))
    out = {key + "s": values for key, values in times.items()}
    out.update({key: statistics.median(v) for key, v in times.items() if v})
    stored = results / TRAINING_LOG_KEY
    out["count"], out["in_order"] = _stored_in_order(stored)
    out["size"] = stored.stat().st_size
    if with_regexes:
        out["regex_count"], out["regex_in_order"] = _stored_in_order(
            regex_results / TRAINING_LOG_KEY
        )
        out["points"] = points
        out["scalars"] = scalars
        MODE.remove("metrics")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--mode",
        choices=("all", "print", "unbuffered", "64k"),
        default="all",
        help="how the command writes (see above); default: each in turn",
    )
    args = parser.parse_args()
    modes = [["print"], ["unbuffered"], ["64k"]] if args.mode == "all" else [[args.mode]]
    with private_stack("dlaas-bench-logs-") as (home, env, ports):
        saved = read_env_file(home / "env")
        client = DlaasClient(saved["DLAAS_URL"], saved["DLAAS_TOKEN"], timeout=60)
        for bucket in ("data", "results"):
            (home / "store" / "bench" / bucket).mkdir(parents=True, exist_ok=True)
        model = home / "model.zip"
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("emit.py", EMIT)
            archive.writestr("tick.py", TICK)
            write_event_file(home / EVENT_FILE, TENSORBOARD_SCALARS)
            archive.write(home / EVENT_FILE, EVENT_FILE)

        def submit(command: str, metrics: bool = False) -> str:
            manifest = home / "manifest.yml"
            declared = METRIC_DEFINITIONS if metrics else ""
            manifest.write_text(MANIFEST.format(command=command, metrics=declared))
            return client.submit(model, manifest)["model_id"]

        # 1. Overhead, per way of printing (service, /dev/null and bare-pipe runs interleaved,
        # medians), and the stored log of the last service run checked line by line.
        overhead = {}
        for mode in modes:
            MODE[:] = mode
            overhead[tuple(mode)] = measure_overhead(home, client, submit, args)
        # 2. Follow delay.
        run_id = submit(f"python3 tick.py {args.ticks}")
        delays = []
        for kind, data in client.follow(run_id):
            now = time.time()
            if kind == "log":
                for line in data:
                    found = re.search(r"tick \d+ (\d+\.\d+)$", line)
                    if found:
                        delays.append(now - float(found.group(1)))
            if kind == "end":
                break

    print(
        f"log benchmark: {args.lines} lines of 80 bytes, embedded stack (one worker), this machine"
    )
    print(
        f"environment: {machine()}; the run gets the worker's clean environment "
        f"(Python output flushed every 0.1 s); the /dev/null and bare-pipe runs get PATH, "
        f"RESULT_DIR and the same Python settings ({PYTHON_OUTPUT['flushed']})"
    )
    complete = True
    for mode, o in overhead.items():
        print(
            {
                "print": "print (sys.stdout.write per line, the run's Python settings):",
                "unbuffered": "unbuffered (one write per line):",
                "64k": "64 KB writes:",
            }[mode[0]]
        )
        for label, key in (
            ("printing through the service:", "service"),
            ("printing to /dev/null:", "baseline"),
            ("printing into a bare pipe:", "pipe"),
        ):
            print(
                f"  {label:30s} median {o[key]:6.2f} s  "
                f"({', '.join(f'{s:.2f}' for s in o[key + 's'])})"
            )
        if "regexes" in o:
            print(
                f"  {'through the service, 3 regexes:':30s} median {o['regexes']:6.2f} s  "
                f"({', '.join(f'{s:.2f}' for s in o['regexess'])})"
            )
        ratio = o["service"] / o["baseline"]
        print(f"  ratio service / devnull:       {ratio:6.2f} (overhead {100 * (ratio - 1):.0f}%)")
        if "regexes" in o:
            with_regexes = o["regexes"] / o["baseline"]
            print(
                f"  ratio service+regexes / devnull: {with_regexes:4.2f} "
                f"(overhead {100 * (with_regexes - 1):.0f}%; "
                f"vs without regexes {o['regexes'] / o['service']:.2f})"
            )
            expected = args.lines // 100
            ok = o["regex_in_order"] and o["regex_count"] == args.lines
            ok = ok and all(p == expected for p in o["points"])
            complete = complete and ok
            print(
                f"  with regexes: stored log {o['regex_count']} lines, metric points per "
                f"series {o['points']} of {expected}: {'all kept' if ok else 'NOT all kept'}"
            )
        if "tensorboard" in o:
            ok = all(count == TENSORBOARD_SCALARS for count in o["scalars"])
            complete = complete and ok
            print(
                f"  {'service, TensorBoard read:':30s} median {o['tensorboard']:6.2f} s  "
                f"({', '.join(f'{s:.2f}' for s in o['tensorboards'])}); "
                f"vs without {o['tensorboard'] / o['service']:.2f}; "
                f"points {o['scalars']} of {TENSORBOARD_SCALARS}: "
                f"{'all read' if ok else 'NOT all read'}"
            )
        print(
            f"  ratio service / bare pipe:     {o['service'] / o['pipe']:6.2f} "
            f"(the pump's own share of the overhead)"
        )
        ok = o["in_order"] and o["count"] == args.lines
        complete = complete and ok
        print(
            f"  stored log: {o['count']} lines, {o['size'] / 1e6:.1f} MB, "
            f"{'in order' if ok else 'NOT complete/in order'}"
        )
    print(
        f"follow delay over {len(delays)} lines: median {statistics.median(delays) * 1000:.1f} ms, "
        f"p95 {percentile(delays, 0.95) * 1000:.1f} ms"
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
