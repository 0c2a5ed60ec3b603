#!/usr/bin/env node
// kafkajs against a Millrace broker, driven by tests/interop/test_kafkajs.py.
//
// Usage: node roundtrip.js BOOTSTRAP TOPIC [COUNT]
//
// Creates TOPIC with 3 partitions, sends COUNT keyed messages with headers (idempotent off:
// the broker has no InitProducerId yet), half uncompressed and half gzip, and reads the
// offsets back with the admin client. kafkajs consumers need consumer groups, which the
// broker does not have yet, so the Python test reads the records back itself.
//
// Prints one JSON object on stdout; kafkajs logs go to stderr.

'use strict';

const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

const [bootstrap, topic, countArg] = process.argv.slice(2);
if (!bootstrap || !topic) {
  console.error('usage: node roundtrip.js BOOTSTRAP TOPIC [COUNT]');
  process.exit(2);
}
const count = Number(countArg || 50);

const stderrLogger = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

async function main() {
  const kafka = new Kafka({
    clientId: 'millrace-interop-kafkajs',
    // A cluster's bootstrap is a comma-separated list.
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    logCreator: stderrLogger,
    connectionTimeout: 10000,
    requestTimeout: 20000,
    retry: { retries: 3 },
  });

  const result = { topic };
  const admin = kafka.admin();
  await admin.connect();
  try {
    result.created = await admin.createTopics({
      // -1: the broker's default replication factor (3 in the test cluster).
      topics: [{ topic, numPartitions: 3, replicationFactor: -1 }],
      waitForLeaders: true,
      timeout: 15000,
    });
    result.listed = (await admin.listTopics()).includes(topic);
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    result.metadata = md.topics.map((t) => ({
      name: t.name,
      partitions: t.partitions
        .map((p) => ({ partition: p.partitionId, leader: p.leader, replicas: p.replicas }))
        .sort((a, b) => a.partition - b.partition),
    }));

    const producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: false });
    await producer.connect();
    const messages = [];
    for (let i = 0; i < count; i++) {
      messages.push({
        key: `key-${i % 7}`,
        value: `kafkajs value ${i}`,
        headers: { seq: String(i), client: 'kafkajs' },
      });
    }
    const half = Math.floor(count / 2);
    result.sent = messages;
    result.sendResults = [];
    result.sendResults.push(
      ...(await producer.send({ topic, acks: -1, messages: messages.slice(0, half) })),
    );
    result.sendResults.push(
      ...(await producer.send({
        topic,
        acks: -1,
        compression: CompressionTypes.GZIP,
        messages: messages.slice(half),
      })),
    );
    await producer.disconnect();

    result.offsets = (await admin.fetchTopicOffsets(topic))
      .map((o) => ({
        partition: o.partition,
        low: Number(o.low),
        high: Number(o.high),
        offset: Number(o.offset),
      }))
      .sort((a, b) => a.partition - b.partition);
  } finally {
    await admin.disconnect();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  process.stderr.write(`kafkajs round trip failed: ${err && err.stack ? err.stack : err}\n`);
  process.stdout.write(
    JSON.stringify({ error: String(err && err.message ? err.message : err), type: err && err.name }) + '\n',
  );
  process.exit(1);
});
