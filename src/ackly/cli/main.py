"""The `ackly` command."""

from __future__ import annotations

import logging
import sys

import click

from ackly.config import BrokerConfig, parse_properties
from ackly.errors import ConfigError


@click.group()
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def cli(log_level: str) -> None:
    """ackly: a small Kafka-compatible broker."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=9092, show_default=True, type=int)
@click.option("--data-dir", default="./data", show_default=True, help="where the logs live")
@click.option("--broker-id", default=None, type=int, help="this broker's id (broker.id)")
@click.option("--advertised-host", default=None, help="host name given to clients")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="a broker config, e.g. log.flush.policy=never (repeatable)")
def serve(host: str, port: int, data_dir: str, broker_id: int | None,
          advertised_host: str | None, configs: tuple[str, ...]) -> None:
    """Run one broker until SIGTERM or SIGINT."""
    from ackly.server.process import run_serve

    try:
        props = parse_properties(configs)
        if broker_id is not None:
            props["broker.id"] = str(broker_id)
        BrokerConfig.from_properties(props)  # refuse a bad config before touching the disk
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_serve(data_dir=data_dir, host=host, port=port, properties=props,
                       advertised_host=advertised_host))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
