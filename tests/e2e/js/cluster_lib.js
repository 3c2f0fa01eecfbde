'use strict';
// Helpers for the cluster scenarios run by tests/cluster/test_cluster_pusher_js.py: pusher-js
// clients spread over several Tidings nodes that share one Redis.
//
// Same conventions as lib.js (whose helpers are re-exported), plus:
//   TIDINGS_PORTS   comma-separated ports of the nodes; makeClientOn(i, ...) connects to node i
//                   (0-based). lib.js still wants TIDINGS_PORT: the test sets it to node 0.
// lib.js's makeClient always uses TIDINGS_PORT, so this file builds its own clients with the
// same recording shape (frames, states, errors, closes, socketIds) and has its own main() that
// dumps and disconnects them.

const lib = require('./lib');
const Pusher = require('pusher-js');

const HOST = process.env.TIDINGS_HOST || '127.0.0.1';
const PORTS = (process.env.TIDINGS_PORTS || '')
  .split(',')
  .filter((p) => p !== '')
  .map(Number);

if (PORTS.length === 0 || PORTS.some((p) => !Number.isInteger(p) || p <= 0)) {
  process.stderr.write('TIDINGS_PORTS must list the node ports, comma-separated\n');
  process.exit(2);
}

const clients = [];

// A pusher-js client connected to node `node` (index into TIDINGS_PORTS); options as lib.js.
function makeClientOn(node, { secret = lib.SECRET, presence = null, user = null } = {}) {
  if (node < 0 || node >= PORTS.length) {
    throw new Error(`no node ${node}: TIDINGS_PORTS has ${PORTS.length}`);
  }
  const pusher = new Pusher(lib.KEY, {
    cluster: 'local',
    wsHost: HOST,
    wsPort: PORTS[node],
    forceTLS: false,
    enabledTransports: ['ws'],
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
            auth: lib.sign(secret, `${socketId}:${channelName}:${channelData}`),
            channel_data: channelData,
          });
          return;
        }
        callback(null, { auth: lib.sign(secret, `${socketId}:${channelName}`) });
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
          auth: lib.sign(secret, `${socketId}::user::${userData}`),
          user_data: userData,
        });
      },
    },
  });
  const client = {
    node,
    pusher,
    initialState: pusher.connection.state,
    frames: [],
    states: [],
    errors: [],
    closes: [],
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
    const transport = pusher.connection.connection && pusher.connection.connection.transport;
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

// Presence roster as a sorted [{id, info}] list.
function memberList(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  list.sort((x, y) => (x.id < y.id ? -1 : 1));
  return list;
}

// Non-pusher events a client got on a channel, as {event, data}.
function appEvents(client, channelName) {
  return lib
    .framesOf(client, undefined, channelName)
    .filter((f) => !f.event.startsWith('pusher'))
    .map((f) => ({ event: f.event, data: f.data }));
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

// As lib.main, for the clients made here.
function main(scenario) {
  const hardLimit = setTimeout(() => {
    process.stderr.write(`scenario exceeded its overall limit of ${12 * lib.WAIT_MS} ms\n`);
    process.exit(1);
  }, 12 * lib.WAIT_MS);
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
        node: c.node,
        states: c.states,
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
  PORTS,
  makeClientOn,
  memberList,
  appEvents,
  main,
};
