'use strict';
// liveCollection without a Tidings snapshot (hosted Pusher, Soketi): on subscription it holds
// the channel's events, fetches `snapshotUrl` from a real local HTTP server, applies the
// snapshot and replays the held events through the version filter. The channel is a fake.
const test = require('node:test');
const assert = require('node:assert/strict');

const { liveCollection } = require('../../src/tidings/static/tidings.js');
const { FakeChannel } = require('../support/fake-channel');
const { snapshotServer } = require('../support/snapshot-server');
const { until, deferred } = require('../support/wait');

// Starts a snapshot server whose answers the test releases one by one: `next()` gives the
// deferred answer of the next request.
async function gatedServer(t) {
  const gates = [];
  const server = await snapshotServer(() => {
    const gate = deferred();
    gates.push(gate);
    return gate.promise;
  });
  t.after(() => server.close());
  server.gates = gates;
  server.requested = (n) => until(`${n} snapshot request(s)`, () => gates.length >= n);
  return server;
}

function collect(channel, options) {
  const changes = [];
  const errors = [];
  const live = liveCollection(channel, {
    onChange: (rows, change) => changes.push([change.type, rows.map((row) => `${row.id}@${row.version}`)]),
    onError: (error) => errors.push(error),
    ...options,
  });
  return { live, changes, errors };
}

test('events during the snapshot fetch are held, then replayed: none lost, none doubled', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel({ socketId: '42.17' });
  const { live, changes } = collect(channel, { snapshotUrl: server.url + '?list_id=5' });
  assert.equal(server.requests.length, 0, 'nothing is fetched before the subscription succeeds');

  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(1);
  const request = server.requests[0];
  assert.equal(request.method, 'GET');
  assert.equal(request.url, '/snapshot?list_id=5');
  assert.equal(request.headers['x-socket-id'], '42.17');
  assert.equal(request.headers.accept, 'application/json');

  // While the snapshot is read: one change it includes, then changes made after the read.
  channel.emit('updated', { id: 1, title: 'b', version: 2 }); // in the snapshot
  channel.emit('created', { id: 3, title: 'c', version: 1 }); // in the snapshot
  channel.emit('updated', { id: 2, title: 'y', version: 2 }); // after it
  channel.emit('deleted', { id: 3, version: 2 }); // after it
  channel.emit('created', { id: 4, title: 'd', version: 1 }); // after it
  assert.deepEqual(changes, [], 'nothing applies before the snapshot');

  server.gates[0].resolve({
    body: {
      rows: [
        { id: 1, title: 'b', version: 2 },
        { id: 2, title: 'x', version: 1 },
        { id: 3, title: 'c', version: 1 },
      ],
      version: 2,
    },
  });
  await until('the snapshot and the held events', () => changes.length === 4);
  assert.deepEqual(changes, [
    ['snapshot', ['1@2', '2@1', '3@1']],
    ['updated', ['1@2', '2@2', '3@1']],
    ['deleted', ['1@2', '2@2']],
    ['created', ['1@2', '2@2', '4@1']],
  ]);
  assert.deepEqual(live.rows, [
    { id: 1, title: 'b', version: 2 },
    { id: 2, title: 'y', version: 2 },
    { id: 4, title: 'd', version: 1 },
  ]);

  // Afterwards events apply at once.
  channel.emit('updated', { id: 4, title: 'e', version: 2 });
  assert.equal(live.get(4).title, 'e');
});

test('apply() during the fetch is held with the events and replayed after the snapshot', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel();
  const { live, changes } = collect(channel, { snapshotUrl: server.url });
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(1);
  live.apply('created', { id: 2, title: 'mine', version: 1 }); // a write answered meanwhile
  live.apply('updated', { id: 1, title: 'old', version: 1 }); // already in the snapshot
  assert.deepEqual(changes, []);
  server.gates[0].resolve({ body: { rows: [{ id: 1, title: 'a', version: 1 }], version: 1 } });
  await until('the snapshot and the held write', () => changes.length === 2);
  assert.deepEqual(changes, [
    ['snapshot', ['1@1']],
    ['created', ['1@1', '2@1']],
  ]);
  assert.deepEqual(live.get(1), { id: 1, title: 'a', version: 1 });
});

test('a channel already subscribed is fetched at once', async (t) => {
  const server = await snapshotServer(() => ({ body: { rows: [{ id: 1, version: 1 }], version: 1 } }));
  t.after(() => server.close());
  const channel = new FakeChannel({ subscribed: true });
  const { live } = collect(channel, { snapshotUrl: server.url });
  await until('the snapshot', () => live.rows.length === 1);
  assert.equal(server.requests.length, 1);
});

