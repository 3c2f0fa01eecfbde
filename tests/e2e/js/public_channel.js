'use strict';
// Public channel: subscribe, receive REST-triggered events in order, then unsubscribe and
// receive nothing more. A second channel (CONTROL) carries the sentinel event that proves
// the server had already handled the trigger made after the unsubscribe.
const { env, makeClient, connected, subscribed, roundTrip, until, framesOf, step, main } = require('./lib');

main(async () => {
  const channelName = env('CHANNEL');
  const controlName = env('CONTROL');
  const expected = Number(env('EXPECTED_EVENTS'));
  const client = makeClient();
  await connected(client);
  const channel = await subscribed(client, channelName);
  await subscribed(client, controlName);
  const events = [];
  channel.bind_global((name, data) => {
    if (!name.startsWith('pusher:')) {
      events.push({ event: name, data });
    }
  });
  await step('subscribed', { socket_id: client.pusher.connection.socket_id });
  await until(`${expected} events on ${channelName}`, () => events.length >= expected);
  client.pusher.unsubscribe(channelName);
  await roundTrip(client);
  await step('unsubscribed');
  await until('sentinel on the control channel', () => framesOf(client, 'sentinel', controlName).length > 0);
  return {
    events,
    after_unsubscribe: framesOf(client, 'after-unsubscribe'),
    frames_on_channel: framesOf(client, undefined, channelName).map((f) => f.event),
    initial_state: client.initialState,
    states: client.states,
  };
});
