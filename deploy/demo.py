"""`make demo`: put the example's data in the local store, zip its model, submit it with the
`dlaas` CLI, follow it to the end, and show what landed in the results bucket.
With --s3 the data and results live in the stack's Swift, reached through its S3 API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from common.layout import TRAINING_LOG_KEY
from deploy.swift import s3_client

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("DLAAS_HOME", ROOT / ".dlaas")).resolve()
EXAMPLE = ROOT / "examples" / "digits"
STORE = HOME / "store" / "demo"  # `connection.path: demo` in the example manifest
BIN = Path(sys.executable).parent


def _s3():
    return s3_client(f"http://127.0.0.1:{os.environ.get('DLAAS_STACK_SWIFT_PORT', '18081')}")


def _upload_to_s3(data_folder: Path) -> None:
    client = _s3()
    for bucket in ("digits-training-data", "digits-training-models"):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    for path in sorted(data_folder.iterdir()):
        client.upload_file(str(path), "digits-training-data", path.name)
    print(f"uploaded {len(list(data_folder.iterdir()))} objects to s3 bucket digits-training-data")


def _s3_listing(run_id: str) -> list[tuple[str, int]]:
    listed = _s3().list_objects_v2(Bucket="digits-training-models", Prefix=f"{run_id}/")
    return [(o["Key"], o["Size"]) for o in listed.get("Contents", [])]


def main() -> int:
    data_bucket = STORE / "digits-training-data"
    results_bucket = STORE / "digits-training-models"
    if not (data_bucket / "train.npz").exists():
        subprocess.run(
            [sys.executable, str(EXAMPLE / "make_data.py"), str(data_bucket)], check=True
        )
    results_bucket.mkdir(parents=True, exist_ok=True)
    model_zip = HOME / "examples" / "digits-model.zip"
    model_zip.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(model_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((EXAMPLE / "model").rglob("*.py")):
            archive.write(path, path.relative_to(EXAMPLE / "model").as_posix())
    manifest = EXAMPLE / "manifest.yml"
    if "--s3" in sys.argv:
        manifest = EXAMPLE / "manifest-s3.yml"
        _upload_to_s3(data_bucket)
    shown = model_zip.relative_to(ROOT) if model_zip.is_relative_to(ROOT) else model_zip
    print(f"$ dlaas train {shown} {manifest.relative_to(ROOT)} --wait")
    # The CLI finds this stack's address and token in $DLAAS_HOME/env (written by `up`).
    env = dict(os.environ, DLAAS_HOME=str(HOME))
    command = [
        str(BIN / "dlaas"),
        "train",
        str(model_zip),
        str(manifest),
        "--wait",
        "--timeout",
        "600",
    ]
    run_id = None
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as cli:
        for line in cli.stdout:
            print(line, end="", flush=True)
            found = re.match(r"Model-ID is '(training-\w+)'", line)
            run_id = found.group(1) if found else run_id
    if "--s3" in sys.argv:
        print(f"\nResults of {run_id} in the stack's Swift, S3 bucket digits-training-models:")
        for key, size in _s3_listing(run_id or "-"):
            print(f"  {key}  ({size} bytes)")
        print("\nThe stack is still up: `dlaas list trained-models`, `make down` to stop it.")
        return cli.returncode
    latest = results_bucket / run_id if run_id else None
    if latest is not None and latest.is_dir():
        print(f"\nResults of {latest.name} in the local store ({latest}):")
        for path in sorted(latest.rglob("*")):
            if path.is_file():
                print(f"  {path.relative_to(results_bucket)}  ({path.stat().st_size} bytes)")
        log = latest / TRAINING_LOG_KEY
        if log.exists():
            print("\nLast lines of its training log:")
            for line in log.read_text().splitlines()[-4:]:
                print(f"  {line}")
    print("\nThe stack is still up: `dlaas list trained-models`, `make down` to stop it.")
    return cli.returncode


if __name__ == "__main__":
    sys.exit(main())
