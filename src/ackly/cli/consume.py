"""`ackly consume`: records of topics to stdout, as `kcat -C` reads them.

Without `--group` the partitions are assigned directly (no group, nothing committed) and each
starts at `--from`: `beginning`, `end`, an offset, `-N` (the last N records) or `@MS` (the
first record at or after that time). `--to` (an offset, or `@MS`) ends a partition before
that offset or time; `--exit` ends each partition at its end (the high watermark, or the last
stable offset under read_committed) as the command reaches it; `--count` ends the command
after that many records. With `--group` the command joins the group, starts where it left
off (`--from` then only says where a partition without a committed offset starts) and commits
what it printed. Records print as text lines (`--line`, `-K`, `-D`, see ackly.cli.records) or,
with `--format json`, as one JSON object each.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from ackly.cli.client_options import (
    ClientOptions,
    CommandError,
    client_options,
    existing_topic,
    kafka_error_text,
    make_client,
    reach,
)
from ackly.cli.records import format_line, record_json, unescape

POLL_S = 0.2
# librdkafka's logical offsets (rd_kafka_offset_t): the start, the end, and N before the end.
OFFSET_BEGINNING, OFFSET_END, OFFSET_TAIL_BASE = -2, -1, -2000


@dataclass(frozen=True)
class Position:
    """Where a partition starts or stops: an absolute offset, a logical one, or a time."""

    kind: str  # offset, beginning, end, stored, tail, timestamp
    value: int = 0


def parse_position(text: str, option: str) -> Position:
    if text in ("beginning", "end", "stored"):
        return Position(text)
    try:
        if text.startswith("@"):
            return Position("timestamp", int(text[1:]))
        number = int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected beginning, end, stored, an offset, -N or @MS",
                                 param_hint=option) from None
    return Position("tail", -number) if number < 0 else Position("offset", number)


@contextlib.contextmanager
def closing_consumer(opts: ClientOptions, **defaults: Any) -> Iterator[Any]:
    from confluent_kafka import Consumer

    consumer = make_client(Consumer, opts.config(**defaults))
    try:
        yield consumer
    finally:
        with contextlib.suppress(Exception):
            consumer.close()  # leaves the group, committing what was printed (with --group)


class _Output:
    def __init__(self, output: str, line: bytes) -> None:
        self.json = output == "json"
        self.line = line
        self.stream = sys.stdout.buffer

    def write(self, msg: Any) -> None:
        if self.json:
            self.stream.write(record_json(msg).encode("utf-8") + b"\n")
        else:
            self.stream.write(format_line(self.line, msg))
        self.stream.flush()


def _line_format(line: str | None, key_delimiter: str | None, delimiter: str) -> bytes:
    try:
        if line is not None:
            return unescape(line)
        end = unescape(delimiter)
        return (b"%k" + unescape(key_delimiter) if key_delimiter is not None else b"") + b"%s" + end
    except ValueError as exc:
        raise click.UsageError(f"a delimiter or --line: {exc}") from None


def _resolve(consumer: Any, opts: ClientOptions, tps: list[Any], position: Position) -> dict[tuple[str, int], int]:
    """Absolute or logical librdkafka offsets of `position` for each partition."""
    from confluent_kafka import KafkaException, TopicPartition

    if position.kind == "beginning":
        return {(tp.topic, tp.partition): OFFSET_BEGINNING for tp in tps}
    if position.kind == "end":
        return {(tp.topic, tp.partition): OFFSET_END for tp in tps}
    if position.kind == "tail":
        return {(tp.topic, tp.partition): OFFSET_TAIL_BASE - position.value for tp in tps}
    if position.kind == "offset":
        return {(tp.topic, tp.partition): position.value for tp in tps}
    try:
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, position.value) for tp in tps],
                                           timeout=opts.timeout_s)
    except KafkaException as exc:
        raise CommandError(f"cannot look up offsets by time: {kafka_error_text(exc)}") from None
    return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found}


def _stops(consumer: Any, opts: ClientOptions, tps: list[Any], position: Position | None) -> dict[tuple[str, int], int]:
    """The exclusive end offset of each partition, from --to."""
    if position is None:
        return {}
    if position.kind == "timestamp":
        stops = _resolve(consumer, opts, tps, position)
        for tp in tps:  # no record that late: every record now in the partition is earlier
            key = (tp.topic, tp.partition)
            if stops[key] == OFFSET_END:
                stops[key] = int(consumer.get_watermark_offsets(tp, timeout=opts.timeout_s)[1])
        return stops
    if position.kind != "offset":
        raise click.BadParameter("--to is an offset or @MS", param_hint="--to")
    return {(tp.topic, tp.partition): position.value for tp in tps}


@click.command()
@client_options
@click.argument("topics", nargs=-1, required=True)
@click.option("-p", "--partition", "partitions", multiple=True, type=click.IntRange(0, None),
              help="only this partition (repeatable; one topic only; default: every partition)")
@click.option("-o", "--from", "start", default="beginning", show_default=True,
              metavar="beginning|end|stored|OFFSET|-N|@MS", help="where each partition starts")
@click.option("--to", "stop", default=None, metavar="OFFSET|@MS",
              help="end each partition before this offset or time")
@click.option("-c", "--count", type=click.IntRange(1, None), default=None, help="stop after this many records")
@click.option("-e", "--exit", "exit_at_end", is_flag=True, help="stop at the end of every partition")
@click.option("--isolation", default="read_uncommitted", show_default=True,
              type=click.Choice(["read_uncommitted", "read_committed"]),
              help="read_committed: only committed transactions' records, up to the last stable offset")
@click.option("-g", "--group", "group_id", default=None,
              help="consume as a member of this group and commit what is printed")
@click.option("-K", "--key-delimiter", default=None, metavar="DELIM", help="print the key, DELIM, then the value")
@click.option("-D", "--delimiter", default="\\n", show_default=True, metavar="DELIM",
              help="printed after each record")
@click.option("--line", default=None, metavar="FORMAT",
              help="each record's text, e.g. '%t-%p@%o %k=%s\\n' (%t %p %o %T %k %s %h %K %S %%)")
def consume(opts: ClientOptions, topics: tuple[str, ...], partitions: tuple[int, ...], start: str,
            stop: str | None, count: int | None, exit_at_end: bool, isolation: str, group_id: str | None,
            key_delimiter: str | None, delimiter: str, line: str | None) -> None:
    """Print the records of TOPICS."""
    from confluent_kafka import TopicPartition

    start_at = parse_position(start, "--from")
    stop_at = parse_position(stop, "--to") if stop is not None else None
    if partitions and len(topics) > 1:
        raise click.UsageError("--partition goes with one topic")
    if group_id is not None and (start_at.kind not in ("beginning", "end", "stored") or stop_at or partitions):
        raise click.UsageError("with --group, --from is beginning, end or stored (for partitions without a "
                               "committed offset), and --to and --partition are not used")
    if group_id is None and start_at.kind == "stored":
        raise click.UsageError("--from stored reads a group's committed offsets: give --group")
    out = _Output(opts.output, _line_format(line, key_delimiter, delimiter))
    defaults: dict[str, Any] = {
        "group.id": group_id or f"ackly-consume-{secrets.token_hex(4)}",  # not joined without --group
        "enable.auto.commit": group_id is not None, "enable.partition.eof": True,
        "isolation.level": isolation, "auto.offset.reset": "latest" if start_at.kind == "end" else "earliest",
    }
    if exit_at_end:
        # librdkafka sees a partition's end when a fetch comes back empty, after this wait.
        defaults["fetch.wait.max.ms"] = 100
    with closing_consumer(opts, **defaults) as consumer:
        metadata = reach(consumer, opts)
        found = {t: existing_topic(metadata, t) for t in topics}
        for p in partitions:
            if p not in found[topics[0]].partitions:
                raise CommandError(f"topic {topics[0]!r} has no partition {p} "
                                   f"(it has {len(found[topics[0]].partitions)})")
        if group_id is None:
            tps = [TopicPartition(t, p) for t in topics
                   for p in (sorted(partitions) if partitions else sorted(found[t].partitions))]
            starts = _resolve(consumer, opts, tps, start_at)
            stops = _stops(consumer, opts, tps, stop_at)
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            active = {k for k, o in starts.items() if not (k in stops and o >= 0 and o >= stops[k])}
            printed = _loop(consumer, out, active, stops, count, exit_at_end, assigned=None)
        else:
            assigned: set[tuple[str, int]] = set()

            def on_assign(_consumer: Any, parts: list[Any]) -> None:
                assigned.update((tp.topic, tp.partition) for tp in parts)

            consumer.subscribe(list(topics), on_assign=on_assign)
            printed = _loop(consumer, out, set(), {}, count, exit_at_end, assigned=assigned)
    if opts.output != "json":
        click.echo(f"consumed {printed} records", err=True)


def _loop(consumer: Any, out: _Output, active: set[tuple[str, int]], stops: dict[tuple[str, int], int],
          count: int | None, exit_at_end: bool, assigned: set[tuple[str, int]] | None) -> int:
    """Print records until every partition is done or `count` are printed; returns the count.
    In a group (`assigned` given) the partitions are those the group assigned, done at their end."""
    from confluent_kafka import KafkaError

    printed = 0
    at_end: set[tuple[str, int]] = set()
    try:
        while count is None or printed < count:
            if assigned is None and not active:
                break
            if assigned is not None and exit_at_end and assigned and assigned <= at_end:
                break
            msg = consumer.poll(POLL_S)
            if msg is None:
                continue
            key = (msg.topic(), msg.partition())
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(key)
                    if exit_at_end:
                        active.discard(key)
                    continue
                if error.fatal() or error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                     KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                     KafkaError.GROUP_AUTHORIZATION_FAILED):
                    raise CommandError(f"{key[0]}: {error.name()}: {error.str()}")
                continue  # transient (a lost connection, a leader moving): librdkafka retries
            at_end.discard(key)
            if assigned is None and key not in active:
                continue
            stop = stops.get(key)
            if stop is not None and msg.offset() >= stop:
                active.discard(key)
                continue
            out.write(msg)
            printed += 1
            if stop is not None and msg.offset() + 1 >= stop:
                active.discard(key)
    except KeyboardInterrupt:
        sys.stderr.flush()
    return printed
