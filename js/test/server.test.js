'use strict';
// liveCollection with the real pusher-js 8.6.0 against a real `tidings serve` (no snapshot
// provider configured: the hosted-Pusher/Soketi situation), and the snapshotUrl tests against a
// real Soketi too. Events are published over the REST API while a table ("db" below, a Map)
// changes, and the collection must end equal to it.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { liveCollection } = require('../../src/tidings/static/tidings.js');
const { snapshotServer } = require('../support/snapshot-server');
const { startSoketi, startTidings, connected } = require('../support/tidings-server');
const { until } = require('../support/wait');

// The snapshotUrl tests run against Soketi too (a real one: SOKETI_SERVER, which
// tests/e2e/test_tidings_js.py sets): the hosted-Pusher situation itself.
const SOKETI = process.env.SOKETI_SERVER ? false : 'SOKETI_SERVER is not set';
let tidings;
let soketi;
test.before(async () => {
  [tidings, soketi] = await Promise.all([startTidings(), SOKETI ? null : startSoketi()]);
});
test.after(async () => {
  if (tidings) await tidings.stop();
  if (soketi) await soketi.stop();
});
const TARGETS = [
  ['tidings serve', () => tidings, false],
  ['Soketi', () => soketi, SOKETI],
];

const unique = (prefix) => prefix + crypto.randomBytes(5).toString('hex');
const byId = (rows) => [...rows].sort((a, b) => a.id - b.id);

// A table whose writes publish the live events the Tidings live layer would send.
function table(channel, rows, server = tidings) {
  const db = new Map(rows.map((row) => [row.id, row]));
  return {
    db,
    rows: () => byId(db.values()),
    snapshot: () => ({ rows: byId(db.values()), version: Math.max(0, ...[...db.values()].map((r) => r.version)) }),
    async create(row) {
      db.set(row.id, { ...row, version: 1 });
      await server.publish(channel, 'created', db.get(row.id));
    },
    async update(id, fields) {
      const row = { ...db.get(id), ...fields, version: db.get(id).version + 1 };
      db.set(id, row);
      await server.publish(channel, 'updated', { id, version: row.version, ...fields });
    },
    async remove(id) {
      const version = db.get(id).version + 1;
      db.delete(id);
      await server.publish(channel, 'deleted', { id, version });
    },
  };
}

// Counts the live events pusher-js delivered on a channel (next to the collection's handlers).
function countEvents(channel) {
  const counter = { n: 0 };
  for (const name of ['created', 'updated', 'deleted']) channel.bind(name, () => counter.n++);
  return counter;
}

test('events published over REST flow into the collection; a duplicate changes nothing', async () => {
  const pusher = tidings.client();
  await connected(pusher);
  const name = unique('live-todo-');
  const channel = pusher.subscribe(name);
  const changes = [];
  const live = liveCollection(channel, { onChange: (rows, change) => changes.push(change.type) });
  const events = countEvents(channel);
  await until('subscribed', () => channel.subscribed);

  const todos = table(name, []);
  await todos.create({ id: 1, title: 'milk', done: false });
  await todos.create({ id: 2, title: 'bread', done: false });
  await todos.update(1, { done: true });
  await tidings.publish(name, 'updated', { id: 1, version: 2, done: true }); // a duplicate
  await todos.update(2, { title: 'rye bread' });
  await todos.remove(1);
  await until('6 events', () => events.n === 6);

  assert.deepEqual(live.rows, todos.rows());
  assert.deepEqual(live.rows, [{ id: 2, title: 'rye bread', done: false, version: 2 }]);
  assert.deepEqual(changes, ['created', 'created', 'updated', 'updated', 'deleted']);
  live.unbind();
  pusher.disconnect();
});

for (const [label, serverOf, skip] of TARGETS) {
  const title = (what) => `snapshotUrl against ${label}: ${what}`;
  test(title('events published while the snapshot is fetched are neither lost nor doubled'), { skip }, async (t) => {
    const target = serverOf(); // the Pusher-protocol server
    const name = unique('private-live.todo.list_id.');
    const rows = [
      { id: 1, title: 'a', version: 1 },
      { id: 2, title: 'b', version: 3 },
    ];
    const todos = table(name, rows, target);
    let events; // the event counter, bound before the subscription
    const snapshots = [];
    const server = await snapshotServer(async () => {
      // The app reads its table between two bursts of writes; every event of both bursts
      // reaches the client before the snapshot does.
      await todos.update(1, { title: 'a2' });
      await todos.create({ id: 3, title: 'c' });
      const snapshot = todos.snapshot();
      snapshots.push(snapshot);
      await todos.update(2, { title: 'b2' });
      await todos.remove(3);
      await todos.create({ id: 4, title: 'd' });
      await until('the 5 events at the client', () => events.n === 5);
      return { body: snapshot };
    });
    t.after(() => server.close());

    const pusher = target.client();
    await connected(pusher);
    const channel = pusher.subscribe(name);
    events = countEvents(channel);
    const changes = [];
    const errors = [];
    const live = liveCollection(channel, {
      snapshotUrl: server.url,
      onChange: (rows, change) => changes.push(change.type),
      onError: (error) => errors.push(error),
    });
    await until('the snapshot and the held events', () => changes.length === 4 || errors.length);
    assert.deepEqual(errors, []);

    assert.deepEqual(live.rows, todos.rows());
    assert.deepEqual(byId(snapshots[0].rows).map((r) => r.id), [1, 2, 3]);
    // The two writes the snapshot already held were dropped by version; the three after it
    // applied once each.
    assert.deepEqual(changes, ['snapshot', 'updated', 'deleted', 'created']);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0].headers['x-socket-id'], pusher.connection.socket_id);
    live.unbind();
    pusher.disconnect();
  });

  test(title('after a reconnect the fresh snapshot heals what was missed'), { skip }, async (t) => {
    const target = serverOf(); // the Pusher-protocol server
    const name = unique('private-live.todo.list_id.');
    const rows = [
      { id: 1, title: 'a', version: 1 },
      { id: 2, title: 'b', version: 1 },
    ];
    const todos = table(name, rows, target);
    const server = await snapshotServer(() => ({ body: todos.snapshot() }));
    t.after(() => server.close());

    const pusher = target.client();
    await connected(pusher);
    const channel = pusher.subscribe(name);
    const live = liveCollection(channel, { snapshotUrl: server.url });
    await until('the first snapshot', () => live.rows.length === 2);
    const firstSocket = pusher.connection.socket_id;

    pusher.disconnect();
    await until('disconnected', () => pusher.connection.state === 'disconnected');
    // Written while the client is away: nobody hears these.
    await todos.remove(1);
    await todos.update(2, { title: 'b2' });
    await todos.create({ id: 3, title: 'c' });

    pusher.connect();
    await until('the second snapshot request', () => server.requests.length === 2);
    await until('the collection equals the table', () => live.get(3) !== undefined);
    assert.deepEqual(live.rows, todos.rows());
    assert.notEqual(server.requests[1].headers['x-socket-id'], firstSocket);
    assert.equal(server.requests[1].headers['x-socket-id'], pusher.connection.socket_id);

    // Live again.
    await todos.update(3, { title: 'c2' });
    await until('the live update', () => live.get(3).title === 'c2');
    assert.deepEqual(live.rows, todos.rows());
    live.unbind();
    pusher.disconnect();
  });
}
