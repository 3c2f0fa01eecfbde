'use strict';
// liveCollection against a fake channel: the version filter, tombstones, stale rows, the
// Tidings snapshot (`tidings:snapshot`) and the order of the rows.
const test = require('node:test');
const assert = require('node:assert/strict');

const { liveCollection } = require('../../src/tidings/static/tidings.js');
const { FakeChannel } = require('../support/fake-channel');

// A collection on a fake channel that records every onChange call as [type, ids].
function setup(options = {}) {
  const channel = new FakeChannel();
  const changes = [];
  const live = liveCollection(channel, {
    onChange(rows, change) {
      changes.push([change.type, rows.map((row) => row.id)]);
    },
    ...options,
  });
  return { channel, changes, live };
}

const snapshot = (rows) => ({ rows, version: Math.max(0, ...rows.map((row) => row.version)) });

test('a snapshot then created, updated and deleted events', () => {
  const { channel, changes, live } = setup();
  channel.emit('tidings:snapshot', snapshot([{ id: 1, title: 'a', done: false, version: 1 }]));
  channel.emit('created', { id: 2, title: 'b', done: false, version: 1 });
  channel.emit('updated', { id: 1, done: true, version: 2 });
  channel.emit('deleted', { id: 2, version: 2 });

  assert.deepEqual(live.rows, [{ id: 1, title: 'a', done: true, version: 2 }]);
  assert.deepEqual(live.get(1), { id: 1, title: 'a', done: true, version: 2 });
  assert.equal(live.get(2), undefined);
  assert.deepEqual(changes, [
    ['snapshot', [1]],
    ['created', [1, 2]],
    ['updated', [1, 2]],
    ['deleted', [1]],
  ]);
});

test('onChange gets the change: type, id and the row', () => {
  const seen = [];
  const { channel } = setup({ onChange: (rows, change) => seen.push(change) });
  channel.emit('tidings:snapshot', { rows: [], version: 0 });
  channel.emit('created', { id: 7, title: 'x', version: 1 });
  channel.emit('updated', { id: 7, title: 'y', version: 2 });
  channel.emit('deleted', { id: 7, version: 3 });
  assert.deepEqual(seen, [
    { type: 'snapshot', version: 0 },
    { type: 'created', id: 7, row: { id: 7, title: 'x', version: 1 } },
    { type: 'updated', id: 7, row: { id: 7, title: 'y', version: 2 } },
    { type: 'deleted', id: 7, row: { id: 7, title: 'y', version: 2 } },
  ]);
});

test('an event whose version is not newer than the known one is dropped', () => {
  const { channel, changes, live } = setup();
  channel.emit('created', { id: 1, title: 'a', version: 1 });
  channel.emit('created', { id: 1, title: 'a again', version: 1 }); // duplicate
  channel.emit('updated', { id: 1, title: 'c', version: 3 });
  channel.emit('updated', { id: 1, title: 'b', version: 2 }); // overtaken by version 3
  channel.emit('updated', { id: 1, title: 'c', version: 3 }); // duplicate

  assert.deepEqual(live.rows, [{ id: 1, title: 'c', version: 3 }]);
  assert.deepEqual(changes.map(([type]) => type), ['created', 'updated']);
});

test('deleted rows leave tombstones: late events of older versions cannot bring them back', () => {
  const { channel, changes, live } = setup();
  channel.emit('created', { id: 1, title: 'a', version: 1 });
  channel.emit('deleted', { id: 1, version: 2 });
  channel.emit('updated', { id: 1, title: 'late', version: 2 });
  channel.emit('created', { id: 1, title: 'late', version: 2 });
  channel.emit('deleted', { id: 1, version: 2 });
  assert.deepEqual(live.rows, []);

  // A deleted event for a row never seen is remembered too (it may overtake its created).
  channel.emit('deleted', { id: 9, version: 4 });
  channel.emit('created', { id: 9, title: 'gone', version: 3 });
  assert.equal(live.get(9), undefined);

  // A newer version is a real comeback (a row moved back into this channel's filter).
  channel.emit('created', { id: 1, title: 'back', version: 3 });
  assert.deepEqual(live.rows, [{ id: 1, title: 'back', version: 3 }]);
  assert.deepEqual(changes.map(([type]) => type), ['created', 'deleted', 'created']);
});

test('tombstones are bounded by maxTombstones, oldest first', () => {
  const { channel, live } = setup({ maxTombstones: 2 });
  for (const id of [1, 2, 3]) channel.emit('deleted', { id, version: 5 });
  // 1's tombstone was dropped: its late created is accepted; 2's and 3's are still known.
  for (const id of [1, 2, 3]) channel.emit('created', { id, version: 4 });
  assert.deepEqual(live.rows.map((row) => row.id), [1]);
});

