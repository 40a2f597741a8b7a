"""The server side of the SASL exchange (broker/sasl.py) against scramp's client side, and
through encoded SaslHandshake / SaslAuthenticate frames on an in-process BrokerNode."""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path
from typing import Any

import pytest
import scramp
from tests.unit.broker.test_admin_apis import NOW_MS, call, make_node

from ackly.broker.node import BrokerNode
from ackly.broker.sasl import SaslRefused, SaslSession, SaslState
from ackly.cluster.scram import ScramCredential
from ackly.errors import ErrorCode

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_nonces = itertools.count()


def new_nonce() -> str:
    return f"servernonce{next(_nonces)}"


def credentials(user: str = "alice", password: str = "wonderland") -> dict[tuple[str, str], ScramCredential]:
    return {(user, m): ScramCredential.from_password(user, m, password) for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")}


def session(reauth_ms: int = 0) -> SaslSession:
    return SaslSession(MECHANISMS, new_nonce=new_nonce, max_reauth_ms=reauth_ms)


def scram_login(s: SaslSession, creds: Any, mechanism: str, user: str, password: str, now_ms: int = 0) -> Any:
    """Run a whole SCRAM exchange with scramp's client; the last step's result."""
    assert s.handshake(mechanism) is ErrorCode.none
    client = scramp.ScramClient([mechanism], user, password)
    first = s.authenticate(client.get_client_first().encode(), creds, now_ms)
    if first.error is not ErrorCode.none:
        return first
    client.set_server_first(first.challenge.decode())
    final = s.authenticate(client.get_client_final().encode(), creds, now_ms)
    if final.error is ErrorCode.none:
        client.set_server_final(final.challenge.decode())  # the client checks the server's signature
    return final


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_with_the_right_password_authenticates(mechanism: str) -> None:
    s = session()
    s.admit(18, 0)
    s.admit(17, 0)
    result = scram_login(s, credentials(), mechanism, "alice", "wonderland")
    assert result.error is ErrorCode.none
    assert s.state is SaslState.AUTHENTICATED and s.principal == "User:alice"
    s.admit(0, 1)  # Produce now admitted


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "wonderland")])
def test_scram_wrong_password_or_unknown_user_fails(user: str, password: str) -> None:
    s = session()
    result = scram_login(s, credentials(), "SCRAM-SHA-512", user, password)
    assert result.error is ErrorCode.sasl_authentication_failed
    assert result.message and "invalid credentials" in result.message
    assert s.state is SaslState.FAILED and s.principal == "User:ANONYMOUS"
    with pytest.raises(SaslRefused):
        s.admit(36, 0)


def test_scram_bad_proof_and_bad_nonce_fail() -> None:
    creds = credentials()
    for tamper in ("proof", "nonce"):
        s = session()
        assert s.handshake("SCRAM-SHA-256") is ErrorCode.none
        client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "wonderland")
        first = s.authenticate(client.get_client_first().encode(), creds, 0)
        client.set_server_first(first.challenge.decode())
        final = client.get_client_final()
        attrs = dict(part.split("=", 1) for part in final.split(","))
        if tamper == "proof":
            attrs["p"] = ("A" if attrs["p"][0] != "A" else "B") + attrs["p"][1:]
        else:
            attrs["r"] = attrs["r"][:-1] + ("x" if attrs["r"][-1] != "x" else "y")
        forged = ",".join(f"{k}={v}" for k, v in attrs.items())
        result = s.authenticate(forged.encode(), creds, 0)
        assert result.error is ErrorCode.sasl_authentication_failed, tamper
        assert s.state is SaslState.FAILED


def test_plain_checks_the_stored_scram_credential() -> None:
    creds = credentials()
    ok = session()
    assert ok.handshake("PLAIN") is ErrorCode.none
    assert ok.authenticate(b"\x00alice\x00wonderland", creds, 0).error is ErrorCode.none
    assert ok.principal == "User:alice"
    for token in (b"\x00alice\x00nope", b"\x00bob\x00wonderland", b"alice\x00wonderland",
                  b"eve\x00alice\x00wonderland", b"\x00alice\x00", b"\xff\x00alice\x00wonderland"):
        s = session()
        s.handshake("PLAIN")
        result = s.authenticate(token, creds, 0)
        assert result.error is ErrorCode.sasl_authentication_failed, token
        assert s.principal == "User:ANONYMOUS"


