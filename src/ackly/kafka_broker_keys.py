"""Kafka 4's broker keys that ackly knows but does not define as configs of its own.

A `server.properties` written for a Kafka broker names many keys that mean nothing here: thread
pools and socket buffers (asyncio has neither), the KRaft quorum (the metadata lives in the
store), JMX and metric reporters, SASL mechanisms ackly does not offer. They are accepted and
named once, at start-up, as ignored (`IGNORED`), so that such a file starts a broker.

Keys whose setting would change what the broker does (a plugin class, tiered storage, a rate
limit) cannot be ignored without lying: they are accepted only with Kafka's default, and any
other value is refused with the reason (`UNSUPPORTED`: key -> (default, reason)). A key in
neither table nor in config.BROKER_CONFIGS is unknown and refused, as before.
"""

from __future__ import annotations

from collections.abc import Mapping

_THREADS_AND_BUFFERS = (
    "background.threads", "num.io.threads", "num.network.threads",
    "num.recovery.threads.per.data.dir", "num.replica.alter.log.dirs.threads",
    "num.replica.fetchers", "queued.max.requests", "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes", "socket.listen.backlog.size",
    "replica.socket.receive.buffer.bytes", "replica.fetch.min.bytes",
    "fetch.purgatory.purge.interval.requests", "producer.purgatory.purge.interval.requests",
    "delete.records.purgatory.purge.interval.requests",
    "offsets.load.buffer.size", "transaction.state.log.load.buffer.size",
    "group.coordinator.threads", "group.coordinator.append.linger.ms",
    "replica.alter.log.dirs.io.max.bytes.per.second",
)
_SCHEDULING = (
    "controlled.shutdown.enable", "controlled.shutdown.max.retries",
    "controlled.shutdown.retry.backoff.ms", "controller.socket.timeout.ms",
    "leader.imbalance.check.interval.seconds", "leader.imbalance.per.broker.percentage",
    "producer.id.expiration.check.interval.ms", "unclean.leader.election.interval.ms",
    "server.max.startup.time.ms", "early.start.listeners",
    "socket.connection.setup.timeout.ms", "socket.connection.setup.timeout.max.ms",
    "connection.failed.authentication.delay.ms", "replica.high.watermark.checkpoint.interval.ms",
    "log.flush.start.offset.checkpoint.interval.ms", "log.dir.failure.timeout.ms",
    "replication.quota.window.num", "replication.quota.window.size.seconds",
    "alter.log.dirs.replication.quota.window.num",
    "alter.log.dirs.replication.quota.window.size.seconds",
)
# The metadata lives in the store (etcd, or the data directory of a lone broker): the KRaft
# quorum's keys describe a process ackly does not run (`controller.listener.names` is a config
# of config.py: those listeners are not opened).
_KRAFT = (
    "process.roles", "controller.quorum.voters",
    "controller.quorum.bootstrap.servers", "controller.quorum.append.linger.ms",
    "controller.quorum.election.backoff.max.ms", "controller.quorum.election.timeout.ms",
    "controller.quorum.fetch.timeout.ms", "controller.quorum.request.timeout.ms",
    "controller.quorum.retry.backoff.ms", "controller.quota.window.num",
    "controller.quota.window.size.seconds", "metadata.log.dir",
    "metadata.log.max.record.bytes.between.snapshots", "metadata.log.max.snapshot.interval.ms",
    "metadata.log.segment.bytes", "metadata.log.segment.min.bytes", "metadata.log.segment.ms",
    "metadata.max.idle.interval.ms", "metadata.max.retention.bytes", "metadata.max.retention.ms",
    "sasl.mechanism.controller.protocol",
    "inter.broker.protocol.version", "unstable.api.versions.enable",
    "unstable.feature.versions.enable", "broker.id.generation.enable", "reserved.broker.max.id",
)
_METRICS = (
    "metric.reporters", "metrics.num.samples", "metrics.recording.level",
    "metrics.sample.window.ms", "kafka.metrics.polling.interval.secs", "kafka.metrics.reporters",
    "telemetry.max.bytes",
)
# Share groups (KIP-932) are not offered: their tuning keys are inert (the switches that
# would turn them on are in UNSUPPORTED). Of the consumer groups' (KIP-848) keys, config.py
# defines the ones ackly uses; the bounds a member could ask within are inert, since a
# member asks for neither a session timeout nor a heartbeat interval in this protocol.
_GROUPS = (
    "group.consumer.max.heartbeat.interval.ms", "group.consumer.max.session.timeout.ms",
    "group.consumer.migration.policy",
    "group.consumer.min.heartbeat.interval.ms", "group.consumer.min.session.timeout.ms",
    "group.coordinator.rebalance.protocols",
    "group.share.delivery.count.limit", "group.share.heartbeat.interval.ms",
    "group.share.max.groups", "group.share.max.heartbeat.interval.ms",
    "group.share.max.record.lock.duration.ms", "group.share.max.session.timeout.ms",
    "group.share.max.size", "group.share.min.heartbeat.interval.ms",
    "group.share.min.record.lock.duration.ms", "group.share.min.session.timeout.ms",
    "group.share.partition.max.record.locks", "group.share.record.lock.duration.ms",
    "group.share.session.timeout.ms", "share.coordinator.append.linger.ms",
    "share.coordinator.load.buffer.size", "share.coordinator.snapshot.update.records.per.snapshot",
    "share.coordinator.state.topic.compression.codec", "share.coordinator.state.topic.min.isr",
    "share.coordinator.state.topic.num.partitions",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.segment.bytes", "share.coordinator.threads",
    "share.coordinator.write.timeout.ms", "share.fetch.max.fetch.records",
    "share.fetch.purgatory.purge.interval.requests", "offsets.topic.compression.codec",
)
# SASL mechanisms other than PLAIN and SCRAM (GSSAPI, OAUTHBEARER) cannot be enabled
# (sasl.enabled.mechanisms refuses them), so their settings are inert; so are the JVM's TLS
# provider settings (TLS is Python's ssl module with PEM files).
_SECURITY = (
    "sasl.kerberos.kinit.cmd", "sasl.kerberos.min.time.before.relogin",
    "sasl.kerberos.principal.to.local.rules", "sasl.kerberos.service.name",
    "sasl.kerberos.ticket.renew.jitter", "sasl.kerberos.ticket.renew.window.factor",
    "sasl.login.connect.timeout.ms", "sasl.login.read.timeout.ms",
    "sasl.login.refresh.buffer.seconds", "sasl.login.refresh.min.period.seconds",
    "sasl.login.refresh.window.factor", "sasl.login.refresh.window.jitter",
    "sasl.login.retry.backoff.max.ms", "sasl.login.retry.backoff.ms",
    "sasl.oauthbearer.clock.skew.seconds", "sasl.oauthbearer.expected.audience",
    "sasl.oauthbearer.expected.issuer", "sasl.oauthbearer.header.urlencode",
    "sasl.oauthbearer.jwks.endpoint.refresh.ms",
    "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms",
    "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms", "sasl.oauthbearer.jwks.endpoint.url",
    "sasl.oauthbearer.scope.claim.name", "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.token.endpoint.url", "ssl.protocol", "ssl.provider",
    "ssl.keymanager.algorithm", "ssl.trustmanager.algorithm", "ssl.secure.random.implementation",
    "ssl.keystore.password", "ssl.truststore.password", "ssl.allow.dn.changes",
    "ssl.allow.san.changes", "password.encoder.cipher.algorithm", "password.encoder.iterations",
    "password.encoder.key.length", "password.encoder.keyfactory.algorithm",
    "password.encoder.old.secret", "password.encoder.secret",
)
# Tiered storage is off (remote.log.storage.system.enable is refused unless false): these
# tune a subsystem that never runs.
_TIERED = (
    "remote.fetch.max.wait.ms", "remote.list.offsets.request.timeout.ms",
    "remote.log.index.file.cache.total.size.bytes", "remote.log.manager.copier.thread.pool.size",
    "remote.log.manager.copy.max.bytes.per.second", "remote.log.manager.copy.quota.window.num",
    "remote.log.manager.copy.quota.window.size.seconds",
    "remote.log.manager.expiration.thread.pool.size",
    "remote.log.manager.fetch.max.bytes.per.second", "remote.log.manager.fetch.quota.window.num",
    "remote.log.manager.fetch.quota.window.size.seconds", "remote.log.manager.task.interval.ms",
    "remote.log.manager.task.retry.backoff.max.ms", "remote.log.manager.task.retry.backoff.ms",
    "remote.log.manager.task.retry.jitter", "remote.log.manager.thread.pool.size",
    "remote.log.metadata.custom.metadata.max.bytes", "remote.log.metadata.manager.class.path",
    "remote.log.metadata.manager.impl.prefix", "remote.log.metadata.manager.listener.name",
    "remote.log.reader.max.pending.tasks", "remote.log.reader.threads",
    "remote.log.storage.manager.class.path", "remote.log.storage.manager.impl.prefix",
)

