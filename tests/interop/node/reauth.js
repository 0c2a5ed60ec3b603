#!/usr/bin/env node
// kafkajs producing for a while over SASL/OAUTHBEARER, for the KIP-368 re-authentication test
// in tests/interop/test_oauthbearer.py.
//
// Usage: node reauth.js SETTINGS_JSON
//
// SETTINGS_JSON: {"bootstrap", "topic", "ca", "token", "durationMs", "reauthenticationThreshold"}.
// Sends one message to partition 0 of TOPIC every 100 ms for DURATION_MS on one producer, and
// prints one JSON object on stdout: {"sent": n} or {"error": {"name", "type", "message"}}.

'use strict';

const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const settings = JSON.parse(process.argv[2] || '{}');

async function main() {
  const kafka = new Kafka({
    clientId: 'millrace-interop-kafkajs-reauth',
    brokers: [settings.bootstrap],
    ssl: { ca: [fs.readFileSync(settings.ca, 'utf-8')] },
    sasl: { mechanism: 'oauthbearer', oauthBearerProvider: async () => ({ value: settings.token }) },
    // kafkajs re-authenticates this long before the session ends (10 s by default, which on a
    // 2 s session means before every request).
    reauthenticationThreshold: settings.reauthenticationThreshold,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 10000,
    requestTimeout: 20000,
    retry: { retries: 2 },
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  let sent = 0;
  const start = Date.now();
  while (Date.now() - start < settings.durationMs) {
    await producer.send({ topic: settings.topic, acks: -1, messages: [{ value: `r-${sent}`, partition: 0 }] });
    sent += 1;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await producer.disconnect();
  return { sent };
}

main()
  .then((result) => {
    console.log(JSON.stringify(result));
    process.exit(0);
  })
  .catch((error) => {
    console.log(JSON.stringify({ error: { name: error.name, type: error.type, message: error.message } }));
    process.exit(0);
  });
