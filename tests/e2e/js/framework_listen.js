'use strict';
// A pusher-js subscriber for tests/e2e/test_frameworks.py: subscribes to CHANNEL on the
// server at TIDINGS_PORT, says so (step "subscribed"), and returns the first
// EXPECTED_EVENTS application events it receives there.
const { env, makeClient, connected, subscribed, until, step, main } = require('./lib');

main(async () => {
  const channelName = env('CHANNEL');
  const expected = Number(env('EXPECTED_EVENTS'));
  const client = makeClient();
  await connected(client);
  const channel = await subscribed(client, channelName);
  const events = [];
  channel.bind_global((name, data) => {
    if (!name.startsWith('pusher:')) {
      events.push({ event: name, data });
    }
  });
  await step('subscribed');
  await until(`${expected} events on ${channelName}`, () => events.length >= expected);
  return { events };
});
