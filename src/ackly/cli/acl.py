"""`ackly acl add|list|remove`: ACLs through the Kafka API (CreateAcls, DescribeAcls,
DeleteAcls), so the same commands manage any Kafka cluster, as `kafka-acls.sh` does.

The requests go through confluent-kafka's AdminClient (the `acl` extra), which brings every
client setting librdkafka has: `-X security.protocol=SASL_SSL -X sasl.mechanism=...` reach a
secured listener unchanged. Flags follow kafka-acls.sh: one resource (`--topic`, `--group`,
`--transactional-id` or `--cluster`), `--resource-pattern-type`, `--allow-principal` /
`--deny-principal` (repeatable), `--operation` (repeatable), `--host`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ackly.librdkafka_log import quiet

DEFAULT_TIMEOUT_S = 30.0
CLUSTER_NAME = "kafka-cluster"
OPERATIONS = ("ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION",
              "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE")


def _ck() -> Any:
    """confluent_kafka.admin, or a clear refusal when it is missing (a broken install)."""
    try:
        return importlib.import_module("confluent_kafka.admin")
    except ImportError:
        raise click.ClickException(
            "ackly acl needs confluent-kafka, a dependency of ackly: pip install 'confluent-kafka==2.16.1'") from None


def _admin(bootstrap: str, settings: tuple[str, ...]) -> Any:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"-X {item!r}: expected key=value")
        config[key.strip()] = value
    return _ck().AdminClient(quiet(config))  # librdkafka's log to ackly.librdkafka, not stderr


def _resource(topic: str | None, group: str | None, transactional_id: str | None,
              cluster: bool, *, required: bool) -> tuple[str, str | None]:
    given = [(kind, name) for kind, name in (("TOPIC", topic), ("GROUP", group),
                                             ("TRANSACTIONAL_ID", transactional_id))
             if name is not None]
    if cluster:
        given.append(("BROKER", CLUSTER_NAME))  # librdkafka's name for the CLUSTER resource type
    if len(given) > 1:
        raise click.UsageError("give one resource: --topic, --group, --transactional-id or --cluster")
    if not given:
        if required:
            raise click.UsageError("give a resource: --topic, --group, --transactional-id or --cluster")
        return "ANY", None
    return given[0]


def _entries(allow: tuple[str, ...], deny: tuple[str, ...]) -> list[tuple[str | None, str]]:
    entries: list[tuple[str | None, str]] = [(p, "ALLOW") for p in allow]
    return entries + [(p, "DENY") for p in deny]


def _wait(futures: dict[Any, Any]) -> list[tuple[Any, Any]]:
    results = []
    failed = False
    for request, future in futures.items():
        try:
            results.append((request, future.result(timeout=DEFAULT_TIMEOUT_S)))
        except Exception as exc:  # the client's KafkaException, carrying the broker's error
            click.echo(f"error: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)
    return results


def _show(binding: Any) -> str:
    resource = "CLUSTER" if binding.restype.name == "BROKER" else binding.restype.name
    return (f"{resource}\t{binding.name}\t{binding.resource_pattern_type.name}\t{binding.principal}"
            f"\t{binding.host}\t{binding.operation.name}\t{binding.permission_type.name}")


def resource_options(f: Any) -> Any:
    for option in reversed([
        click.option("--bootstrap", default="127.0.0.1:9092", show_default=True,
                     help="bootstrap.servers"),
        click.option("-X", "settings", multiple=True, metavar="KEY=VALUE",
                     help="a client setting (librdkafka's), e.g. security.protocol=SASL_SSL"),
        click.option("--topic", default=None),
        click.option("--group", default=None),
        click.option("--transactional-id", default=None),
        click.option("--cluster", is_flag=True, help="the cluster resource (kafka-cluster)"),
        click.option("--operation", "operations", multiple=True,
                     type=click.Choice(OPERATIONS, case_sensitive=False)),
        click.option("--host", default=None, help="the client address the ACL applies to (* for any)"),
        click.option("--allow-principal", "allow", multiple=True, metavar="User:NAME"),
        click.option("--deny-principal", "deny", multiple=True, metavar="User:NAME"),
    ]):
        f = option(f)
    return f


@click.group()
def acl() -> None:
    """Add, list and remove ACLs (CreateAcls, DescribeAcls, DeleteAcls)."""


@acl.command()
@resource_options
@click.option("--resource-pattern-type", "pattern", default="LITERAL", show_default=True,
              type=click.Choice(["LITERAL", "PREFIXED"], case_sensitive=False))
def add(bootstrap: str, settings: tuple[str, ...], topic: str | None, group: str | None,
        transactional_id: str | None, cluster: bool, operations: tuple[str, ...], host: str | None,
        allow: tuple[str, ...], deny: tuple[str, ...], pattern: str) -> None:
    """Add an ACL for each principal and operation given."""
    restype, name = _resource(topic, group, transactional_id, cluster, required=True)
    if not operations or not (allow or deny):
        raise click.UsageError("give --operation and --allow-principal or --deny-principal")
    admin = _admin(bootstrap, settings)
    ck = _ck()

    bindings = [
        ck.AclBinding(ck.ResourceType[restype], name, ck.ResourcePatternType[pattern.upper()], principal,
                   host or "*", ck.AclOperation[op.upper()], ck.AclPermissionType[permission])
        for principal, permission in _entries(allow, deny) for op in operations
    ]
    for binding, _ in _wait(admin.create_acls(bindings, request_timeout=DEFAULT_TIMEOUT_S)):
        click.echo(f"added\t{_show(binding)}")


def _filters(topic: str | None, group: str | None, transactional_id: str | None, cluster: bool,
             operations: tuple[str, ...], host: str | None, allow: tuple[str, ...],
             deny: tuple[str, ...], pattern: str) -> list[Any]:
    ck = _ck()

    restype, name = _resource(topic, group, transactional_id, cluster, required=False)
    entries: list[tuple[str | None, str]] = _entries(allow, deny) or [(None, "ANY")]
    ops = [op.upper() for op in operations] or ["ANY"]
    return [
        ck.AclBindingFilter(ck.ResourceType[restype], name, ck.ResourcePatternType[pattern.upper()], principal,
                         host, ck.AclOperation[op], ck.AclPermissionType[permission])
        for principal, permission in entries for op in ops
    ]


@acl.command(name="list")
@resource_options
@click.option("--resource-pattern-type", "pattern", default="ANY", show_default=True,
              type=click.Choice(["ANY", "MATCH", "LITERAL", "PREFIXED"], case_sensitive=False))
def list_acls(bootstrap: str, settings: tuple[str, ...], topic: str | None, group: str | None,
              transactional_id: str | None, cluster: bool, operations: tuple[str, ...],
              host: str | None, allow: tuple[str, ...], deny: tuple[str, ...], pattern: str) -> None:
    """List the ACLs the filter selects (MATCH: every ACL that applies to the resource)."""
    admin = _admin(bootstrap, settings)
    seen: set[str] = set()
    for acl_filter in _filters(topic, group, transactional_id, cluster, operations, host, allow,
                               deny, pattern):
        future = admin.describe_acls(acl_filter, request_timeout=DEFAULT_TIMEOUT_S)
        for _, bindings in _wait({acl_filter: future}):
            for binding in bindings:
                line = _show(binding)
                if line not in seen:
                    seen.add(line)
                    click.echo(line)


@acl.command()
@resource_options
@click.option("--resource-pattern-type", "pattern", default="LITERAL", show_default=True,
              type=click.Choice(["ANY", "MATCH", "LITERAL", "PREFIXED"], case_sensitive=False))
def remove(bootstrap: str, settings: tuple[str, ...], topic: str | None, group: str | None,
           transactional_id: str | None, cluster: bool, operations: tuple[str, ...], host: str | None,
           allow: tuple[str, ...], deny: tuple[str, ...], pattern: str) -> None:
    """Remove the ACLs the filter selects; a resource must be named."""
    _resource(topic, group, transactional_id, cluster, required=True)
    admin = _admin(bootstrap, settings)
    filters = _filters(topic, group, transactional_id, cluster, operations, host, allow, deny, pattern)
    for _, removed in _wait(admin.delete_acls(filters, request_timeout=DEFAULT_TIMEOUT_S)):
        for binding in removed:
            click.echo(f"removed\t{_show(binding)}")
