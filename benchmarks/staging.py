"""Staging throughput from a real Swift (S3 API): the worker's staging (its node's data cache
cold, warm, and with 10% of the objects changed) against a plain sequential boto3 loop and
`rclone copy --transfers 16`, on the same bucket, in one run.

    .venv/bin/python -m benchmarks.staging [--small 200] [--large 4] [--repeat 8]

Starts a private embedded stack (with its Swift all-in-one) in a temporary folder, fills a
bucket with N objects of 256 KiB and M of 64 MiB, then per repetition, in an order that turns
each time, after an os.sync(): empties the worker's data cache and submits a run whose command
is `true`, reads the staging time the worker recorded (usage.staging_seconds), submits it
again (warm), overwrites 10% of the objects and submits it once more, then fetches just those
objects with the worker's own store code (the time that 10% takes alone); downloads the
bucket with a sequential get_object loop, and with rclone (Debian's package; installed when
missing, as root).
Prints medians (MB/s, the CPU seconds each client and the Swift servers spent) and ratios.
rclone runs without AWS_CA_BUNDLE, which makes it fail even against plain http.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import zipfile

import psutil

from api.client import DlaasClient, read_env_file
from benchmarks.figures import machine
from benchmarks.privatestack import private_stack
from common.storage.s3 import S3Store
from deploy.swift import S3_KEY, S3_SECRET, s3_client

BUCKET = "staging-bench"
COLD = "worker staging, cold cache"
WARM = "worker staging, warm cache"
CHANGED = "worker staging, 10% changed"
ALONE = "fetching that 10% alone"
MANIFEST = """
model_definition:
  name: bench-staging
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "true", resource: small}}
training_data:
- connection: {{endpoint_url: "{endpoint}", aws_access_key_id: "{key}",
               aws_secret_access_key: "{secret}"}}
  source: {{bucket: {bucket}, type: s3}}
training_results:
  connection: {{endpoint_url: "{endpoint}", aws_access_key_id: "{key}",
               aws_secret_access_key: "{secret}"}}
  target: {{bucket: results, type: s3}}
