'use strict';
// One client on TRANSPORT reaches 'connected' through the HTTP fallback.
const { TRANSPORT, makeClient, connected, roundTrip, main } = require('./fallback_lib');

main(async () => {
  const c = makeClient({ transport: TRANSPORT });
  await connected(c);
  // A pusher:ping/pong round trip through xhr_send and the receive side.
  await roundTrip(c);
  return {
    initial_state: c.initialState,
    states: c.states,
    state: c.pusher.connection.state,
    socket_id: c.pusher.connection.socket_id,
    socket_ids: c.socketIds,
    transports: c.transports,
    activity_timeout_ms: c.pusher.connection.activityTimeout,
    errors: c.errors,
    closes: c.closes,
  };
});
