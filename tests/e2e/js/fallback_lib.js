'use strict';
// Helpers for the HTTP-fallback scenarios run by tests/e2e/test_pusher_js_fallback.py.
//
// Same contract as lib.js (environment, {"step"}/{"result"} JSON lines, "go" on stdin), with
// clients that use one chosen transport: TRANSPORT=xhr_streaming or xhr_polling (pusher-js's
// HTTP fallbacks, through httpHost/httpPort), or 'ws' for a WebSocket peer. Everything else,
// main() included, is lib.js's.

const Pusher = require('pusher-js');
const lib = require('./lib');

const { HOST, PORT } = lib;

// PUSHER_DEBUG=1: pusher-js's own log, timestamped, on stderr (shown when a scenario fails).
if (process.env.PUSHER_DEBUG) {
  Pusher.log = (message) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

// A pusher-js client on `transport` that records what it sees (the same fields as lib.js's
// makeClient, plus transports: the transport name of every connection it made).
function makeClient({ transport, secret = lib.SECRET, presence = null, user = null }) {
  if (!transport) {
    throw new Error('makeClient needs a transport');
  }
  return lib.makeRecordingClient(
    { wsHost: HOST, wsPort: PORT, httpHost: HOST, httpPort: PORT, enabledTransports: [transport] },
    { secret, presence, user },
    { transports: [] },
  );
}

module.exports = {
  ...lib,
  TRANSPORT: lib.env('TRANSPORT'),
  makeClient,
};
