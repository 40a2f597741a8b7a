"""`ackly group list|describe|seek|delete`: consumer groups through the Kafka admin API.

As `kafka-consumer-groups.sh`: `describe` shows the members and, per partition, the committed
offset, the high watermark (ListOffsets LATEST, what a read_uncommitted consumer reads up to)
and the lag between them; `seek` resets the committed offsets of a group that has no members
(Kafka refuses to move offsets under live consumers, and so does this command, before asking),
to the earliest or latest offset, a given offset (kept within the partition's log start offset
and high watermark, as Kafka's tool keeps it), or the first offset at or after a timestamp.
"""

from __future__ import annotations

from typing import Any

import click

from ackly.cli.client_options import (
    ClientOptions,
    CommandError,
    admin_client,
    client_options,
    existing_topic,
    print_json,
    print_table,
    reach,
    wait_all,
)

# States in which a group has no members, so its offsets may be moved or the group deleted.
EMPTY_STATES = ("EMPTY", "DEAD")


@click.group()
def group() -> None:
    """List, describe, reset (seek) and delete consumer groups."""


@group.command(name="list")
@client_options
def list_groups(opts: ClientOptions) -> None:
    """The consumer groups and their state (ListGroups)."""
    with admin_client(opts) as admin:
        result = admin.list_consumer_groups(request_timeout=opts.timeout_s).result(timeout=opts.timeout_s)
    rows = sorted((g.group_id, g.state.name if g.state is not None else "UNKNOWN") for g in result.valid)
    for error in result.errors:
        click.echo(f"ackly: a broker did not list its groups: {error}", err=True)
    if opts.output == "json":
        print_json([{"group": g, "state": s} for g, s in rows])
    else:
        print_table(["GROUP", "STATE"], rows)


def _description(admin: Any, opts: ClientOptions, group_id: str) -> Any:
    futures = admin.describe_consumer_groups([group_id], request_timeout=opts.timeout_s)
    return wait_all(futures, lambda g: f"cannot describe group {g!r}", opts.timeout_s)[group_id]


def _committed(admin: Any, opts: ClientOptions, group_id: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)],
                                                request_timeout=opts.timeout_s)
    result = wait_all(futures, lambda g: f"cannot read the offsets of group {g!r}", opts.timeout_s)[group_id]
    return {(tp.topic, tp.partition): int(tp.offset) for tp in result.topic_partitions if tp.offset >= 0}


def _list_offsets(admin: Any, opts: ClientOptions, specs: dict[Any, Any]) -> dict[tuple[str, int], int]:
    if not specs:
        return {}
    futures = admin.list_offsets(specs, request_timeout=opts.timeout_s)
    results = wait_all(futures, lambda tp: f"offsets of {tp.topic}-{tp.partition}", opts.timeout_s)
    return {(tp.topic, tp.partition): int(info.offset) for tp, info in results.items()}


def _state(description: Any) -> str:
    return str(description.state.name) if description.state is not None else "UNKNOWN"


