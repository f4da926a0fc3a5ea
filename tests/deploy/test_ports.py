"""Ports of the stack: one allocator that never hands out a port twice or one reserved, and
`stack up` refusing, at once and before starting anything, a port that something holds."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from deploy import ports
from tests.conftest import ROOT

SETTINGS = (
    "DLAAS_STACK_REDIS_PORT",
    "DLAAS_STACK_API_PORT",
    "DLAAS_STACK_FLOWER_PORT",
    "DLAAS_STACK_SWIFT_PORT",
    "DLAAS_STACK_KEYSTONE_PORT",
    "DLAAS_STACK_KEYSTONE_SWIFT_PORT",
)


@pytest.fixture
def listening():
    """A port held by this process, as another stack's server would hold it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_free_port_never_hands_out_a_port_twice_nor_a_reserved_one(monkeypatch):
    monkeypatch.setattr(ports, "_TAKEN", set())
    # The kernel offers a port again once its socket is closed; here it insists.
    offered = iter([40001, 40001, 40002, 40001, 40002, 40003, 40004])
    monkeypatch.setattr(ports, "_kernel_port", lambda host: next(offered))
    ports.reserve(40003)
    assert [ports.free_port(), ports.free_port(), ports.free_port()] == [40001, 40002, 40004]


def test_free_ports_are_free_and_distinct():
    chosen = [ports.free_port() for _ in range(50)]
    assert len(set(chosen)) == 50
    assert all(ports.is_free(port) for port in chosen)


def test_a_held_port_is_not_free_and_its_holder_is_named(listening):
    assert not ports.is_free(listening)
    assert f"(pid {os.getpid()})" in ports.holder(listening)
    assert ports.holder(ports.free_port()) is None
    [line] = ports.taken([ports.Port(listening, "redis", "DLAAS_STACK_REDIS_PORT")])
    assert line.startswith(f"port {listening} (redis) is held by ")
    assert "set DLAAS_STACK_REDIS_PORT to a free port" in line


def test_a_server_is_listening_only_on_its_own_port(listening):
    """Readiness is "this process holds its port", not "something answers there" (the
    worker once reached another stack's Redis after `redis started`)."""
    assert ports.listening(os.getpid(), listening)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not ports.listening(other.pid, listening)
    finally:
        other.kill()
        other.wait()
    assert not ports.listening(other.pid, listening)  # gone: not listening either


def test_servers_chosen_free_never_get_a_port_set_for_another(tmp_path, monkeypatch):
    """The benchmark's case: Keystone, given a free port before the API started, took the
    API's port. Every port of one stack is chosen at once, the set ones reserved first."""
    from deploy import stack

    monkeypatch.setattr(stack, "HOME", tmp_path / "home")
    monkeypatch.setattr(ports, "_TAKEN", set())
    api = 38111
    for offset, setting in enumerate(SETTINGS[:4], start=-1):  # redis, api, flower, swift
        monkeypatch.setenv(setting, str(api + offset))
    for setting in SETTINGS[4:]:
        monkeypatch.delenv(setting, raising=False)
    # The kernel offers the API's port (free until the API starts) again and again.
    offered = itertools.chain([api, api + 2, api], itertools.count(41000))
    monkeypatch.setattr(ports, "_kernel_port", lambda host: next(offered))
    own, plan, chosen = stack._port_plan()
    numbers = [port.number for port in plan]
    assert len(numbers) == 3 + 5 + 2  # redis, api, flower; Swift's five; Keystone's two
    assert len(set(numbers)) == len(numbers)
    assert own["api"] == api and chosen["swift"]["proxy"] == api + 2
    assert not {api, api + 2} & {*chosen["keystone"].values(), chosen["swift"]["object"]}


def _stack_up(home, **env_ports: int) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env["DLAAS_HOME"] = str(home)
    env.update({setting: str(ports.free_port()) for setting in SETTINGS})
    env.update({setting: str(port) for setting, port in env_ports.items()})
    began = time.monotonic()
    up = subprocess.run(
        [sys.executable, "-m", "deploy.stack", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return up, time.monotonic() - began


def _left_running(home) -> list[str]:
    """Pid files of `home`, and processes whose command line names it."""
    left = [str(p) for p in home.rglob("*.pid")] + [str(p) for p in home.rglob("state.json")]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(home) in " ".join(proc.info["cmdline"] or []):
            left.append(f"pid {proc.info['pid']}: {' '.join(proc.info['cmdline'])}")
    return left


@pytest.mark.parametrize(
    "setting, what",
    [
        ("DLAAS_STACK_REDIS_PORT", "redis"),
        ("DLAAS_STACK_SWIFT_PORT", "swift proxy"),
        ("DLAAS_STACK_KEYSTONE_PORT", "keystone"),
    ],
)
def test_up_refuses_a_taken_port_at_once_and_starts_nothing(tmp_path, listening, setting, what):
    home = tmp_path / "home"
    up, took = _stack_up(home, **{setting: listening})
    assert up.returncode == 1, up.stdout + up.stderr
    assert took < 15  # the import, the checks; no server was waited for
    assert f"port {listening} ({what}) is held by " in up.stderr
    assert f"(pid {os.getpid()})" in up.stderr  # this test holds it
    assert f"set {setting} to a free port" in up.stderr
    assert "started" not in up.stdout
    assert _left_running(home) == []


def test_up_refuses_one_port_set_for_two_servers(tmp_path):
    home = tmp_path / "home"
    port = ports.free_port()
    up, _ = _stack_up(home, DLAAS_STACK_API_PORT=port, DLAAS_STACK_FLOWER_PORT=port)
    assert up.returncode == 1, up.stdout + up.stderr
    assert (
        f"port {port} is set for both api (DLAAS_STACK_API_PORT) and flower "
        "(DLAAS_STACK_FLOWER_PORT)"
    ) in up.stderr
    assert _left_running(home) == []


@pytest.mark.integration
def test_a_port_taken_after_the_check_fails_up_and_it_stops_what_it_started(tmp_path):
    """Flower's port taken while the servers before it start: Flower exits, `up` names the
    port, its holder and setting, and stops Redis, the API, the worker, Keystone and Swift."""
    home = tmp_path / "home"
    flower = ports.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env["DLAAS_HOME"] = str(home)
    env.update({setting: str(ports.free_port()) for setting in SETTINGS})
    env["DLAAS_STACK_FLOWER_PORT"] = str(flower)
    up = subprocess.Popen(
        [sys.executable, "-m", "deploy.stack", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (home / "pids" / "redis.pid").exists() and up.poll() is None:
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)
        with socket.socket() as held:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind(("127.0.0.1", flower))
            held.listen()
            out, err = up.communicate(timeout=300)
    finally:
        if up.poll() is None:
            up.terminate()  # it stops what it started on SIGTERM
            up.communicate(timeout=60)
    assert up.returncode == 1, out + err
    assert "flower exited" in err
    assert f"port {flower} (flower) is held by " in err and f"(pid {os.getpid()})" in err
    assert "set DLAAS_STACK_FLOWER_PORT to a free port" in err
    for name in ("redis", "api", "worker", "reconciler", "keystone", "swift"):
        assert f"{name:<11}stopped (up failed)" in out
    assert _left_running(home) == []
