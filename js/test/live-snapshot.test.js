'use strict';
// liveCollection with the real pusher-js against a real `tidings serve` that has a snapshot
// provider (the app's `live_snapshot_url`, played here by a Node HTTP server that checks the
// webhook-style signature). On subscribing to a private-live.* channel, Tidings holds the
// channel's events for that socket, sends `tidings:snapshot`, then releases them: the client
// needs no snapshotUrl, and nothing published during the snapshot is lost or doubled.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { liveCollection } = require('../../src/tidings/static/tidings.js');
const { byId, liveTable, snapshotProvider } = require('../support/live-app');
const { APP, startTidings, connected } = require('../support/tidings-server');
const { WAIT_MS, until } = require('../support/wait');

const unique = (prefix) => prefix + crypto.randomBytes(5).toString('hex');

let tidings;
let snapshots;
test.before(async () => {
  snapshots = await snapshotProvider();
  tidings = await startTidings({ live_snapshot_url: snapshots.url });
});
test.after(async () => {
  if (tidings) await tidings.stop();
  await snapshots.close();
});

const table = (channel, rows) => liveTable(tidings, channel, rows);

function watch(channel) {
  const seen = { events: [], changes: [], errors: [] };
  channel.bind_global((name) => seen.events.push(name));
  const live = liveCollection(channel, {
    onChange: (rows, change) => seen.changes.push(change.type),
    onError: (error) => seen.errors.push(error),
  });
  return { live, seen };
}

test('tidings:snapshot: events published while the app reads the snapshot arrive after it', async () => {
  const name = unique('private-live.todo.list_id.');
  const todos = table(name, [
    { id: 1, title: 'a', version: 1 },
    { id: 2, title: 'b', version: 3 },
  ]);
  snapshots.state.answer = async () => {
    await todos.update(1, { title: 'a2' });
    await todos.create({ id: 3, title: 'c' });
    const snapshot = todos.snapshot();
    await todos.update(2, { title: 'b2' });
    await todos.remove(3);
    await todos.create({ id: 4, title: 'd' });
    return { body: snapshot };
  };

  const pusher = tidings.client();
  await connected(pusher);
  const { live, seen } = watch(pusher.subscribe(name));
  await until('the snapshot and the held events', () => seen.changes.length === 4 || seen.errors.length);

  assert.deepEqual(seen.errors, []);
  assert.deepEqual(live.rows, todos.rows());
  // All five held events reached the client, after the snapshot; the two it already held
  // were dropped by version.
  assert.deepEqual(seen.events, [
    'pusher:subscription_succeeded',
    'tidings:snapshot',
    'updated',
    'created',
    'updated',
    'deleted',
    'created',
  ]);
  assert.deepEqual(seen.changes, ['snapshot', 'updated', 'deleted', 'created']);
  const call = snapshots.calls.at(-1);
  assert.deepEqual(call.body, { channel: name, socket_id: pusher.connection.socket_id });
  assert.equal(call.key, APP.key);
  assert.ok(call.signed, 'X-Pusher-Signature is the HMAC of the body');

  // Live afterwards.
  await todos.update(4, { title: 'd2' });
  await until('the live update', () => live.get(4).title === 'd2');
  live.unbind();
  pusher.disconnect();
});

test('tidings:snapshot: after a reconnect the fresh snapshot heals what was missed', async () => {
  const name = unique('private-live.todo.list_id.');
  const todos = table(name, [
    { id: 1, title: 'a', version: 1 },
    { id: 2, title: 'b', version: 1 },
  ]);
  snapshots.state.answer = () => ({ body: todos.snapshot() });
  const pusher = tidings.client();
  await connected(pusher);
  const { live, seen } = watch(pusher.subscribe(name));
  await until('the first snapshot', () => seen.changes.length === 1);

  pusher.disconnect();
  await until('disconnected', () => pusher.connection.state === 'disconnected');
  await todos.remove(1);
  await todos.update(2, { title: 'b2' });
  await todos.create({ id: 3, title: 'c' });

  pusher.connect();
  await until('the second snapshot', () => seen.changes.length === 2);
  assert.deepEqual(live.rows, todos.rows());
  assert.deepEqual(seen.errors, []);
  live.unbind();
  pusher.disconnect();
});

test('a snapshot the app fails to give is a SnapshotFailed subscription error', async () => {
  const name = unique('private-live.todo.list_id.');
  snapshots.state.answer = () => ({ status: 500, body: { error: 'database down' } });
  const pusher = tidings.client();
  await connected(pusher);
  const { live, seen } = watch(pusher.subscribe(name));
  await until('onError', () => seen.errors.length === 1);
  assert.equal(seen.errors[0].type, 'SnapshotFailed');
  assert.deepEqual(live.rows, []);
  live.unbind();
  pusher.disconnect();
});

test('a burst of writes while 10 clients subscribe: every client ends equal to the table', async () => {
  const name = unique('private-live.todo.list_id.');
  const todos = table(
    name,
    [1, 2, 3, 4, 5].map((id) => ({ id, title: 'start', version: 1 })),
  );
  // The rows are read at once; the answer leaves a turn of the event loop later, so writes
  // keep landing between the read and the answer.
  const readAt = []; // how many writes were done when each snapshot was read
  snapshots.state.answer = async () => {
    const body = todos.snapshot();
    readAt.push(writes);
    await new Promise((resolve) => setImmediate(resolve));
    return { body };
  };
  let writes = 0;
  const burst = (async () => {
    for (let i = 0; i < 150; i++, writes++) {
      if (i % 15 === 14) await todos.create({ id: 100 + i, title: 'new' });
      else if (i % 15 === 7) await todos.remove(todos.rows().at(-1).id);
      else await todos.update(todos.rows()[i % 4].id, { title: `t${i}` });
    }
  })();
  const clients = await Promise.all(
    Array.from({ length: 10 }, async () => {
      const pusher = tidings.client();
      await connected(pusher);
      return { pusher, ...watch(pusher.subscribe(name)) };
    }),
  );
  await burst;
  const same = (client) => JSON.stringify(byId(client.live.rows)) === JSON.stringify(todos.rows());
  await until('every client equal to the table', () => clients.every(same), 4 * WAIT_MS);
  for (const client of clients) {
    assert.deepEqual(client.seen.errors, []);
    assert.equal(client.seen.changes[0], 'snapshot');
    client.live.unbind();
    client.pusher.disconnect();
  }
  assert.equal(readAt.length, 10);
  assert.ok(readAt.some((n) => n > 0 && n < 150), `snapshots read mid-burst: ${readAt}`);
});
