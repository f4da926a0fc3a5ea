"""`make demo`: put an example's data in the local store, zip its model, submit it with the
`dlaas` CLI, follow it to the end, and show what landed in the results bucket: the epoch
lines of its training log, the loss from the first epoch to the last, and the trained model.

    python -m deploy.demo [--example digits|pytorch-mlp] [--s3]

An example is a folder of examples/: `make_data.py OUT_DIR` (writes its data set),
`model/` (zipped: its *.py and its requirements.txt) and `manifest.yml` (and, for --s3,
`manifest-s3.yml`). The buckets are the ones its manifest names. With --s3 the data and
results live in the stack's Swift, reached through its S3 API."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from api.client import read_env_file
from common.layout import TRAINING_LOG_KEY
from common.requirements import REQUIREMENTS_FILE
from deploy.swift import s3_client

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("DLAAS_HOME", ROOT / ".dlaas")).resolve()
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
# An epoch line of an example's training log: `epoch  3  loss 0.41` or `epoch 3/10 loss 0.41`.
EPOCH = re.compile(r"^epoch\s+(\d+)(?:/\d+)?\s+loss\s+(\d+(?:\.\d+)?)")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z ")


def _s3():
    return s3_client(f"http://127.0.0.1:{os.environ.get('DLAAS_STACK_SWIFT_PORT', '18081')}")


def buckets(manifest: dict) -> tuple[str, str, str]:
    """(store path of a local store or "", data bucket, results bucket) of `manifest`."""
    data = (manifest.get("training_data_reference") or manifest.get("training_data"))[0]
    results = manifest.get("training_results_reference") or manifest.get("training_results")
    path = str(data.get("connection", {}).get("path", ""))
    return path, data["source"]["bucket"], results["target"]["bucket"]


def model_zip(example: Path, out: Path) -> list[str]:
    """The example's model folder zipped to `out`: its Python files and its requirements.txt
    (the packages it needs besides its framework's); the names it holds."""
    folder = example / "model"
    files = sorted(folder.rglob("*.py"))
    if (folder / REQUIREMENTS_FILE).is_file():
        files.append(folder / REQUIREMENTS_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(folder).as_posix())
    return [path.relative_to(folder).as_posix() for path in files]


def losses(log_text: str) -> list[tuple[int, float, str]]:
    """(epoch, loss, line) of each epoch line of a training log (stamped or not)."""
    found = []
    for raw in log_text.splitlines():
        line = STAMP.sub("", raw)
        match = EPOCH.match(line)
        if match:
            found.append((int(match.group(1)), float(match.group(2)), line))
    return found


def _upload_to_s3(data_folder: Path, data_bucket: str, results_bucket: str) -> None:
    client = _s3()
    for bucket in (data_bucket, results_bucket):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    objects = [path for path in sorted(data_folder.rglob("*")) if path.is_file()]
    for path in objects:
        client.upload_file(str(path), data_bucket, path.relative_to(data_folder).as_posix())
    print(f"uploaded {len(objects)} objects to s3 bucket {data_bucket}")


def _s3_results(run_id: str, results_bucket: str) -> dict[str, tuple[int, bytes | None]]:
    """{key below the run's folder: (size, content of its training log)} in S3."""
    client = _s3()
    listed = client.list_objects_v2(Bucket=results_bucket, Prefix=f"{run_id}/")
    out: dict[str, tuple[int, bytes | None]] = {}
    for entry in listed.get("Contents", []):
        key = entry["Key"][len(run_id) + 1 :]
        body = None
        if key == TRAINING_LOG_KEY:
            body = client.get_object(Bucket=results_bucket, Key=entry["Key"])["Body"].read()
        out[key] = (entry["Size"], body)
    return out


def _local_results(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = path.relative_to(folder).as_posix()
            out[key] = (path.stat().st_size, path.read_bytes() if key == TRAINING_LOG_KEY else None)
    return out


def show_results(run_id: str, where: str, results: dict[str, tuple[int, bytes | None]]) -> None:
    """What landed: every object, the epoch lines, first and last loss, the model file."""
    print(f"\nResults of {run_id} in {where}:")
    for key, (size, _) in sorted(results.items()):
        print(f"  {key}  ({size} bytes)")
    log = results.get(TRAINING_LOG_KEY, (0, None))[1]
    epochs = losses(log.decode(errors="replace")) if log else []
    if epochs:
        print("\nEpochs in its training log:")
        for _, _, line in epochs:
            print(f"  {line}")
        (first, first_loss, _), (last, last_loss, _) = epochs[0], epochs[-1]
        trend = "fell" if last_loss < first_loss else "did not fall"
        print(f"loss {trend}: {first_loss:.4f} (epoch {first}) -> {last_loss:.4f} (epoch {last})")
    elif log:
        print("\nLast lines of its training log:")
        for line in log.decode(errors="replace").splitlines()[-4:]:
            print(f"  {line}")
    models = [key for key in results if "/" not in key and key.startswith("model.")]
    for key in models:
        print(f"trained model: {run_id}/{key} ({results[key][0]} bytes)")
    if not models:
        print("no trained model (model.*) in the results")


def show_run(run_id: str, env: dict[str, str]) -> None:
    """The run's end as `dlaas show` gives it: its state and the environment it ran in."""
    shown = subprocess.run(
        [str(BIN / "dlaas"), "show", "trained-models", run_id, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    try:
        run = json.loads(shown.stdout)
    except ValueError:
        return
    environment = run.get("environment") or {}
    if environment:
        print(
            f"environment {environment.get('key')}: {environment.get('framework')} on "
            f"{environment.get('accelerator')}, Python {environment.get('python')}, "
            f"{environment.get('requirements')} requirement(s), {environment.get('status')} "
            f"in {environment.get('seconds')} s"
        )
    print(f"{run_id}: {run.get('state')}", end="")
    print(f" ({run['error_code']}: {run.get('status_message')})" if run.get("error_code") else "")


def show_metrics(run_id: str, env: dict[str, str]) -> None:
    """The run's training metrics as `dlaas metrics` gives them (last, best, step of each)."""
    print(f"\n$ dlaas metrics {run_id}")
    table = subprocess.run(
        [str(BIN / "dlaas"), "metrics", run_id], cwd=ROOT, env=env, capture_output=True, text=True
    )
    print(table.stdout or table.stderr, end="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    choices = sorted(p.name for p in EXAMPLES.iterdir() if (p / "manifest.yml").is_file())
    parser.add_argument("--example", default="digits", choices=choices)
    parser.add_argument("--s3", action="store_true", help="data and results in Swift via S3")
    args = parser.parse_args(argv)
    example = EXAMPLES / args.example
    manifest = example / ("manifest-s3.yml" if args.s3 else "manifest.yml")
    if not manifest.is_file():
        parser.error(f"--s3: examples/{args.example} has no manifest-s3.yml")
    local_path, data_name, results_name = buckets(
        yaml.safe_load((example / "manifest.yml").read_text())
    )
    store = HOME / "store" / local_path  # `connection.path` of the example's local manifest
    data_bucket, results_bucket = store / data_name, store / results_name
    if not data_bucket.is_dir() or not any(data_bucket.iterdir()):
        subprocess.run(
            [sys.executable, str(example / "make_data.py"), str(data_bucket)], check=True
        )
    results_bucket.mkdir(parents=True, exist_ok=True)
    zipped = HOME / "examples" / f"{args.example}-model.zip"
    names = model_zip(example, zipped)
    if args.s3:
        _, s3_data, s3_results = buckets(yaml.safe_load(manifest.read_text()))
        _upload_to_s3(data_bucket, s3_data, s3_results)
    shown = zipped.relative_to(ROOT) if zipped.is_relative_to(ROOT) else zipped
    print(f"model zip {shown}: {', '.join(names)}")
    print(f"$ dlaas train {shown} {manifest.relative_to(ROOT)} --wait")
    # The CLI finds this stack's address and token in $DLAAS_HOME/env (written by `up`).
    env = dict(os.environ, DLAAS_HOME=str(HOME))
    command = [str(BIN / "dlaas"), "train", str(zipped), str(manifest), "--wait"]
    command += ["--timeout", "900"]  # a first pytorch run builds its environment first
    run_id = None
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as cli:
        for line in cli.stdout:
            print(line, end="", flush=True)
            found = re.match(r"Model-ID is '(training-\w+)'", line)
            run_id = found.group(1) if found else run_id
    if run_id and args.s3:
        show_results(
            run_id, f"the stack's Swift, S3 bucket {s3_results}", _s3_results(run_id, s3_results)
        )
    elif run_id and (results_bucket / run_id).is_dir():
        folder = results_bucket / run_id
        show_results(run_id, f"the local store ({folder})", _local_results(folder))
    if run_id:
        show_run(run_id, env)
        show_metrics(run_id, env)
    url = read_env_file(HOME / "env").get("DLAAS_URL", "")
    if run_id and url:
        print(f"\nIn a browser: {url}/ui/runs/{run_id} (sign in with DLAAS_TOKEN of .dlaas/env)")
    print("\nThe stack is still up: `dlaas list trained-models`, `make down` to stop it.")
    return cli.returncode


if __name__ == "__main__":
    sys.exit(main())
