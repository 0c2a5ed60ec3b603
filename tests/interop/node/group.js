#!/usr/bin/env node
// kafkajs idempotent producer and consumer group against a Millrace broker, driven by
// tests/interop/test_kafkajs.py.
//
// Usage: node group.js BOOTSTRAP TOPIC GROUP COUNT
//
// Creates TOPIC with 3 partitions, sends COUNT keyed messages with an idempotent producer,
// consumes them in GROUP until all arrived (or 30 s passed), then reads the group's committed
// offsets with the admin client. Prints one JSON object on stdout; kafkajs logs go to stderr.

'use strict';

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, groupId, countArg] = process.argv.slice(2);
const count = Number(countArg || 30);

async function main() {
  const kafka = new Kafka({
    clientId: 'millrace-interop-kafkajs-group',
    // A cluster's bootstrap is a comma-separated list.
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    logCreator: () => ({ label, namespace, log }) =>
      process.stderr.write(`[kafkajs ${label}] ${namespace}: ${log.message}\n`),
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] });

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = Array.from({ length: count }, (_, i) => ({ key: `k${i % 7}`, value: `v${i}` }));
  await producer.send({ topic, messages });

  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, rebalanceTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 30000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        consumed.push({ partition, offset: Number(message.offset), value: message.value.toString() });
        if (consumed.length >= count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  // disconnect() commits the resolved offsets and leaves the group.
  await consumer.disconnect();
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const groups = await admin.describeGroups([groupId]);
  await producer.disconnect();
  await admin.disconnect();
  console.log(JSON.stringify({
    sent: messages.map((m) => m.value),
    consumed,
    committed: committed.partitions.map((p) => ({ partition: p.partition, offset: Number(p.offset) })),
    groupState: groups.groups[0].state,
  }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
