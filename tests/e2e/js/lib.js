'use strict';
// Shared helpers for the pusher-js scenarios run by tests/e2e/test_pusher_js.py.
//
// Each scenario is `node js/<name>.js`, configured by environment variables:
//   TIDINGS_HOST, TIDINGS_PORT  where the Tidings server listens
//   APP_KEY, APP_SECRET         the app's credentials (auth is signed here with node:crypto)
//   TIDINGS_WAIT_MS             the bound on every single wait (the Python TIMEOUT in ms)
//   TIDINGS_QUIET_MS            how long to watch for something that must NOT happen when no
//                               sentinel message can prove it (used sparingly)
// plus scenario-specific ones (channel and user names, chosen by the test).
//
// Protocol with the Python side, one JSON object per stdout line:
//   {"step": NAME, ...}  the scenario reached NAME and waits for a "go" line on stdin
//                        (the test does its REST calls in between);
//   {"result": {...}}    the observations; the process then exits 0.
// Any failure or timeout prints a message on stderr and exits 1.

const crypto = require('node:crypto');
const readline = require('node:readline');
const Pusher = require('pusher-js');

const HOST = process.env.TIDINGS_HOST || '127.0.0.1';
const PORT = Number(process.env.TIDINGS_PORT);
const KEY = process.env.APP_KEY || 'app-key';
const SECRET = process.env.APP_SECRET || 'app-secret';
const WAIT_MS = Number(process.env.TIDINGS_WAIT_MS || 5000);
const QUIET_MS = Number(process.env.TIDINGS_QUIET_MS || 500);

if (!Number.isInteger(PORT) || PORT <= 0) {
  process.stderr.write('TIDINGS_PORT must be set to the server port\n');
  process.exit(2);
}

function env(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

// Pusher signature rules: "<key>:" + hex(HMAC-SHA256(secret, string_to_sign)).
function sign(secret, stringToSign) {
  return `${KEY}:${crypto.createHmac('sha256', secret).update(stringToSign).digest('hex')}`;
}

const clients = [];

// A pusher-js client pointed at the Tidings server that records what it sees.
//   secret:   the secret used to sign channel auth and signin (a wrong one tests refusals)
//   presence: {user_id, user_info} sent as channel_data on presence- channels
//   user:     the user_data object for pusher.signin()
function makeClient({ secret = SECRET, presence = null, user = null } = {}) {
  return makeRecordingClient(
    { wsHost: HOST, wsPort: PORT, enabledTransports: ['ws'] },
    { secret, presence, user },
  );
}

// The client behind makeClient, also used by fallback_lib.js and cluster_lib.js:
//   where:  the pusher-js options that say where and how to connect (wsHost, wsPort,
//           httpHost, httpPort, enabledTransports)
//   auth:   {secret, presence, user} as for makeClient
//   extra:  more fields of the record; with `transports: []` the transport name of every
//           connection is recorded there, and `node` and `transports` appear in main()'s dump
function makeRecordingClient(where, { secret = SECRET, presence = null, user = null } = {}, extra = {}) {
  const pusher = new Pusher(KEY, {
    cluster: 'local',
    ...where,
    forceTLS: false,
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        if (channelName.startsWith('presence-')) {
          if (presence === null) {
            callback(new Error('no presence data for this client'), null);
            return;
          }
          const channelData = JSON.stringify(presence);
          callback(null, {
            auth: sign(secret, `${socketId}:${channelName}:${channelData}`),
            channel_data: channelData,
          });
          return;
        }
        callback(null, { auth: sign(secret, `${socketId}:${channelName}`) });
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        if (user === null) {
          callback(new Error('no user data for this client'), null);
          return;
        }
        const userData = JSON.stringify(user);
        callback(null, {
          auth: sign(secret, `${socketId}::user::${userData}`),
          user_data: userData,
        });
      },
    },
  });
  const client = {
    ...extra,
    pusher,
    // pusher-js starts connecting inside its constructor, so the first change
    // (initialized -> connecting) happens before anyone can bind; record where it stands.
    initialState: pusher.connection.state,
    frames: [], // every decoded message after the handshake, in arrival order
    states: [], // [previous, current] for every state change
    errors: [], // what the connection emitted as 'error'
    closes: [], // {code, reason} of every closed transport connection (e.g. the WebSocket close frame)
    socketIds: [],
  };
  pusher.connection.bind('message', (event) => {
    client.frames.push({
      event: event.event,
      channel: event.channel === undefined ? null : event.channel,
      data: event.data === undefined ? null : event.data,
      user_id: event.user_id === undefined ? null : event.user_id,
    });
  });
  pusher.connection.bind('state_change', ({ previous, current }) => {
    client.states.push([previous, current]);
  });
  pusher.connection.bind('connected', () => {
    client.socketIds.push(pusher.connection.socket_id);
    // The transport reports the close code of the WebSocket; pusher-js keeps no other record.
    const transport = pusher.connection.connection && pusher.connection.connection.transport;
    if (client.transports) {
      client.transports.push(transport ? transport.name : null);
    }
    if (transport) {
      transport.bind('closed', (event) => {
        client.closes.push({
          code: event && event.code !== undefined ? event.code : null,
          reason: event && event.reason !== undefined ? event.reason : null,
        });
      });
    }
  });
  pusher.connection.bind('error', (error) => {
    client.errors.push({
      type: error && error.type ? error.type : null,
      data: error && error.data !== undefined ? error.data : null,
    });
  });
  clients.push(client);
  return client;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Resolve as soon as predicate() is truthy; reject after WAIT_MS naming what was awaited.
