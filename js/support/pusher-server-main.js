'use strict';
// support/pusher-server.js as a process, for the browser tests in Python
// (tests/browser/test_tidings_recovery.py): prints its port, then reads one JSON command a
// line on stdin and answers each with one JSON line on stdout once it is done:
//   {"publish": [channel, event, data, exclude?]}  ->  {"offset": n}
// Every channel keeps 100 events. It exits when stdin closes.

const readline = require('node:readline');
const { pusherServer } = require('./pusher-server');

(async () => {
  const server = await pusherServer();
  process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const command = JSON.parse(line);
    const offset = server.publish(...command.publish);
    process.stdout.write(`${JSON.stringify({ offset })}\n`);
  });
  lines.on('close', () => server.close());
})();
