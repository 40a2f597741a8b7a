"""The client side of SASL for connections to the other brokers, when the inter-broker listener
uses SASL_PLAINTEXT or SASL_SSL.

Owns: which mechanism and credentials a broker authenticates with to its peers, and the
exchange itself on a freshly opened peer connection (server/peers.py runs it before the
connection takes requests). The keys are Kafka's: `sasl.mechanism.inter.broker.protocol`
(one of the inter-broker listener's enabled mechanisms) and `sasl.jaas.config`, usually set for
that listener (`listener.name.<name>.sasl.jaas.config`), of which only the `username="..."`
and `password="..."` options are read (the login module named in it is not: ackly has one of
each mechanism). SCRAM runs with scramp's client, which also checks the server's signature, so
a peer that does not know the credential is not trusted either. Every failure raises
ConnectionError with the reason; the link fails its requests and retries after its backoff.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from ackly.config import BrokerConfig
from ackly.errors import ConfigError, ErrorCode
from ackly.listeners import ListenerSet

if TYPE_CHECKING:
    pass

MECHANISM_KEY = "sasl.mechanism.inter.broker.protocol"
_OPTION = re.compile(r'\b(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')

Exchange = Callable[[Any], Awaitable[Any]]  # one request written, its response read


@dataclass(frozen=True)
class PeerSasl:
    mechanism: str
    username: str
    password: str

    def __repr__(self) -> str:  # never the password in a log line
        return f"PeerSasl({self.mechanism}, {self.username!r})"


def peer_sasl(config: BrokerConfig, listeners: ListenerSet) -> PeerSasl | None:
    """What this broker authenticates to its peers with; None if the inter-broker listener has
    no SASL. ConfigError, naming the key, when it has and the settings cannot work."""
    inter = listeners.inter_broker
    if not inter.uses_sasl:
        return None
    mechanism = str(config.get(MECHANISM_KEY))
    enabled = config.sasl_enabled_mechanisms(inter.name)
    if mechanism not in enabled:
        raise ConfigError(MECHANISM_KEY, f"{mechanism} is not enabled on the inter-broker listener {inter.name} "
                                         f"(sasl.enabled.mechanisms: {', '.join(enabled)})")
    key = f"listener.name.{inter.name.lower()}.sasl.jaas.config"
    jaas = str(config.for_listener(inter.name, "sasl.jaas.config"))
    options = {name: value.replace('\\"', '"').replace("\\\\", "\\") for name, value in _OPTION.findall(jaas)}
    if not options.get("username") or not options.get("password"):
        raise ConfigError(key, f"the inter-broker listener {inter.name} uses SASL: give this broker's own "
                               'username="..." and password="..." (a user made with ackly users set)')
    return PeerSasl(mechanism, options["username"], options["password"])


async def authenticate(exchange: Exchange, sasl: PeerSasl) -> None:
    """SaslHandshake v1, then SaslAuthenticate v2 steps; ConnectionError on any failure."""
    handshake = await exchange(SaslHandshakeRequest(mechanism=sasl.mechanism))
    if handshake.error_code != ErrorCode.none:
        raise ConnectionError(f"SaslHandshake {sasl.mechanism}: {ErrorCode(handshake.error_code).name.upper()} "
                              f"(the peer enables {', '.join(handshake.mechanisms)})")

    async def step(token: bytes) -> bytes:
        answer = await exchange(SaslAuthenticateRequest(auth_bytes=token))
        if answer.error_code != ErrorCode.none:
            raise ConnectionError(f"SASL {sasl.mechanism} as {sasl.username!r}: "
                                  f"{ErrorCode(answer.error_code).name.upper()}: {answer.error_message}")
        return bytes(answer.auth_bytes)

    if sasl.mechanism == "PLAIN":
        await step(f"\x00{sasl.username}\x00{sasl.password}".encode())
        return
    import scramp  # on first use: importing it costs start-up time (the pytest fixture's)
    try:
        client = scramp.ScramClient([sasl.mechanism], sasl.username, sasl.password)
        client.set_server_first((await step(client.get_client_first().encode())).decode())
        client.set_server_final((await step(client.get_client_final().encode())).decode())
    except (scramp.ScramException, UnicodeDecodeError) as exc:
        raise ConnectionError(f"SASL {sasl.mechanism} as {sasl.username!r}: {exc}") from None