test('each resubscription (after a reconnect) fetches a fresh snapshot that heals the gap', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel();
  const { live, changes } = collect(channel, { snapshotUrl: server.url });
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(1);
  server.gates[0].resolve({ body: { rows: [{ id: 1, version: 1 }, { id: 2, version: 1 }], version: 1 } });
  await until('the first snapshot', () => changes.length === 1);

  // Disconnected: row 1 was deleted, row 2 updated and row 3 created without us hearing.
  channel.pusher.connection.socket_id = '9.9';
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(2);
  assert.equal(server.requests[1].headers['x-socket-id'], '9.9', 'the new connection is excluded');
  server.gates[1].resolve({ body: { rows: [{ id: 2, version: 2 }, { id: 3, version: 1 }], version: 2 } });
  await until('the second snapshot', () => changes.length === 2);
  assert.deepEqual(live.rows, [{ id: 2, version: 2 }, { id: 3, version: 1 }]);
});

test('a second subscription during a fetch supersedes it: only the newest answer counts', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel();
  const { live, changes } = collect(channel, { snapshotUrl: server.url });
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(1);
  channel.emit('created', { id: 5, version: 1 });
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(2);
  server.gates[1].resolve({ body: { rows: [{ id: 1, version: 1 }], version: 1 } });
  await until('the snapshot', () => changes.length >= 2);
  // The first request was aborted; its answer (if it ever came) is ignored.
  await server.requests[0].closed;
  assert.ok(server.requests[0].dropped, 'the superseded request was aborted');
  server.gates[0].resolve({ body: { rows: [{ id: 99, version: 1 }], version: 1 } });
  assert.deepEqual(live.rows.map((row) => row.id), [1, 5], 'the held event survived the restart');
  assert.deepEqual(changes.map(([type]) => type), ['snapshot', 'created']);
});

test('a Tidings snapshot arriving during the fetch wins, and the fetch is dropped', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel();
  const { live, changes } = collect(channel, { snapshotUrl: server.url });
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(1);
  channel.emit('tidings:snapshot', { rows: [{ id: 1, version: 3 }], version: 3 });
  channel.emit('updated', { id: 1, done: true, version: 4 });
  await server.requests[0].closed;
  assert.ok(server.requests[0].dropped, 'the fetch was aborted');
  assert.deepEqual(live.rows, [{ id: 1, done: true, version: 4 }]);
  assert.deepEqual(changes.map(([type]) => type), ['snapshot', 'updated']);
});

test('a failed snapshot (HTTP 500) calls onError and releases the held events', async (t) => {
  const server = await snapshotServer(() => ({ status: 500, body: { error: 'database down' } }));
  t.after(() => server.close());
  const channel = new FakeChannel();
  const { live, errors } = collect(channel, { snapshotUrl: server.url });
  channel.emit('pusher:subscription_succeeded', {});
  channel.emit('created', { id: 1, version: 1 });
  await until('onError', () => errors.length === 1);
  assert.match(errors[0].message, /HTTP 500/);
  assert.deepEqual(live.rows, [{ id: 1, version: 1 }]);

  // refresh() asks again (the app's retry button, or a timer).
  live.refresh();
  await until('the second request', () => server.requests.length === 2 && errors.length === 2);
});

test('a snapshot that never comes times out after snapshotTimeout', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel();
  const { errors } = collect(channel, { snapshotUrl: server.url, snapshotTimeout: 50 });
  channel.emit('pusher:subscription_succeeded', {});
  await until('onError', () => errors.length === 1);
  assert.match(errors[0].message, /timed out/);
});

test('a body that is not JSON, or not {rows, version}, is an error, not a crash', async (t) => {
  const bodies = ['<html>login</html>', { error: 'no rows here' }];
  const server = await snapshotServer(() => ({ body: bodies.shift() }));
  t.after(() => server.close());
  const { live, errors } = collect(new FakeChannel({ subscribed: true }), { snapshotUrl: server.url });
  await until('onError', () => errors.length === 1);
  live.refresh();
  await until('onError again', () => errors.length === 2);
  assert.match(errors[1].message, /bad snapshot/);
});

test('pusher:subscription_error (e.g. SnapshotFailed from Tidings) reaches onError', () => {
  const channel = new FakeChannel();
  const { errors } = collect(channel, {});
  const failure = { type: 'SnapshotFailed', error: 'snapshot timed out', status: 500 };
  channel.emit('pusher:subscription_error', failure);
  assert.deepEqual(errors, [failure]);
});

test('unbind() during a fetch: nothing applies afterwards', async (t) => {
  const server = await gatedServer(t);
  const channel = new FakeChannel();
  const { live, changes, errors } = collect(channel, { snapshotUrl: server.url });
  channel.emit('pusher:subscription_succeeded', {});
  await server.requested(1);
  channel.emit('created', { id: 1, version: 1 });
  live.unbind();
  await server.requests[0].closed;
  assert.ok(server.requests[0].dropped, 'the fetch was aborted');
  channel.emit('created', { id: 3, version: 1 });
  assert.deepEqual(changes, []);
  assert.deepEqual(errors, []);
  assert.deepEqual(live.rows, []);
  assert.equal(channel.boundCount(), 0);
});
