'use strict';
// Tidings.withRecovery with the real pusher-js 8.6.0 (and Laravel Echo 2.5.0) against a fake
// Pusher-protocol server that implements the recovery wire format (support/pusher-server.js).
// A "dropped" socket is a TCP connection cut without a close frame; pusher-js reconnects on
// its own a second later with a new socket_id and subscribes again.
const test = require('node:test');
const assert = require('node:assert/strict');
const Pusher = require('pusher-js');

const { withRecovery } = require('../../src/tidings/static/tidings.js');
const { pusherServer } = require('../support/pusher-server');
const { WAIT_MS, until } = require('../support/wait');

let server;
let channelCount = 0;
const clients = [];
test.before(async () => {
  // Channels keep 1,000 events; small-* keep 20; plain-* have no history.
  const sizes = { small: 20, plain: 0 };
  server = await pusherServer({ history: (name) => sizes[name.split('-')[0]] ?? 1000 });
});
test.afterEach(() => {
  while (clients.length) clients.pop().disconnect();
});
test.after(() => server.close());

const unique = (prefix = 'orders-') => `${prefix}${++channelCount}`;

// A pusher-js client with the plugin, disconnected after the test.
function client({ storage, key = 'app-key' } = {}) {
  const pusher = withRecovery(new Pusher(key, server.options()), { storage });
  clients.push(pusher);
  return pusher;
}

// The `n` of each event a handler of `channel` got, in order.
function listen(channel, event = 'x') {
  const seen = [];
  channel.bind(event, (data) => seen.push(data.n));
  return seen;
}

// What each pusher:subscribe for `name` carried, in order, and from which socket.
const subscribes = (name) => server.subscribes.filter((s) => s.data.channel === name);

async function subscribed(pusher, name, times = 1) {
  await until(`subscription ${times} to ${name}`, () => subscribes(name).length >= times);
  await until(`${name} confirmed`, () => pusher.channel(name).subscribed);
}

function publish(name, from, to, exclude) {
  for (let n = from; n <= to; n++) server.publish(name, 'x', { n }, exclude);
}

// The part of sessionStorage the plugin uses, over a Map.
const sessionStorageOver = (map) => ({
  getItem: (k) => (map.has(k) ? map.get(k) : null),
  setItem: (k, v) => map.set(k, String(v)),
  removeItem: (k) => map.delete(k),
});

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// In a browser an exception in a WebSocket message handler is reported and the next message
// is handled as usual; Node's pusher-js transport would instead lose the connection's later
// frames. This makes Node's sockets behave like a browser's for one test.
function browserLikeDispatch(errors) {
  const runtime = Pusher.Runtime;
  const create = runtime.createWebSocket;
  runtime.createWebSocket = function (url) {
    const socket = create.call(this, url);
    let handler;
    Object.defineProperty(socket, 'onmessage', {
      configurable: true,
      get: () => handler,
      set(fn) {
        handler = fn && ((event) => {
          try {
            fn(event);
          } catch (error) {
            errors.push(error);
          }
        });
      },
    });
    return socket;
  };
  return () => {
    runtime.createWebSocket = create;
  };
}

test('the first subscribe opts in, the position is learned, events reach handlers as usual', async () => {
  const name = unique();
  publish(name, 1, 2); // before anyone listens: the position starts at 2
  const pusher = client();
  const channel = pusher.subscribe(name);
  const seen = [];
  let succeeded;
  channel.bind('pusher:subscription_succeeded', (data) => (succeeded = data));
  channel.bind('x', (data, metadata) => seen.push([data, metadata]));
  await subscribed(pusher, name);
  assert.deepEqual(subscribes(name)[0].data, { auth: '', channel: name, tidings: { v: 1 } });
  assert.deepEqual(succeeded.tidings, server.position(name));
  publish(name, 3, 3);
  await until('event 3', () => seen.length === 1);
  // pusher-js drops the extra top-level key: handlers see a stock event.
  assert.deepEqual(seen[0], [{ n: 3 }, {}]);
});

test('a dropped socket: the resubscription asks from the last offset, gets exactly what was missed', async () => {
  const name = unique();
  const pusher = client();
  const seen = listen(pusher.subscribe(name));
  await subscribed(pusher, name);
  const epoch = server.position(name).epoch;
  const oldSocket = pusher.connection.socket_id;

  // 50 events a second; the connection is cut after the 20th and comes back a second later.
  let next = 1;
  const timer = setInterval(() => {
    if (next === 21) server.drop(oldSocket);
    if (next <= 150) publish(name, next, next++);
  }, 20);
  try {
    await until('150 events', () => seen.length >= 150, 2 * WAIT_MS);
  } finally {
    clearInterval(timer);
  }
  assert.deepEqual(seen, range(1, 150));
  assert.notEqual(pusher.connection.socket_id, oldSocket);
  const again = subscribes(name)[1];
  assert.equal(again.socketId, pusher.connection.socket_id);
  const recover = again.data.tidings.recover;
  assert.equal(recover.epoch, epoch);
  assert.equal(recover.socket_id, oldSocket);
  assert.ok(recover.offset >= 20 && recover.offset < 150, `asked from ${recover.offset}`);
  const replayed = server.connections.get(pusher.connection.socket_id).sent.filter((m) => m.event === 'x');
  assert.equal(replayed[0].tidings.offset, recover.offset + 1);
});

