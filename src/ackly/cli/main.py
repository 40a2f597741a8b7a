"""The `ackly` command."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from ackly.kio_import import import_kio_without_hypothesis  # first of ackly's imports

import_kio_without_hypothesis()

from ackly.cli.client_options import ClientOptions, client_options  # noqa: E402
from ackly.config import parse_properties  # noqa: E402
from ackly.config_sources import SourcedProperties, gather_properties  # noqa: E402
from ackly.errors import ConfigError  # noqa: E402


def _sourced(config_file: str | None, configs: tuple[str, ...]) -> SourcedProperties:
    """The broker properties of --config-file, ACKLY_* variables and --config, in that
    order of precedence (the last wins)."""
    return gather_properties(file_path=config_file, env=os.environ,
                             command_line=parse_properties(configs).items())


class _LazyGroup(click.Group):
    """A group whose subcommands in `lazy` are imported when named (or listed by --help):
    `ackly serve` then imports none of the client-side commands' modules (verify, acl, the
    admin commands ...), which is a tenth of a second of every broker's start-up."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy and cmd_name not in self.commands:
            module_name, _, attr = self._lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


_LAZY_COMMANDS = {name: f"ackly.cli.{name}:{name}" for name in (
    "sim", "verify", "transactions", "acl", "users", "topic", "group", "produce", "consume")}


@click.group(cls=_LazyGroup, lazy=_LAZY_COMMANDS)
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one JSON object a line, events' facts (topic, partition, epochs) as fields")
def cli(log_level: str, log_format: str) -> None:
    """ackly: a small Kafka-compatible broker."""
    from ackly.server.log_format import configure_logging

    configure_logging(log_level, log_format)


def _data_dir(given: str | None, named: str | None) -> str:
    """--data-dir, or the directory log.dirs (log.dir) names; refuse two different ones."""
    if given is None:
        return named if named is not None else "./data"
    if named is not None and os.path.abspath(named) != os.path.abspath(given):
        raise ConfigError("log.dirs", f"names {named}, but --data-dir is {given}: give one")
    return given


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address of the one PLAINTEXT listener (without the listeners config)")
@click.option("--port", default=9092, show_default=True, type=int)
@click.option("--data-dir", default=None,
              help="where the logs live (default: log.dirs if set, else ./data)")
@click.option("--broker-id", default=None, type=int, help="this broker's id (broker.id)")
@click.option("--advertised-host", default=None, help="host name given to clients")
@click.option("--advertised-port", default=None, type=click.IntRange(1, 65535),
              help="port given to clients and other brokers, if not --port (e.g. a proxy's)")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="a broker config, e.g. log.flush.policy=never (repeatable)")
@click.option("--config-file", default=None, metavar="FILE",
              help="a server.properties file; ACKLY_<KEY> variables override it, --config both")
@click.option("--metadata", default=None, metavar="etcd://HOST:PORT[,HOST:PORT...]",
              help="the cluster's metadata store (etcds:// for TLS, see metadata.etcd.*); "
                   "without it the broker is a cluster of one with its metadata in --data-dir")
def serve(host: str, port: int, data_dir: str | None, broker_id: int | None,
          advertised_host: str | None, advertised_port: int | None, configs: tuple[str, ...],
          config_file: str | None, metadata: str | None) -> None:
    """Run one broker until SIGTERM or SIGINT."""
    from ackly.listeners import resolve_listeners
    from ackly.server.process import run_serve
    from ackly.server.tls import inter_broker_context, server_contexts

    if metadata is not None:
        from ackly.server.etcd_store import parse_etcd_url

        try:
            parse_etcd_url(metadata)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        sourced = _sourced(config_file, configs)
        if broker_id is not None:
            sourced.set("broker.id", str(broker_id), "--broker-id")
        props = sourced.values
        # Refuse a bad config (listeners and their TLS files included) before touching the disk.
        config = sourced.broker_config()
        data_dir = _data_dir(data_dir, config.log_dir)
        if config.ignored:
            # Once, at start-up: a server.properties written for Kafka names many of these.
            logging.getLogger("ackly").warning(
                "ignoring Kafka broker configs that mean nothing to this broker: %s",
                ", ".join(config.ignored), extra={"event": "ignored_configs",
                                                  "keys": list(config.ignored)})
        listener_set = resolve_listeners(config.values, host=host, port=port,
                                         advertised_host=advertised_host, advertised_port=advertised_port)
        server_contexts(config, listener_set)
        inter_broker_context(config, listener_set)
        if metadata is not None:
            from ackly.server.etcd_store import etcd_security

            etcd_security(config, metadata)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_serve(data_dir=data_dir, host=host, port=port, properties=props,
                       advertised_host=advertised_host, metadata=metadata,
                       advertised_port=advertised_port))







@cli.group(invoke_without_command=True)
@click.option("--brokers", default=3, show_default=True, type=click.IntRange(1, 64))
@click.option("--data-dir", default="./cluster", show_default=True,
              help="etcd's data and one directory per broker")
@click.option("--base-port", default=19092, show_default=True, type=int,
              help="broker i listens on base-port + i")
@click.option("--host", default="127.0.0.1", show_default=True, help="address the brokers listen on")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="a broker config for every broker (repeatable)")
@click.option("--config-file", default=None, metavar="FILE",
              help="a server.properties file for every broker (as serve's)")
@click.option("--etcd/--no-etcd", "use_etcd", default=None,
              help="require etcd, or run every broker in this process without it "
                   "(default: etcd if installed)")
@click.pass_context
def cluster(ctx: click.Context, brokers: int, data_dir: str, base_port: int, host: str,
            configs: tuple[str, ...], config_file: str | None, use_etcd: bool | None) -> None:
    """Run a local cluster (etcd + one process per broker) until Ctrl-C; or, with a
    subcommand, look at a running cluster (info, health)."""
    from ackly.cli.cluster import run_cluster

    if ctx.invoked_subcommand is not None:
        return
    log_level = ctx.parent.params.get("log_level", "WARNING") if ctx.parent else "WARNING"
    log_format = ctx.parent.params.get("log_format", "text") if ctx.parent else "text"
    try:
        sourced = _sourced(config_file, configs)
        sourced.broker_config()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    # Every broker gets the merged values as --config (the environment, read again by each
    # broker, then agrees with them).
    merged = tuple(f"{key}={value}" for key, value in sourced.values.items())
    sys.exit(run_cluster(brokers=brokers, data_dir=data_dir, base_port=base_port, host=host,
                         configs=merged, use_etcd=use_etcd, log_level=str(log_level),
                         log_format=str(log_format)))


@cluster.command("info")
@client_options
def cluster_info(opts: ClientOptions) -> None:
    """Cluster id, controller, brokers and topic count (Kafka Metadata)."""
    from ackly.cli.cluster_admin import run

    sys.exit(run("info", opts.bootstrap, opts.settings, opts.output, opts.timeout_s))


@cluster.command("health")
@client_options
def cluster_health(opts: ClientOptions) -> None:
    """Exit 0 if the cluster is healthy; 1 with the reasons if not (brokers down, leaderless
    or under-replicated partitions, no controller); 2 if it cannot be reached."""
    from ackly.cli.cluster_admin import run

    sys.exit(run("health", opts.bootstrap, opts.settings, opts.output, opts.timeout_s))







def main() -> None:
    cli()


if __name__ == "__main__":
    main()
