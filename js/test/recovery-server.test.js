'use strict';
// Tidings.withRecovery with the real pusher-js 8.6.0 against a real `tidings serve` that keeps
// history for orders-* (5,000 events) and small-* (5 events), through a TCP proxy that cuts
// the clients' connections as a network failure would. Events are published over the REST API.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { withRecovery } = require('../../src/tidings/static/tidings.js');
const { startTidings, connected } = require('../support/tidings-server');
const { tcpProxy } = require('../support/tcp-proxy');
const { WAIT_MS, until } = require('../support/wait');

let tidings;
let proxy;
test.before(async () => {
  tidings = await startTidings({
    history: [
      { pattern: 'orders-*', size: 5000, ttl: 60 },
      { pattern: 'small-*', size: 5, ttl: 60 },
    ],
  });
  proxy = await tcpProxy(tidings.port);
});
test.after(async () => {
  if (proxy) await proxy.close();
  if (tidings) await tidings.stop();
});

const unique = (prefix) => prefix + crypto.randomBytes(5).toString('hex');
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// A recovering client through the proxy, subscribed to `name`: what its handlers saw.
async function subscriber(name) {
  const pusher = withRecovery(tidings.client({ wsPort: proxy.port }));
  await connected(pusher);
  const channel = pusher.subscribe(name);
  const got = { seen: [], succeeded: [], unrecovered: [] };
  channel.bind('x', (data) => got.seen.push(data.n));
  channel.bind('pusher:subscription_succeeded', (data) => got.succeeded.push(data));
  channel.bind('tidings:unrecovered', (data) => got.unrecovered.push(data));
  await until('subscribed', () => got.succeeded.length === 1);
  return { pusher, ...got };
}

test('a connection cut while publishing at 50/s: every event once, in order, on a new socket', async () => {
  const name = unique('orders-');
  const client = await subscriber(name);
  const oldSocket = client.pusher.connection.socket_id;
  assert.equal(client.succeeded[0].tidings.offset, 0);

  for (let n = 1; n <= 100; n++) {
    if (n === 21) proxy.cut();
    await tidings.publish(name, 'x', { n });
    await new Promise((resolve) => setTimeout(resolve, 20)); // the publishing rate, not a wait
  }
  await until('100 events', () => client.seen.length >= 100, 2 * WAIT_MS);
  assert.deepEqual(client.seen, range(1, 100));
  assert.notEqual(client.pusher.connection.socket_id, oldSocket);
  assert.equal(client.succeeded.length, 2);
  assert.equal(client.succeeded[1].recovered, true);
  assert.equal(client.succeeded[1].tidings.epoch, client.succeeded[0].tidings.epoch);
  assert.deepEqual(client.unrecovered, []);
});

test("the old socket's own events are not replayed", async () => {
  const name = unique('orders-');
  const client = await subscriber(name);
  await tidings.publish(name, 'x', { n: 1 });
  await until('event 1', () => client.seen.length === 1);
  const oldSocket = client.pusher.connection.socket_id;
  proxy.hold();
  proxy.cut();
  await tidings.publish(name, 'x', { n: 2 }, oldSocket); // this client's own write
  await tidings.publish(name, 'x', { n: 3 });
  proxy.release();
  await until('the resubscription', () => client.succeeded.length === 2);
  await until('event 3', () => client.seen.length === 2);
  assert.deepEqual(client.seen, [1, 3]);
  assert.equal(client.succeeded[1].recovered, true);
});

test('Laravel Echo with `client:` recovers the same way', async () => {
  // laravel-echo 2.5.0's CommonJS build does not load under Node ("type": "module"): its ES module does.
  const { default: Echo } = await import('laravel-echo');
  const name = unique('orders-');
  const pusher = withRecovery(tidings.client({ wsPort: proxy.port }));
  const echo = new Echo({ broadcaster: 'pusher', client: pusher, withoutInterceptors: true });
  const seen = [];
  const channel = echo.channel(name).listen('.OrderShipped', (data) => seen.push(data.n));
  const succeeded = [];
  channel.subscribed(() => succeeded.push(pusher.connection.socket_id));
  await until('subscribed', () => succeeded.length === 1);
  await tidings.publish(name, 'OrderShipped', { n: 1 });
  await until('event 1', () => seen.length === 1);
  proxy.hold();
  proxy.cut();
  for (let n = 2; n <= 4; n++) await tidings.publish(name, 'OrderShipped', { n });
  proxy.release();
  await until('events 2-4', () => seen.length === 4);
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.equal(succeeded.length, 2);
  assert.notEqual(succeeded[1], succeeded[0]);
});

