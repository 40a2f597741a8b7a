"""The example project's own tests (examples/word_count), as its users run them: in a fresh
pytest process rooted in the example, once as they are and once on two pytest-xdist workers
(each worker its own brokers, ports and temporary directories). Bounded in time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "word_count"
TIMEOUT_S = 240


@pytest.mark.slow
@pytest.mark.clients
@pytest.mark.parametrize("workers", [None, 2], ids=["serial", "xdist-2"])
def test_example_project_tests_pass(workers: int | None, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base")]
    if workers is not None:
        args += ["-n", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    proc = subprocess.run(args, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "6 passed" in proc.stdout, proc.stdout[-3000:]
    if workers is not None:
        assert "bringing up nodes" in proc.stdout, proc.stdout[-3000:]  # xdist ran the tests
