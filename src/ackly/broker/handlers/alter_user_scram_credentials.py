"""AlterUserScramCredentials (key 51, KIP-554): add, replace or remove users' SCRAM credentials.

The client salts and iterates the password itself; the broker keeps only the salt, the stored
and server keys and the iteration count (cluster/scram.py), in the cluster metadata, so every
broker authenticates with them once its view holds them.

Checks as Kafka's handler makes them, per (user, mechanism): an empty user name or a count of
iterations out of 4096..16384 is UNACCEPTABLE_CREDENTIAL, an unknown mechanism
UNSUPPORTED_SASL_MECHANISM, a (user, mechanism) named twice in the request DUPLICATE_RESOURCE,
the deletion of a credential that does not exist RESOURCE_NOT_FOUND. A user with any refused
alteration has none of its alterations applied; one result per user, in request order, given
once every write of that user is in this broker's view (or with REQUEST_TIMED_OUT when the
store did not confirm it).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.cluster.scram import MECHANISM_NAMES, CredentialError, ScramCredential, iterations_problem
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 51
MIN_VERSION = 0
MAX_VERSION = 0


@dataclass
class _UserResult:
    user: str
    error: KafkaError | None = None
    writes: list[tuple[str, ScramCredential | None]] = field(default_factory=list)  # mechanism, new value


def _check(user: str, mechanism_number: int, pairs: Counter[tuple[str, int]]) -> str:
    """The mechanism's name, or KafkaError with Kafka's code and message."""
    if not user:
        raise KafkaError(ErrorCode.unacceptable_credential, "Username must not be empty")
    mechanism = MECHANISM_NAMES.get(mechanism_number)
    if mechanism is None:
        raise KafkaError(ErrorCode.unsupported_sasl_mechanism, f"Unknown SCRAM mechanism {mechanism_number}")
    if pairs[(user, mechanism_number)] > 1:
        raise KafkaError(ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request")
    return mechanism


def _plan(node: BrokerNode, request: Any) -> list[_UserResult]:
    pairs = Counter((d.name, int(d.mechanism)) for d in (*request.deletions, *request.upsertions))
    results: dict[str, _UserResult] = {}
    existing = node.member.metadata.scram_credentials
    for deletion in request.deletions:
        result = results.setdefault(deletion.name, _UserResult(deletion.name))
        try:
            mechanism = _check(deletion.name, int(deletion.mechanism), pairs)
            if (deletion.name, mechanism) not in existing:
                raise KafkaError(ErrorCode.resource_not_found,
                                 "Attempt to delete a user credential that does not exist")
            result.writes.append((mechanism, None))
        except KafkaError as exc:
            result.error = result.error or exc
    for upsertion in request.upsertions:
        result = results.setdefault(upsertion.name, _UserResult(upsertion.name))
        try:
            mechanism = _check(upsertion.name, int(upsertion.mechanism), pairs)
            iterations = int(upsertion.iterations)
            if (problem := iterations_problem(iterations)) is not None:
                raise KafkaError(ErrorCode.unacceptable_credential, problem)
            try:
                credential = ScramCredential.from_salted_password(
                    upsertion.name, mechanism, bytes(upsertion.salt), bytes(upsertion.salted_password), iterations,
                )
            except CredentialError as exc:
                raise KafkaError(ErrorCode.unacceptable_credential, str(exc)) from None
            result.writes.append((mechanism, credential))
        except KafkaError as exc:
            result.error = result.error or exc
    return list(results.values())


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    planned = _plan(node, request)
    if (denied := check(node, ctx, API_KEY, "request")) is not None:
        # Kafka answers every user of the request with the refusal and writes nothing.
        for result in planned:
            result.error = KafkaError(denied, "")

    def respond() -> None:
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "results": [
            {"user": r.user, "error_code": r.error.code if r.error else ErrorCode.none,
             "error_message": (r.error.message or None) if r.error else None}
            for r in planned
        ]}))

    writes = [(r, mechanism, credential) for r in planned if r.error is None for mechanism, credential in r.writes]
    countdown = Countdown(len(writes), respond)
    for result, mechanism, credential in writes:
        def done(code: ErrorCode, message: str | None, result: _UserResult = result) -> None:
            if code is not ErrorCode.none and result.error is None:
                result.error = KafkaError(code, message or "")
            countdown.one_done()

        member = node.member
        send = (functools.partial(member.delete_scram_credential, result.user, mechanism, ctx.now_ms)
                if credential is None else functools.partial(member.put_scram_credential, credential, ctx.now_ms))
        node.admin.write_scram(result.user, send, ctx.now_ms, DEFAULT_TIMEOUT_MS, done)
