'use strict';
// The app side of a live channel for the Node tests that run a real `tidings serve`: its
// signed snapshot endpoint (the app's `live_snapshot_url`) and a table whose writes publish
// the events the Tidings live layer would send.

const crypto = require('node:crypto');
const http = require('node:http');
const { APP } = require('./tidings-server');

const byId = (rows) => [...rows].sort((a, b) => a.id - b.id);

// The app's snapshot endpoint, listening on a free port: answers with
// `state.answer({channel, socket_id})` once the signature of the raw body checks out, and
// records every call. `url` is what the app's live_snapshot_url says.
async function snapshotProvider() {
  const calls = [];
  const state = { answer: null };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks);
      const expected = crypto.createHmac('sha256', APP.secret).update(raw).digest('hex');
      const call = {
        body: JSON.parse(raw.toString('utf8')),
        key: req.headers['x-pusher-key'],
        signed: req.headers['x-pusher-signature'] === expected,
      };
      calls.push(call);
      try {
        const { status = 200, body } = await state.answer(call.body);
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      } catch (error) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: String(error) }));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/pusher/live-snapshot`,
    calls,
    state,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

// A table whose writes publish created / updated (the changed fields) / deleted on
// `channel` through `tidings` (a startTidings handle). `socketId`: the writer's socket,
// left out of the event as X-Socket-ID makes Tidings do.
function liveTable(tidings, channel, rows) {
  const db = new Map(rows.map((row) => [row.id, row]));
  return {
    rows: () => byId(db.values()),
    snapshot: () => ({ rows: byId(db.values()), version: Math.max(0, ...[...db.values()].map((r) => r.version)) }),
    async create(row, socketId) {
      db.set(row.id, { ...row, version: 1 });
      await tidings.publish(channel, 'created', db.get(row.id), socketId);
      return db.get(row.id);
    },
    async update(id, fields, socketId) {
      const row = { ...db.get(id), ...fields, version: db.get(id).version + 1 };
      db.set(id, row);
      await tidings.publish(channel, 'updated', { id, version: row.version, ...fields }, socketId);
    },
    async remove(id, socketId) {
      const version = db.get(id).version + 1;
      db.delete(id);
      await tidings.publish(channel, 'deleted', { id, version }, socketId);
    },
  };
}

module.exports = { byId, liveTable, snapshotProvider };