@group.command()
@client_options
@click.argument("group_id", metavar="GROUP")
def describe(opts: ClientOptions, group_id: str) -> None:
    """State, members, and per partition: committed offset, high watermark, lag."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    with admin_client(opts) as admin:
        description = _description(admin, opts, group_id)
        committed = _committed(admin, opts, group_id)
        if _state(description) == "DEAD" and not committed:
            raise CommandError(f"unknown group {group_id!r}")
        assigned = {(tp.topic, tp.partition): m.member_id
                    for m in description.members for tp in m.assignment.topic_partitions}
        keys = sorted(set(committed) | set(assigned))
        ends = _list_offsets(admin, opts, {TopicPartition(t, p): OffsetSpec.latest() for t, p in keys})
    partitions: list[dict[str, Any]] = []
    for key in keys:
        end, offset = ends.get(key), committed.get(key)
        partitions.append({
            "topic": key[0], "partition": key[1], "committed_offset": offset, "high_watermark": end,
            "lag": max(0, end - offset) if end is not None and offset is not None else None,
            "member_id": assigned.get(key),
        })
    members = [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                "group_instance_id": m.group_instance_id,
                "partitions": [f"{tp.topic}-{tp.partition}" for tp in m.assignment.topic_partitions]}
               for m in description.members]
    summary: dict[str, Any] = {"group": group_id, "state": _state(description),
               "coordinator": description.coordinator.id if description.coordinator is not None else None,
               "assignor": description.partition_assignor or None, "members": members,
               "partitions": partitions,
               "total_lag": sum(p["lag"] for p in partitions if p["lag"] is not None)}
    if opts.output == "json":
        print_json(summary)
        return
    click.echo(f"group {group_id}  state {summary['state']}  coordinator {summary['coordinator']}  "
               f"members {len(members)}  lag {summary['total_lag']}")
    print_table(["TOPIC", "PARTITION", "COMMITTED", "HW", "LAG", "MEMBER"],
                [[p["topic"], p["partition"], p["committed_offset"], p["high_watermark"], p["lag"],
                  p["member_id"]] for p in partitions])
    if members:
        click.echo("")
        print_table(["MEMBER", "CLIENT-ID", "HOST", "PARTITIONS"],
                    [[m["member_id"], m["client_id"], m["host"], ",".join(m["partitions"])] for m in members])


def _target_spec(to_earliest: bool, to_latest: bool, to_offset: int | None,
                 to_timestamp_ms: int | None) -> tuple[str, int | None]:
    choices: list[tuple[str, int | None, bool]] = [
        ("earliest", None, to_earliest), ("latest", None, to_latest),
        ("offset", to_offset, to_offset is not None),
        ("timestamp", to_timestamp_ms, to_timestamp_ms is not None),
    ]
    given = [(name, value) for name, value, on in choices if on]
    if len(given) != 1:
        raise click.UsageError("give one of --to-earliest, --to-latest, --to-offset, --to-timestamp")
    return given[0]


@group.command()
@client_options
@click.argument("group_id", metavar="GROUP")
@click.option("--topic", "topics", multiple=True, required=True, help="a topic whose offsets move (repeatable)")
@click.option("--partition", "partitions", multiple=True, type=click.IntRange(0, None),
              help="only this partition (repeatable; default: every partition of the topics)")
@click.option("--to-earliest", is_flag=True, help="to each partition's log start offset")
@click.option("--to-latest", is_flag=True, help="to each partition's high watermark")
@click.option("--to-offset", type=click.IntRange(0, None), default=None,
              help="to this offset (kept within log start offset and high watermark)")
@click.option("--to-timestamp", "to_timestamp_ms", type=int, default=None, metavar="MS",
              help="to the first record at or after this time (ms since the epoch); the end if none")
@click.option("--dry-run", is_flag=True, help="show the new offsets without committing them")
def seek(opts: ClientOptions, group_id: str, topics: tuple[str, ...], partitions: tuple[int, ...],
         to_earliest: bool, to_latest: bool, to_offset: int | None, to_timestamp_ms: int | None,
         dry_run: bool) -> None:
    """Reset the committed offsets of a group without members (OffsetCommit)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    target, value = _target_spec(to_earliest, to_latest, to_offset, to_timestamp_ms)
    with admin_client(opts) as admin:
        description = _description(admin, opts, group_id)
        if _state(description) not in EMPTY_STATES or description.members:
            raise CommandError(f"group {group_id!r} has {len(description.members)} members (state "
                               f"{_state(description)}): offsets move only while it has none; stop its consumers")
        tps = []
        for name in topics:
            found = existing_topic(reach(admin, opts, name), name)
            chosen = sorted(set(partitions)) if partitions else sorted(found.partitions)
            missing = [p for p in chosen if p not in found.partitions]
            if missing:
                raise CommandError(f"topic {name!r} has no partition {missing[0]}")
            tps += [TopicPartition(name, p) for p in chosen]
        starts = _list_offsets(admin, opts, {tp: OffsetSpec.earliest() for tp in tps})
        ends = _list_offsets(admin, opts, {tp: OffsetSpec.latest() for tp in tps})
        if target == "timestamp":
            assert value is not None
            at = _list_offsets(admin, opts, {tp: OffsetSpec.for_timestamp(value) for tp in tps})
        before = _committed(admin, opts, group_id)
        new: dict[tuple[str, int], int] = {}
        for tp in tps:
            key = (tp.topic, tp.partition)
            if target == "earliest":
                new[key] = starts[key]
            elif target == "latest":
                new[key] = ends[key]
            elif target == "offset":
                assert value is not None
                new[key] = min(max(value, starts[key]), ends[key])
            else:
                new[key] = at[key] if at[key] >= 0 else ends[key]  # no record that late: the end
        if not dry_run:
            request = ConsumerGroupTopicPartitions(
                group_id, [TopicPartition(t, p, o) for (t, p), o in sorted(new.items())])
            futures = admin.alter_consumer_group_offsets([request], request_timeout=opts.timeout_s)
            wait_all(futures, lambda g: f"cannot commit the offsets of group {g.group_id!r}", opts.timeout_s)
    rows = [{"topic": t, "partition": p, "previous_offset": before.get((t, p)), "new_offset": o}
            for (t, p), o in sorted(new.items())]
    if opts.output == "json":
        print_json({"group": group_id, "dry_run": dry_run, "partitions": rows})
    else:
        print_table(["TOPIC", "PARTITION", "PREVIOUS", "NEW"],
                    [[r["topic"], r["partition"], r["previous_offset"], r["new_offset"]] for r in rows])
        if dry_run:
            click.echo("(dry run: nothing committed)")


@group.command()
@client_options
@click.argument("group_ids", nargs=-1, required=True, metavar="GROUP...")
def delete(opts: ClientOptions, group_ids: tuple[str, ...]) -> None:
    """Delete groups without members, and their committed offsets (DeleteGroups)."""
    with admin_client(opts) as admin:
        futures = admin.delete_consumer_groups(list(group_ids), request_timeout=opts.timeout_s)
        wait_all(futures, lambda g: f"cannot delete group {g!r}", opts.timeout_s)
    if opts.output == "json":
        print_json({"deleted": list(group_ids)})
    else:
        for g in group_ids:
            click.echo(f"deleted group {g}")
