"""All settings of the service, read once from `DLAAS_*` environment variables.

Each default makes the embedded single-machine stack work; `deploy/stack.py` writes the
values it generates (the encryption key, the tokens file) to `.dlaas/config.env`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.sizes import DEFAULT_SIZE_GPUS, ResourceSize, parse_size_table

KNOWN_STORE_TYPES = ("local", "s3", "bluemix_objectstore")


class SettingsError(ValueError):
    """A DLAAS_* variable holds a value the service cannot use."""


BYTE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory_table(text: str) -> dict[ResourceSize, int]:
    """Parse `small=8G,medium=16G,large=32G` into bytes; a size left out gets no cap."""
    table: dict[ResourceSize, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, amount = part.partition("=")
        try:
            size = ResourceSize(name.strip())
        except ValueError:
            known = ", ".join(s.value for s in ResourceSize)
            raise ValueError(f"entry {part!r}: unknown size (known: {known})") from None
        amount = amount.strip().upper().removesuffix("B").removesuffix("I")
        unit = amount[-1:] if amount[-1:] in BYTE_UNITS else ""
        number = amount[: len(amount) - len(unit)]
        if not sep or not number.isdigit() or int(number) == 0:
            raise ValueError(f"entry {part!r}: expected SIZE=AMOUNT like small=8G")
        table[size] = int(number) * BYTE_UNITS[unit]
    return table


def _default_run_path() -> str:
    # The run gets the worker's own Python first, so `python3 train.py` finds the
    # interpreter (and packages) the node was set up with.
    return os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path.cwd() / ".dlaas")
    # Redis: run records, the Celery broker and its result backend.
    redis_url: str = "redis://127.0.0.1:16379/0"
    # Fernet key that encrypts the storage credentials kept with each run.
    secret_key: str = ""
    tokens_file: Path | None = None
    artifact_dir: Path | None = None
    # Where submitted zips wait: "local" (a folder under artifact_dir), "s3" or "swift"
    # (endpoint = S3 endpoint or Swift auth URL; user/key = access key and secret, or user
    # and password). API processes and workers must share it.
    artifact_store: str = "local"
    artifact_bucket: str = "dlaas-artifacts"
    artifact_endpoint: str = ""
    artifact_user: str = ""
    artifact_key: str = ""
    work_dir: Path | None = None
    local_store_root: Path | None = None
    retention_days: float = 7.0
    size_gpus: dict[ResourceSize, int] = field(default_factory=lambda: dict(DEFAULT_SIZE_GPUS))
    # Store types the workers can move data with; manifests naming another are refused (422).
    store_types: tuple[str, ...] = KNOWN_STORE_TYPES
    max_manifest_bytes: int = 64 * 1024
    max_zip_bytes: int = 100 * 1024 * 1024
    zip_max_entries: int = 10_000
    zip_max_uncompressed_bytes: int = 1024 * 1024 * 1024
    zip_max_ratio: float = 200.0
    run_path: str = field(default_factory=_default_run_path)
    # DLAAS_KEEP_RUN_DIRS (or DLAAS_KEEP_WORKDIR): keep each run's directory (root's, 0700)
    # after the run, for debugging.
    keep_workdir: bool = False
    # The unprivileged user a root worker runs runs as (one per worker on a node; see
    # deploy/README.md). A worker that is not root runs them as itself and says so.
    run_as: str = "dlaas-run"
    # How the run's Python programs' prints reach the log (worker/process.py PYTHON_OUTPUT):
    # "flushed" (block-buffered, flushed every 0.1 s) or "unbuffered" (PYTHONUNBUFFERED=1).
    run_python_output: str = "flushed"
    # Per-run limits, set in the run's process before exec: processes and threads of the
    # run user (RLIMIT_NPROC), open files per process (RLIMIT_NOFILE), and, per size, the
    # address space per process (RLIMIT_AS; DLAAS_SIZE_MEMORY="small=8G,..."; none: no cap).
    run_max_processes: int = 4096
    run_max_open_files: int = 65536
    size_memory: dict[ResourceSize, int] = field(default_factory=dict)
    # Leases: the worker refreshes its run's lease every `lease_refresh_seconds`; a lease
    # unrefreshed for `lease_ttl_seconds` means the node is lost.
    lease_ttl_seconds: float = 30.0
    lease_refresh_seconds: float = 5.0
    reconcile_interval_seconds: float = 10.0
    # How many times a run whose node was lost (or whose worker shut down) is queued again.
    # Default 0: a restart from scratch can waste days, so the run ends FAILED instead.
    run_retries: int = 0
    # SIGTERM, then this long, then SIGKILL, for cancel, timeouts and drain.
    cancel_grace_seconds: float = 30.0
    # A SIGTERMed (draining) worker lets its run go on this long before handing it back.
    drain_timeout_seconds: float = 3600.0
    # Service-wide maximum run time in seconds (0: none); a manifest's execution.timeout
    # may ask for less.
    max_run_seconds: float = 0.0
    # How long a worker keeps retrying Redis (state changes wait, the command runs on).
    redis_outage_seconds: float = 3600.0
    worker_heartbeat_seconds: float = 5.0
    # Logs: the live stream's cap per run (entries of up to ~64 KB of lines), and how often
    # the durable log is copied to the results bucket while the run goes on.
    live_log_max_entries: int = 200
    log_chunk_seconds: float = 5.0
    log_chunk_bytes: int = 256 * 1024
    # Users with the admin role (besides "role": "admin" in the tokens file): they may see and
    # cancel every user's runs, drain nodes, manage tokens, rotate the key, read the audit.
    admin_users: tuple[str, ...] = ()
    # Per-user quotas (0: none; the tokens file may override them per user): runs PENDING,
    # runs DOWNLOADING/PROCESSING/STORING. Past one, a submission is answered 429 with
    # Retry-After `quota_retry_after_seconds`.
    max_queued_per_user: int = 100
    max_active_per_user: int = 20
    quota_retry_after_seconds: int = 30
    # API requests per token per minute (0: no limit), counted in Redis across API processes.
    requests_per_minute: int = 1200
    audit_max_entries: int = 100_000
    # Celery results are small (a run id and its final state); keep them as long as runs.
    result_expires_seconds: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        home = Path(self.home).resolve()
        object.__setattr__(self, "home", home)
        defaults = {
            "tokens_file": home / "tokens.json",
            "artifact_dir": home / "artifacts",
            "work_dir": home / "work",
            "local_store_root": home / "store",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value).resolve() if value else default)
        if self.artifact_store not in ("local", "s3", "swift"):
            raise SettingsError(
                f"DLAAS_ARTIFACT_STORE: {self.artifact_store!r} (known: local, s3, swift)"
            )
        if self.artifact_store != "local" and not self.artifact_endpoint:
            raise SettingsError("DLAAS_ARTIFACT_ENDPOINT: required for an s3 or swift store")
        unknown = [t for t in self.store_types if t not in KNOWN_STORE_TYPES]
        if unknown:
            raise SettingsError(
                f"DLAAS_STORE_TYPES: unknown type {unknown[0]!r} "
                f"(known: {', '.join(KNOWN_STORE_TYPES)})"
            )

        for name, value in (
            ("DLAAS_RUN_MAX_PROCESSES", self.run_max_processes),
            ("DLAAS_RUN_MAX_OPEN_FILES", self.run_max_open_files),
        ):
            if value < 1:
                raise SettingsError(f"{name}: must be at least 1, got {value}")
        if self.run_python_output not in ("flushed", "unbuffered"):
            raise SettingsError(
                f"DLAAS_RUN_PYTHON_OUTPUT: {self.run_python_output!r} (known: flushed, unbuffered)"
            )
        if not self.run_as or self.run_as == "root":
            raise SettingsError(f"DLAAS_RUN_AS: name an unprivileged user, got {self.run_as!r}")

    @property
    def retention_seconds(self) -> int:
        return int(self.retention_days * 86400)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values: dict = {}

        def text(name: str, attr: str) -> None:
            if env.get(name):
                values[attr] = env[name]

        def number(name: str, attr: str, kind=int) -> None:
            if env.get(name):
                try:
                    values[attr] = kind(env[name])
                except ValueError:
                    raise SettingsError(f"{name}: expected a number, got {env[name]!r}") from None

        def table(name: str, attr: str, parse) -> None:
            if env.get(name):
                try:
                    values[attr] = parse(env[name])
                except ValueError as exc:
                    raise SettingsError(f"{name}: {exc}") from None

        text("DLAAS_HOME", "home")
        text("DLAAS_REDIS_URL", "redis_url")
        text("DLAAS_SECRET_KEY", "secret_key")
        text("DLAAS_TOKENS_FILE", "tokens_file")
        text("DLAAS_ARTIFACT_DIR", "artifact_dir")
        text("DLAAS_ARTIFACT_STORE", "artifact_store")
        text("DLAAS_ARTIFACT_BUCKET", "artifact_bucket")
        text("DLAAS_ARTIFACT_ENDPOINT", "artifact_endpoint")
        text("DLAAS_ARTIFACT_USER", "artifact_user")
        text("DLAAS_ARTIFACT_KEY", "artifact_key")
        text("DLAAS_WORK_DIR", "work_dir")
        text("DLAAS_LOCAL_STORE_ROOT", "local_store_root")
        text("DLAAS_RUN_PATH", "run_path")
        text("DLAAS_RUN_AS", "run_as")
        text("DLAAS_RUN_PYTHON_OUTPUT", "run_python_output")
        number("DLAAS_RUN_MAX_PROCESSES", "run_max_processes")
        number("DLAAS_RUN_MAX_OPEN_FILES", "run_max_open_files")
        table("DLAAS_SIZE_MEMORY", "size_memory", parse_memory_table)
        number("DLAAS_RETENTION_DAYS", "retention_days", float)
        number("DLAAS_MAX_MANIFEST_BYTES", "max_manifest_bytes")
        number("DLAAS_MAX_ZIP_BYTES", "max_zip_bytes")
        number("DLAAS_ZIP_MAX_ENTRIES", "zip_max_entries")
        number("DLAAS_ZIP_MAX_UNCOMPRESSED_BYTES", "zip_max_uncompressed_bytes")
        number("DLAAS_ZIP_MAX_RATIO", "zip_max_ratio", float)
        number("DLAAS_RESULT_EXPIRES_SECONDS", "result_expires_seconds")
        number("DLAAS_LEASE_TTL_SECONDS", "lease_ttl_seconds", float)
        number("DLAAS_LEASE_REFRESH_SECONDS", "lease_refresh_seconds", float)
        number("DLAAS_RECONCILE_INTERVAL_SECONDS", "reconcile_interval_seconds", float)
        number("DLAAS_RUN_RETRIES", "run_retries")
        number("DLAAS_CANCEL_GRACE_SECONDS", "cancel_grace_seconds", float)
        number("DLAAS_DRAIN_TIMEOUT_SECONDS", "drain_timeout_seconds", float)
        number("DLAAS_MAX_RUN_SECONDS", "max_run_seconds", float)
        number("DLAAS_REDIS_OUTAGE_SECONDS", "redis_outage_seconds", float)
        number("DLAAS_WORKER_HEARTBEAT_SECONDS", "worker_heartbeat_seconds", float)
        number("DLAAS_LIVE_LOG_MAX_ENTRIES", "live_log_max_entries")
        number("DLAAS_LOG_CHUNK_SECONDS", "log_chunk_seconds", float)
        number("DLAAS_LOG_CHUNK_BYTES", "log_chunk_bytes")
        number("DLAAS_MAX_QUEUED_PER_USER", "max_queued_per_user")
        number("DLAAS_MAX_ACTIVE_PER_USER", "max_active_per_user")
        number("DLAAS_QUOTA_RETRY_AFTER_SECONDS", "quota_retry_after_seconds")
        number("DLAAS_REQUESTS_PER_MINUTE", "requests_per_minute")
        number("DLAAS_AUDIT_MAX_ENTRIES", "audit_max_entries")
        table("DLAAS_SIZE_GPUS", "size_gpus", parse_size_table)
        if env.get("DLAAS_STORE_TYPES"):
            values["store_types"] = tuple(
                t.strip() for t in env["DLAAS_STORE_TYPES"].split(",") if t.strip()
            )
        if env.get("DLAAS_ADMIN_USERS"):
            values["admin_users"] = tuple(
                u.strip() for u in env["DLAAS_ADMIN_USERS"].split(",") if u.strip()
            )
        for name in ("DLAAS_KEEP_WORKDIR", "DLAAS_KEEP_RUN_DIRS"):
            if env.get(name):
                values["keep_workdir"] = env[name].lower() in ("1", "true", "yes")
        values.update(overrides)
        return cls(**values)
