"""What the pytest fixtures cost a user's suite: setup and teardown of `ackly_broker`, the import
of the in-process broker, and the collection time the plugin adds to a suite that does not use it.

Run: `.venv/bin/python bench/fixture.py [--samples N] [--json PATH]`

Every sample is a fresh interpreter, as in a user's first test:
- setup / teardown: `pytest` runs one generated test that takes `ackly_broker` and sends one
  ApiVersions request to it (so "setup" ends with a broker that answers a client); a conftest
  records pytest's own setup and teardown durations of that test. Setup includes importing
  ackly's broker (the fixture imports it lazily) and creating the temporary directory.
- first request: the same test's call phase (connect + ApiVersions round trip).
- setup CPU: the CPU time of the setup (every thread of the process): what the setup costs
  on a machine with a free core, which the wall time under load is not.
- import: `import ackly.testing.inprocess` in `python -c`, timed with perf_counter.
- collection: `pytest --collect-only` of a file with one empty test, with the plugin loaded
  (as the `pytest11` entry point loads it) and with `-p no:ackly`; the difference is what the
  plugin costs a suite that never asks for a broker.

Medians of `--samples` (default 7), with min and max. The machine's load average is printed
before and after: the numbers are noisy when other work runs on the machine.

The samples run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed from their
environment, one uncounted warm-up run first), as an installed package has its bytecode: with
the variable set, every interpreter compiles ackly's sources again, which is most of the
import time (`--no-bytecode` measures that case).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SETUP_S = 0.3
TARGET_TEARDOWN_S = 0.1

CONFTEST = """
import json, os, time
import pytest

def _record(entry):
    with open(os.environ["ACKLY_BENCH_OUT"], "a") as out:
        out.write(json.dumps(entry) + "\\n")

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    started = time.process_time()
    yield
    _record({"when": "setup_cpu", "duration": time.process_time() - started})

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    started = time.process_time()
    yield
    _record({"when": "teardown_cpu", "duration": time.process_time() - started})

def pytest_runtest_logreport(report):
    _record({"when": report.when, "duration": report.duration})
"""

TEST_BROKER = """
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from ackly.testing.wire import WireClient

def test_broker_answers(ackly_broker):
    with WireClient(ackly_broker.bootstrap) as client:
        response = client.request(ApiVersionsRequest(client_software_name="bench",
                                                     client_software_version="1"))
    assert response.error_code == 0
"""

TEST_EMPTY = """
def test_nothing():
    pass
"""


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _pytest(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"pytest {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def _summary(name: str, values: list[float], target: float | None = None) -> dict[str, object]:
    median = statistics.median(values)
    verdict = ""
    if target is not None:
        verdict = f" (target < {target * 1000:.0f} ms: {'met' if median < target else 'NOT met'})"
    print(f"{name:<38} median {median * 1000:7.1f} ms   min {min(values) * 1000:7.1f}   "
          f"max {max(values) * 1000:7.1f}{verdict}")
    return {"name": name, "median_s": median, "min_s": min(values), "max_s": max(values), "samples": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-bytecode", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE=1: every sample compiles ackly's sources")
    args = parser.parse_args()

    print(f"load average before: {_load()}  (cores: {os.cpu_count()})")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="ackly-bench-fixture-") as tmp:
        root = Path(tmp)
        (root / "conftest.py").write_text(CONFTEST)
        (root / "test_broker.py").write_text(TEST_BROKER)
        (root / "test_empty.py").write_text(TEST_EMPTY)
        (root / "pytest.ini").write_text("[pytest]\n")
        env = {**os.environ, "ACKLY_BENCH_OUT": str(root / "durations.jsonl")}
        env.pop("PYTEST_ADDOPTS", None)
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        print(f"bytecode cache: {'off (sources compiled every run)' if args.no_bytecode else 'on'}")
        _pytest(["test_broker.py"], root, env)  # warm-up: bytecode written, not counted

        setups: list[float] = []
        setup_cpus: list[float] = []
        teardowns: list[float] = []
        calls: list[float] = []
        for _ in range(args.samples):
            (root / "durations.jsonl").unlink(missing_ok=True)
            _pytest(["test_broker.py"], root, env)
            phases = {}
            for line in (root / "durations.jsonl").read_text().splitlines():
                entry = json.loads(line)
                phases[entry["when"]] = entry["duration"]
            setups.append(phases["setup"])
            setup_cpus.append(phases["setup_cpu"])
            calls.append(phases["call"])
            teardowns.append(phases["teardown"])
        rows.append(_summary("ackly_broker setup (incl. imports)", setups, TARGET_SETUP_S))
        rows.append(_summary("  of which CPU time", setup_cpus))
        rows.append(_summary("first request (connect + ApiVersions)", calls))
        rows.append(_summary("ackly_broker teardown", teardowns, TARGET_TEARDOWN_S))

        imports: list[float] = []
        code = ("import time; t = time.perf_counter(); import ackly.testing.inprocess; "
                "print(time.perf_counter() - t)")
        for _ in range(args.samples):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True, timeout=60, env=env).stdout
            imports.append(float(out.strip()))
        rows.append(_summary("import ackly.testing.inprocess", imports))

        with_plugin: list[float] = []
        without_plugin: list[float] = []
        for _ in range(args.samples):
            with_plugin.append(_pytest(["--collect-only", "test_empty.py"], root, env))
            without_plugin.append(_pytest(["--collect-only", "-p", "no:ackly", "test_empty.py"], root, env))
        rows.append(_summary("collect an empty test, plugin loaded", with_plugin))
        rows.append(_summary("collect an empty test, -p no:ackly", without_plugin))
        difference = statistics.median(with_plugin) - statistics.median(without_plugin)
        print(f"{'plugin cost at collection':<38} {difference * 1000:+7.1f} ms (difference of medians)")
    print(f"load average after: {_load()}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
