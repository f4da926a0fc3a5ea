"""Run environments against this machine's real package sources (pip's local indexes and
wheel folder, passed to uv): what a run's Python sees, the cache, its locks, its read-only
environments, eviction, and the failures a user and the service can cause."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from common.frameworks import default_registry
from common.layout import ENVIRONMENT_LOG
from common.settings import Settings
from common.states import ErrorCode, RunState
from tests.conftest import environment_values, manifest_yaml
from tests.worker.runs import submit_manifest, worker_context
from worker.environments import EnvironmentCache, Wanted
from worker.training import run_training
from worker.uvbuild import BuildFailed

pytestmark = pytest.mark.integration
PYTHON = default_registry().get("python", "3.11")


@pytest.fixture
def ctx(tmp_path, store_redis, run_work_dir):
    settings = Settings(
        home=tmp_path, secret_key=Fernet.generate_key().decode(), work_dir=run_work_dir
    )
    for bucket in ("data", "results"):
        (settings.local_store_root / "tests" / bucket).mkdir(parents=True)
    return worker_context(settings, store_redis, (0,), "env-worker")


def _run(ctx, command: str, requirements: str | None = None, framework=("python", "3.11")):
    files = {"train.sh": "true\n"}
    if requirements is not None:
        files["requirements.txt"] = requirements
    run = submit_manifest(ctx, manifest_yaml(command, framework=framework), files)
    state = run_training(run.id, ctx)
    return state, ctx.runs.get(run.id), ctx.settings.local_store_root / "tests" / "results" / run.id


def _own_cache(tmp_path: Path, **settings) -> EnvironmentCache:
    """A private, empty environment cache (uv's download cache and the sources shared)."""
    values = dict(environment_values(), environment_dir=tmp_path / "envs", **settings)
    return EnvironmentCache(Settings(home=tmp_path, secret_key="x" * 44, **values))


def test_each_run_sees_its_own_version_and_the_third_is_a_cache_hit(ctx):
    show = "python -c 'import tabulate; print(tabulate.__version__)' > $RESULT_DIR/v.txt"
    first = _run(ctx, show, "tabulate==0.8.10\n")
    second = _run(ctx, show, "tabulate==0.10.0  # the newer one\n")
    third = _run(ctx, show, "# again\ntabulate==0.8.10\n")
    assert [state for state, _, _ in (first, second, third)] == ["COMPLETED"] * 3
    assert [(out / "v.txt").read_text().strip() for _, _, out in (first, second, third)] == [
        "0.8.10",
        "0.10.0",
        "0.8.10",
    ]
    keys = [run.environment["key"] for _, run, _ in (first, second, third)]
    assert keys[0] != keys[1] and keys[2] == keys[0]
    assert third[1].environment["status"] == "reused"
    assert third[1].environment["framework"] == "python 3.11"
    assert third[1].usage["environment_seconds"] < 1.0
    load_log = (third[2] / "learner-1" / "load-data.log").read_text()
    assert f"environment {keys[0]} (python 3.11, Python " in load_log and "reused in" in load_log


def test_the_runs_python_is_its_environments_and_nothing_of_the_workers_leaks(ctx):
    command = (
        "python -c 'import sys; print(sys.prefix)' > $RESULT_DIR/prefix.txt; "
        "command -v python3 > $RESULT_DIR/python3.txt; tabulate --help > $RESULT_DIR/cli.txt; "
        "python3 -c 'import celery' 2> $RESULT_DIR/celery.txt; echo $? >> $RESULT_DIR/celery.txt"
    )
    state, run, out = _run(ctx, command, "tabulate==0.8.10\n")
    assert state == "COMPLETED"
    env_path = ctx.settings.environment_dir / run.environment["key"]
    assert (out / "prefix.txt").read_text().strip() == str(env_path)
    assert (out / "python3.txt").read_text().strip() == str(env_path / "bin" / "python3")
    assert "Pretty-print tabular data" in (out / "cli.txt").read_text()  # its console script
    assert "No module named 'celery'" in (out / "celery.txt").read_text()


def test_a_run_cannot_change_its_environment_for_the_next(ctx):
    module = "lib/python3.11/site-packages/tabulate.py"
    tamper = (
        f"target=$VIRTUAL_ENV/{module}; sha256sum $target > $RESULT_DIR/before.txt; "
        'for attempt in "echo evil >> $target" "touch $VIRTUAL_ENV/bin/planted" '
        '"rm -f $target" "mkdir $VIRTUAL_ENV/lib/python3.11/site-packages/planted"; do '
        'bash -c "$attempt" 2>/dev/null; echo $? >> $RESULT_DIR/codes.txt; done'
    )
    state, run, out = _run(ctx, tamper, "tabulate==0.8.10\n")
    assert state == "COMPLETED"
    codes = (out / "codes.txt").read_text().split()
    assert len(codes) == 4 and "0" not in codes, codes  # every write was refused
    check = f"sha256sum $VIRTUAL_ENV/{module} > $RESULT_DIR/after.txt"
    _, later, out2 = _run(ctx, check, "tabulate==0.8.10\n")
    assert later.environment["key"] == run.environment["key"]
    before = (out / "before.txt").read_text()
    assert before.split()[0] and (out2 / "after.txt").read_text() == before
    env_path = ctx.settings.environment_dir / run.environment["key"]
    assert not (env_path / "bin" / "planted").exists()
    assert not (env_path / "lib/python3.11/site-packages/planted").exists()
    if os.geteuid() == 0:
        assert (env_path / module).stat().st_uid == 0


def test_a_requirement_that_does_not_exist_fails_c104_naming_it(ctx):
    state, run, out = _run(
        ctx, "touch $RESULT_DIR/ran", "tabulate==0.8.10\nno-such-dlaas-pkg==1.0\n"
    )
    assert state == "FAILED"
    assert run.error_code is ErrorCode.ENVIRONMENT
    assert "no-such-dlaas-pkg" in run.status_message
    assert f"learner-1/{ENVIRONMENT_LOG}" in run.status_message
    assert RunState.PROCESSING not in [h.state for h in ctx.runs.history(run.id)]
    assert not (out / "ran").exists()
    build_log = (out / "learner-1" / ENVIRONMENT_LOG).read_text()
    assert "uv pip install" in build_log and "no-such-dlaas-pkg" in build_log


def test_a_requirement_conflicting_with_the_framework_fails_c104_naming_it(ctx):
    state, run, _ = _run(ctx, "true", "torch<2\n", framework=("pytorch", "2.13"))
    assert state == "FAILED"
    assert run.error_code is ErrorCode.ENVIRONMENT
    assert "torch==2.13.0+cpu and torch<2" in run.status_message


def test_a_python_the_node_does_not_have_fails_c104_in_words(ctx):
    state, run, _ = _run(ctx, "true", framework=("tensorflow", "1.2-py3"))
    assert state == "FAILED" and run.error_code is ErrorCode.ENVIRONMENT
    assert "needs Python 3.6, which this node does not have (it has: " in run.status_message


def test_an_unreachable_package_index_is_the_services_fault_s304(
    tmp_path, store_redis, run_work_dir
):
    with socket.socket() as closed:  # a port on 127.0.0.1 nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = Settings(
        home=tmp_path, secret_key=Fernet.generate_key().decode(), work_dir=run_work_dir
    )
    for bucket in ("data", "results"):
        (settings.local_store_root / "tests" / bucket).mkdir(parents=True)
    ctx = worker_context(settings, store_redis, (0,), "env-worker")
    sources = dict(
        package_index_url=f"http://127.0.0.1:{port}/simple",
        package_extra_index_urls=(),
        package_find_links=(),
        environment_dir=tmp_path / "envs",
    )
    ctx.settings = ctx.settings.model_copy(update=sources)
    ctx.environments = EnvironmentCache(ctx.settings)
    state, run, _ = _run(ctx, "true", "tabulate==0.8.10\n")
    assert state == "FAILED" and run.error_code is ErrorCode.ENVIRONMENT_BUILD
    assert f"127.0.0.1:{port}" in run.status_message


