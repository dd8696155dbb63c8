// The peer of bench scenario 14: Wikimedia's KafkaSSE (npm `kafka-sse`) as its README sets it up, at its
// defaults (one KafkaConsumer per request, assign(), one record per consume call, idleDelayMs 100), on the
// bench's broker, with the fetch wait of the bench's routes. GET /<topic> streams from the latest record;
// ?from=earliest from the first (a timestamp of 1 ms, which KafkaSSE resolves to the first offset of every
// partition).
//
//   node server.js <port> <broker host:port> <fetch.wait.max.ms>
'use strict';
const http = require('http');
const url = require('url');
const kafkaSse = require('kafka-sse');

const [port, broker, fetchWaitMs] = process.argv.slice(2);
const options = { kafkaConfig: { 'metadata.broker.list': broker, 'fetch.wait.max.ms': Number(fetchWaitMs) } };

http.createServer((req, res) => {
    const { pathname, query } = url.parse(req.url, true);
    const topics = pathname.replace('/', '').split(',');
    kafkaSse(req, res, topics, options, query.from === 'earliest' ? 1 : undefined).catch(() => {});
}).listen(Number(port), '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
