'use strict';
// Laravel Echo 2.5.0 (the real package, `new Echo({broadcaster: 'pusher', client})` over the
// real pusher-js 8.6.0) against a real `tidings serve` whose app has a snapshot endpoint:
// Echo's own listeners receive tidings:snapshot, created, updated and deleted on a live
// channel, with the events published during the snapshot after it; liveCollection takes the
// Echo channel itself; echo.socketId() sent with a write (X-Socket-ID) leaves that page out.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { liveCollection } = require('../../src/tidings/static/tidings.js');
const { liveTable, snapshotProvider } = require('../support/live-app');
const { startTidings, connected } = require('../support/tidings-server');
const { until } = require('../support/wait');

// Echo names private channels without their prefix: echo.private('live.x') is private-live.x.
const unique = () => 'live.todo.list_id.' + crypto.randomBytes(5).toString('hex');

let tidings;
let snapshots;
let Echo;
test.before(async () => {
  // laravel-echo 2.5.0 is an ES module ("type": "module"): its CommonJS build does not load.
  ({ default: Echo } = await import('laravel-echo'));
  snapshots = await snapshotProvider();
  tidings = await startTidings({ live_snapshot_url: snapshots.url });
});
test.after(async () => {
  if (tidings) await tidings.stop();
  await snapshots.close();
});

// An Echo on a pusher-js client of the test server (Echo's axios/jQuery interceptors, which
// add X-Socket-ID to a page's requests, have nothing to hook into under Node).
async function echoClient() {
  const pusher = tidings.client();
  const echo = new Echo({ broadcaster: 'pusher', client: pusher, withoutInterceptors: true });
  await connected(pusher);
  return echo;
}

test('Echo listens to a live channel: the snapshot, then created, updated and deleted', async () => {
  const name = unique();
  const todos = liveTable(tidings, `private-${name}`, [{ id: 1, title: 'a', version: 1 }]);
  snapshots.state.answer = async () => {
    // The rows are read, then a write commits before the answer leaves: Tidings holds its
    // event for this socket and sends it after the snapshot.
    const read = todos.snapshot();
    await todos.create({ id: 2, title: 'b' });
    return { body: read };
  };
  const echo = await echoClient();
  const heard = [];
  const channel = echo.private(name);
  for (const event of ['tidings:snapshot', 'created', 'updated', 'deleted']) {
    // The leading dot: the event name as sent, without Echo's App\Events namespace.
    channel.listen(`.${event}`, (data) => heard.push([event, data]));
  }
  await until('the snapshot and the event held during it', () => heard.length === 2);
  assert.deepEqual(heard, [
    ['tidings:snapshot', { rows: [{ id: 1, title: 'a', version: 1 }], version: 1 }],
    ['created', { id: 2, title: 'b', version: 1 }],
  ]);

  await todos.update(1, { title: 'a2' });
  await todos.remove(2);
  await until('the live update and delete', () => heard.length === 4);
  assert.deepEqual(heard.slice(2), [
    ['updated', { id: 1, version: 2, title: 'a2' }],
    ['deleted', { id: 2, version: 2 }],
  ]);
  assert.deepEqual(snapshots.calls.at(-1).body, { channel: `private-${name}`, socket_id: echo.socketId() });

  echo.leave(name);
  echo.disconnect();
});

test('liveCollection takes the Echo channel; a write sent with echo.socketId() skips this page', async () => {
  const name = unique();
  const todos = liveTable(tidings, `private-${name}`, [
    { id: 1, title: 'a', version: 1 },
    { id: 2, title: 'b', version: 4 },
  ]);
  snapshots.state.answer = () => ({ body: todos.snapshot() });
  const echo = await echoClient();
  const changes = [];
  const live = liveCollection(echo.private(name), {
    onChange: (rows, change) => changes.push(change.type),
    onError: (error) => changes.push(['error', error]),
  });
  await until('the snapshot', () => changes.length === 1);
  assert.deepEqual(changes, ['snapshot']);

  // This page's own write: Tidings leaves its socket out, and the page applies the answer.
  const mine = await todos.create({ id: 3, title: 'mine' }, echo.socketId());
  // Someone else's writes, published after it: once they are here, ours would have been too.
  await todos.update(2, { title: 'b2' });
  await todos.remove(1);
  await until("the other writer's events", () => changes.length === 3);
  assert.equal(live.get(3), undefined, 'the write sent with X-Socket-ID did not reach its page');
  live.apply('created', mine);
  assert.deepEqual(live.rows, todos.rows());
  assert.deepEqual(changes, ['snapshot', 'updated', 'deleted', 'created']);

  live.unbind();
  echo.disconnect();
});
