"""A broker's SASL client side toward its peers (server/peer_sasl.py) against the server side
of an in-process node (broker/sasl.py through the SASL handlers), request by request."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
from tests.unit.broker.test_admin_apis import NOW_MS, call, make_node

from ackly.broker.node import BrokerNode
from ackly.broker.sasl import SaslSession
from ackly.cluster.scram import ScramCredential
from ackly.server.peer_sasl import PeerSasl, authenticate

_nonces = itertools.count()


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        n.member.put_scram_credential(ScramCredential.from_password("broker", mechanism, "broker-pw"), NOW_MS)
    n.pump(NOW_MS)
    yield n
    n.close()


def run(node: BrokerNode, session: SaslSession, sasl: PeerSasl) -> None:
    async def exchange(request: Any) -> Any:
        fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
        return call(node, int(request.__api_key__), int(request.__version__), sasl_session=session, **fields)

    asyncio.run(authenticate(exchange, sasl))


def session(*mechanisms: str) -> SaslSession:
    return SaslSession(mechanisms or ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                       new_nonce=lambda: f"n{next(_nonces)}")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_right_credentials_authenticate(node: BrokerNode, mechanism: str) -> None:
    s = session()
    run(node, s, PeerSasl(mechanism, "broker", "broker-pw"))
    assert s.principal == "User:broker"


def test_a_wrong_password_is_a_failed_connect(node: BrokerNode) -> None:
    with pytest.raises(ConnectionError, match="SASL_AUTHENTICATION_FAILED"):
        run(node, session(), PeerSasl("SCRAM-SHA-512", "broker", "nope"))


def test_a_mechanism_the_peer_does_not_enable_is_a_failed_connect(node: BrokerNode) -> None:
    with pytest.raises(ConnectionError, match=r"UNSUPPORTED_SASL_MECHANISM.*SCRAM-SHA-256"):
        run(node, session("SCRAM-SHA-256"), PeerSasl("PLAIN", "broker", "broker-pw"))
