'use strict';
// Helpers for the HTTP-fallback scenarios run by tests/e2e/test_pusher_js_fallback.py.
//
// Same contract as lib.js (environment, {"step"}/{"result"} JSON lines, "go" on stdin), with
// clients that use one chosen transport: TRANSPORT=xhr_streaming or xhr_polling (pusher-js's
// HTTP fallbacks, through httpHost/httpPort), or 'ws' for a WebSocket peer. lib.js's helpers
// that only look at a client's recorded frames and state are reused as they are.

const Pusher = require('pusher-js');
const lib = require('./lib');

const HOST = process.env.TIDINGS_HOST || '127.0.0.1';
const PORT = Number(process.env.TIDINGS_PORT);
const { KEY, SECRET, WAIT_MS, sign } = lib;

const clients = [];

// PUSHER_DEBUG=1: pusher-js's own log, timestamped, on stderr (shown when a scenario fails).
if (process.env.PUSHER_DEBUG) {
  Pusher.log = (message) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

// A pusher-js client on `transport` that records what it sees (the same fields as lib.js's
// makeClient, plus transports: the transport name of every connection it made).
function makeClient({ transport, secret = SECRET, presence = null, user = null }) {
  if (!transport) {
    throw new Error('makeClient needs a transport');
  }
  const pusher = new Pusher(KEY, {
    cluster: 'local',
    wsHost: HOST,
    wsPort: PORT,
    httpHost: HOST,
    httpPort: PORT,
    forceTLS: false,
    enabledTransports: [transport],
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
        callback(null, { auth: sign(secret, `${socketId}::user::${userData}`), user_data: userData });
      },
    },
  });
  const client = {
    pusher,
    initialState: pusher.connection.state,
    frames: [],
    states: [],
    errors: [],
    closes: [], // {code, reason} of every closed transport connection
    socketIds: [],
    transports: [],
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
    const transportConnection = pusher.connection.connection && pusher.connection.connection.transport;
    client.transports.push(transportConnection ? transportConnection.name : null);
    if (transportConnection) {
      transportConnection.bind('closed', (event) => {
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

function disconnectAll() {
  for (const client of clients) {
    try {
      client.pusher.disconnect();
    } catch (e) {
      // already gone
    }
  }
}

// lib.js's main, for the clients made here.
function main(scenario) {
  const hardLimit = setTimeout(() => {
    process.stderr.write(`scenario exceeded its overall limit of ${12 * WAIT_MS} ms\n`);
    process.exit(1);
  }, 12 * WAIT_MS);
  scenario()
    .then((result) => {
      clearTimeout(hardLimit);
      const line = `${JSON.stringify({ result })}\n`;
      disconnectAll();
      process.stdout.write(line, () => process.exit(0));
    })
    .catch((error) => {
      clearTimeout(hardLimit);
      const seen = clients.map((c, i) => ({
        client: i,
        states: c.states,
        transports: c.transports,
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
  ...lib,
  TRANSPORT: lib.env('TRANSPORT'),
  makeClient,
  main,
};
