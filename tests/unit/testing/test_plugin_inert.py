"""The pytest plugin stays inert until a fixture is asked for: loading it (as every pytest run
in an environment with ackly does) imports none of the broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("ackly.server", "ackly.broker", "ackly.testing.inprocess", "kio", "asyncio", "grpc", "aetcd")


def test_loading_the_plugin_imports_nothing_of_the_broker() -> None:
    code = (
        "import sys, pytest; before = set(sys.modules); import ackly.testing.plugin; "
        f"heavy = sorted(m for m in set(sys.modules) - before if m.startswith({HEAVY!r})); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_suite_without_the_fixtures_collects_and_runs_without_importing_the_broker(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        f"    heavy = sorted(m for m in sys.modules if m.startswith({HEAVY[:3]!r}))\n"
        "    print('HEAVY', heavy)\n"
    )
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    # And the plugin was loaded: its marker is registered.
    markers = subprocess.run([sys.executable, "-m", "pytest", "--markers"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert "ackly_config" in markers.stdout
