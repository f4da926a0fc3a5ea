"""Runs cannot reach what is not theirs: they run as an unprivileged user in a private
directory, with limits, and without the service's secrets or the storage credentials.

The suite runs as root, so these exercise the real switch to the run user."""

from __future__ import annotations

import os
import pwd
import resource
import stat
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from cryptography.fernet import Fernet

from common.fleet.sizes import ResourceSize
from common.manifest import DataStore, ManifestError, StoreType, parse_manifest
from common.run import Run
from common.settings import Settings
from common.states import ErrorCode
from tests.conftest import RUN_USERS, manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker import main as worker_main
from worker.context import WorkerContext
from worker.process import credential_environment
from worker.training import run_training

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs switch users only under a root worker"),
]
SERVICE_KEY = Fernet.generate_key().decode()
REDIS_PASSWORD = "redis-password-never-in-a-run"


@pytest.fixture
def make_ctx(tmp_path, store_redis, run_work_dir):
    def make(name: str = "iso-worker", run_as: str = RUN_USERS[0], **settings) -> WorkerContext:
        config = Settings(
            home=tmp_path,
            secret_key=SERVICE_KEY,
            work_dir=run_work_dir,
            run_as=run_as,
            **settings,
        )
        return worker_context(config, store_redis, (0,), name)

    return make


def _submit(ctx: WorkerContext, manifest_text: str) -> Run:
    return submit_manifest(ctx, manifest_text)


def _local_run(ctx: WorkerContext, command: str) -> Run:
    root = ctx.settings.local_store_root / "tests"
    for bucket in ("data", "results"):
        (root / bucket).mkdir(parents=True, exist_ok=True)
    return _submit(ctx, manifest_yaml(command))


def _stored_log(ctx: WorkerContext, run: Run) -> str:
    path = ctx.settings.local_store_root / "tests" / "results" / run.id / "learner-1"
    return (path / "training-log.txt").read_text()


def test_command_runs_as_the_run_user_in_a_private_directory(make_ctx):
    ctx = make_ctx()
    run = _local_run(
        ctx,
        "id -un; id -G; stat -c '%U:%G %a' $RESULT_DIR $HOME $TMPDIR $MODEL_DIR $DATA_DIR; "
        "stat -c '%U %a' $RESULT_DIR/.. $LOG_DIR; echo $HOME",
    )
    assert run_training(run.id, ctx) == "COMPLETED"
    lines = [line.split(" ", 1)[1] for line in _stored_log(ctx, run).splitlines()]
    user = RUN_USERS[0]
    assert lines[0] == user
    assert lines[1] == str(pwd.getpwnam(user).pw_gid)  # no supplementary group
    assert lines[2:7] == [f"{user}:{user} 700"] * 5
    assert lines[7] == "root 710"  # the run directory: passable by the run user's group only
    assert lines[8] == "root 1770"  # LOG_DIR: the worker's files in it cannot be swapped
    assert not (ctx.settings.work_dir / run.id).exists()
    mode = stat.S_IMODE(ctx.settings.work_dir.stat().st_mode)
    assert mode == 0o711  # the work directory: nobody but root lists it


