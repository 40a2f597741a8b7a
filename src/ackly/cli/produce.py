"""`ackly produce`: records from stdin (or a file) to a topic, as `kcat -P` writes them.

Each record is one piece of the input between delimiters (`-D`, a newline by default), with a
key split off at the key delimiter (`-K`), or one JSON object (`--input json`: key, value,
headers, as `consume --format json` writes them). `-H name=value` adds a header to every record. Every record is
acknowledged (or fails) before the command ends: it exits 0 when all were written, 1 naming
the first error otherwise, and refuses a topic the cluster does not know before sending
anything. `--format json` prints each record's partition and offset, one JSON object a line.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import click

from ackly.cli.client_options import (
    ClientOptions,
    CommandError,
    client_options,
    existing_topic,
    kafka_error_text,
    make_client,
    parse_pairs,
    reach,
)
from ackly.cli.records import OutRecord, json_record, split_records, text_record, unescape


@contextlib.contextmanager
def closing_producer(opts: ClientOptions, **defaults: Any) -> Iterator[Any]:
    """A Producer that is closed when the block ends. Whatever it still holds then (the block
    waits for every delivery it needs) is dropped first, so closing never waits on a cluster
    that stopped answering."""
    from confluent_kafka import Producer

    producer = make_client(Producer, opts.config(**defaults))
    try:
        yield producer
    finally:
        with contextlib.suppress(Exception):
            producer.purge()
            producer.flush(0)
        with contextlib.suppress(Exception):
            producer.close()


def _decoded(option: str, text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        decoded = unescape(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if not decoded:
        raise click.BadParameter("a delimiter cannot be empty", param_hint=option)
    return decoded


@click.command()
@client_options
@click.argument("topic")
@click.option("-p", "--partition", type=click.IntRange(0, None), default=None,
              help="write every record to this partition (default: the partitioner's choice by key)")
@click.option("-K", "--key-delimiter", default=None, metavar="DELIM",
              help="split each record into key and value at the first DELIM (text input)")
@click.option("-D", "--delimiter", default="\\n", show_default=True, metavar="DELIM",
              help="what separates records in the input")
@click.option("-H", "--header", "headers", multiple=True, metavar="NAME=VALUE",
              help="a header on every record (repeatable)")
@click.option("--input", "input_format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one object a record (key, value, headers; *_base64 for binary)")
@click.option("-Z", "--empty-as-null", is_flag=True, help="an empty value is a null value (a tombstone)")
@click.option("--file", "input_file", type=click.File("rb"), default="-", show_default=True,
              help="read the records from this file")
@click.option("--acks", default="all", show_default=True, type=click.Choice(["0", "1", "all"]))
def produce(opts: ClientOptions, topic: str, partition: int | None, key_delimiter: str | None,
            delimiter: str, headers: tuple[str, ...], input_format: str, empty_as_null: bool,
            input_file: Any, acks: str) -> None:
    """Write records to TOPIC, one per line of the input (or per delimiter)."""
    record_delimiter = _decoded("--delimiter", delimiter)
    assert record_delimiter is not None
    key_split = _decoded("--key-delimiter", key_delimiter)
    common_headers = [(k, v.encode("utf-8")) for k, v in parse_pairs(headers, "--header").items()]
    delivered: list[tuple[int, int]] = []
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"{err.name()}: {err.str()}")
        else:
            delivered.append((msg.partition(), msg.offset()))
            if opts.output == "json":
                click.echo(json.dumps({"topic": topic, "partition": msg.partition(), "offset": msg.offset()}))

    timeout_ms = int(opts.timeout_s * 1000)
    with closing_producer(opts, **{"acks": acks, "linger.ms": 5, "message.timeout.ms": timeout_ms,
                                   "request.timeout.ms": min(timeout_ms, 30_000)}) as producer:
        found = existing_topic(reach(producer, opts, topic), topic)
        if partition is not None and partition not in found.partitions:
            raise CommandError(f"topic {topic!r} has no partition {partition} (it has {len(found.partitions)})")
        sent = 0
        for number, piece in enumerate(split_records(input_file, record_delimiter), start=1):
            try:
                record = json_record(piece) if input_format == "json" \
                    else text_record(piece, key_split, empty_as_null)
            except ValueError as exc:
                raise CommandError(f"record {number}: {exc}") from None
            _send(producer, topic, partition, record, common_headers, on_delivery)
            sent += 1
            if failures:
                break
        deadline = time.monotonic() + opts.timeout_s
        while producer.flush(0.2) > 0 and not failures:
            if time.monotonic() > deadline:
                raise CommandError(f"{len(delivered)} of {sent} records acknowledged within {opts.timeout_s:g} s")
    if failures:
        raise CommandError(f"{len(failures)} of {sent} records not written; the first: {failures[0]}")
    if opts.output != "json":
        click.echo(f"produced {len(delivered)} records to {topic}", err=True)


def _send(producer: Any, topic: str, partition: int | None, record: OutRecord,
          common_headers: list[tuple[str, bytes]], on_delivery: Any) -> None:
    from confluent_kafka import KafkaException

    kwargs: dict[str, Any] = {"key": record.key, "value": record.value,
                              "headers": [*common_headers, *record.headers] or None,
                              "on_delivery": on_delivery}
    if partition is not None:
        kwargs["partition"] = partition
    while True:
        try:
            producer.produce(topic, **kwargs)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)  # the local queue is full: serve deliveries, then try again
        except KafkaException as exc:
            raise CommandError(f"cannot produce to {topic!r}: {kafka_error_text(exc)}") from None
