#!/usr/bin/env node
// kafkajs over TLS and SASL against a Millrace broker, driven by tests/interop/test_security.py.
//
// Usage: node security.js SETTINGS_JSON
//
// SETTINGS_JSON: {"bootstrap", "topic", "count", "ca", "cert"?, "key"?, "sasl"?: {"mechanism",
// "username", "password"} or {"mechanism": "oauthbearer", "token"}}. Produces COUNT messages to partition 0 of TOPIC (which must
// exist), reads them back with a consumer group, and prints one JSON object on stdout:
// {"sent": n, "received": [values...]} or {"error": {"name", "type", "message"}}.

'use strict';

const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const settings = JSON.parse(process.argv[2] || '{}');

async function main() {
  const ssl = { ca: [fs.readFileSync(settings.ca, 'utf-8')] };
  if (settings.cert) {
    ssl.cert = fs.readFileSync(settings.cert, 'utf-8');
    ssl.key = fs.readFileSync(settings.key, 'utf-8');
  }
  let sasl = settings.sasl;
  if (sasl && sasl.mechanism === 'oauthbearer') {
    // kafkajs asks a provider for the token at every authentication.
    const token = sasl.token;
    sasl = { mechanism: 'oauthbearer', oauthBearerProvider: async () => ({ value: token }) };
  }
  const kafka = new Kafka({
    clientId: 'millrace-interop-kafkajs-security',
    brokers: [settings.bootstrap],
    ssl,
    sasl,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 10000,
    requestTimeout: 20000,
    retry: { retries: 2 },
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < settings.count; i++) {
    messages.push({ value: `kafkajs-${i}`, partition: 0 });
  }
  await producer.send({ topic: settings.topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `sec-${settings.topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic: settings.topic, fromBeginning: true });
  const received = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out reading back')), 40000);
    consumer
      .run({
        eachMessage: async ({ message }) => {
          received.push(message.value.toString());
          if (received.length >= settings.count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return { sent: messages.length, received };
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
