// One kafkajs 2.2.4 consumer-group member in its own process, for tests/clients/groupkit.py.
//
//   node group_member.js BOOTSTRAP GROUP TOPIC NAME [SESSION_MS]
//
// Same stdout protocol as tests/clients/group_member.py, one JSON object per line:
//   {"event": "assigned", "member": ..., "partitions": [...]}  after each join + sync
//   {"event": "record", "p": partition, "o": offset, "v": value}  before its offset is committed
//   {"event": "error", "error": ..., "fatal": bool}
//   {"event": "closed"}                                         after a clean disconnect
// Records are processed at least once: each batch is reported, then its offsets committed.
// "stop" on stdin disconnects cleanly (kafkajs sends LeaveGroup); SIGKILL is a crash.
'use strict'

const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, groupId, topic, name, sessionMs] = process.argv.slice(2)

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

async function main() {
  const kafka = new Kafka({
    clientId: name,
    brokers: [bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 1000 },
  })
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: Number(sessionMs || 6000),
    heartbeatInterval: 500,
    rebalanceTimeout: 30000,
    maxWaitTimeInMs: 100,
  })
  consumer.on(consumer.events.GROUP_JOIN, e => {
    emit({ event: 'assigned', member: e.payload.memberId, partitions: [...(e.payload.memberAssignment[topic] || [])].sort((a, b) => a - b) })
  })
  consumer.on(consumer.events.CRASH, e => {
    emit({ event: 'error', error: String(e.payload.error), fatal: !e.payload.restart })
  })

  let stopping = false
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', async chunk => {
    if (stopping || !chunk.includes('stop')) return
    stopping = true
    await consumer.disconnect()
    emit({ event: 'closed' })
    process.exit(0)
  })

  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      if (batch.isEmpty()) return
      for (const m of batch.messages) {
        emit({ event: 'record', p: batch.partition, o: Number(m.offset), v: m.value == null ? null : m.value.toString() })
      }
      try {
        await consumer.commitOffsets([
          { topic: batch.topic, partition: batch.partition, offset: (BigInt(batch.lastOffset()) + 1n).toString() },
        ])
      } catch (e) {
        emit({ event: 'error', error: String(e), fatal: false }) // a rebalance: redelivered later
      }
    },
  })
}

main().catch(e => {
  emit({ event: 'error', error: String((e && e.stack) || e), fatal: true })
  process.exit(1)
})
