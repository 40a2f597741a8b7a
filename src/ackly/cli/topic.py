"""`ackly topic create|list|describe|alter-config|add-partitions|delete|trim`.

Kafka's admin API through confluent-kafka's AdminClient (CreateTopics, Metadata, ListOffsets,
DescribeConfigs, IncrementalAlterConfigs, CreatePartitions, DeleteTopics, DeleteRecords), so
the commands manage any Kafka cluster, as `kafka-topics.sh`, `kafka-configs.sh` and
`kafka-delete-records.sh` do. `trim` is DeleteRecords: the records before an offset go, and
the partition's log start offset moves up to it.
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
    parse_pairs,
    print_json,
    print_table,
    reach,
    wait_all,
)


@click.group()
def topic() -> None:
    """Create, list, describe, configure, grow, delete and trim topics."""


def _wait_for_leaders(admin: Any, opts: ClientOptions, name: str, partitions: int | None) -> None:
    """Until every partition of the new topic has a leader, so the next produce finds it."""
    import time

    deadline = time.monotonic() + opts.timeout_s
    while True:
        found = reach(admin, opts, name).topics.get(name)
        parts = found.partitions if found is not None and found.error is None else {}
        if parts and (partitions is None or len(parts) >= partitions) \
                and all(p.leader >= 0 for p in parts.values()):
            return
        if time.monotonic() >= deadline:
            raise CommandError(f"topic {name!r} was created but not every partition has a leader "
                               f"after {opts.timeout_s:g} s")
        time.sleep(0.05)


@topic.command()
@client_options
@click.argument("name")
@click.option("-p", "--partitions", default=None, type=click.IntRange(1, 100_000),
              help="default: the broker's num.partitions")
@click.option("-r", "--replication-factor", default=None, type=click.IntRange(1, 32),
              help="default: the broker's default.replication.factor")
@click.option("-c", "--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="a topic config, e.g. cleanup.policy=compact (repeatable)")
def create(opts: ClientOptions, name: str, partitions: int | None, replication_factor: int | None,
           configs: tuple[str, ...]) -> None:
    """Create a topic (CreateTopics) and wait until its partitions have leaders."""
    from confluent_kafka.admin import NewTopic

    topic_configs = parse_pairs(configs, "--config")
    with admin_client(opts) as admin:
        new = NewTopic(name, partitions if partitions is not None else -1,
                       replication_factor if replication_factor is not None else -1, config=topic_configs)
        futures = admin.create_topics([new], operation_timeout=opts.timeout_s, request_timeout=opts.timeout_s)
        wait_all(futures, lambda t: f"cannot create topic {t!r}", opts.timeout_s)
        _wait_for_leaders(admin, opts, name, partitions)
        count = len(reach(admin, opts, name).topics[name].partitions)
    if opts.output == "json":
        print_json({"topic": name, "partitions": count, "created": True})
    else:
        click.echo(f"created topic {name} ({count} partitions)")


@topic.command(name="list")
@client_options
@click.option("--internal", is_flag=True, help="include internal topics (__consumer_offsets, ...)")
def list_topics(opts: ClientOptions, internal: bool) -> None:
    """The topics, their partition count and replication factor (Metadata)."""
    with admin_client(opts) as admin:
        metadata = reach(admin, opts)
    rows = []
    for name, found in sorted(metadata.topics.items()):
        if name.startswith("__") and not internal:
            continue
        parts = found.partitions.values()
        replication = max((len(p.replicas) for p in parts), default=0)
        rows.append({"topic": name, "partitions": len(parts), "replication_factor": replication})
    if opts.output == "json":
        print_json(rows)
    else:
        print_table(["TOPIC", "PARTITIONS", "REPLICAS"],
                    [[r["topic"], r["partitions"], r["replication_factor"]] for r in rows])


def _offsets(admin: Any, opts: ClientOptions, tps: list[Any], spec: Any) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets({tp: spec for tp in tps}, request_timeout=opts.timeout_s)
    results = wait_all(futures, lambda tp: f"offsets of {tp.topic}-{tp.partition}", opts.timeout_s)
    return {(tp.topic, tp.partition): int(info.offset) for tp, info in results.items()}


def describe_configs(admin: Any, opts: ClientOptions, name: str) -> dict[str, Any]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, name)
    futures = admin.describe_configs([resource], request_timeout=opts.timeout_s)
    entries = wait_all(futures, lambda r: f"configs of topic {name!r}", opts.timeout_s)[resource]
    return dict(entries)


@topic.command()
@client_options
@click.argument("names", nargs=-1, required=True)
@click.option("--all-configs", is_flag=True, help="show every config, not only those set on the topic")
def describe(opts: ClientOptions, names: tuple[str, ...], all_configs: bool) -> None:
    """Partitions (leader, replicas, ISR, log start offset, high watermark) and configs."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    described: list[dict[str, Any]] = []
    with admin_client(opts) as admin:
        for name in names:
            found = existing_topic(reach(admin, opts, name), name)
            tps = [TopicPartition(name, p) for p in sorted(found.partitions)]
            starts = _offsets(admin, opts, tps, OffsetSpec.earliest())
            ends = _offsets(admin, opts, tps, OffsetSpec.latest())
            configs = describe_configs(admin, opts, name)
            described.append({
                "topic": name,
                "partitions": [
                    {"partition": p.id, "leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isrs),
                     "log_start_offset": starts[(name, p.id)], "high_watermark": ends[(name, p.id)]}
                    for p in sorted(found.partitions.values(), key=lambda p: p.id)
                ],
                "configs": {k: e.value for k, e in sorted(configs.items())
                            if all_configs or not e.is_default},
            })
    if opts.output == "json":
        print_json(described)
        return
    for i, entry in enumerate(described):
        if i:
            click.echo("")
        click.echo(f"topic {entry['topic']}")
        print_table(["PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START", "HW"], [
            [p["partition"], p["leader"], ",".join(map(str, p["replicas"])), ",".join(map(str, p["isr"])),
             p["log_start_offset"], p["high_watermark"]] for p in entry["partitions"]])
        if entry["configs"]:
            click.echo("configs")
            for key, value in entry["configs"].items():
                click.echo(f"  {key}={value}")