test("the old socket's own events are not replayed", async () => {
  const name = unique();
  const pusher = client();
  const seen = listen(pusher.subscribe(name));
  await subscribed(pusher, name);
  const oldSocket = pusher.connection.socket_id;
  publish(name, 1, 1);
  await until('event 1', () => seen.length === 1);
  server.drop(oldSocket);
  publish(name, 2, 2, oldSocket); // as if this client had sent it with X-Socket-ID
  publish(name, 3, 3);
  await until('event 3', () => seen.length === 2);
  assert.deepEqual(seen, [1, 3]);
  const succeeded = server.connections.get(pusher.connection.socket_id).sent[1];
  assert.equal(JSON.parse(succeeded.data).recovered, true);
});

test('a handler that throws leaves its event unrecorded: it comes again after a reconnection', async (t) => {
  const errors = [];
  t.after(browserLikeDispatch(errors));
  const name = unique();
  const pusher = client();
  const seen = [];
  let failOn = 3;
  pusher.subscribe(name).bind('x', (data) => {
    seen.push(data.n);
    if (data.n === failOn) throw new Error(`handler failed on ${data.n}`);
  });
  await subscribed(pusher, name);
  publish(name, 1, 3);
  await until('the failure', () => errors.length === 1);
  failOn = null;
  server.drop(pusher.connection.socket_id);
  await subscribed(pusher, name, 2);
  await until('event 3 again', () => seen.length === 4);
  publish(name, 4, 4);
  await until('event 4', () => seen.length === 5);
  assert.deepEqual(seen, [1, 2, 3, 3, 4]);
  assert.equal(subscribes(name)[1].data.tidings.recover.offset, 2);
});

test('too much missed: recovered false, no replays, tidings:unrecovered, then recovery works again', async () => {
  const name = unique('small-');
  const pusher = client();
  const channel = pusher.subscribe(name);
  const seen = listen(channel);
  const unrecovered = [];
  const succeeded = [];
  channel.bind('tidings:unrecovered', (data) => unrecovered.push(data));
  channel.bind('pusher:subscription_succeeded', (data) => succeeded.push(data));
  await subscribed(pusher, name);
  publish(name, 1, 1);
  await until('event 1', () => seen.length === 1);

  server.drop(pusher.connection.socket_id);
  publish(name, 2, 30); // more than the 20 the channel keeps
  await until('tidings:unrecovered', () => unrecovered.length === 1);
  assert.deepEqual(unrecovered[0], { epoch: server.position(name).epoch, offset: 30 });
  assert.equal(succeeded[1].recovered, false);
  assert.deepEqual(seen, [1]);

  // The plugin took the server's position: the next cut recovers from there.
  server.drop(pusher.connection.socket_id);
  publish(name, 31, 32);
  await subscribed(pusher, name, 3);
  await until('events 31 and 32', () => seen.length === 3);
  assert.deepEqual(seen, [1, 31, 32]);
  assert.equal(subscribes(name)[2].data.tidings.recover.offset, 30);
  assert.equal(succeeded[2].recovered, true);
  assert.equal(unrecovered.length, 1);
});

test('a new epoch (the server lost the stream) is not recovered either', async () => {
  const name = unique();
  const pusher = client();
  const channel = pusher.subscribe(name);
  const seen = listen(channel);
  const unrecovered = [];
  channel.bind('tidings:unrecovered', (data) => unrecovered.push(data));
  await subscribed(pusher, name);
  publish(name, 1, 2);
  await until('events 1 and 2', () => seen.length === 2);
  const before = server.position(name).epoch;
  server.drop(pusher.connection.socket_id);
  server.restart(name);
  publish(name, 3, 3); // offset 1 of the new epoch
  await until('tidings:unrecovered', () => unrecovered.length === 1);
  assert.notEqual(unrecovered[0].epoch, before);
  assert.deepEqual(unrecovered[0], server.position(name));
  assert.deepEqual(seen, [1, 2]);
});