function until(what, predicate, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      let value;
      try {
        value = predicate();
      } catch (e) {
        reject(e);
        return;
      }
      if (value) {
        resolve(value);
      } else if (Date.now() - started > ms) {
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      } else {
        setTimeout(check, 5);
      }
    };
    check();
  });
}

function connected(client, what = 'connection') {
  return until(`${what} to reach state connected`, () => client.pusher.connection.state === 'connected');
}

// Frames received by a client, optionally filtered by event name and channel.
function framesOf(client, event, channel) {
  return client.frames.filter(
    (f) => (event === undefined || f.event === event) && (channel === undefined || f.channel === channel),
  );
}

function received(client, event, channel, what) {
  return until(what || `${event} on ${channel}`, () => framesOf(client, event, channel).length > 0);
}

// Subscribe and wait for pusher:subscription_succeeded (or fail on pusher:subscription_error).
// Callers that must not miss what follows the subscription bind on client.pusher.subscribe(name)
// first and then call this, which returns the same channel.
async function subscribed(client, channelName) {
  const channel = client.pusher.subscribe(channelName);
  let error = null;
  let ok = false;
  const onOk = () => {
    ok = true;
  };
  const onError = (data) => {
    error = data;
  };
  channel.bind('pusher:subscription_succeeded', onOk);
  channel.bind('pusher:subscription_error', onError);
  try {
    await until(`subscription_succeeded on ${channelName}`, () => {
      if (error !== null) {
        throw new Error(`subscription to ${channelName} failed: ${JSON.stringify(error)}`);
      }
      return ok || channel.subscribed;
    });
  } finally {
    channel.unbind('pusher:subscription_succeeded', onOk);
    channel.unbind('pusher:subscription_error', onError);
  }
  return channel;
}

// Send pusher:ping and wait for the pusher:pong. The server handles a socket's messages in
// order, so after this everything the client sent before (e.g. an unsubscribe, which pusher-js
// sends asynchronously) has been handled.
async function roundTrip(client) {
  const pongs = framesOf(client, 'pusher:pong').length;
  client.pusher.send_event('pusher:ping', {});
  await until('pusher:pong', () => framesOf(client, 'pusher:pong').length > pongs);
}

// Signin and wait for pusher:signin_success.
async function signedIn(client) {
  client.pusher.signin();
  await until(
    'pusher:signin_success',
    () => framesOf(client, 'pusher:signin_success').length > 0 && client.pusher.user.user_data !== null,
  );
}

// stdin lines from the Python side ("go" after each step).
const stdinLines = [];
let stdinClosed = false;
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => stdinLines.push(line.trim()));
rl.on('close', () => {
  stdinClosed = true;
});

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// Tell the test that the scenario reached `name` and wait until it answers "go".
async function step(name, info = {}) {
  emit({ step: name, ...info });
  await until(
    `"go" on stdin after step ${name}`,
    () => {
      if (stdinLines.length > 0) {
        return true;
      }
      if (stdinClosed) {
        throw new Error(`stdin closed while waiting after step ${name}`);
      }
      return false;
    },
    4 * WAIT_MS,
  );
  const line = stdinLines.shift();
  if (line !== 'go') {
    throw new Error(`expected "go" after step ${name}, got ${JSON.stringify(line)}`);
  }
}

function disconnectAll() {
  for (const client of clients) {
    try {
      client.pusher.disconnect();
    } catch (e) {
      // already gone
    }
  }
}

// Run a scenario: print its result as one JSON line and exit 0, or explain on stderr and exit 1.
function main(scenario) {
  const hardLimit = setTimeout(() => {
    process.stderr.write(`scenario exceeded its overall limit of ${12 * WAIT_MS} ms\n`);
    process.exit(1);
  }, 12 * WAIT_MS);
  scenario()
    .then((result) => {
      clearTimeout(hardLimit);
      // Serialize before disconnecting: the result shares arrays that disconnecting changes.
      const line = `${JSON.stringify({ result })}\n`;
      disconnectAll();
      process.stdout.write(line, () => process.exit(0));
    })
    .catch((error) => {
      clearTimeout(hardLimit);
      const seen = clients.map((c, i) => ({
        client: i,
        node: c.node, // undefined (left out of the JSON) but for cluster_lib.js's clients
        states: c.states,
        transports: c.transports, // only fallback_lib.js's clients record them
        frames: c.frames,
        closes: c.closes,
      }));
      process.stderr.write(`scenario failed: ${error && error.stack ? error.stack : error}\n`);
      process.stderr.write(`observations so far: ${JSON.stringify(seen)}\n`);
      disconnectAll();
      process.exit(1);
    });
}

module.exports = {
  HOST,
  PORT,
  KEY,
  SECRET,
  WAIT_MS,
  QUIET_MS,
  env,
  sign,
  makeClient,
  makeRecordingClient,
  sleep,
  until,
  connected,
  framesOf,
  received,
  subscribed,
  roundTrip,
  signedIn,
  step,
  main,
};
