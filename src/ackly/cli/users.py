"""`ackly users`: SCRAM credentials written straight into the cluster metadata, broker stopped.

How the first user comes to exist on a broker that lets nobody in without one (as Kafka's
`kafka-storage format --add-scram`): the credential is salted and iterated here
(cluster/scram.py) and written to the single broker's metadata file in its data directory
(which must not be in use) or to the cluster's etcd. Once a broker runs, users are changed
online with AlterUserScramCredentials (any Kafka admin client).
"""

from __future__ import annotations

import asyncio
import sys

import click

from ackly.cluster.durable_store import METADATA_FILE, DurableMemoryStore
from ackly.cluster.memory_store import ClientId
from ackly.cluster.metadata import ClusterMetadata, KeySpace
from ackly.cluster.scram import DEFAULT_ITERATIONS, SCRAM_MECHANISMS, CredentialError, ScramCredential
from ackly.cluster.store import Command, CommandResult, Delete, Get, Put, StoreInput
from ackly.cluster.topics import CATALOGUE_FILE
from ackly.config import BrokerConfig, parse_properties
from ackly.errors import ConfigError
from ackly.log.disk import RealDisk

_CLIENT = ClientId("ackly-users")
_TIMEOUT_S = 10.0


def _run_commands(data_dir: str | None, metadata: str | None, commands: list[Command],
                  configs: tuple[str, ...] = ()) -> list[CommandResult]:
    if (data_dir is None) == (metadata is None):
        raise click.UsageError("give exactly one of --data-dir (a single broker) and --metadata (a cluster)")
    if data_dir is not None:
        from ackly.server.process import DataDirInUse, data_dir_lock

        try:
            with data_dir_lock(data_dir):
                disk = RealDisk()
                if disk.exists(f"{data_dir}/{CATALOGUE_FILE}") and not disk.exists(f"{data_dir}/{METADATA_FILE}"):
                    # The broker imports topics.json only into a metadata file it creates: one
                    # made here first would leave those topics behind.
                    raise click.ClickException(f"{data_dir} predates the metadata store: start the broker "
                                               "once (it imports its topics), stop it, then add users")
                store = DurableMemoryStore(disk, data_dir, now_ms=0)
                for command in commands:
                    store.submit(_CLIENT, command)
                return [item for item in store.drain(_CLIENT) if isinstance(item, CommandResult)]
        except DataDirInUse as exc:
            raise click.ClickException(
                f"{exc}; a running broker takes users online (AlterUserScramCredentials)") from None
    assert metadata is not None
    return asyncio.run(_run_etcd(metadata, commands, configs))


async def _run_etcd(url: str, commands: list[Command], configs: tuple[str, ...]) -> list[CommandResult]:
    from ackly.server.etcd_store import EtcdStore, etcd_security, parse_etcd_url

    try:
        endpoints = parse_etcd_url(url)
        security = etcd_security(BrokerConfig.from_properties(parse_properties(list(configs))), url)
    except (ValueError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    results: list[CommandResult] = []
    done = asyncio.Event()

    def deliver(items: list[StoreInput]) -> None:
        results.extend(item for item in items if isinstance(item, CommandResult))
        if len(results) >= len(commands):
            done.set()

    store = EtcdStore(endpoints, deliver, security=security)
    await store.start()
    try:
        store.submit(commands)
        try:
            await asyncio.wait_for(done.wait(), _TIMEOUT_S)
        except TimeoutError:
            raise click.ClickException(f"etcd at {url} did not answer within {_TIMEOUT_S:.0f} s") from None
    finally:
        await store.close()
    return results


def _check(results: list[CommandResult]) -> list[CommandResult]:
    for result in results:
        if not result.ok:
            raise click.ClickException(f"the metadata store refused the change: {result.error}")
    return results


@click.group()
def users() -> None:
    """SCRAM users in the cluster metadata (offline: the broker need not run)."""


_data_dir = click.option("--data-dir", default=None, help="a single broker's data directory (broker stopped)")
_metadata = click.option("--metadata", default=None, metavar="etcd://HOST:PORT[,HOST:PORT...]",
                         help="the cluster's metadata store (etcds:// for TLS)")
_configs = click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
                        help="how to reach etcd, as the brokers do: metadata.etcd.ssl.cafile, "
                             "metadata.etcd.user, ... (repeatable)")


@users.command("set")
@click.argument("name")
@click.option("--mechanism", "mechanisms", multiple=True, default=("SCRAM-SHA-512",), show_default=True,
              type=click.Choice(sorted(SCRAM_MECHANISMS)), help="repeat for both")
@click.option("--password-stdin", is_flag=True, required=True,
              help="read the password from the first line of standard input")
@click.option("--iterations", default=DEFAULT_ITERATIONS, show_default=True, type=int)
@_data_dir
@_metadata
@_configs
def set_user(name: str, mechanisms: tuple[str, ...], password_stdin: bool, iterations: int,
             data_dir: str | None, metadata: str | None, configs: tuple[str, ...]) -> None:
    """Create or replace NAME's credential (salted and iterated; the password is not stored)."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not name:
        raise click.UsageError("the user name must not be empty")
    if not password:
        raise click.UsageError("no password on standard input")
    keys = KeySpace()
    commands: list[Command] = []
    try:
        for i, mechanism in enumerate(dict.fromkeys(mechanisms)):
            credential = ScramCredential.from_password(name, mechanism, password, iterations)
            commands.append(Put(i + 1, keys.scram(mechanism, name), credential.encode()))
    except CredentialError as exc:
        raise click.UsageError(str(exc)) from None
    _check(_run_commands(data_dir, metadata, commands, configs))
    click.echo(f"{name}: {', '.join(dict.fromkeys(mechanisms))} set ({iterations} iterations)")


@users.command("delete")
@click.argument("name")
@click.option("--mechanism", "mechanisms", multiple=True, default=tuple(sorted(SCRAM_MECHANISMS)),
              type=click.Choice(sorted(SCRAM_MECHANISMS)), help="default: every mechanism")
@_data_dir
@_metadata
@_configs
def delete_user(name: str, mechanisms: tuple[str, ...], data_dir: str | None, metadata: str | None,
                configs: tuple[str, ...]) -> None:
    """Remove NAME's credentials."""
    keys = KeySpace()
    commands: list[Command] = [Delete(i + 1, keys.scram(m, name)) for i, m in enumerate(dict.fromkeys(mechanisms))]
    _check(_run_commands(data_dir, metadata, commands, configs))
    click.echo(f"{name}: {', '.join(dict.fromkeys(mechanisms))} removed")


@users.command("list")
@_data_dir
@_metadata
@_configs
def list_users(data_dir: str | None, metadata: str | None, configs: tuple[str, ...]) -> None:
    """Every user with a SCRAM credential, its mechanisms and iterations."""
    keys = KeySpace()
    (result,) = _check(_run_commands(data_dir, metadata, [Get(1, keys.scram_prefix)], configs))
    view = ClusterMetadata.from_kvs(result.kvs, result.revision, keys)
    for (user, mechanism), credential in sorted(view.scram_credentials.items()):
        click.echo(f"{user}\t{mechanism}\titerations={credential.iterations}")
