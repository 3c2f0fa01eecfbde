'use strict';
// Connect one client and report the state changes, the socket id and the activity timeout.
const { makeClient, connected, main } = require('./lib');

main(async () => {
  const client = makeClient();
  const connectedEvents = [];
  client.pusher.connection.bind('connected', () => connectedEvents.push(client.pusher.connection.socket_id));
  await connected(client);
  return {
    initial_state: client.initialState,
    states: client.states,
    state: client.pusher.connection.state,
    socket_id: client.pusher.connection.socket_id,
    connected_events: connectedEvents,
    activity_timeout_ms: client.pusher.connection.activityTimeout,
    errors: client.errors,
  };
});
