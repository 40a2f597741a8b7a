"""The principal of a TLS client: subject DN as Java writes it, and Kafka's mapping rules."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ackly.ssl_principal import map_principal, parse_rules, principal_of, subject_dn


def certificate(name: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_subject_is_rfc2253_last_rdn_first_with_escapes() -> None:
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc."),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "eng+ops"),
        x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
    ])
    assert subject_dn(certificate(name)) == r"CN=alice,OU=eng\+ops,O=Acme\, Inc.,C=US"


def test_an_attribute_without_a_keyword_is_its_oid_and_der_hex() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "bob")])
    # IA5String (0x16), 3 bytes: what Java's X500Principal.getName() prints.
    assert subject_dn(certificate(name)) == "CN=bob,1.2.840.113549.1.9.1=#1603614062"


def test_default_rule_keeps_the_dn() -> None:
    der = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carol")]))
    assert principal_of(der, parse_rules("DEFAULT")) == "User:CN=carol"
    assert principal_of(None, parse_rules("DEFAULT")) == "User:ANONYMOUS"


def test_rules_apply_in_order_with_groups_and_case() -> None:
    rules = parse_rules("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, RULE:^CN=([^,]*),O=(.*)$/$2\\/$1/U,DEFAULT")
    assert map_principal(rules, "CN=Svc,OU=ServiceUsers,O=x") == "svc"
    assert map_principal(rules, "CN=dave,O=acme") == "ACME/DAVE"
    assert map_principal(rules, "CN=erin") == "CN=erin"


def test_no_matching_rule_refuses() -> None:
    with pytest.raises(ValueError, match=r"no ssl\.principal\.mapping\.rules rule applies"):
        map_principal(parse_rules("RULE:^CN=admin$/admin/"), "CN=mallory")


@pytest.mark.parametrize("raw", ["RULE:a/b", "RULE:a/b/X", "NOPE", "RULE:(/x/"])
def test_bad_rules_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid rule"):
        parse_rules(raw)
