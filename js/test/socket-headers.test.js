'use strict';
// Tidings.socketHeaders with the real pusher-js against a real `tidings serve`: a page's write
// goes to a small app server with the headers it gives; the app publishes the write's event
// with the request's X-Socket-ID as socket_id (what the Django, Flask and FastAPI integrations
// do), and the server sends it to every subscriber but the writer.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { socketHeaders } = require('../../src/tidings/static/tidings.js');
const { snapshotServer } = require('../support/snapshot-server');
const { startTidings, connected } = require('../support/tidings-server');
const { until } = require('../support/wait');

let tidings;
test.before(async () => {
  tidings = await startTidings();
});
test.after(() => tidings && tidings.stop());

test('socketHeaders: the writer is left out of its own event, everyone else gets it', async (t) => {
  const name = 'private-live.todo.list_id.' + crypto.randomBytes(5).toString('hex');
  let id = 0;
  const app = await snapshotServer(async (request) => {
    id += 1;
    await tidings.publish(name, 'created', { id, version: 1 }, request.headers['x-socket-id']);
    return { status: 201, body: { id } };
  });
  t.after(() => app.close());

  const writer = tidings.client();
  const other = tidings.client();
  await Promise.all([connected(writer), connected(other)]);
  const seen = { writer: [], other: [] };
  const channels = [writer.subscribe(name), other.subscribe(name)];
  channels[0].bind('created', (data) => seen.writer.push(data.id));
  channels[1].bind('created', (data) => seen.other.push(data.id));
  await until('both subscribed', () => channels.every((channel) => channel.subscribed));

  const headers = socketHeaders(writer, { 'X-CSRFToken': 'token' });
  assert.deepEqual(headers, { 'X-CSRFToken': 'token', 'X-Socket-ID': writer.connection.socket_id });
  await fetch(app.url, { method: 'POST', headers });
  await until('the other page got the write', () => seen.other.length === 1);
  // A write without the header reaches both; the writer's first event is that one.
  await fetch(app.url, { method: 'POST' });
  await until('both got the second write', () => seen.other.length === 2 && seen.writer.length === 1);
  assert.deepEqual(seen, { writer: [2], other: [1, 2] });
  assert.equal(app.requests[0].headers['x-socket-id'], writer.connection.socket_id);

  // Laravel Echo's shape (echo.connector.pusher) works too; a disconnected client adds nothing.
  assert.deepEqual(socketHeaders({ connector: { pusher: writer } }), {
    'X-Socket-ID': writer.connection.socket_id,
  });
  writer.disconnect();
  await until('disconnected', () => writer.connection.state === 'disconnected');
  assert.deepEqual(socketHeaders(writer, { Accept: 'application/json' }), { Accept: 'application/json' });
  other.disconnect();
});
