"""Fixtures for the real-client tests: brokers that show their output when a test fails.

`broker_factory` starts fresh `ackly serve` processes for one test (the plugin's
`ackly_process`, plus the brokers' output printed when the test fails).
`shared_broker` is one process per module, for modules whose tests each use topics (and
transactional ids, groups) of their own: a fresh `ackly serve` costs seconds of start-up on a
loaded machine, often more than the test. Its configs are `shared_broker_configs`, which a
module overrides with a fixture of its own. It is checked alive before each test so that one
crash reads as one failure with the broker's output, not as a cascade of connection errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ackly.testing.broker_process import BrokerProcess

JS_DIR = Path(__file__).parent / "js"
KAFKAJS_DRIVER = JS_DIR / "kafkajs_driver.js"
OUTPUT_TAIL_LINES = 60


def _install_snappy_for_kafka_python() -> None:
    """Give kafka-python a `snappy` module backed by cramjam, which ackly already depends on.

    kafka-python looks for python-snappy (not installed here); python-snappy >= 0.7 is itself
    a thin layer over cramjam's raw snappy, and kafka-python does the xerial framing itself,
    so the bytes on the wire are what kafka-python with python-snappy would send.
    """
    import cramjam
    import kafka.codec

    if kafka.codec.snappy is not None:
        return

    class _Snappy:
        @staticmethod
        def compress(data: Any) -> bytes:
            return bytes(cramjam.snappy.compress_raw(bytes(data)))

        @staticmethod
        def decompress(data: Any) -> bytes:
            return bytes(cramjam.snappy.decompress_raw(bytes(data)))

    kafka.codec.snappy = _Snappy()


_install_snappy_for_kafka_python()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"ackly_report_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"ackly_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def _dump(brokers: list[BrokerProcess]) -> None:
    for b in brokers:
        alive = b.proc is not None and b.proc.poll() is None
        print(f"--- ackly broker {b.bootstrap} ({'running' if alive else 'exited'}), "
              f"last {OUTPUT_TAIL_LINES} lines of output ---")
        print("".join(b.output[-OUTPUT_TAIL_LINES:]), end="")


@pytest.fixture
def broker_factory(
    request: pytest.FixtureRequest, ackly_process: Callable[..., BrokerProcess]
) -> Iterator[Callable[..., BrokerProcess]]:
    """Like `ackly_process`; prints each broker's output if the test failed."""
    started: list[BrokerProcess] = []

    def make(**kwargs: Any) -> BrokerProcess:
        b = ackly_process(**kwargs)
        started.append(b)
        return b

    yield make
    if _failed(request):
        _dump(started)


@pytest.fixture(scope="module")
def shared_broker_configs() -> dict[str, str]:
    """The configs of the module's `shared_broker`: none by default (Kafka's defaults)."""
    return {}


@pytest.fixture(scope="module")
def _module_broker(tmp_path_factory: pytest.TempPathFactory, shared_broker_configs: dict[str, str]
                   ) -> Iterator[BrokerProcess]:
    b = BrokerProcess(str(tmp_path_factory.mktemp("shared") / "data"), configs=shared_broker_configs).start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def shared_broker(request: pytest.FixtureRequest, _module_broker: BrokerProcess
                  ) -> Iterator[BrokerProcess]:
    b = _module_broker
    if b.proc is None or b.proc.poll() is not None:
        _dump([b])
        pytest.fail(f"the module's broker has exited (status {b.proc and b.proc.returncode})")
    yield b
    if _failed(request):
        _dump([b])


# --- kcat and kafkajs ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    return path


@pytest.fixture(scope="session")
def kafkajs() -> Callable[..., Any]:
    """Run one kafkajs operation through node: kafkajs(op, brokers=..., **args) -> JSON result."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the kafkajs tests need Node.js >= 18")
    if not (JS_DIR / "node_modules" / "kafkajs" / "package.json").exists():
        pytest.fail(
            f"kafkajs is not installed in {JS_DIR}/node_modules: run "
            "`cd tests/clients/js && npm ci` (`make slow` and `make test` do this)"
        )

    def run(op: str, *, timeout_s: float = 30.0, **args: Any) -> Any:
        proc = subprocess.run(
            [node, str(KAFKAJS_DRIVER)], input=json.dumps({"op": op, **args}),
            capture_output=True, text=True, timeout=timeout_s, cwd=JS_DIR,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"kafkajs {op} failed (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
            )
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1])["result"]

    return run
