"""pytest plugin: brokers for tests (in-process, or real `ackly serve` processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ackly.testing.broker_process import BrokerProcess
    from ackly.testing.fault_proxy import FaultProxy
    from ackly.testing.inprocess import InProcessBroker


@pytest.fixture
def ackly_broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    """A broker in this process on a free port, data in a temporary directory."""
    from ackly.testing.inprocess import InProcessBroker

    broker = InProcessBroker(str(tmp_path / "data")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def ackly_process(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """A factory of `ackly serve` processes; all are killed at the end of the test."""
    from ackly.testing.broker_process import BrokerProcess

    started: list[BrokerProcess] = []

    def make(name: str = "data", **kwargs: Any) -> BrokerProcess:
        proc = BrokerProcess(str(tmp_path / name), **kwargs).start()
        started.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """A factory of fault proxies: `fault_proxy("127.0.0.1:9092") -> FaultProxy`, started.

    Keyword arguments go to `FaultProxy`. Every proxy is stopped at the end of the test.
    """
    from ackly.testing.fault_proxy import FaultProxy, parse_address

    started: list[FaultProxy] = []

    def make(upstream_bootstrap: str, **kwargs: Any) -> FaultProxy:
        first = upstream_bootstrap.split(",")[0]
        proxy = FaultProxy(upstream=parse_address(first), **kwargs).start()
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.stop()
