"""The command runner: a clean environment, variable expansion, exit codes, the process group."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from common.settings import Settings
from tests.conftest import unstamped
from worker.gpus import GpuSpecError, parse_gpus
from worker.logpump import MAX_LINE, LogPump, open_pipe
from worker.process import RunDirs, execute, expand_command, run_environment, tail
from worker.supervisor import StopFlag, StopReason


def _env(tmp_path, gpus=(1, 2)):
    dirs = RunDirs(tmp_path / "run")
    dirs.create()
    settings = Settings(home=tmp_path, secret_key="not-for-runs")
    return dirs, run_environment(settings, "training-abcdefghi", dirs, gpus)


def test_environment_is_explicit_and_holds_no_service_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("DLAAS_SECRET_KEY", "super-secret-service-key")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/whatever.pem")
    dirs, env = _env(tmp_path)
    execute("env > $RESULT_DIR/env.txt", env, dirs.model, dirs.log_file)
    seen = dict(
        line.split("=", 1)
        for line in (dirs.result / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert "super-secret-service-key" not in (dirs.result / "env.txt").read_text()
    assert "AWS_CA_BUNDLE" not in seen and "DLAAS_SECRET_KEY" not in seen
    assert seen["CUDA_VISIBLE_DEVICES"] == "1,2" == seen["NVIDIA_VISIBLE_DEVICES"]
    assert seen["GPU_COUNT"] == "2"
    assert seen["TRAINING_ID"] == "training-abcdefghi"
    assert seen["DATA_DIR"] == str(dirs.data)


def test_cpu_node_hides_every_gpu(tmp_path):
    _, env = _env(tmp_path, gpus=())
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["GPU_COUNT"] == "0"


def test_expand_command_only_touches_run_variables():
    env = {
        "DATA_DIR": "/d",
        "RESULT_DIR": "/r",
        "MODEL_DIR": "/m",
        "LOG_DIR": "/l",
        "TRAINING_ID": "t",
        "GPU_COUNT": "1",
    }
    command = "python3 a.py --x ${DATA_DIR}/train.gz --out $RESULT_DIR --home $HOME ${DATA_DIRX}"
    assert expand_command(command, env) == (
        "python3 a.py --x /d/train.gz --out /r --home $HOME ${DATA_DIRX}"
    )


def test_exit_code_and_log_capture(tmp_path):
    dirs, env = _env(tmp_path)
    code = execute("echo out; echo err >&2; exit 7", env, dirs.model, dirs.log_file).exit_code
    assert code == 7
    assert unstamped(dirs.log_file.read_text()).splitlines() == ["out", "err"]
    assert tail(dirs.log_file, lines=1).endswith("Z err")


def test_killed_by_signal_reports_128_plus_n(tmp_path):
    dirs, env = _env(tmp_path)
    assert execute("kill -9 $$", env, dirs.model, dirs.log_file).exit_code == 137


@pytest.mark.parametrize(
    ("command", "code"),
    [
        # Stopped between two lines or inside `sleep`: SIGTERM ends bash, 128 + 15.
        ("for i in $(seq 1 900); do echo tick $i; sleep 0.2; done", 143),
        # A command that handles SIGTERM reports its own exit status.
        ("trap 'exit 5' TERM; while true; do sleep 0.1; done", 5),
    ],
)
def test_a_stopped_command_reports_its_own_exit_status_not_0(tmp_path, command, code):
    dirs, env = _env(tmp_path)
    stop = StopFlag()
    threading.Timer(0.8, stop.set, (StopReason.CANCEL, "cancelled by alice")).start()
    done = execute(command, env, dirs.model, dirs.log_file, stop=stop, grace_seconds=5)
    assert done.stopped == stop.request and done.exit_code == code


def test_children_left_in_the_group_are_ended(tmp_path):
    dirs, env = _env(tmp_path)
    execute("sleep 300 & echo $! > $RESULT_DIR/child.pid; exit 0", env, dirs.model, dirs.log_file)
    child = int((dirs.result / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    assert not alive, "a child of the run outlived it"


def test_a_worker_that_gives_up_right_after_the_start_ends_the_command(tmp_path):
    dirs, env = _env(tmp_path)
    started = []

    def give_up(pid):
        started.append(pid)
        raise ConnectionError("Redis is away for good")

    with pytest.raises(ConnectionError):
        execute("sleep 300", env, dirs.model, dirs.log_file, grace_seconds=2, on_start=give_up)
    proc = psutil.Process(started[0]) if psutil.pid_exists(started[0]) else None
    assert proc is None or proc.status() == psutil.STATUS_ZOMBIE, "the command outlived it"


def test_gpu_spec_parsing():
    assert parse_gpus("0,1").indices == (0, 1)
    assert parse_gpus("none").indices == ()
    with pytest.raises(GpuSpecError, match="'x' is not a GPU index"):
        parse_gpus("0,x")
    with pytest.raises(GpuSpecError, match="given twice"):
        parse_gpus("1,1")


def _python_run(tmp_path, output: str, program: str):
    dirs = RunDirs(tmp_path / f"run-{output}")
    dirs.create()
    settings = Settings(home=tmp_path, secret_key="x", run_python_output=output)
    env = run_environment(settings, "training-abcdefghi", dirs, ())
    (dirs.model / "p.py").write_text(program)
    return dirs, env


PRINTS_THEN_WAITS = """
import sys, time
print("first line", flush=False)
sys.stderr.write("an error line\\n")
print("second line")
time.sleep(3)
print("after the wait")
"""


@pytest.mark.parametrize("output", ["flushed", "unbuffered"])
def test_python_prints_reach_the_log_live_and_in_order(tmp_path, output):
    """Block-buffered and flushed every 0.1 s (default), or unbuffered: either way a line is
    in the log while the program still runs, and stderr stays in order with stdout."""
    dirs, env = _python_run(tmp_path, output, PRINTS_THEN_WAITS)
    seen_live = {}

    def watch():
        deadline = time.monotonic() + 2.5  # the program waits 3 s before its last line
        while time.monotonic() < deadline:
            text = dirs.log_file.read_text() if dirs.log_file.exists() else ""
            if "second line" in text:
                seen_live["after"] = time.monotonic() - started
                return
            time.sleep(0.02)

    started = time.monotonic()
    watcher = threading.Thread(target=watch)
    watcher.start()
    done = execute("python3 p.py", env, dirs.model, dirs.log_file)
    watcher.join()
    assert done.exit_code == 0
    assert seen_live["after"] < 2.0  # well before the program ended (3 s)
    lines = unstamped(dirs.log_file.read_text()).splitlines()
    assert lines == ["first line", "an error line", "second line", "after the wait"]


def test_flushed_output_keeps_a_crash_in_order_and_covers_forked_children(tmp_path):
    program = """
