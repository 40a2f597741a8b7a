"""SCRAM credentials as the cluster metadata keeps them: salted and iterated, never the password.

Owns: `ScramCredential` (one user's credential for one mechanism: salt, stored key, server key,
iterations; RFC 5802 s.3), its JSON encoding in the store, and the two ways a credential is
made: from a password (`ackly users set`, through scramp's key derivation) or from a salted
password (AlterUserScramCredentials, KIP-554: the client salts and iterates, the broker never
sees the password). A credential lives under `<root>/scram/<mechanism>/<quoted user>`
(metadata.KeySpace builds the key), one key per (user, mechanism) as Kafka's
UserScramCredentialRecord, so changing one mechanism never rewrites the other.

Invariants: the mechanism is one of SCRAM_MECHANISMS; iterations are within Kafka's bounds
(ScramMechanism's 4096 minimum, 16384 maximum), checked on creation and on decode; stored and
server keys are as long as the mechanism's digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.errors import AcklyError

if TYPE_CHECKING:
    import scramp  # noqa: F401  (types only)

VALUE_VERSION = 1

# KIP-554's mechanism numbers (Kafka's ScramMechanism enum; 0 is UNKNOWN).
SCRAM_MECHANISMS: Mapping[str, int] = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_NAMES: Mapping[int, str] = {number: name for name, number in SCRAM_MECHANISMS.items()}
_DIGESTS: Mapping[str, Callable[..., Any]] = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}

# Kafka's ScramMechanism bounds for both SHA mechanisms.
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 4096  # kafka-configs' default when a credential names no iterations


class CredentialError(AcklyError):
    """A credential that cannot be made or read (bad mechanism, iterations, or a broken value)."""


def check_mechanism(mechanism: str) -> None:
    if mechanism not in SCRAM_MECHANISMS:
        raise CredentialError(f"unknown SCRAM mechanism {mechanism!r} (known: {', '.join(SCRAM_MECHANISMS)})")


def iterations_problem(iterations: int) -> str | None:
    if iterations < MIN_ITERATIONS:
        return f"too few iterations: {iterations} < {MIN_ITERATIONS}"
    if iterations > MAX_ITERATIONS:
        return f"too many iterations: {iterations} > {MAX_ITERATIONS}"
    return None


@dataclass(frozen=True)
class ScramCredential:
    user: str
    mechanism: str
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def __post_init__(self) -> None:
        check_mechanism(self.mechanism)
        if (problem := iterations_problem(self.iterations)) is not None:
            raise CredentialError(problem)
        size = _DIGESTS[self.mechanism]().digest_size
        if len(self.stored_key) != size or len(self.server_key) != size or not self.salt:
            raise CredentialError(f"credential of {self.user!r} for {self.mechanism}: bad key sizes or salt")

    @classmethod
    def from_password(
        cls, user: str, mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS,
        salt: bytes | None = None,
    ) -> ScramCredential:
        """Salt and iterate a password (scramp's derivation; a fresh random salt by default)."""
        import scramp  # on first use: importing it costs start-up time (the pytest fixture's)
        check_mechanism(mechanism)
        if (problem := iterations_problem(iterations)) is not None:
            raise CredentialError(problem)
        salt_out, stored_key, server_key, count = scramp.ScramMechanism(mechanism).make_auth_info(
            password, iteration_count=iterations, salt=salt,
        )
        return cls(user, mechanism, bytes(salt_out), bytes(stored_key), bytes(server_key), int(count))

    @classmethod
    def from_salted_password(
        cls, user: str, mechanism: str, salt: bytes, salted_password: bytes, iterations: int,
    ) -> ScramCredential:
        """KIP-554's upsertion: the client sent Hi(password, salt, i); derive the keys the
        exchange needs (RFC 5802 s.3: ClientKey = HMAC(SaltedPassword, "Client Key"),
        StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword, "Server Key")), as Kafka's
        ScramFormatter does with the same input."""
        check_mechanism(mechanism)
        digest = _DIGESTS[mechanism]
        if len(salted_password) != digest().digest_size:
            raise CredentialError(f"salted password of {len(salted_password)} bytes for {mechanism}")
        client_key = hmac.new(salted_password, b"Client Key", digest).digest()
        stored_key = digest(client_key).digest()
        server_key = hmac.new(salted_password, b"Server Key", digest).digest()
        return cls(user, mechanism, salt, stored_key, server_key, iterations)

    def matches_password(self, password: str) -> bool:
        """Whether `password` derives this credential's stored key (how SASL/PLAIN is checked
        against a SCRAM credential: the same salt and iterations, a constant-time compare)."""
        import scramp  # on first use: importing it costs start-up time (the pytest fixture's)
        try:
            _salt, stored_key, _server_key, _count = scramp.ScramMechanism(self.mechanism).make_auth_info(
                password, iteration_count=self.iterations, salt=self.salt,
            )
        except scramp.ScramException:
            return False  # a password SASLprep refuses can match nothing
        return hmac.compare_digest(bytes(stored_key), self.stored_key)

    def auth_info(self) -> tuple[bytes, bytes, bytes, int]:
        """What scramp's server asks of its auth_fn: (salt, stored key, server key, iterations)."""
        return self.salt, self.stored_key, self.server_key, self.iterations

    def encode(self) -> bytes:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        return json.dumps({
            "v": VALUE_VERSION, "user": self.user, "mechanism": self.mechanism, "salt": b64(self.salt),
            "stored_key": b64(self.stored_key), "server_key": b64(self.server_key),
            "iterations": self.iterations,
        }, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ScramCredential:
        try:
            doc = json.loads(data)
            if doc.get("v") != VALUE_VERSION:
                raise CredentialError(f"unknown value version {doc.get('v')!r}")
            iterations = doc["iterations"]
            if not isinstance(iterations, int) or isinstance(iterations, bool):
                raise CredentialError(f"iterations {iterations!r} is not an integer")
            return cls(
                user=str(doc["user"]), mechanism=str(doc["mechanism"]),
                salt=base64.b64decode(doc["salt"], validate=True),
                stored_key=base64.b64decode(doc["stored_key"], validate=True),
                server_key=base64.b64decode(doc["server_key"], validate=True),
                iterations=iterations,
            )
        except CredentialError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialError(f"cannot decode a SCRAM credential: {exc}") from None
