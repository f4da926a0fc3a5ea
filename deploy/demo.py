"""`make demo`: put the example's data in the local store, zip its model, submit it with the
`dlaas` CLI, follow it to the end, and show what landed in the results bucket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("DLAAS_HOME", ROOT / ".dlaas")).resolve()
EXAMPLE = ROOT / "examples" / "digits"
STORE = HOME / "store" / "demo"  # `connection.path: demo` in the example manifest
BIN = Path(sys.executable).parent


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
    latest = results_bucket / run_id if run_id else None
    if latest is not None and latest.is_dir():
        print(f"\nResults of {latest.name} in the local store ({latest}):")
        for path in sorted(latest.rglob("*")):
            if path.is_file():
                print(f"  {path.relative_to(results_bucket)}  ({path.stat().st_size} bytes)")
        log = latest / "learner-1" / "training-log.txt"
        if log.exists():
            print("\nLast lines of its training log:")
            for line in log.read_text().splitlines()[-4:]:
                print(f"  {line}")
    print("\nThe stack is still up: `dlaas list trained-models`, `make down` to stop it.")
    return cli.returncode


if __name__ == "__main__":
    sys.exit(main())