"""


def rclone() -> str:
    found = shutil.which("rclone")
    if not found and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rclone"],
            capture_output=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
        found = shutil.which("rclone")
    if not found:
        raise SystemExit("rclone is needed: apt-get install rclone")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    rclone_bin = rclone()
    with private_stack("dlaas-bench-staging-") as (home, env, ports):
        endpoint = f"http://127.0.0.1:{ports['swift']}"
        s3 = s3_client(endpoint)
        for bucket in (BUCKET, "results"):
            s3.create_bucket(Bucket=bucket)
        objects = [(f"small/{i:04d}.bin", 256 * 1024) for i in range(args.small)]
        objects += [(f"large/{i}.bin", 64 * 1024 * 1024) for i in range(args.large)]
        for key, size in objects:
            s3.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(size))
        total = sum(size for _, size in objects)

        saved = read_env_file(home / "env")
        client = DlaasClient(saved["DLAAS_URL"], saved["DLAAS_TOKEN"], timeout=60)
        model = home / "model.zip"
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("README", "nothing to run\n")
        manifest = home / "manifest.yml"
        manifest.write_text(
            MANIFEST.format(endpoint=endpoint, bucket=BUCKET, key=S3_KEY, secret=S3_SECRET)
        )

        rclone_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        rclone_env.update(
            RCLONE_CONFIG_SW_TYPE="s3",
            RCLONE_CONFIG_SW_PROVIDER="Other",
            RCLONE_CONFIG_SW_ENDPOINT=endpoint,
            RCLONE_CONFIG_SW_ACCESS_KEY_ID=S3_KEY,
            RCLONE_CONFIG_SW_SECRET_ACCESS_KEY=S3_SECRET,
        )

        swift_pids = list(json.loads((home / "swift" / "state.json").read_text())["pids"].values())

        def swift_cpu() -> float:
            """CPU seconds the Swift servers (proxy, object, container, account, memcached)
            have used so far: what each way of staging costs the store's machine."""
            return sum(cpu_seconds(pid) for pid in swift_pids)

        def by_worker(cached: int | None = None, fetched: int | None = None):
            """One run's staging: seconds and CPU seconds as the worker recorded them;
            `cached`/`fetched`: how many objects must have come from the node's cache and
            from the store."""
            run_id = client.submit(model, manifest)["model_id"]
            deadline = time.monotonic() + 600
            while (run := client.show(run_id))["state"] not in ("COMPLETED", "FAILED"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{run_id} did not end")
                # Seldom: the figure is the worker's own staging time, and each look costs
                # CPU (API, Redis) on the two cores the staging is using.
                time.sleep(1.0)
            usage = run["usage"]
            if run["state"] != "COMPLETED" or usage["staged_bytes"] != total:
                raise RuntimeError(f"{run_id}: {run['status_message']}")
            for want, field in ((cached, "cached_objects"), (fetched, "fetched_objects")):
                if want is not None and usage.get(field) != want:
                    raise RuntimeError(f"{run_id}: {field} {usage.get(field)}, not {want}")
            return usage["staging_seconds"], usage["staging_cpu_seconds"]

        cache_dir = home / "data-cache"
        changing = objects[:: len(objects) // (len(objects) // 10)][: len(objects) // 10]
        changed_bytes = sum(size for _, size in changing)
        store = S3Store(endpoint, S3_KEY, S3_SECRET)

        def by_worker_cache() -> dict[str, tuple[float, float]]:
            """The node's data cache: cold (emptied first), warm (the same bucket again),
            then with 10% of the objects changed; and the time to fetch that 10% alone."""
            shutil.rmtree(cache_dir, ignore_errors=True)
            out = {COLD: by_worker(cached=0)}
            out[WARM] = by_worker(cached=len(objects), fetched=0)
            for key, size in changing:
                s3.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(size))
            os.sync()
            out[CHANGED] = by_worker(fetched=len(changing))
            listed = {o.key: o for o in store.list(BUCKET)}
            dest = home / "alone"
            started, began_cpu = time.perf_counter(), time.process_time()
            store.download_objects(BUCKET, [listed[k] for k, _ in changing], dest)
            out[ALONE] = (time.perf_counter() - started, time.process_time() - began_cpu)
            shutil.rmtree(dest)
            return out

        def by_sequential_loop() -> tuple[float, float]:
            dest = home / "sequential"
            started, began_cpu = time.perf_counter(), time.process_time()
            for key, _ in objects:
                target = dest / key
                target.parent.mkdir(parents=True, exist_ok=True)
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
                with open(target, "wb") as f:
                    shutil.copyfileobj(body, f, 1024 * 1024)
            took, took_cpu = time.perf_counter() - started, time.process_time() - began_cpu
            shutil.rmtree(dest)
            return took, took_cpu

        def by_rclone() -> tuple[float, float]:
            dest = home / "rclone"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(
                [rclone_bin, "copy", f"sw:{BUCKET}", str(dest), "--transfers", "16"],
                env=rclone_env,
                check=True,
                capture_output=True,
            )
            took = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            took_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            copied = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
            if copied != total:
                raise RuntimeError(f"rclone copied {copied} of {total} bytes")
            shutil.rmtree(dest)
            return took, took_cpu

        ways = {
            COLD: by_worker_cache,
            "sequential get_object loop": by_sequential_loop,
            "rclone copy --transfers 16": by_rclone,
        }
        names = [COLD, WARM, CHANGED, ALONE, *list(ways)[1:]]
        seconds: dict[str, list[float]] = {name: [] for name in names}
        client_cpu: dict[str, list[float]] = {name: [] for name in names}
        server_cpu: dict[str, list[float]] = {name: [] for name in names}
        for repetition in range(args.repeat):
            # Each repetition starts with the next way, so that none always follows the
            # same one; each starts after the files written and deleted before it have
            # reached the disk (on a filesystem mounted with `discard`, a large delete
            # keeps the journal busy for a while).
            order = list(ways)
            turn = repetition % len(order)
            for way in order[turn:] + order[:turn]:
                os.sync()
                time.sleep(0.5)
                before = swift_cpu()
                got = ways[way]()
                spent = swift_cpu() - before
                for name, (took, took_cpu) in (
                    got if isinstance(got, dict) else {way: got}
                ).items():
                    server_cpu[name].append(spent if name == way else float("nan"))
                    seconds[name].append(took)
                    client_cpu[name].append(took_cpu)

    worker, sequential, cloned = (seconds[name] for name in (COLD, *list(ways)[1:]))
    print(
        f"staging benchmark: {args.small} x 256 KiB + {args.large} x 64 MiB = "
        f"{total / 1e6:.0f} MB from the embedded Swift's S3 API, {args.repeat} repetitions"
    )
    print(
        f"environment: {machine()}; the Swift servers share this machine's CPUs (127.0.0.1); "
        "the caller's environment (rclone without AWS_CA_BUNDLE)"
    )
    print(f"  {'':40s} {'MB/s':>7s} {'median s':>9s} {'client CPU s':>13s} {'Swift CPU s':>12s}")
    for name in names:
        median = statistics.median(seconds[name])
        moved = changed_bytes if name == ALONE else total
        swift = [x for x in server_cpu[name] if x == x]  # the cache's later runs: not apart
        print(
            f"  {name:40s} {moved / median / 1e6:7.1f} {median:9.2f} "
            f"{statistics.median(client_cpu[name]):13.2f} "
            f"{f'{statistics.median(swift):.2f}' if swift else '-':>12s}   "
            f"({', '.join(f'{x:.2f}' for x in seconds[name])})"
        )
    w, s, r = (statistics.median(x) for x in (worker, sequential, cloned))
    paired = [c / x for x, c in zip(worker, cloned, strict=True)]
    print(
        f"  worker / sequential: {s / w:.2f}x   worker / rclone: {r / w:.2f}x "
        f"(above 1: the worker is faster); repetition by repetition worker / rclone: median "
        f"{statistics.median(paired):.2f}x, the worker faster in {sum(x > 1 for x in paired)} "
        f"of {len(paired)}"
    )
    cold, warm, changed, alone = (
        statistics.median(seconds[n]) for n in (COLD, WARM, CHANGED, ALONE)
    )
    print(
        f"  cold / warm: {cold / warm:.1f}x (goal: at least 20x); 10% changed "
        f"({len(changing)} objects, {changed_bytes / 1e6:.0f} MB) / fetching that 10% alone: "
        f"{changed / alone:.2f}x (goal: within 1.5x); per repetition cold / warm: "
        f"{', '.join(f'{c / w:.1f}' for c, w in zip(seconds[COLD], seconds[WARM], strict=True))}"
    )
    print(
        "  client CPU: the worker process while it staged (usage.staging_cpu_seconds), this "
        "process for the loop, rclone's; Swift CPU: its servers over each way (for the "
        "worker, over the whole run)"
    )
    return 0


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


if __name__ == "__main__":
    sys.exit(main())