test('an update for a row the collection does not hold is ignored', () => {
  const { channel, changes, live } = setup();
  channel.emit('tidings:snapshot', snapshot([{ id: 1, title: 'a', version: 1 }]));
  channel.emit('updated', { id: 2, title: 'unknown', version: 5 });
  assert.deepEqual(live.rows, [{ id: 1, title: 'a', version: 1 }]);
  assert.equal(live.get(2), undefined);
  assert.deepEqual(changes, [['snapshot', [1]]]);
});

test('a stale event calls onStale(id) and leaves the row; put() takes the fetched row', () => {
  const stale = [];
  const { channel, changes, live } = setup({ onStale: (id) => stale.push(id) });
  channel.emit('tidings:snapshot', snapshot([{ id: 1, body: 'short', version: 1 }]));
  channel.emit('updated', { id: 1, version: 2, stale: true });
  channel.emit('created', { id: 2, version: 1, stale: true });
  channel.emit('updated', { id: 3, version: 1, stale: true }); // unknown row: ignored
  assert.deepEqual(stale, [1, 2]);
  assert.deepEqual(live.rows, [{ id: 1, body: 'short', version: 1 }]);

  // The app fetched the rows and hands them over: the version filter still applies.
  live.put({ id: 1, body: 'long'.repeat(10), version: 2 });
  live.put({ id: 2, body: 'new', version: 1 });
  live.put({ id: 1, body: 'older', version: 1 });
  assert.deepEqual(live.rows, [
    { id: 1, body: 'long'.repeat(10), version: 2 },
    { id: 2, body: 'new', version: 1 },
  ]);
  assert.deepEqual(changes.map(([type]) => type), ['snapshot', 'created', 'created']);
});

test('without onStale a stale event is a console warning', (t) => {
  const warn = t.mock.method(console, 'warn', () => {});
  const { channel, live } = setup();
  channel.emit('created', { id: 1, version: 1, stale: true });
  assert.equal(warn.mock.callCount(), 1);
  assert.match(warn.mock.calls[0].arguments[0], /stale/);
  assert.deepEqual(live.rows, []);
});

test('a snapshot replaces the rows but keeps rows held in a newer version', () => {
  const { channel, changes, live } = setup();
  channel.emit('tidings:snapshot', snapshot([
    { id: 1, title: 'a', version: 1 },
    { id: 2, title: 'b', version: 1 },
    { id: 3, title: 'c', version: 1 },
  ]));
  channel.emit('updated', { id: 2, title: 'b5', version: 5 });
  channel.emit('deleted', { id: 3, version: 4 });

  // A later snapshot (a resubscription) read before those changes reached the database
  // replica it came from: our newer row 2 and the deletion of row 3 win; row 1, absent from
  // it, was deleted meanwhile; row 4 is new.
  channel.emit('tidings:snapshot', snapshot([
    { id: 4, title: 'd', version: 1 },
    { id: 2, title: 'b3', version: 3 },
    { id: 3, title: 'c3', version: 3 },
  ]));
  assert.deepEqual(live.rows, [
    { id: 4, title: 'd', version: 1 },
    { id: 2, title: 'b5', version: 5 },
  ]);

  // A snapshot that is newer than what we hold replaces it, the deleted row too.
  channel.emit('tidings:snapshot', snapshot([
    { id: 2, title: 'b6', version: 6 },
    { id: 3, title: 'c5', version: 5 },
  ]));
  assert.deepEqual(live.rows, [
    { id: 2, title: 'b6', version: 6 },
    { id: 3, title: 'c5', version: 5 },
  ]);
  assert.deepEqual(changes.map(([type]) => type), ['snapshot', 'updated', 'deleted', 'snapshot', 'snapshot']);
});

test('rows keep snapshot order, then insertion order; an update keeps its place', () => {
  const { channel, live } = setup();
  channel.emit('tidings:snapshot', snapshot([
    { id: 30, version: 1 },
    { id: 10, version: 1 },
    { id: 20, version: 1 },
  ]));
  channel.emit('created', { id: 5, version: 1 });
  channel.emit('created', { id: 40, version: 1 });
  channel.emit('updated', { id: 30, title: 'changed', version: 2 });
  channel.emit('deleted', { id: 10, version: 2 });
  channel.emit('created', { id: 10, version: 3 }); // comes back at the end
  assert.deepEqual(live.rows.map((row) => row.id), [30, 20, 5, 40, 10]);
  assert.equal(live.rows, live.rows, 'the array is built once per change');
});

