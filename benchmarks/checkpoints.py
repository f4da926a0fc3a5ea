"""What the worker's checkpoint copies cost the command: a program's own speed with a copy of
its CHECKPOINT_DIR every 10 s against none, side by side in one run.

    .venv/bin/python -m benchmarks.checkpoints [--seconds 40] [--repeat 3] [--megabytes 100]

Starts a private embedded stack (its Swift all-in-one behind the S3 API is the results store)
with DLAAS_CHECKPOINT_SECONDS=10. The program hashes 64 KiB blocks for `--seconds` and, every
10 s, writes a new checkpoint of `--megabytes` (write, fsync, rename: as training programs
save them), then prints its blocks per second. Each repetition runs it twice, in an order
that turns each time: once writing into CHECKPOINT_DIR (copied to the results bucket every
10 s while it runs), once writing the same bytes into TMPDIR (never copied). The program's own
writing is the same in both; what differs is only the worker's copying beside it. The last
copy, after the command has ended, is outside the measured time in both.
Prints the medians, the ratio (goal: copied within 5% of not copied) and each pair.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import zipfile

from api.client import DlaasClient, read_env_file
from benchmarks.figures import machine
from benchmarks.privatestack import private_stack
from deploy.swift import S3_KEY, S3_SECRET, s3_client

PERIOD = 10
PROGRAM = f"""
import hashlib, os, sys, time
folder, seconds, megabytes, period = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), {PERIOD}
state = os.urandom(megabytes << 20)
block = os.urandom(64 << 10)
began = time.perf_counter()
next_save, blocks, saves, saving = began + period, 0, 0, 0.0
while (now := time.perf_counter()) - began < seconds:
    if now >= next_save:
        path = os.path.join(folder, "model.ckpt")
        with open(path + ".part", "wb") as f:
            f.write(state)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".part", path)
        saves += 1
        saving += time.perf_counter() - now
        next_save += period
    for _ in range(64):
        block = hashlib.sha256(block).digest() * 2048
    blocks += 64
took = time.perf_counter() - began
print(f"rate={{blocks / took:.1f}} blocks={{blocks}} seconds={{took:.2f}} saves={{saves}} "
      f"saving={{saving:.2f}}")
"""
MANIFEST = """
model_definition:
  name: bench-checkpoints
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "python3 train.py {folder} {seconds} {megabytes}", resource: small}}
training_data:
- connection: {{endpoint_url: "{endpoint}", aws_access_key_id: "{key}",
               aws_secret_access_key: "{secret}"}}
  source: {{bucket: ckpt-data, type: s3}}
training_results:
  connection: {{endpoint_url: "{endpoint}", aws_access_key_id: "{key}",
               aws_secret_access_key: "{secret}"}}
  target: {{bucket: ckpt-results, type: s3}}
"""
COPIED = "CHECKPOINT_DIR, copied every 10 s"
NOT_COPIED = "TMPDIR, not copied"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with private_stack("dlaas-bench-ckpt-", DLAAS_CHECKPOINT_SECONDS=str(PERIOD)) as (
        home,
        _env,
        ports,
    ):
        endpoint = f"http://127.0.0.1:{ports['swift']}"
        s3 = s3_client(endpoint)
        for bucket in ("ckpt-data", "ckpt-results"):
            s3.create_bucket(Bucket=bucket)
        saved = read_env_file(home / "env")
        client = DlaasClient(saved["DLAAS_URL"], saved["DLAAS_TOKEN"], timeout=60)
        model = home / "model.zip"
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("train.py", PROGRAM)
        manifests = {}
        for name, folder in ((COPIED, "$CHECKPOINT_DIR"), (NOT_COPIED, "$TMPDIR")):
            manifests[name] = home / f"{len(manifests)}.yml"
            manifests[name].write_text(
                MANIFEST.format(
                    folder=folder,
                    seconds=args.seconds,
                    megabytes=args.megabytes,
                    endpoint=endpoint,
                    key=S3_KEY,
                    secret=S3_SECRET,
                )
            )

        def one(name: str) -> dict[str, float]:
            run_id = client.submit(model, manifests[name])["model_id"]
            deadline = time.monotonic() + args.seconds + 600
            while (run := client.show(run_id))["state"] not in ("COMPLETED", "FAILED", "HALTED"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{run_id} did not end")
                time.sleep(2.0)  # seldom: each look costs CPU on the program's two cores
            text, _ = client.logs(run_id)
            figures = [line for line in text.splitlines() if "rate=" in line]
            if run["state"] != "COMPLETED" or not figures:
                raise RuntimeError(f"{run_id}: {run['status_message']}")
            line = figures[-1][figures[-1].index("rate=") :]
            out = {key: float(value) for key, value in (i.split("=") for i in line.split())}
            if name == COPIED:  # what the worker copied, as its store log says
                key = f"{run_id}/learner-1/store-results.log"
                log = s3.get_object(Bucket="ckpt-results", Key=key)["Body"].read().decode()
                said = re.search(r"checkpoints: (\d+) files, (\d+) bytes copied .* in (\d+)", log)
                out["copied_files"], out["copied_bytes"], out["copies"] = map(int, said.groups())
            return out

        one(NOT_COPIED)  # the environment built once, outside the figures
        results: dict[str, list[dict[str, float]]] = {COPIED: [], NOT_COPIED: []}
        for repetition in range(args.repeat):
            order = [COPIED, NOT_COPIED] if repetition % 2 == 0 else [NOT_COPIED, COPIED]
            for name in order:
                results[name].append(one(name))
    print(
        f"checkpoint-copy benchmark: a program hashing for {args.seconds:.0f} s, saving "
        f"{args.megabytes} MB every {PERIOD} s, {args.repeat} pairs"
    )
    print(
        f"environment: {machine()}; the worker's clean run environment; the results store is "
        "the embedded Swift's S3 API on this machine (its servers share these CPUs)"
    )
    rates = {name: [r["rate"] for r in runs] for name, runs in results.items()}
    for name, runs in results.items():
        print(
            f"  {name:34s} median {statistics.median(rates[name]):9.1f} blocks/s   "
            f"({', '.join(f'{x:.1f}' for x in rates[name])}); saving took "
            f"{statistics.median(r['saving'] for r in runs):.2f} s per run"
        )
    copied = [
        f"{r['copied_files']} files, {r['copied_bytes'] / 1e6:.0f} MB" for r in results[COPIED]
    ]
    pairs = [c / n for c, n in zip(rates[COPIED], rates[NOT_COPIED], strict=True)]
    ratio = statistics.median(rates[COPIED]) / statistics.median(rates[NOT_COPIED])
    print(
        f"  copied / not copied: {ratio:.3f} (goal: at least 0.95); per pair "
        f"{', '.join(f'{x:.3f}' for x in pairs)}; copied per run, the last copy included: "
        f"{'; '.join(copied)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
