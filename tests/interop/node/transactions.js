#!/usr/bin/env node
// kafkajs transactions against a Millrace broker, driven by
// tests/interop/test_kafkajs.py.
//
// Usage: node transactions.js BOOTSTRAP TOPIC TRANSACTIONAL_ID GROUP
//
// Creates TOPIC with 1 partition, then with one transactional producer: commits 5 messages
// (`c1-*`), aborts 5 (`a-*`), and commits 5 more (`c2-*`) together with offset 42 of TOPIC-0
// for GROUP (sendOffsets). A read_committed consumer (kafkajs's default) reads the topic in a
// fresh group; the admin client reads GROUP's committed offsets. Prints one JSON object on
// stdout; kafkajs logs go to stderr.

'use strict';

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, transactionalId, groupId] = process.argv.slice(2);

async function main() {
  const kafka = new Kafka({
    clientId: 'millrace-interop-kafkajs-txn',
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    logCreator: () => ({ label, namespace, log }) =>
      process.stderr.write(`[kafkajs ${label}] ${namespace}: ${log.message}\n`),
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });

  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const batch = (prefix) =>
    Array.from({ length: 5 }, (_, i) => ({ value: `${prefix}-${i}`, partition: 0 }));

  let txn = await producer.transaction();
  await txn.send({ topic, messages: batch('c1') });
  await txn.commit();

  txn = await producer.transaction();
  await txn.send({ topic, messages: batch('a') });
  await txn.abort();

  txn = await producer.transaction();
  await txn.send({ topic, messages: batch('c2') });
  await txn.sendOffsets({
    consumerGroupId: groupId,
    topics: [{ topic, partitions: [{ partition: 0, offset: '42' }] }],
  });
  await txn.commit();
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `${groupId}-reader`, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 20000);
    consumer.run({
      eachMessage: async ({ message }) => {
        consumed.push(message.value.toString());
        if (consumed.length >= 10) {
          clearTimeout(timer);
          // Give an aborted record that would wrongly follow a moment to show up.
          setTimeout(resolve, 1000);
        }
      },
    });
  });
  await consumer.disconnect();
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  await admin.disconnect();
  console.log(JSON.stringify({ consumed, committed: committed.partitions }));
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
