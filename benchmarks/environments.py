"""Building the PyTorch run environment (framework pytorch 2.13 on a CPU node: torch 2.13.0+cpu)
the way ClearML's agent does by default against the worker's environment cache, in one run.

    .venv/bin/python -m benchmarks.environments [--repeat 3]

Each repetition runs every variant from an empty cache, in an order that turns each time
(the machine is shared and noisy), after an os.sync():
  (a)  a fresh `python3.11 -m venv` and `pip install torch==2.13.0`, with an empty pip cache
       (pip byte-compiles what it installs, by default);
  (a') the same with `pip install --no-compile` (like with like: the builder compiles later);
  (b)  EnvironmentCache.prepare() with an empty uv cache and an empty environment folder;
  (c)  prepare() with uv's cache warm (that of an earlier build), an empty environment folder;
  (d)  a cache hit: prepare() + release() of the environment already in the cache, by a cache
       that has looked its Python up already (a worker's next run); (d') the first hit of a
       new EnvironmentCache (it looks the Python up: uv python find).
pip and uv use the same interpreter (the one the builder finds on its search path) and the
same local sources (`pip config list`; pip gets the first local index as --index-url, as
deploy/pipsources.py gives uv, so neither falls back to PyPI). The builder's background
byte-compile is kept out of (b) and (c) (a Builder whose compile() does nothing) and timed
once on its own, at the end. One untimed build comes first: it makes the hit's cache and the
warm uv cache, and reads the wheels into the page cache for every variant alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.figures import machine
from common.frameworks import default_registry
from common.settings import Settings
from deploy.pipsources import package_settings, pip_config
from worker.environments import EnvironmentCache, Wanted, _remove
from worker.uvbuild import PYTHON_KEPT, Builder, Python

FRAMEWORK = ("pytorch", "2.13")
ACCELERATOR = "cpu"
PIP_SPEC = "torch==2.13.0"  # what a ClearML task's requirements say; pip picks the +cpu wheel
TORCH_VERSION = "2.13.0+cpu"
GOAL_WARM_SPEEDUP = 10.0  # (c) at least 10x faster than (a)
GOAL_HIT_SECONDS = 0.1  # (d) under 0.1 s
SHOWN_VARIABLES = ("PYTHON", "PIP_", "UV_")
Q = "a' / x"

NAMES = {
    "a": "(a)  venv + pip install",
    "a'": "(a') venv + pip install --no-compile",
    "b": "(b)  prepare(), empty uv cache",
    "c": "(c)  prepare(), warm uv cache",
    "d": "(d)  cache hit",
    "d'": "(d') cache hit, new EnvironmentCache",
}


class NoCompile(Builder):
    """The builder without its background byte-compile, which would overlap the next step."""

    def compile(self, target: Path) -> None:
        return None


class Bench:
    def __init__(self, root: Path):
        self.root = root
        self.sources = package_settings()
        self.index = self.sources.get("DLAAS_PACKAGE_INDEX_URL", "")
        if not self.index.startswith("file:"):
            raise SystemExit(
                f"pip's configuration names no local index (got {self.index!r}): this "
                "benchmark installs from local files only, never from PyPI"
            )
        registry = default_registry()
        framework = registry.get(*FRAMEWORK)
        if framework is None:
            raise SystemExit(f"the registry has no {' '.join(FRAMEWORK)}")
        self.wanted = Wanted(framework, ACCELERATOR)
        self.warm_uv = root / "uv-warm"
        self.hit_envs = root / "envs-hit"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.count = 0
        self.builder = NoCompile(self.settings(self.hit_envs, self.warm_uv))
        self.python: Python = self.builder.find_python(framework.python)
        self.pyc: dict[str, int] = {}
        self.venv_seconds: list[float] = []

    def settings(self, environment_dir: Path, uv_cache_dir: Path) -> Settings:
        return Settings.from_env(
            self.sources,  # DLAAS_PACKAGE_* as pipsources gives them, read as the worker does
            home=self.root / "home",
            secret_key="x" * 44,
            environment_dir=environment_dir,
            uv_cache_dir=uv_cache_dir,
        )

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{name}-{self.count}"
        path.mkdir()
        return path

    def log(self, name: str) -> Path:
        return self.logs / f"{name}-{self.count}.log"

    # The variants: each returns its seconds.

    def warm_up(self) -> float:
        """The untimed first build: the hit's environment and the warm uv cache."""
        cache = EnvironmentCache(self.settings(self.hit_envs, self.warm_uv), self.builder)
        began = time.perf_counter()
        env = cache.prepare(self.wanted, self.log("warm-up"))
        took = time.perf_counter() - began
        env.release()
        _check_torch(env.path, "the untimed first build")
        return took

    def pip(self, compile_: bool) -> float:
        venv, pip_cache = self.fresh("venv"), self.fresh("pip-cache")
        env = dict(os.environ, PIP_CACHE_DIR=str(pip_cache))
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--index-url", self.index]
        install += [] if compile_ else ["--no-compile"]
        install.append(PIP_SPEC)
        began = time.perf_counter()
        _call([self.python.path, "-m", "venv", str(venv)], env, self.root)
        made = time.perf_counter()
        _call(install, env, self.root)
        took = time.perf_counter() - began
        self.venv_seconds.append(made - began)
        _check_torch(venv, "pip")
        self.pyc["a" if compile_ else "a'"] = _count_pyc(venv)
        shutil.rmtree(venv)
        shutil.rmtree(pip_cache)
        return took

    def build(self, warm: bool) -> float:
        uv_cache = self.warm_uv if warm else self.fresh("uv-cache")
        envs = self.fresh("envs")
        settings = self.settings(envs, uv_cache)
        cache = EnvironmentCache(settings, NoCompile(settings))
        began = time.perf_counter()
        env = cache.prepare(self.wanted, self.log("c" if warm else "b"))
        took = time.perf_counter() - began
        env.release()
        if not env.built:
            raise RuntimeError(f"{env.key}: found in an empty cache")
        _check_torch(env.path, "prepare()")
        self.pyc["c" if warm else "b"] = _count_pyc(env.path)
        _remove(envs)
        if not warm:
            _remove(uv_cache)
        return took

    def hits(self) -> tuple[float, float]:
        """(d') the first hit of a new EnvironmentCache, then (d) its next one."""
        settings = self.settings(self.hit_envs, self.warm_uv)
        cache = EnvironmentCache(settings, NoCompile(settings))
        took = []
        for _ in range(2):
            began = time.perf_counter()
            env = cache.prepare(self.wanted, self.log("d"))
            env.release()
            took.append(time.perf_counter() - began)
            if env.built:
                raise RuntimeError(f"{env.key}: built again, not found in the cache")
        return took[1], took[0]

    def compile_once(self) -> float:
        """The builder's real background byte-compile (nice 19, all CPUs), on the hit's
        environment, after the repetitions."""
        env = self.hit_envs / self.cache_key()
        builder = Builder(self.settings(self.hit_envs, self.warm_uv))
        began = time.perf_counter()
        builder.compile(env)
        took = time.perf_counter() - began
        self.pyc["compile"] = _count_pyc(env)
        return took

    def cache_key(self) -> str:
        cache = EnvironmentCache(self.settings(self.hit_envs, self.warm_uv), self.builder)
        return cache.key(self.wanted, self.python.version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="dlaas-bench-envs-", dir="/tmp"))
    try:
        bench = Bench(root)
        warm_up = bench.warm_up()
        seconds: dict[str, list[float]] = {name: [] for name in NAMES}

        def hits() -> None:
            hit, first = bench.hits()
            seconds["d"].append(hit)
            seconds["d'"].append(first)

        steps: dict[str, Callable[[], None]] = {
            "a": lambda: seconds["a"].append(bench.pip(compile_=True)),
            "a'": lambda: seconds["a'"].append(bench.pip(compile_=False)),
            "b": lambda: seconds["b"].append(bench.build(warm=False)),
            "c": lambda: seconds["c"].append(bench.build(warm=True)),
            "d": hits,
        }
        order = list(steps)
        for repetition in range(args.repeat):
            turn = repetition % len(order)
            for name in order[turn:] + order[:turn]:
                _quiet()
                steps[name]()
        _quiet()
        compile_seconds = bench.compile_once()
        held = EnvironmentCache(bench.settings(bench.hit_envs, bench.warm_uv), bench.builder)
        size = sum(meta.get("bytes", 0) for meta in held.held())
        uv_version = subprocess.run(
            [bench.builder.uv, "--version"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        pip_version = subprocess.run(
            [bench.python.path, "-c", "import ensurepip; print(ensurepip.version())"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        uv_sources = bench.builder.sources.describe()
        config = pip_config()
    finally:
        _cleanup(root)

    print(
        f"environment build benchmark: framework {' '.join(FRAMEWORK)} on a {ACCELERATOR} node "
        f"({', '.join(bench.wanted.packages)}, {size / 1e6:.0f} MB installed), "
        f"{args.repeat} repetitions, each variant from an empty cache, in an order that turns "
        "each repetition"
    )
    print(
        f"environment: {machine()} at the end, {load_before:.2f} at the start; the environments' "
        f"Python {bench.python.path} ({bench.python.version}) for pip and uv alike; {uv_version}; "
        f"pip {pip_version} (the fresh venv's, from ensurepip)"
    )
    print(f"  package sources, uv (the builder's): {uv_sources}")
    pip_names = ("index-url", "extra-index-url", "find-links", "constraint")
    pip_shown = "; ".join(f"{name} {config[name]}" for name in pip_names if name in config)
    print(
        f"  package sources, pip: --index-url {bench.index} on its command line; pip config "
        f"list: {pip_shown}"
    )
    shown = sorted(
        f"{name}={value}" for name, value in os.environ.items() if name.startswith(SHOWN_VARIABLES)
    )
    print(
        f"  set in this shell: {' '.join(shown) or 'none'} (pip inherits them; the builder "
        "passes uv none of them, only proxies and CA files)"
    )
    print(
        f"  first, untimed: one build ({warm_up:.1f} s) that makes the hit's cache and the warm "
        "uv cache and reads the wheels into the page cache for every variant alike; pip's "
        "cache, uv's cold cache and every environment folder empty and new each time"
    )
    a, a_plain = statistics.median(seconds["a"]), statistics.median(seconds["a'"])
    print(f"  {'':40s} {'median s':>9s} {'min-max s':>15s} {'a / x':>8s} {Q:>8s}")
    for name, label in NAMES.items():
        values = seconds[name]
        median = statistics.median(values)
        print(
            f"  {label:40s} {median:9.4f} {min(values):7.4f}-{max(values):<7.4f} "
            f"{_ratio(a / median)} {_ratio(a_plain / median)}   "
            f"({', '.join(f'{x:.4f}' for x in values)})"
        )
    print(
        f"  a / x: the speed-up over (a); {Q}: over (a'), like with like (neither compiles "
        "while it builds); of (a) and (a'), creating the venv took a median "
        f"{statistics.median(bench.venv_seconds):.1f} s"
    )
    print(
        "  .pyc files afterwards: "
        + ", ".join(f"{NAMES[n].split()[0]} {bench.pyc[n]}" for n in ("a", "a'", "b", "c"))
        + f"; after the background compile {bench.pyc['compile']}"
    )
    print(
        f"  the builder's background byte-compile (Builder.compile: compileall -j 0 at nice "
        f"19, after the environment is in place; runs can start meanwhile): {compile_seconds:.1f} "
        "s, once, after the repetitions, none of them beside it (the machine is shared: see the "
        "load)"
    )
    c, d = statistics.median(seconds["c"]), statistics.median(seconds["d"])
    first_hit = statistics.median(seconds["d'"])
    print(
        f"goals: (c) at least {GOAL_WARM_SPEEDUP:.0f}x faster than (a): {a / c:.1f}x, "
        f"{'met' if a / c >= GOAL_WARM_SPEEDUP else 'NOT met'}; (d) under {GOAL_HIT_SECONDS} s: "
        f"{d:.4f} s (max {max(seconds['d']):.4f}), "
        f"{'met' if d < GOAL_HIT_SECONDS else 'NOT met'}; a new EnvironmentCache's first hit (d'), "
        f"also a worker's first run more than {PYTHON_KEPT:.0f} s after its last: "
        f"{first_hit:.4f} s"
    )
    return 0


def _ratio(value: float) -> str:
    return f"{value:7.0f}x" if value >= 100 else f"{value:7.1f}x"


def _call(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}\n{tail}")


def _site_packages(env: Path) -> Path:
    found = sorted(env.glob("lib/python*/site-packages"))
    if not found:
        raise RuntimeError(f"{env}: no site-packages")
    return found[0]


def _check_torch(env: Path, by: str) -> None:
    """The environment holds the CPU build of torch 2.13.0 (not another one)."""
    site = _site_packages(env)
    found = sorted(path.name for path in site.glob("torch-*.dist-info"))
    if found != [f"torch-{TORCH_VERSION}.dist-info"]:
        raise RuntimeError(f"{by} installed {found or 'no torch'}, not torch {TORCH_VERSION}")


def _count_pyc(env: Path) -> int:
    """The .pyc files of torch's own modules in the environment."""
    return sum(1 for _ in (_site_packages(env) / "torch").rglob("*.pyc"))


def _quiet() -> None:
    """Before each step: no background compile still running, what was written and deleted
    on the disk."""
    for thread in threading.enumerate():
        if thread.name.startswith("compile-"):
            thread.join()
    os.sync()
    time.sleep(0.5)


def _cleanup(root: Path) -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("compile-"):
            thread.join()
    _remove(root)
    if root.exists():
        print(f"could not remove {root}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