import os, sys, time
print("parent before fork")
pid = os.fork()
if pid == 0:
    print("child says hi")
    time.sleep(1.5)  # still running: its line must already be in the log
    os._exit(0)
time.sleep(0.5)
print("parent after fork")
os.waitpid(pid, 0)
raise SystemExit("the end: " + str(1 / 1))
"""
    dirs, env = _python_run(tmp_path, "flushed", program)
    assert env["PYTHONPATH"].endswith("worker/runtime") and "PYTHONUNBUFFERED" not in env
    done = execute("python3 p.py", env, dirs.model, dirs.log_file)
    lines = unstamped(dirs.log_file.read_text()).splitlines()
    assert done.exit_code == 1
    assert lines == ["parent before fork", "child says hi", "parent after fork", "the end: 1.0"]


def test_pump_keeps_every_byte_and_cuts_only_overlong_lines(tmp_path):
    read_fd, write_fd = open_pipe()
    log_file = tmp_path / "log.txt"
    pump = LogPump(read_fd, log_file)
    pump.start()
    long_line = b"x" * (MAX_LINE + 10)
    for piece in (b"a\n\nbc", b"d\n", long_line[: MAX_LINE // 2], long_line[MAX_LINE // 2 :]):
        os.write(write_fd, piece)
        time.sleep(0.05)  # separate reads
    os.write(write_fd, b"tail")  # no newline at the end
    os.close(write_fd)
    pump.join(timeout=10)
    lines = unstamped(log_file.read_text()).split("\n")
    assert lines[:3] == ["a", "", "bcd"]
    assert lines[-1] == ""  # the file ends with a newline
    # The overlong line is cut (bounded memory), and nothing of it is lost.
    assert "".join(lines[3:-1]) == "x" * (MAX_LINE + 10) + "tail"
    assert len(lines[3:-1]) >= 2
    assert pump.lines == len(lines) - 1
