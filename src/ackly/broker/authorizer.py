"""The broker's authorizer: who may do what, from the ACLs in this broker's metadata view.

Configured with Kafka's keys: `authorizer.class.name` (empty: no authorization, every request
is allowed, as in Kafka), `super.users` and `allow.everyone.if.no.acl.found`. The ACLs are
read from the view of the cluster metadata on every decision, so a change written by any
broker applies here as soon as the watch delivers it. The rules themselves are in
cluster/acls.py (`decide`); which API checks what is in broker/authz_rules.py.

Brokers talk to each other as clients do, and until an authenticated inter-broker listener
(SASL or mTLS) exists they arrive as User:ANONYMOUS over PLAINTEXT: an ACL-enabled cluster
needs User:ANONYMOUS in `super.users` or an ALLOW CLUSTER_ACTION ACL for it (Kafka likewise
requires the brokers' principal to be a super user or to hold CLUSTER_ACTION), which any
client on that network then shares. A single broker sends itself nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ackly.cluster.acls import (
    CLUSTER_NAME,
    SUPPORTED_OPERATIONS,
    AclBinding,
    AclIndex,
    AclOperation,
    ResourceType,
    decide_among,
    decide_any_of_type,
)
from ackly.config import BrokerConfig, parse_super_users

if TYPE_CHECKING:
    from ackly.broker.context import RequestContext


INTER_BROKER_PRINCIPAL = "User:ANONYMOUS"  # until SASL or mTLS gives brokers their own


class Authorizer:
    def __init__(self, config: BrokerConfig, acls: Callable[[], Mapping[str, AclBinding]]) -> None:
        self.enabled = bool(config.get("authorizer.class.name"))
        self.super_users = frozenset(parse_super_users(str(config.get("super.users"))))
        self.allow_if_no_acl = bool(config.get("allow.everyone.if.no.acl.found"))
        self._acls = acls
        # The index of the last ACL mapping seen: a view shares its mapping with the view it
        # came from unless an ACL key changed, so the index is rebuilt only on ACL changes.
        self._indexed: tuple[Mapping[str, AclBinding], AclIndex] | None = None

    def inter_broker_warning(self) -> str | None:
        """What to tell the operator of a cluster whose brokers may be refused each other's
        requests (a DENY or a missing ALLOW of CLUSTER_ACTION stops replication)."""
        if not self.enabled or INTER_BROKER_PRINCIPAL in self.super_users:
            return None
        return (f"brokers reach each other as {INTER_BROKER_PRINCIPAL} (no SASL or mTLS "
                "inter-broker listener yet): replication needs it in super.users or allowed "
                "CLUSTER_ACTION on the cluster (an ACL, or allow.everyone.if.no.acl.found with no "
                "ACL on the cluster), which every client on this network then shares")

    def _index(self) -> AclIndex:
        acls = self._acls()
        if self._indexed is None or self._indexed[0] is not acls:
            self._indexed = (acls, AclIndex(acls.values()))
        return self._indexed[1]

    def allowed(self, ctx: RequestContext, operation: AclOperation, resource_type: ResourceType,
                name: str = CLUSTER_NAME) -> bool:
        if not self.enabled or ctx.principal in self.super_users:
            return True
        index = self._index()
        return decide_among(index.applying(resource_type, name), ctx.principal, ctx.client_host,
                            operation, allow_if_no_acl=self.allow_if_no_acl)

    def allowed_any(self, ctx: RequestContext, operation: AclOperation,
                    resource_type: ResourceType) -> bool:
        """Allowed on at least one resource of the type (KIP-679's check for idempotence)."""
        if not self.enabled or ctx.principal in self.super_users:
            return True
        return decide_any_of_type(self._index().of_type(resource_type), ctx.principal, ctx.client_host,
                                  operation, resource_type, allow_if_no_acl=self.allow_if_no_acl)

    def authorized_operations(self, ctx: RequestContext, resource_type: ResourceType,
                              name: str = CLUSTER_NAME) -> int:
        """The bit field of the operations the principal may do on the resource, among those
        the resource type supports (Kafka's KafkaApis.authorizedOperations; ALL is not one)."""
        ops = SUPPORTED_OPERATIONS[resource_type] - {AclOperation.ALL}
        return sum(1 << int(op) for op in ops if self.allowed(ctx, op, resource_type, name))