def test_only_the_exchange_before_authentication() -> None:
    s = session()
    with pytest.raises(SaslRefused, match="during SASL handshake"):
        s.admit(3, 0)  # Metadata
    s = session()
    s.handshake("PLAIN")
    with pytest.raises(SaslRefused, match="during SASL authentication"):
        s.admit(18, 0)  # even ApiVersions, once the mechanism is chosen (as Kafka)


def test_a_mechanism_not_enabled_is_refused() -> None:
    s = SaslSession(("SCRAM-SHA-512",), new_nonce=new_nonce)
    assert s.handshake("PLAIN") is ErrorCode.unsupported_sasl_mechanism
    assert s.state is SaslState.FAILED


def test_session_expiry_and_reauthentication() -> None:
    creds = credentials()
    s = session(reauth_ms=1000)
    result = scram_login(s, creds, "SCRAM-SHA-512", "alice", "wonderland", now_ms=0)
    assert result.session_lifetime_ms == 1000 and s.session_expiry_ms == 1000
    s.admit(0, 999)
    with pytest.raises(SaslRefused, match="expired"):
        s.admit(0, 1000)
    # KIP-368: a new exchange on the same connection renews the session.
    assert scram_login(s, creds, "SCRAM-SHA-512", "alice", "wonderland", now_ms=1000).error is ErrorCode.none
    assert s.session_expiry_ms == 2000
    s.admit(0, 1500)


def test_reauthentication_cannot_change_the_principal() -> None:
    creds = {**credentials(), **credentials("bob", "builder")}
    s = session(reauth_ms=1000)
    assert scram_login(s, creds, "SCRAM-SHA-256", "alice", "wonderland").error is ErrorCode.none
    assert scram_login(s, creds, "SCRAM-SHA-256", "bob", "builder").error is ErrorCode.sasl_authentication_failed
    assert s.state is SaslState.FAILED


# --- through frames ---------------------------------------------------------------------------

@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    yield n
    n.close()


def test_handlers_through_frames(node: BrokerNode) -> None:
    s = session()
    with pytest.raises(SaslRefused):  # Metadata before authentication: the connection closes
        call(node, 3, 4, sasl_session=s, topics=None, allow_auto_topic_creation=False)
    s = session()
    assert call(node, 18, 2, sasl_session=s).error_code == ErrorCode.none
    handshake = call(node, 17, 1, sasl_session=s, mechanism="SCRAM-SHA-512")
    assert handshake.error_code == ErrorCode.none and set(handshake.mechanisms) == set(MECHANISMS)
    client = scramp.ScramClient(["SCRAM-SHA-512"], "alice", "wonderland")
    first = call(node, 36, 2, sasl_session=s, auth_bytes=client.get_client_first().encode())
    assert first.error_code == ErrorCode.sasl_authentication_failed  # no such user yet
    assert first.error_message and "SCRAM-SHA-512" in first.error_message

    add_user(node, "alice", "wonderland")
    s = session(reauth_ms=60_000)
    call(node, 17, 1, sasl_session=s, mechanism="SCRAM-SHA-512")
    client = scramp.ScramClient(["SCRAM-SHA-512"], "alice", "wonderland")
    first = call(node, 36, 2, sasl_session=s, auth_bytes=client.get_client_first().encode())
    client.set_server_first(first.auth_bytes.decode())
    final = call(node, 36, 2, sasl_session=s, auth_bytes=client.get_client_final().encode())
    assert final.error_code == ErrorCode.none
    assert final.session_lifetime == datetime.timedelta(milliseconds=60_000)
    client.set_server_final(final.auth_bytes.decode())
    assert s.principal == "User:alice"


def test_sasl_requests_on_a_listener_without_sasl(node: BrokerNode) -> None:
    assert call(node, 17, 1, mechanism="PLAIN").error_code == ErrorCode.illegal_sasl_state
    assert call(node, 36, 1, auth_bytes=b"x").error_code == ErrorCode.illegal_sasl_state


def add_user(node: BrokerNode, user: str, password: str) -> None:
    credential = ScramCredential.from_password(user, "SCRAM-SHA-512", password)
    node.member.put_scram_credential(credential, NOW_MS)
    node.pump(NOW_MS)
    assert (user, "SCRAM-SHA-512") in node.member.metadata.scram_credentials
