"""What every command that speaks to a cluster shares: its options, its clients, its errors.

Options: `--bootstrap` (default 127.0.0.1:9092), `--client-config FILE` (a client properties
file, Java's format, as Kafka's tools take it), `-X key=value` (librdkafka settings, repeatable;
they win over the file), `--format table|json` and `--timeout` (seconds to wait for the
cluster, so an unreachable bootstrap ends the command instead of hanging it).

Clients are confluent-kafka's, each made with librdkafka's log routed to Python logging
(ackly.librdkafka_log) and closed when the command ends, whatever happens. Errors end the
command with `ackly: <what>: <why>` on stderr and exit status 1 (`CommandError`); wrong
options are click's usage errors (status 2).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from ackly.config import parse_properties
from ackly.config_sources import parse_properties_text
from ackly.errors import ConfigError
from ackly.librdkafka_log import quiet

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT_S = 10.0


class CommandError(click.ClickException):
    """A failure the cluster reported, or that kept the command from reaching it: exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"ackly: {self.format_message()}", err=True)


@dataclass(frozen=True)
class ClientOptions:
    bootstrap: str
    settings: dict[str, str]
    output: str  # table or json
    timeout_s: float

    def config(self, **defaults: Any) -> dict[str, Any]:
        """A client config: the command's defaults, then the user's settings, then the log.
        Metadata requests never create topics (librdkafka's producer and admin handles would
        ask for it), so asking about a topic that does not exist finds that out."""
        return quiet({"bootstrap.servers": self.bootstrap, "allow.auto.create.topics": False,
                      **defaults, **self.settings})


def read_client_settings(path: str | None, pairs: Sequence[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                settings.update((e.key, e.value) for e in parse_properties_text(f.read()))
        except OSError as exc:
            raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--client-config") from None
        except ConfigError as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--client-config") from None
    try:
        settings.update(parse_properties(tuple(pairs)))
    except ConfigError as exc:
        raise click.UsageError(f"-X {exc}") from None
    return settings


def client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the common options; the command receives them as one `opts: ClientOptions`."""

    @functools.wraps(f)
    def command(*args: Any, bootstrap: str, client_configs: tuple[str, ...],
                client_config_file: str | None, output: str, timeout_s: float, **kwargs: Any) -> Any:
        settings = read_client_settings(client_config_file, client_configs)
        return f(*args, opts=ClientOptions(bootstrap, settings, output, timeout_s), **kwargs)

    for option in reversed([
        click.option("--bootstrap", default=DEFAULT_BOOTSTRAP, show_default=True,
                     metavar="HOST:PORT[,...]", help="bootstrap.servers of the cluster"),
        click.option("-X", "client_configs", multiple=True, metavar="KEY=VALUE",
                     help="a librdkafka client setting, e.g. security.protocol=SSL (repeatable)"),
        click.option("--client-config", "client_config_file", default=None, metavar="FILE",
                     help="client settings in a properties file (-X wins over it)"),
        click.option("--format", "output", default="table", show_default=True,
                     type=click.Choice(["table", "json"])),
        click.option("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True,
                     type=click.FloatRange(0.1, 3600), help="seconds to wait for the cluster's answers"),
    ]):
        command = option(command)
    return command


def kafka_error_text(exc: BaseException) -> str:
    """`NAME: message` of a KafkaException (or the exception's text)."""
    error = exc.args[0] if exc.args else None
    if error is not None and hasattr(error, "name") and hasattr(error, "str"):
        text = error.str()
        return f"{error.name()}: {text}" if text else str(error.name())
    return str(exc) or type(exc).__name__


def kafka_error_name(exc: BaseException) -> str | None:
    error = exc.args[0] if exc.args else None
    return str(error.name()) if error is not None and hasattr(error, "name") else None


def make_client(factory: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> Any:
    """A confluent-kafka client, or a CommandError when librdkafka refuses a setting."""
    from confluent_kafka import KafkaException

    try:
        return factory(config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise CommandError(f"bad client setting: {kafka_error_text(exc)}") from None


@contextlib.contextmanager
def admin_client(opts: ClientOptions) -> Iterator[Any]:
    """An AdminClient that has reached the cluster (one Metadata request, bounded by the
    timeout), released when the block ends."""
    from confluent_kafka.admin import AdminClient

    admin = make_client(AdminClient, opts.config())
    try:
        reach(admin, opts)
        yield admin
    finally:
        with contextlib.suppress(Exception):
            admin.poll(0)  # hands librdkafka's queued log lines to the logger
        # AdminClient has no close(): dropping the last reference destroys the handle now.
        del admin


def reach(client: Any, opts: ClientOptions, topic: str | None = None) -> Any:
    """The cluster's metadata (of one topic, or all), or a CommandError naming the bootstrap."""
    from confluent_kafka import KafkaException

    try:
        return client.list_topics(topic, timeout=opts.timeout_s)
    except KafkaException as exc:
        raise CommandError(f"cannot reach the cluster at {opts.bootstrap} within "
                           f"{opts.timeout_s:g} s: {kafka_error_text(exc)}") from None


def existing_topic(metadata: Any, topic: str) -> Any:
    """The topic's metadata, or a CommandError when the cluster does not know it."""
    found = metadata.topics.get(topic)
    if found is None or (found.error is not None and found.error.name() == "UNKNOWN_TOPIC_OR_PART"):
        raise CommandError(f"unknown topic {topic!r}")
    if found.error is not None:
        raise CommandError(f"topic {topic!r}: {found.error.name()}: {found.error.str()}")
    return found


def wait_all(futures: Mapping[Any, Any], what: Callable[[Any], str], timeout_s: float) -> dict[Any, Any]:
    """Every future's result; each failure is printed, and any failure ends the command."""
    results: dict[Any, Any] = {}
    failures: list[str] = []
    for key, future in futures.items():
        try:
            results[key] = future.result(timeout=timeout_s)
        except Exception as exc:  # the client's KafkaException, or a timeout
            failures.append(f"{what(key)}: {kafka_error_text(exc)}")
    if failures:
        for line in failures[:-1]:
            click.echo(f"ackly: {line}", err=True)
        raise CommandError(failures[-1])
    return results


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns aligned to their widest cell; None shows as `-`."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=False))


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, str]:
    try:
        return parse_properties(tuple(pairs))
    except ConfigError as exc:
        raise click.UsageError(f"{option} {exc}") from None
