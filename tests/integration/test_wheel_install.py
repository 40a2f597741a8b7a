"""The built wheel, installed alone into a fresh virtualenv, runs `ackly verify`.

This is what `pip install ackly` gives a user: the package's own files and its declared
dependencies, nothing from the development environment. The wheel is built from a copy of
this checkout's sources (`pip wheel --no-deps`), the virtualenv is made without pip (the running pip installs
into it with `--python`, which saves seeding one), and the dependencies come from the package
index pip is configured with (its cache makes that quick after the first time). Then one short
verify run: a one-broker cluster of `ackly serve` processes started by the installed package,
a workload through confluent-kafka, a verdict. It costs about a minute on a loaded machine,
most of it building the wheel and installing the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 600  # a cold pip cache downloads every dependency


def _clean_env() -> dict[str, str]:
    """The environment without anything that points Python at this checkout or its venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    return env


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_the_wheel_installed_in_a_fresh_virtualenv_runs_verify(tmp_path: Path) -> None:
    if shutil.which("etcd") is None:
        pytest.skip("ackly verify starts its cluster with etcd, which is not installed")
    timings: dict[str, float] = {}
    started = time.monotonic()
    # Built from a copy: setuptools' build/ directory in the checkout could hold modules that
    # no longer exist (and would ship them), and parallel runs would share it.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    wheel_dir = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source), "-w", str(wheel_dir)],
                   check=True, capture_output=True, timeout=INSTALL_TIMEOUT_S, cwd=tmp_path)
    [wheel] = wheel_dir.glob("ackly-*.whl")
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                                str(wheel)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                               env=_clean_env(), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    timings["install"] = time.monotonic() - started

    env = _clean_env()
    where = subprocess.run([str(python), "-c", "import ackly; print(ackly.__file__)"], capture_output=True,
                           text=True, check=True, env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(fresh)), where.stdout

    started = time.monotonic()
    verify = subprocess.run([str(fresh / "bin" / "ackly"), "verify", "--semantics", "at-least-once",
                             "--duration", "5", "--brokers", "1", "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    timings["verify"] = time.monotonic() - started
    print("wheel test cost: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
    assert "at-least-once: PASS" in verify.stdout
    assert "%3|" not in verify.stderr and "Connection refused" not in verify.stderr
    assert (tmp_path / "report" / "summary.json").exists()
