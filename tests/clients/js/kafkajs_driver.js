// One kafkajs 2.2.4 operation per run, driven by tests/clients/test_client_kafkajs.py.
//
// Reads {"op": ..., "brokers": [...], ...} as JSON on stdin and prints {"result": ...} as the
// last line of stdout. Exits non-zero with the error on stderr if the operation fails.
// Keys, values and header values travel as UTF-8 strings; null stays null.
//
// Reading records back: kafkajs's only consumer is a group consumer (JoinGroup, SyncGroup,
// OffsetCommit...), which ackly does not implement yet. So the "fetch" op sends kafkajs's own
// Fetch request (v11) through kafkajs's own cluster and broker objects and decodes the answer
// with kafkajs's own record batch decoder: the wire format and decoding are exactly what its
// consumer would use, only the group protocol around it is left out.
'use strict'

const { Kafka, logLevel, CompressionTypes } = require('kafkajs')

const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
}

function readStdin() {
  return new Promise((resolve, reject) => {
    let data = ''
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', chunk => (data += chunk))
    process.stdin.on('end', () => resolve(data))
    process.stdin.on('error', reject)
  })
}

// args.ssl: {ca, cert, key} PEM file paths (cert and key only for mTLS), or absent.
function tlsOptions(ssl) {
  if (!ssl) return undefined
  const fs = require('fs')
  const options = { ca: [fs.readFileSync(ssl.ca, 'utf8')] }
  if (ssl.cert) options.cert = fs.readFileSync(ssl.cert, 'utf8')
  if (ssl.key) options.key = fs.readFileSync(ssl.key, 'utf8')
  return options
}

// args.sasl: kafkajs's own {mechanism, username, password}.
function client(args) {
  return new Kafka({
    clientId: 'ackly-kafkajs-tests',
    brokers: args.brokers,
    ssl: tlsOptions(args.ssl),
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout: 15000,
    retry: { retries: args.retries ?? 3, initialRetryTime: 100 },
    ...(args.sasl ? { sasl: args.sasl } : {}),
  })
}

function text(buf) {
  return buf == null ? null : Buffer.from(buf).toString('utf8')
}

// kafkajs's Cluster is private to its Kafka object; the producer, consumer and admin all
// build theirs with this factory, so do the same.
function createCluster(kafka) {
  const sym = Object.getOwnPropertySymbols(kafka).find(
    s => s.description === 'private:Kafka:createCluster'
  )
  if (!sym) throw new Error('kafkajs internals changed: no createCluster symbol')
  return kafka[sym]({ metadataMaxAge: 300000, allowAutoTopicCreation: false })
}

const OPS = {
  async createTopic(kafka, { topic, partitions }) {
    const admin = kafka.admin()
    await admin.connect()
    try {
      const created = await admin.createTopics({
        topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }],
        waitForLeaders: true,
        timeout: 10000,
      })
      const meta = await admin.fetchTopicMetadata({ topics: [topic] })
      return { created, metadata: meta.topics }
    } finally {
      await admin.disconnect()
    }
  },

  async listTopics(kafka) {
    const admin = kafka.admin()
    await admin.connect()
    try {
      return await admin.listTopics()
    } finally {
      await admin.disconnect()
    }
  },

  async deleteTopic(kafka, { topic }) {
    const admin = kafka.admin()
    await admin.connect()
    try {
      await admin.deleteTopics({ topics: [topic], timeout: 10000 })
      return true
    } finally {
      await admin.disconnect()
    }
  },

  // offsets: earliest/latest per partition and, for each timestamp, the offset kafkajs
  // reports (it maps "no record at or after t" to the latest offset).
  async offsets(kafka, { topic, timestamps }) {
    const admin = kafka.admin()
    await admin.connect()
    try {
      const ends = await admin.fetchTopicOffsets(topic)
      const byTimestamp = []
      for (const ts of timestamps) {
        const found = await admin.fetchTopicOffsetsByTimestamp(topic, ts)
        byTimestamp.push({ timestamp: ts, partitions: found })
      }
      return { ends, byTimestamp }
    } finally {
      await admin.disconnect()
    }
  },

  // produce: one send() per partition so the records of a partition form batches in order.
  async produce(kafka, { topic, messages, acks = -1, compression = 'none' }) {
    if (!(compression in CODECS)) throw new Error(`codec ${compression} needs a kafkajs plugin`)
    const producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: false })
    await producer.connect()
    try {
      const results = []
      const partitions = [...new Set(messages.map(m => m.partition))]
      for (const partition of partitions) {
        const out = await producer.send({
          topic,
          acks,
          compression: CODECS[compression],
          messages: messages
            .filter(m => m.partition === partition)
            .map(m => ({
              partition: m.partition,
              key: m.key,
              value: m.value,
              timestamp: String(m.timestamp),
              headers: Object.fromEntries(m.headers),
            })),
        })
        results.push(...out)
      }
      return results
    } finally {
      await producer.disconnect()
    }
  },

  // fetch: every record of the given partitions from offset 0 up to the high watermark.
  async fetch(kafka, { topic, partitions, maxRounds = 100 }) {
    const cluster = createCluster(kafka)
    await cluster.connect()
    try {
      await cluster.addTargetTopic(topic)
      await cluster.refreshMetadata()
      const records = []
      for (const partition of partitions) {
        const leaders = cluster.findLeaderForPartitions(topic, [partition])
        const nodeId = Object.keys(leaders)[0]
        const broker = await cluster.findBroker({ nodeId })
        let offset = 0n
        let highWatermark = -1n
        for (let round = 0; round < maxRounds; round++) {
          const response = await broker.fetch({
            replicaId: -1,
            isolationLevel: 1,
            maxWaitTime: 100,
            minBytes: 1,
            maxBytes: 1 << 20,
            topics: [{ topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
          })
          const part = response.responses[0].partitions[0]
          if (part.errorCode !== 0) throw new Error(`fetch ${topic}-${partition}: error ${part.errorCode}`)
          highWatermark = BigInt(part.highWatermark)
          for (const m of part.messages) {
            if (BigInt(m.offset) < offset || m.isControlRecord) continue
            const headers = []
            for (const [k, v] of Object.entries(m.headers || {})) {
              for (const one of Array.isArray(v) ? v : [v]) headers.push([k, text(one)])
            }
            records.push({
              partition,
              offset: Number(m.offset),
              key: text(m.key),
              value: text(m.value),
              headers,
              timestamp: Number(m.timestamp),
            })
            offset = BigInt(m.offset) + 1n
          }
          if (offset >= highWatermark) break
        }
        if (offset < highWatermark) throw new Error(`fetch ${topic}-${partition}: stuck at ${offset}`)
      }
      return records
    } finally {
      await cluster.disconnect()
    }
  },
}

async function main() {
  const args = JSON.parse(await readStdin())
  const op = OPS[args.op]
  if (!op) throw new Error(`unknown op ${args.op}`)
  const result = await op(client(args), args)
  process.stdout.write(JSON.stringify({ result }) + '\n')
}

main().then(
  () => process.exit(0),
  err => {
    process.stderr.write(`${(err && err.stack) || err}\n`)
    process.exit(1)
  }
)
