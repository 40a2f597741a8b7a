"""SCRAM credentials in the cluster metadata, and the KIP-554 APIs that change and show them,
against an in-process BrokerNode through encoded request frames."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import scramp
from tests.unit.broker.test_admin_apis import call, entity, make_node

from ackly.broker.node import BrokerNode
from ackly.cluster.metadata import ClusterMetadata, KeyKind, KeySpace
from ackly.cluster.scram import CredentialError, ScramCredential
from ackly.cluster.store import KeyValue
from ackly.errors import ErrorCode

DESCRIBE, ALTER = 50, 51
SHA256, SHA512 = 1, 2


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    yield n
    n.close()


def salted(password: str, salt: bytes, iterations: int, mechanism: str = "sha512") -> bytes:
    return hashlib.pbkdf2_hmac(mechanism, password.encode(), salt, iterations)


def upsertion(name: str, mechanism: int = SHA512, iterations: int = 4096, password: str = "pw",
              salt: bytes = b"0123456789abcdef") -> Any:
    digest = "sha512" if mechanism == SHA512 else "sha256"
    return entity(ALTER, 0, "ScramCredentialUpsertion", name=name, mechanism=mechanism, iterations=iterations,
                  salt=salt, salted_password=salted(password, salt, iterations, digest))


def alter(node: BrokerNode, upsertions: list[Any] = (), deletions: list[Any] = ()) -> dict[str, tuple[Any, Any]]:
    response = call(node, ALTER, 0, deletions=tuple(deletions), upsertions=tuple(upsertions))
    return {r.user: (r.error_code, r.error_message) for r in response.results}


def describe(node: BrokerNode, users: list[str] | None) -> Any:
    names = None if users is None else tuple(entity(DESCRIBE, 0, "UserName", name=u) for u in users)
    return call(node, DESCRIBE, 0, users=names)


def test_credential_from_password_matches_only_that_password() -> None:
    credential = ScramCredential.from_password("alice", "SCRAM-SHA-512", "s3cret")
    assert credential.matches_password("s3cret")
    assert not credential.matches_password("s3cret ")
    assert not credential.matches_password("")
    assert ScramCredential.decode(credential.encode()) == credential
    assert b"s3cret" not in credential.encode()


def test_salted_password_gives_the_same_keys_as_the_password() -> None:
    """KIP-554's upsertion (the client salts) and scramp's derivation agree."""
    salt = b"saltsaltsalt"
    from_password = ScramCredential.from_password("bob", "SCRAM-SHA-256", "pw", 4096, salt=salt)
    from_salted = ScramCredential.from_salted_password(
        "bob", "SCRAM-SHA-256", salt, salted("pw", salt, 4096, "sha256"), 4096)
    assert from_salted == from_password
    salt_out, stored, server, count = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        "pw", iteration_count=4096, salt=salt)
    assert from_salted.auth_info() == (salt_out, stored, server, count)


@pytest.mark.parametrize("iterations", [4095, 16385])
def test_iterations_out_of_bounds_are_refused(iterations: int) -> None:
    with pytest.raises(CredentialError, match="iterations"):
        ScramCredential.from_password("a", "SCRAM-SHA-256", "pw", iterations)


def test_keys_quote_user_names_and_parse_back() -> None:
    keys = KeySpace()
    key = keys.scram("SCRAM-SHA-512", "a/b%c d")
    assert key == "/ackly/scram/SCRAM-SHA-512/a%2Fb%25c%20d"
    parsed = keys.parse(key)
    assert parsed is not None and parsed.kind is KeyKind.SCRAM
    assert (parsed.user, parsed.topic) == ("a/b%c d", "SCRAM-SHA-512")
    credential = ScramCredential.from_password("a/b%c d", "SCRAM-SHA-512", "pw")
    view = ClusterMetadata.from_kvs([KeyValue(key, credential.encode(), 2, 2, 1)], 2)
    assert view.scram_credentials == {("a/b%c d", "SCRAM-SHA-512"): credential}


def test_alter_then_describe(node: BrokerNode) -> None:
    assert alter(node, [upsertion("alice"), upsertion("alice", SHA256, 8192), upsertion("bob")]) == {
        "alice": (ErrorCode.none, None), "bob": (ErrorCode.none, None)}
    stored = node.member.metadata.scram_credentials[("alice", "SCRAM-SHA-512")]
    assert stored.matches_password("pw") and not stored.matches_password("other")
    response = describe(node, None)
    assert response.error_code == ErrorCode.none
    infos = {r.user: [(int(i.mechanism), int(i.iterations)) for i in r.credential_infos] for r in response.results}
    assert infos == {"alice": [(SHA256, 8192), (SHA512, 4096)], "bob": [(SHA512, 4096)]}

    assert alter(node, deletions=[entity(ALTER, 0, "ScramCredentialDeletion", name="alice", mechanism=SHA256)]) == {
        "alice": (ErrorCode.none, None)}
    response = describe(node, ["alice", "nobody", "bob", "bob"])
    by_user = {r.user: r for r in response.results}
    assert [(int(i.mechanism)) for i in by_user["alice"].credential_infos] == [SHA512]
    assert by_user["nobody"].error_code == ErrorCode.resource_not_found
    assert by_user["bob"].error_code == ErrorCode.duplicate_resource


def test_credentials_survive_a_restart(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data")
    alter(node, [upsertion("carol", password="x")])
    node.close()
    again = make_node(tmp_path / "data")
    try:
        assert again.member.metadata.scram_credentials[("carol", "SCRAM-SHA-512")].matches_password("x")
    finally:
        again.close()


def test_alter_refusals_follow_kafka(node: BrokerNode) -> None:
    deletion = entity(ALTER, 0, "ScramCredentialDeletion", name="ghost", mechanism=SHA512)
    results = alter(node, [
        upsertion("few", iterations=1000), upsertion("many", iterations=20000), upsertion(""),
        upsertion("twice"), upsertion("twice"), upsertion("odd", mechanism=7),
        upsertion("ok"),
    ], [deletion])
    assert results["few"][0] == ErrorCode.unacceptable_credential and "few iterations" in results["few"][1]
    assert results["many"][0] == ErrorCode.unacceptable_credential
    assert results[""][0] == ErrorCode.unacceptable_credential
    assert results["twice"][0] == ErrorCode.duplicate_resource
    assert results["odd"][0] == ErrorCode.unsupported_sasl_mechanism
    assert results["ghost"][0] == ErrorCode.resource_not_found
    assert results["ok"] == (ErrorCode.none, None)
    assert {user for user, _ in node.member.metadata.scram_credentials} == {"ok"}
