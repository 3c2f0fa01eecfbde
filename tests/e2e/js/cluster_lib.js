'use strict';
// Helpers for the cluster scenarios run by tests/cluster/test_cluster_pusher_js.py: pusher-js
// clients spread over several Tidings nodes that share one Redis.
//
// Same conventions as lib.js (whose helpers are re-exported), plus:
//   TIDINGS_PORTS   comma-separated ports of the nodes; makeClientOn(i, ...) connects to node i
//                   (0-based). lib.js still wants TIDINGS_PORT: the test sets it to node 0.
// lib.js's makeClient always uses TIDINGS_PORT, so makeClientOn builds its clients with
// lib.makeRecordingClient (same recording shape, plus `node`); lib.main dumps and disconnects them.

const lib = require('./lib');

const PORTS = (process.env.TIDINGS_PORTS || '')
  .split(',')
  .filter((p) => p !== '')
  .map(Number);

if (PORTS.length === 0 || PORTS.some((p) => !Number.isInteger(p) || p <= 0)) {
  process.stderr.write('TIDINGS_PORTS must list the node ports, comma-separated\n');
  process.exit(2);
}

// A pusher-js client connected to node `node` (index into TIDINGS_PORTS); options as lib.js.
function makeClientOn(node, { secret = lib.SECRET, presence = null, user = null } = {}) {
  if (node < 0 || node >= PORTS.length) {
    throw new Error(`no node ${node}: TIDINGS_PORTS has ${PORTS.length}`);
  }
  return lib.makeRecordingClient(
    { wsHost: lib.HOST, wsPort: PORTS[node], enabledTransports: ['ws'] },
    { secret, presence, user },
    { node },
  );
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

module.exports = {
  ...lib,
  PORTS,
  makeClientOn,
  memberList,
  appEvents,
};