IGNORED: frozenset[str] = frozenset(
    _THREADS_AND_BUFFERS + _SCHEDULING + _KRAFT + _METRICS + _GROUPS + _SECURITY + _TIERED
)

_PLUGIN = "plugin classes cannot be loaded by this broker"
_INT_MAX = str(2**31 - 1)
_LONG_MAX = str(2**63 - 1)
UNSUPPORTED: Mapping[str, tuple[str, str]] = {
    "principal.builder.class": (
        "org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder", _PLUGIN),
    "client.quota.callback.class": ("", _PLUGIN),
    "create.topic.policy.class.name": ("", _PLUGIN),
    "alter.config.policy.class.name": ("", _PLUGIN),
    "sasl.server.callback.handler.class": ("", _PLUGIN),
    "sasl.client.callback.handler.class": ("", _PLUGIN),
    "sasl.login.callback.handler.class": ("", _PLUGIN),
    "sasl.login.class": ("", _PLUGIN),
    "ssl.engine.factory.class": ("", _PLUGIN),
    "remote.log.storage.manager.class.name": ("", _PLUGIN),
    "remote.log.metadata.manager.class.name": (
        "org.apache.kafka.server.log.remote.metadata.storage.TopicBasedRemoteLogMetadataManager",
        _PLUGIN),
    "config.providers": ("", "config providers (${provider:key}) are not resolved"),
    "remote.log.storage.system.enable": ("false", "tiered storage is not supported"),
    "group.share.enable": ("false", "share groups (KIP-932) are not supported"),
    "group.coordinator.new.enable": ("true", "there is one group coordinator, serving both group protocols"),
    "delegation.token.secret.key": ("", "delegation tokens are not supported"),
    "delegation.token.expiry.time.ms": ("86400000", "delegation tokens are not supported"),
    "delegation.token.max.lifetime.ms": ("604800000", "delegation tokens are not supported"),
    "delegation.token.expiry.check.interval.ms": ("3600000", "delegation tokens are not supported"),
    "security.inter.broker.protocol": (
        "PLAINTEXT", "name the inter-broker listener with inter.broker.listener.name"),
    "max.connection.creation.rate": (_INT_MAX, "connection creation rates are not limited"),
    "leader.replication.throttled.rate": (_LONG_MAX, "replication throttles are not supported"),
    "follower.replication.throttled.rate": (_LONG_MAX, "replication throttles are not supported"),
}


def unsupported_problem(key: str, raw: str) -> str | None:
    """Why `key=raw` is refused (None: the key is not in UNSUPPORTED, or has its default)."""
    known = UNSUPPORTED.get(key)
    if known is None:
        return None
    default, reason = known
    if raw.strip() == default:
        return None
    return f"{raw.strip()!r} is not supported: {reason} (only the default {default!r} is accepted)"