@topic.command(name="alter-config")
@client_options
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="set a topic config (repeatable)")
@click.option("--delete", "deletes", multiple=True, metavar="KEY",
              help="remove a topic config, back to the broker's default (repeatable)")
def alter_config(opts: ClientOptions, name: str, sets: tuple[str, ...], deletes: tuple[str, ...]) -> None:
    """Set or remove topic configs (IncrementalAlterConfigs)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    if not sets and not deletes:
        raise click.UsageError("give --set KEY=VALUE or --delete KEY")
    changes = parse_pairs(sets, "--set")
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in changes.items()]
    entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in deletes]
    with admin_client(opts) as admin:
        existing_topic(reach(admin, opts, name), name)
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
        futures = admin.incremental_alter_configs([resource], request_timeout=opts.timeout_s)
        wait_all(futures, lambda r: f"cannot alter the configs of topic {name!r}", opts.timeout_s)
    if opts.output == "json":
        print_json({"topic": name, "set": changes, "deleted": list(deletes)})
    else:
        for key, value in changes.items():
            click.echo(f"set {name} {key}={value}")
        for key in deletes:
            click.echo(f"deleted {name} {key}")


@topic.command(name="add-partitions")
@client_options
@click.argument("name")
@click.option("--total", required=True, type=click.IntRange(1, 100_000),
              help="the partition count the topic grows to")
def add_partitions(opts: ClientOptions, name: str, total: int) -> None:
    """Grow a topic to --total partitions (CreatePartitions)."""
    from confluent_kafka.admin import NewPartitions

    with admin_client(opts) as admin:
        existing_topic(reach(admin, opts, name), name)
        futures = admin.create_partitions([NewPartitions(name, total)], operation_timeout=opts.timeout_s,
                                          request_timeout=opts.timeout_s)
        wait_all(futures, lambda t: f"cannot add partitions to topic {t!r}", opts.timeout_s)
        _wait_for_leaders(admin, opts, name, total)
    if opts.output == "json":
        print_json({"topic": name, "partitions": total})
    else:
        click.echo(f"topic {name} now has {total} partitions")


@topic.command()
@client_options
@click.argument("names", nargs=-1, required=True)
def delete(opts: ClientOptions, names: tuple[str, ...]) -> None:
    """Delete topics (DeleteTopics)."""
    with admin_client(opts) as admin:
        futures = admin.delete_topics(list(names), operation_timeout=opts.timeout_s,
                                      request_timeout=opts.timeout_s)
        wait_all(futures, lambda t: f"cannot delete topic {t!r}", opts.timeout_s)
    if opts.output == "json":
        print_json({"deleted": list(names)})
    else:
        for name in names:
            click.echo(f"deleted topic {name}")


@topic.command()
@client_options
@click.argument("name")
@click.option("--partition", "partitions", multiple=True, type=click.IntRange(0, None),
              help="trim this partition (repeatable; default: every partition)")
@click.option("--before", required=True, metavar="OFFSET|end",
              help="delete the records before this offset; `end`: every record (up to the high watermark)")
def trim(opts: ClientOptions, name: str, partitions: tuple[int, ...], before: str) -> None:
    """Delete the records before an offset (DeleteRecords); the log start offset moves to it."""
    from confluent_kafka import TopicPartition

    if before == "end":
        offset = -1  # DeleteRecords' "up to the high watermark"
    else:
        try:
            offset = int(before)
        except ValueError:
            raise click.BadParameter(f"{before!r} is neither an offset nor `end`", param_hint="--before") from None
        if offset < 0:
            raise click.BadParameter("an offset is 0 or more", param_hint="--before")
    with admin_client(opts) as admin:
        found = existing_topic(reach(admin, opts, name), name)
        chosen = sorted(set(partitions)) if partitions else sorted(found.partitions)
        missing = [p for p in chosen if p not in found.partitions]
        if missing:
            raise CommandError(f"topic {name!r} has no partition {missing[0]} "
                               f"(it has {len(found.partitions)})")
        futures = admin.delete_records([TopicPartition(name, p, offset) for p in chosen],
                                       request_timeout=opts.timeout_s, operation_timeout=opts.timeout_s)
        results = wait_all(futures, lambda tp: f"cannot trim {tp.topic}-{tp.partition}", opts.timeout_s)
    rows = sorted((tp.partition, int(deleted.low_watermark)) for tp, deleted in results.items())
    if opts.output == "json":
        print_json([{"topic": name, "partition": p, "log_start_offset": low} for p, low in rows])
    else:
        print_table(["PARTITION", "LOG-START"], rows)
