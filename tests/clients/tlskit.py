"""Certificates made at test time (trustme) and the broker and client settings that use them.

One CA signs the brokers' certificate (for 127.0.0.1 and localhost, usable as a server and as
a client certificate, so brokers can present it to each other) and the clients' ones; a
second CA signs a certificate that no broker trusts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class ClientCert:
    cert: str  # PEM file: the certificate chain
    key: str  # PEM file: the private key
    both: str  # PEM file: chain and key together


@dataclass(frozen=True)
class TlsFiles:
    ca: str  # the CA certificate (PEM) clients and brokers trust
    broker_keystore: str  # the broker's chain and key in one PEM file (ssl.keystore.location)
    broker_chain: str  # the broker's certificate chain alone (PEM text, for the inline keys)
    broker_key: str  # the broker's private key alone (PEM text)
    alice: ClientCert  # CN=alice,OU=clients,O=ackly tests
    stranger: ClientCert  # signed by a CA no broker trusts

    def broker_configs(self, listener: str = "", *, client_auth: str = "none",
                       rules: str | None = None) -> dict[str, str]:
        """The ssl.* keys of a broker (for one listener with `listener`, Kafka's prefix)."""
        prefix = f"listener.name.{listener.lower()}." if listener else ""
        configs = {
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.location": self.broker_keystore,
            f"{prefix}ssl.truststore.type": "PEM",
            f"{prefix}ssl.truststore.location": self.ca,
            f"{prefix}ssl.client.auth": client_auth,
        }
        if rules is not None:
            configs[f"{prefix}ssl.principal.mapping.rules"] = rules
        return configs


def _client(ca: trustme.CA, directory: Path, name: str, common_name: str) -> ClientCert:
    issued = ca.issue_cert(f"{name}@clients.test", common_name=common_name,
                           organization_name="ackly tests", organization_unit_name="clients")
    cert, key, both = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for blob in issued.cert_chain_pems[1:]:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    issued.private_key_and_cert_chain_pem.write_to_path(str(both))
    return ClientCert(str(cert), str(key), str(both))


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="ackly tests")
    ca_path = directory / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    broker = ca.issue_cert("127.0.0.1", "localhost", common_name="broker",
                           organization_name="ackly tests", organization_unit_name="brokers")
    keystore = directory / "broker.pem"
    broker.private_key_and_cert_chain_pem.write_to_path(str(keystore))
    chain = b"".join(blob.bytes() for blob in broker.cert_chain_pems).decode()
    return TlsFiles(
        ca=str(ca_path), broker_keystore=str(keystore), broker_chain=chain,
        broker_key=broker.private_key_pem.bytes().decode(),
        alice=_client(ca, directory, "alice", "alice"),
        stranger=_client(trustme.CA(), directory, "stranger", "stranger"),
    )