def _prepare_in_process(settings_json: str, requirements: list[str], out: str) -> None:
    values = json.loads(settings_json)
    cache = EnvironmentCache(Settings(**values))
    env = cache.prepare(
        Wanted(PYTHON, "cpu", tuple(requirements)), Path(out) / f"{os.getpid()}.log"
    )
    Path(out, f"{os.getpid()}.json").write_text(json.dumps({"key": env.key, "built": env.built}))
    env.release()


def test_two_workers_asking_at_once_for_a_new_environment_build_it_once(tmp_path):
    values = dict(environment_values(), environment_dir=tmp_path / "envs", home=tmp_path)
    values["secret_key"] = "x" * 44
    encoded = json.dumps(
        {k: list(v) if isinstance(v, tuple) else str(v) for k, v in values.items() if v is not None}
    )
    requirements = ["tabulate==0.8.10", "mpmath==1.3.0"]
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_prepare_in_process, args=(encoded, requirements, str(tmp_path)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    answers = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(answers) == 2 and answers[0]["key"] == answers[1]["key"]
    assert sorted(answer["built"] for answer in answers) == [False, True]
    installs = sum(p.read_text().count("uv pip install") for p in tmp_path.glob("*.log"))
    assert installs == 1
    assert (
        len([p for p in (tmp_path / "envs").iterdir() if p.is_dir() and not p.name.startswith(".")])
        == 1
    )


def test_eviction_past_the_size_limit_keeps_an_environment_in_use(tmp_path):
    cache = _own_cache(tmp_path, environment_max_bytes=1)  # every environment is too much
    log = tmp_path / "build.log"
    held = cache.prepare(Wanted(PYTHON, "cpu", ("tabulate==0.8.10",)), log)
    other = cache.prepare(Wanted(PYTHON, "cpu", ("tabulate==0.10.0",)), log)
    other.release()
    assert held.path.is_dir(), "an environment a run holds was removed"
    assert other.path.is_dir()  # the one just built is kept for its run
    held.release()
    third = cache.prepare(Wanted(PYTHON, "cpu", ("mpmath==1.3.0",)), log)
    assert not held.path.exists() and not other.path.exists()  # least recently used, unused
    assert third.path.is_dir()
    assert [meta["key"] for meta in cache.held()] == [third.key]
    third.release()


def test_a_framework_the_service_does_not_build_says_why(tmp_path):
    cache = _own_cache(tmp_path)
    with pytest.raises(BuildFailed) as failed:
        cache.prepare(Wanted(default_registry().get("caffe", "1.0-py3"), "cpu"), tmp_path / "l")
    assert failed.value.user_fault and "Caffe is not a Python package" in failed.value.message


def test_the_environment_is_built_while_the_data_is_staged(ctx, tmp_path, monkeypatch):
    from common.storage.local import LocalStore

    ctx.settings = ctx.settings.model_copy(update={"environment_dir": tmp_path / "own-envs"})
    ctx.environments = EnvironmentCache(ctx.settings)
    real_list, seen = LocalStore.list, {}

    def slow_listing(self, *args, **kwargs):
        # The data bucket is listed only once an environment is in place (bounded): were the build
        # to start after staging, it would never be, and the wait would run out.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen:
            built = [
                p for p in ctx.settings.environment_dir.glob("*") if not p.name.startswith(".")
            ]
            if any(p.is_dir() for p in built):
                seen["after"] = time.monotonic() - started
            time.sleep(0.05)
        return real_list(self, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "list", slow_listing)
    started = time.monotonic()
    state, run, _ = _run(ctx, "true", "mpmath==1.3.0\n")
    assert state == "COMPLETED" and seen, "the environment was not built during staging"
    assert run.environment["status"] == "built"
    assert run.usage["staging_seconds"] >= run.environment["seconds"] * 0.5


def test_a_gpu_node_given_only_a_cpu_torch_refuses_it_rather_than_pass_it_off(tmp_path):
    # This machine's sources hold torch 2.13.0+cpu only: `torch==2.13.0` (the CUDA build a
    # GPU node's variant names) matches it by PEP 440, and the build must say so.
    cache = _own_cache(tmp_path)
    pytorch = default_registry().get("pytorch", "2.13")
    with pytest.raises(BuildFailed) as refused:
        cache.prepare(Wanted(pytorch, "gpu"), tmp_path / "build.log")
    assert not refused.value.user_fault
    assert "torch 2.13.0+cpu was installed for torch==2.13.0" in refused.value.message
    assert cache.held() == []  # nothing half-made is left in the cache
    env = cache.prepare(Wanted(pytorch, "cpu"), tmp_path / "build.log")
    assert env.built and (env.path / "lib/python3.11/site-packages/torch").is_dir()
    env.release()


def test_the_node_variant_follows_its_gpus():
    from worker.context import WorkerContext
    from worker.gpus import GpuSet

    def accelerator(gpus: GpuSet, setting: str = "auto") -> str:
        settings = Settings(home="/tmp/unused", secret_key="x" * 44, accelerator=setting)
        ctx = WorkerContext(settings, None, None, None, None, gpus, "n", environments=object())
        return ctx.accelerator

    assert accelerator(GpuSet((), "none")) == "cpu"
    assert accelerator(GpuSet((0, 1), "declared")) == "cpu"  # declared, not found: no CUDA
    assert accelerator(GpuSet((0,), "nvml")) == "gpu"
    assert accelerator(GpuSet((), "none"), "gpu") == "gpu"


def test_a_cancel_while_the_environment_builds_ends_the_build_and_halts_the_run(ctx, tmp_path):
    # An index that accepts connections and never answers: the build waits until stopped.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    ctx.settings = ctx.settings.model_copy(
        update={
            "package_index_url": f"http://127.0.0.1:{port}/simple",
            "package_extra_index_urls": (),
            "package_find_links": (),
            "environment_dir": tmp_path / "own-envs",
        }
    )
    ctx.environments = EnvironmentCache(ctx.settings)
    run = submit_manifest(
        ctx, manifest_yaml("touch $RESULT_DIR/ran"), {"requirements.txt": "mpmath==1.3.0\n"}
    )
    ended = {}
    worker = threading.Thread(target=lambda: ended.update(state=run_training(run.id, ctx)))
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(
            (tmp_path / "own-envs" / ".building").glob("*")
        ):
            time.sleep(0.05)
        assert list((tmp_path / "own-envs" / ".building").glob("*")), "the build did not start"
        while time.monotonic() < deadline and "building" not in ctx.runs.get(run.id).status_message:
            time.sleep(0.05)  # the (empty) data is staged long before the environment
        shown = ctx.runs.get(run.id)
        assert shown.state is RunState.DOWNLOADING
        assert shown.status_message == "data staged; building the environment (python 3.11)"
        began = time.monotonic()
        ctx.runs.request_cancel(run.id, "alice")
        worker.join(60)
        assert not worker.is_alive()
    finally:
        silent.close()
    assert ended["state"] == "HALTED"
    assert time.monotonic() - began < 15  # the build was ended, not waited out
    assert ctx.environments.held() == []
    assert not list((tmp_path / "own-envs" / ".building").glob("*"))  # nothing half-built
    out = ctx.settings.local_store_root / "tests" / "results" / run.id
    assert not (out / "ran").exists()


def test_pips_indexes_are_pooled_as_pip_pools_them(ctx):
    # setuptools 84.0.0 is only on the index, 80.9.0 only on the extra index: uv's default
    # (first index that lists it, extra first) would find no 84.0.0; pip finds it, and so do we.
    show = "python -c 'import setuptools; print(setuptools.__version__)' > $RESULT_DIR/v.txt"
    state, run, out = _run(ctx, show, "setuptools==84.0.0\n")
    assert ctx.settings.package_index_strategy == "unsafe-best-match"
    assert state == "COMPLETED", run.status_message
    assert (out / "v.txt").read_text().strip() == "84.0.0"