test('more missed than the channel keeps: recovered false, no replay, tidings:unrecovered', async () => {
  const name = unique('small-');
  const client = await subscriber(name);
  await tidings.publish(name, 'x', { n: 1 });
  await until('event 1', () => client.seen.length === 1);
  proxy.hold();
  proxy.cut();
  for (let n = 2; n <= 10; n++) await tidings.publish(name, 'x', { n });
  proxy.release();
  await until('tidings:unrecovered', () => client.unrecovered.length === 1);
  assert.equal(client.succeeded[1].recovered, false);
  assert.deepEqual(client.unrecovered[0], client.succeeded[1].tidings);
  assert.equal(client.unrecovered[0].offset, 10);
  assert.deepEqual(client.seen, [1]);
  await tidings.publish(name, 'x', { n: 11 });
  await until('event 11', () => client.seen.length === 2);
  assert.deepEqual(client.seen, [1, 11]);
});

test('100 clients cut and reconnecting during 1,000 events a second: none lost or doubled', async () => {
  const name = unique('orders-');
  const clients = await Promise.all(Array.from({ length: 100 }, () => subscriber(name)));
  const total = 2000;
  let cut = false;
  for (let n = 1; n <= total; n += 10) {
    if (!cut && n > total / 4) {
      proxy.cut(); // every client at once; pusher-js comes back a second later, mid-stream
      cut = true;
    }
    await tidings.publishBatch(name, range(n, n + 9).map((k) => ({ name: 'x', data: { n: k } })));
    await new Promise((resolve) => setTimeout(resolve, 10)); // ~1,000 events a second
  }
  await until(`${total} events on every client`, () => clients.every((c) => c.seen.length >= total), 4 * WAIT_MS);
  for (const client of clients) {
    assert.deepEqual(client.seen, range(1, total));
    assert.equal(client.succeeded.length, 2);
    assert.equal(client.succeeded[1].recovered, true);
  }
  // They came back while events were still being published.
  assert.ok(clients.some((c) => c.succeeded[1].tidings.offset < total));
});

test('stock pusher-js (no plugin): golden frames on a channel with history, and no replay after a cut', async () => {
  const name = unique('orders-');
  const pusher = tidings.client({ wsPort: proxy.port }); // not wrapped: a stock client
  const frames = []; // what the server sent, as raw text
  const sent = []; // what pusher-js sent
  const originalSend = pusher.send_event.bind(pusher);
  pusher.send_event = (event, data, channel) => {
    sent.push({ event, data });
    return originalSend(event, data, channel);
  };
  pusher.connection.bind('connected', () => {
    pusher.connection.connection.transport.bind('message', (m) => frames.push(m.data));
  });
  await connected(pusher);
  const channel = pusher.subscribe(name);
  const seen = [];
  let succeeded = 0;
  channel.bind('x', (data) => seen.push(data.n));
  channel.bind('pusher:subscription_succeeded', () => (succeeded += 1));
  await until('subscribed', () => succeeded === 1);
  await tidings.publish(name, 'x', { n: 1 });
  await until('event 1', () => seen.length === 1);
  const golden = (n) => `{"event":"x","channel":"${name}","data":"{\\"n\\":${n}}"}`;
  const succeededFrame = `{"event":"pusher_internal:subscription_succeeded","channel":"${name}","data":"{}"}`;
  const ours = () => frames.filter((f) => f.includes(name) && !f.includes('subscription_count'));
  assert.deepEqual(ours(), [succeededFrame, golden(1)]);

  proxy.hold();
  proxy.cut();
  await tidings.publish(name, 'x', { n: 2 }); // missed: a stock client is never replayed it
  proxy.release();
  await until('the resubscription', () => succeeded === 2);
  await tidings.publish(name, 'x', { n: 3 });
  await until('event 3', () => seen.length === 2);
  assert.deepEqual(seen, [1, 3]);
  assert.deepEqual(ours(), [succeededFrame, golden(1), succeededFrame, golden(3)]);
  const subscribes = sent.filter((s) => s.event === 'pusher:subscribe');
  assert.equal(subscribes.length, 2);
  for (const s of subscribes) assert.deepEqual(Object.keys(s.data), ['auth', 'channel_data', 'channel']);
  pusher.disconnect();
});