test('with storage, a new page (a new Pusher) recovers what the old one missed', async () => {
  const storage = new Map();
  const sessionStorage = sessionStorageOver(storage);
  const name = unique();
  const first = client({ storage: sessionStorage });
  const seen = listen(first.subscribe(name));
  await subscribed(first, name);
  publish(name, 1, 3);
  await until('events 1-3', () => seen.length === 3);
  const oldSocket = first.connection.socket_id;
  assert.deepEqual(JSON.parse(storage.get(`tidings:app-key:${name}`)), {
    epoch: server.position(name).epoch,
    offset: 3,
    socket_id: oldSocket,
  });
  first.disconnect(); // the page goes away
  publish(name, 4, 5);

  const second = client({ storage: sessionStorage });
  const seenAfter = listen(second.subscribe(name));
  await subscribed(second, name, 2);
  await until('events 4 and 5', () => seenAfter.length === 2);
  assert.deepEqual(seenAfter, [4, 5]);
  const recover = subscribes(name)[1].data.tidings.recover;
  assert.deepEqual(recover, { epoch: server.position(name).epoch, offset: 3, socket_id: oldSocket });

  // Another app key does not share the position; unsubscribing forgets it.
  const other = client({ storage: sessionStorage, key: 'other-key' });
  other.subscribe(name);
  await subscribed(other, name, 3);
  assert.deepEqual(subscribes(name)[2].data.tidings, { v: 1 });
  second.unsubscribe(name);
  await until('the position forgotten', () => !storage.has(`tidings:app-key:${name}`));
});

test('a stored position for a channel that keeps no history is dropped', async () => {
  const name = unique('plain-');
  const key = `tidings:app-key:${name}`;
  const storage = new Map([[key, JSON.stringify({ epoch: 'e1', offset: 4, socket_id: '1.2' })]]);
  const pusher = client({ storage: sessionStorageOver(storage) });
  pusher.subscribe(name);
  await subscribed(pusher, name);
  assert.deepEqual(subscribes(name)[0].data.tidings.recover, { epoch: 'e1', offset: 4, socket_id: '1.2' });
  await until('the position dropped', () => !storage.has(key));
});

test('garbage in storage is ignored, never sent (the server would refuse the subscription)', async () => {
  const garbage = [
    '{"epoch": "e1", "offset": 3',
    '{"epoch": 5, "offset": 3, "socket_id": "1.2"}',
    `{"epoch": "${'e'.repeat(33)}", "offset": 3, "socket_id": "1.2"}`,
    '{"epoch": "e1", "offset": -1, "socket_id": "1.2"}',
    '{"epoch": "e1", "offset": 9007199254740992, "socket_id": "1.2"}',
    '{"epoch": "e1", "offset": 3, "socket_id": "1.2; drop"}',
  ];
  for (const text of garbage) {
    const name = unique();
    const pusher = client({ storage: { getItem: () => text, setItem() {}, removeItem() {} } });
    pusher.subscribe(name);
    await subscribed(pusher, name);
    assert.deepEqual(subscribes(name)[0].data.tidings, { v: 1 }, text);
  }
});

test('a channel without history: no position, nothing to recover, events as usual', async () => {
  const name = unique('plain-');
  const pusher = client();
  const seen = listen(pusher.subscribe(name));
  await subscribed(pusher, name);
  publish(name, 1, 1);
  await until('event 1', () => seen.length === 1);
  server.drop(pusher.connection.socket_id);
  await subscribed(pusher, name, 2);
  assert.deepEqual(subscribes(name)[1].data.tidings, { v: 1 });
  publish(name, 2, 2);
  await until('event 2', () => seen.length === 2);
  assert.deepEqual(seen, [1, 2]);
});

test('Laravel Echo with `client:` recovers the same way', async () => {
  // laravel-echo 2.5.0's CommonJS build does not load under Node ("type": "module"): its ES module does.
  const { default: Echo } = await import('laravel-echo');
  const name = unique();
  const pusher = client();
  const echo = new Echo({ broadcaster: 'pusher', client: pusher, withoutInterceptors: true });
  const seen = [];
  const unrecovered = [];
  echo
    .channel(name)
    .listen('.OrderShipped', (data) => seen.push(data.n))
    .listen('.tidings:unrecovered', (data) => unrecovered.push(data));
  await subscribed(pusher, name);
  const shipped = (from, to, exclude) => {
    for (let n = from; n <= to; n++) server.publish(name, 'OrderShipped', { n }, exclude);
  };
  shipped(1, 2);
  await until('events 1 and 2', () => seen.length === 2);
  const oldSocket = echo.socketId();
  server.drop(oldSocket);
  shipped(3, 5);
  await until('events 3-5', () => seen.length === 5);
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.notEqual(echo.socketId(), oldSocket);
  assert.equal(subscribes(name)[1].data.tidings.recover.offset, 2);
  server.drop(echo.socketId());
  server.restart(name);
  await until('tidings:unrecovered', () => unrecovered.length === 1);
  assert.deepEqual(unrecovered, [server.position(name)]);
  echo.leave(name);
  const received = server.connections.get(echo.socketId()).received;
  await until('the unsubscribe', () => received.some((m) => m.event === 'pusher:unsubscribe'));
});