test('ids are looked up by their text: get(5) and get("5") find the same row', () => {
  const { channel, live } = setup({ key: 'uuid', version: 'rev' });
  channel.emit('created', { uuid: 5, rev: 1 });
  channel.emit('created', { uuid: 'a-b', rev: 1 });
  channel.emit('updated', { uuid: '5', rev: 2, seen: true });
  assert.deepEqual(live.get(5), { uuid: '5', rev: 2, seen: true });
  assert.deepEqual(live.get('5'), live.get(5));
  assert.deepEqual(live.get('a-b'), { uuid: 'a-b', rev: 1 });
});

test('rows handed to onChange are copies: the app may keep them, events never mutate them', () => {
  const { channel, live } = setup();
  const sent = { id: 1, title: 'a', version: 1 };
  channel.emit('created', sent);
  const before = live.get(1);
  channel.emit('updated', { id: 1, title: 'b', version: 2 });
  assert.deepEqual(before, { id: 1, title: 'a', version: 1 });
  assert.deepEqual(sent, { id: 1, title: 'a', version: 1 });
  assert.notEqual(live.get(1), before);
});

test('apply(event, data) from the app goes through the same version check', () => {
  // The answer of the page's own write (sent with X-Socket-ID, so the server leaves this
  // socket out of its event), applied like the event it stands for.
  const { channel, changes, live } = setup();
  channel.emit('tidings:snapshot', snapshot([{ id: 1, title: 'a', version: 1 }]));
  live.apply('created', { id: 2, title: 'mine', version: 1 });
  live.apply('updated', { id: 1, title: 'b', version: 3 });
  channel.emit('updated', { id: 1, title: 'from another tab', version: 2 }); // overtaken
  live.apply('updated', { id: 1, title: 'b', version: 3 }); // an answer retried: a duplicate
  assert.deepEqual(live.rows, [
    { id: 1, title: 'b', version: 3 },
    { id: 2, title: 'mine', version: 1 },
  ]);
  live.apply('deleted', { id: 2, version: 2 });
  channel.emit('created', { id: 2, title: 'mine', version: 1 }); // late: the tombstone wins
  assert.deepEqual(live.rows.map((row) => row.id), [1]);
  assert.deepEqual(changes.map(([type]) => type), ['snapshot', 'created', 'updated', 'deleted']);
});

test('apply() with an event that is not created, updated or deleted is warned about', (t) => {
  const warn = t.mock.method(console, 'warn', () => {});
  const { channel, changes, live } = setup();
  channel.emit('tidings:snapshot', snapshot([{ id: 1, version: 1 }]));
  live.apply('tidings:snapshot', { rows: [], version: 2 });
  live.apply('moved', { id: 1, version: 2 });
  assert.equal(warn.mock.callCount(), 2);
  assert.match(warn.mock.calls[1].arguments[0], /unknown event/);
  assert.deepEqual(live.rows, [{ id: 1, version: 1 }]);
  assert.equal(changes.length, 1);
});

test('malformed events and snapshots are warned about, not thrown', (t) => {
  const warn = t.mock.method(console, 'warn', () => {});
  const { channel, live } = setup();
  channel.emit('created', 'not an object');
  channel.emit('updated', null);
  channel.emit('tidings:snapshot', { version: 3 });
  assert.equal(warn.mock.callCount(), 3);
  assert.deepEqual(live.rows, []);
});

test('an Echo channel (the pusher-js channel as .subscription) works, and unbind() unbinds', () => {
  const channel = new FakeChannel();
  const echoChannel = { name: 'private-live.todo', subscription: channel, listen() {} };
  const live = liveCollection(echoChannel, {});
  channel.emit('created', { id: 1, version: 1 });
  assert.deepEqual(live.rows, [{ id: 1, version: 1 }]);
  assert.ok(channel.boundCount() > 0);
  live.unbind();
  assert.equal(channel.boundCount(), 0);
  channel.emit('created', { id: 2, version: 1 });
  assert.deepEqual(live.rows, [{ id: 1, version: 1 }]);
});

test('in a browser the script defines window.Tidings', () => {
  const vm = require('node:vm');
  const fs = require('node:fs');
  const path = require('node:path');
  const source = fs.readFileSync(path.join(__dirname, '../../src/tidings/static/tidings.js'), 'utf8');
  const window = { console };
  window.self = window;
  vm.runInNewContext(source, window);
  assert.equal(typeof window.Tidings.liveCollection, 'function');
  assert.equal(typeof window.Tidings.withRecovery, 'function');
});

// Two helpers: liveCollection (~6 KB) and withRecovery (~5 KB), readable, unminified.
test('tidings.js stays small: under 12 KB unminified', () => {
  const fs = require('node:fs');
  const path = require('node:path');
  const size = fs.statSync(path.join(__dirname, '../../src/tidings/static/tidings.js')).size;
  assert.ok(size < 12 * 1024, `tidings.js is ${size} bytes`);
});