def test_run_cannot_read_the_service_secrets(make_ctx, monkeypatch, tmp_path):
    # The worker's own environment holds the key and the Redis password.
    monkeypatch.setenv("DLAAS_SECRET_KEY", SERVICE_KEY)
    monkeypatch.setenv("DLAAS_REDIS_URL", f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0")
    ctx = make_ctx()
    # A stack's state folder laid out like deploy/stack.py's (reachable, files 0600).
    home = ctx.settings.work_dir.parent / f"{ctx.settings.work_dir.name}-stack"
    home.mkdir(mode=0o711)
    home.chmod(0o711)
    token = "demo-token-never-in-a-run"
    for name, text in (
        ("config.env", f"DLAAS_SECRET_KEY={SERVICE_KEY}\n"),
        ("tokens.json", f'{{"{token}": "demo"}}'),
        ("env", f"export DLAAS_TOKEN={token}\n"),
    ):
        fd = os.open(home / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, text.encode())
        os.close(fd)
    tries = [
        f"cat {home}/config.env",
        f"cat {home}/tokens.json",
        f"cat {home}/env",
        f"ls {home}",
        f"cat /proc/{os.getpid()}/environ",
        f"ls {ctx.settings.work_dir}",
    ]
    command = "; ".join(f"{t} && echo ALLOWED-{i} || echo DENIED-{i}" for i, t in enumerate(tries))
    run = _local_run(ctx, command + "; env | sort")
    try:
        assert run_training(run.id, ctx) == "COMPLETED"
    finally:
        for name in ("config.env", "tokens.json", "env"):
            (home / name).unlink()
        home.rmdir()
    log = _stored_log(ctx, run)
    for i in range(len(tries)):
        assert f"DENIED-{i}" in log, (tries[i], log)
        assert f"ALLOWED-{i}" not in log
    assert "Permission denied" in log
    for secret in (SERVICE_KEY, REDIS_PASSWORD, token):
        assert secret not in log
    # No setting of the worker's: only the two variables that tell a run its attempt.
    named = {line.split()[-1].split("=")[0] for line in log.splitlines() if "DLAAS_" in line}
    assert named == {"DLAAS_ATTEMPT", "DLAAS_RESUMED"}, named


def test_run_cannot_use_the_services_redis(make_ctx, store_redis):
    """Redis needs the password (deploy/stack.py and the test servers set one), which no run
    can read: a run that connects by itself gets NOAUTH, so it cannot touch run records,
    tokens or the queues."""
    ctx = make_ctx()
    port = store_redis.connection_pool.connection_kwargs["port"]
    probe = (
        f"import socket; s = socket.create_connection(('127.0.0.1', {port})); "
        "s.sendall(b'KEYS *\\r\\n'); print('redis said', s.recv(200))"
    )
    run = _local_run(ctx, f'python3 -c "{probe}"')
    assert run_training(run.id, ctx) == "COMPLETED"
    log = _stored_log(ctx, run)
    assert "redis said b'-NOAUTH Authentication required." in log, log
    assert "dlaas:run:" not in log


def test_another_runs_directory_is_closed_while_it_runs(make_ctx):
    first = make_ctx("worker-a", RUN_USERS[0])
    second = make_ctx("worker-b", RUN_USERS[1])
    waiting = _local_run(
        first,
        "echo secret-of-a > $RESULT_DIR/model.txt; echo creds-of-a > $HOME/creds; "
        "touch $TMPDIR/started; while [ ! -e $TMPDIR/go ]; do sleep 0.1; done",
    )
    first_dir = first.settings.work_dir / waiting.id
    ended: list[str] = []
    thread = threading.Thread(target=lambda: ended.append(run_training(waiting.id, first)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (first_dir / "tmp" / "started").exists():
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.1)
        tries = [
            f"ls {first_dir}",
            f"ls {first_dir}/result",
            f"cat {first_dir}/result/model.txt",
            f"cat {first_dir}/home/creds",
            f"ls {first.settings.work_dir}",
        ]
        command = "; ".join(
            f"{t} && echo ALLOWED-{i} || echo DENIED-{i}" for i, t in enumerate(tries)
        )
        snooping = _local_run(second, command)
        assert run_training(snooping.id, second) == "COMPLETED"
    finally:
        (first_dir / "tmp" / "go").touch()
        thread.join(60)
    assert ended == ["COMPLETED"]
    log = _stored_log(second, snooping)
    for i in range(len(tries)):
        assert f"DENIED-{i}" in log, (tries[i], log)
    assert "secret-of-a" not in log and "creds-of-a" not in log


def test_links_to_the_workers_files_are_not_stored(make_ctx, tmp_path):
    ctx = make_ctx()
    secret = ctx.settings.work_dir.parent / f"{ctx.settings.work_dir.name}-secret"
    secret.write_text(SERVICE_KEY)
    secret.chmod(0o600)
    try:
        run = _local_run(
            ctx,
            f"ln -s {secret} $RESULT_DIR/key.txt; ln -s {secret} $LOG_DIR/key.log; "
            f"mkfifo $LOG_DIR/pipe.log; rm -f $LOG_DIR/training-log.txt; "
            f"ln -sf {secret} $LOG_DIR/store-results.log; echo done",
        )
        assert run_training(run.id, ctx) == "COMPLETED"
    finally:
        secret.unlink()
    stored = ctx.settings.local_store_root / "tests" / "results" / run.id
    for path in stored.rglob("*"):
        if path.is_file():
            assert SERVICE_KEY not in path.read_text(errors="replace"), path
    assert "done" in _stored_log(ctx, run)


def test_kept_directory_is_roots_only(make_ctx):
    ctx = make_ctx(keep_workdir=True)
    run = _local_run(ctx, "echo kept > $RESULT_DIR/out.txt")
    assert run_training(run.id, ctx) == "COMPLETED"
    kept = ctx.settings.work_dir / run.id
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    for path in [kept, *kept.rglob("*")]:
        assert path.lstat().st_uid == 0 and path.lstat().st_gid == 0, path
    assert (kept / "result" / "out.txt").read_text() == "kept\n"


LIMIT_CASES = {
    "open files": (
        {"run_max_open_files": 20},
        "python3 -c 'fs = [open(\"/dev/null\") for _ in range(100)]'",
        "DLAAS_RUN_MAX_OPEN_FILES",
        "open files: 20",
    ),
    "processes": (
        {"run_max_processes": 8},
        "python3 -c '\nimport os, time\nfor _ in range(60):\n"
        "    if os.fork() == 0:\n        time.sleep(3)\n        os._exit(0)\n'",
        "DLAAS_RUN_MAX_PROCESSES",
        "processes and threads: 8",
    ),
    "memory": (
        {"size_memory": {ResourceSize.SMALL: 256 << 20}},
        "python3 -c 'x = bytearray(1 << 30)'",
        "DLAAS_SIZE_MEMORY",
        "memory of a small run: 256M",
    ),
}


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_a_limit_that_kills_the_run_is_named(make_ctx, case):
    settings, command, setting, words = LIMIT_CASES[case]
    ctx = make_ctx(**settings)
    run = _local_run(ctx, command)
    assert run_training(run.id, ctx) == "FAILED"
    done = ctx.runs.get(run.id)
    assert done.error_code is ErrorCode.COMMAND_FAILED
    first_line = done.status_message.splitlines()[0]
    assert setting in first_line and words in first_line, done.status_message


def test_default_limits_let_an_ordinary_run_through(make_ctx):
    ctx = make_ctx()
    run = _local_run(ctx, "ulimit -u; ulimit -n; ulimit -v")
    assert run_training(run.id, ctx) == "COMPLETED"
    lines = [line.split(" ", 1)[1] for line in _stored_log(ctx, run).splitlines()]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    assert lines == [str(ctx.settings.run_max_processes), str(files), "unlimited"]


def _s3_manifest(swift, data: str, results: str, command: str, expose: bool | None) -> str:
    conn = (
        f"{{endpoint_url: '{swift['s3_endpoint']}', aws_access_key_id: 'test:tester', "
        f"aws_secret_access_key: testing, region: us-east-1}}"
    )
    option = "" if expose is None else f", expose_credentials: {str(expose).lower()}"
    return f"""
model_definition:
  name: s3-creds
  framework: {{name: python, version: "3.11"}}
  execution: {{command: "{command}", resource: small{option}}}
training_data:
- connection: {conn}
  source: {{bucket: {data}, type: s3}}
training_results:
  connection: {conn}
  target: {{bucket: {results}, type: s3}}
"""


@pytest.mark.parametrize("expose", [None, False, True])
def test_storage_credentials_reach_the_command_only_when_asked(make_ctx, swift, expose):
    client = boto3.client(
        "s3",
        endpoint_url=swift["s3_endpoint"],
        aws_access_key_id="test:tester",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    for bucket in ("iso-data", "iso-results"):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    client.put_object(Bucket="iso-data", Key="train.csv", Body=b"1,2\n")
    ctx = make_ctx()
    command = (
        "echo seen=${AWS_ACCESS_KEY_ID:-none}/${AWS_SECRET_ACCESS_KEY:-none}/"
        "${AWS_ENDPOINT_URL:-none}/${AWS_DEFAULT_REGION:-none}; cat $DATA_DIR/train.csv; exit 3"
    )
    run = _submit(ctx, _s3_manifest(swift, "iso-data", "iso-results", command, expose))
    assert run_training(run.id, ctx) == "FAILED"
    message = ctx.runs.get(run.id).status_message
    assert "1,2" in message  # the data arrived as files either way
    if expose:
        assert f"seen=test:tester/testing/{swift['s3_endpoint']}/us-east-1" in message
    else:
        assert "seen=none/none/none/none" in message


def test_swift_credentials_use_the_openstack_names():
    store = DataStore(
        StoreType.SWIFT,
        "b",
        {
            "auth_url": "http://keystone/v3",
            "user_name": "u",
            "password": "p",
            "project_id": "pid",
            "region": "RegionOne",
            "user_domain_name": "Default",
        },
    )
    assert credential_environment(store) == {
        "OS_AUTH_URL": "http://keystone/v3",
        "OS_USERNAME": "u",
        "OS_PASSWORD": "p",
        "OS_PROJECT_ID": "pid",
        "OS_REGION_NAME": "RegionOne",
        "OS_USER_DOMAIN_NAME": "Default",
    }
    local = DataStore(StoreType.LOCAL, "b", {"path": "tests"})
    assert credential_environment(local) == {}


def test_manifest_expose_credentials_is_a_boolean_off_by_default():
    assert parse_manifest(manifest_yaml()).expose_credentials is False
    text = manifest_yaml().replace(
        "resource: small", "resource: small\n    expose_credentials: true"
    )
    manifest = parse_manifest(text)
    assert manifest.expose_credentials is True
    assert manifest.to_dict()["execution"]["expose_credentials"] is True
    assert type(manifest).from_dict(manifest.to_dict()).expose_credentials is True
    with pytest.raises(ManifestError, match="expose_credentials: expected true or false"):
        parse_manifest(text.replace("expose_credentials: true", "expose_credentials: 'yes'"))


def test_worker_refuses_to_start_without_its_run_user(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DLAAS_HOME", str(tmp_path))
    monkeypatch.setenv("DLAAS_SECRET_KEY", SERVICE_KEY)
    monkeypatch.setenv("DLAAS_RUN_AS", "dlaas-no-such-user")
    assert worker_main.main(["--gpus", "none"]) == 2
    error = capsys.readouterr().err
    assert "DLAAS_RUN_AS" in error and "dlaas-no-such-user" in error
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin" in error


def test_worker_refuses_a_work_dir_its_run_user_cannot_reach(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DLAAS_HOME", str(tmp_path))  # under pytest's 0700 folders
    monkeypatch.setenv("DLAAS_SECRET_KEY", SERVICE_KEY)
    assert worker_main.main(["--gpus", "none"]) == 2
    error = capsys.readouterr().err
    assert (
        "DLAAS_WORK_DIR" in error
        and "cannot reach" in error
        and "python -m deploy.runuser" in error
    )


def test_unreachable_home_is_detected_for_the_path_given(tmp_path):
    from worker.runuser import run_user

    user = run_user(RUN_USERS[0])
    assert user.blocked_at(tmp_path / "work") is not None
    assert user.blocked_at(Path("/usr/bin")) is None
