"""`dlaas-worker`: start a Celery worker that owns a GPU set and consumes the queues it serves."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import redis

from common.artifacts import ArtifactStore
from common.crypto import CredentialBox, CredentialsError
from common.fleet.nodes import NodeStore
from common.fleet.sizes import ResourceSize, queue_name, sizes_for_gpus
from common.runstore import RunStore
from common.settings import Settings, SettingsError
from worker.app import create_worker_app
from worker.context import WorkerContext
from worker.gpus import GpuSpecError, resolve_gpu_set
from worker.runuser import (
    RunUserError,
    check_reachable,
    describe,
    prepare_work_dir,
    run_user,
    slot_user,
)
from worker.sandbox import SandboxUnavailable, find_sandbox


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlaas-worker", description=__doc__)
    p.add_argument(
        "--gpus",
        help="GPU indices this worker owns, e.g. 0,1 ('none': a CPU node); "
        "default: every GPU NVML finds",
    )
    p.add_argument("--name", help="worker name (default: dlaas-<gpus>@<host>)")
    p.add_argument(
        "--sizes",
        help="comma-separated sizes to serve (default: every size that fits its GPUs)",
    )
    p.add_argument(
        "--slots",
        type=int,
        help="the most runs it runs at once (default: as many as its GPUs hold runs of the "
        "smallest size it serves; 1 on a CPU node)",
    )
    p.add_argument("--loglevel", default="INFO")
    return p


def default_slots(gpu_count: int, size_gpus: list[int]) -> int:
    """As many runs as the GPUs hold of the smallest size served (1 on a CPU node)."""
    smallest = min((n for n in size_gpus if n > 0), default=0)
    return max(1, gpu_count // smallest) if gpu_count and smallest else 1


def _run_users(settings: Settings, slots: int) -> list:
    """As root, each slot's runs run as its run user (DLAAS_RUN_AS, then <name>-1, ...),
    which must exist and reach the work and environment folders (RunUserError if not);
    unprivileged, none (the worker's own user)."""
    users = [run_user(slot_user(settings.run_as, slot)) for slot in range(slots)]
    if users[0] is not None:
        prepare_work_dir(settings.work_dir)
        prepare_work_dir(settings.environment_dir)
        for user in users:
            check_reachable(user, settings.work_dir)
            check_reachable(user, settings.environment_dir)
    return users


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        gpus = resolve_gpu_set(args.gpus)
        box = CredentialBox(settings.secret_key)
        if args.sizes:
            sizes = [ResourceSize(s.strip()) for s in args.sizes.split(",") if s.strip()]
        else:
            sizes = sizes_for_gpus(len(gpus), settings.size_gpus, serve_smaller=True)
        slots = args.slots or default_slots(len(gpus), [settings.size_gpus[s] for s in sizes])
        if slots < 1:
            raise ValueError(f"--slots: {slots}: a worker runs at least one run")
        users = _run_users(settings, slots)
        first = users[0]
        sandbox = find_sandbox(settings, (first.uid, first.gid) if first else None)
    except (
        SettingsError,
        GpuSpecError,
        CredentialsError,
        RunUserError,
        SandboxUnavailable,
        ValueError,
    ) as exc:
        print(f"dlaas-worker: {exc}", file=sys.stderr)
        return 2
    if not sizes:
        print(
            f"dlaas-worker: no resource size fits {len(gpus)} GPUs (sizes: {settings.size_gpus})",
            file=sys.stderr,
        )
        return 2
    name = args.name or f"dlaas-{gpus.label}@{socket.gethostname()}"
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(
        f"dlaas-worker {name}: {gpus.describe()}; serving {', '.join(s.value for s in sizes)}",
        flush=True,
    )
    print(f"dlaas-worker {name}: up to {slots} runs at once", flush=True)
    for slot, user in enumerate(users):
        print(f"dlaas-worker {name}: {describe(user, slot_user(settings.run_as, slot))}")
    print(f"dlaas-worker {name}: sandbox: {sandbox.reason}", flush=True)
    connection = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    ctx = WorkerContext(
        settings=settings,
        runs=RunStore(connection, settings.retention_seconds, settings.lease_ttl_seconds),
        nodes=NodeStore(connection, 3 * settings.worker_heartbeat_seconds),
        box=box,
        artifacts=ArtifactStore.from_settings(settings),
        gpus=gpus,
        name=name,
        slots=slots,
        sandbox=sandbox,
    )
    app = create_worker_app(ctx, [s.value for s in sizes])
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(queue_name(s) for s in sizes),
            "--hostname",
            name,
            "--concurrency",
            str(slots),
            "--events",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            args.loglevel,
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
