'use strict';
// pusher-js against an app that serves its own auth endpoint (tests/e2e/test_frameworks.py):
// no signing here, the app's /pusher/auth decides. Subscribes to ALLOWED and REFUSED with
// the bearer TOKEN, reports how each subscription ended (step "subscribed"), then returns
// the first application event received on ALLOWED.
const { HOST, PORT, WAIT_MS, env, until, step, main } = require('./lib');
const Pusher = require('pusher-js');

main(async () => {
  const pusher = new Pusher(env('APP_KEY'), {
    cluster: 'local',
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    disableStats: true,
    enabledTransports: ['ws'],
    channelAuthorization: {
      endpoint: `http://${HOST}:${PORT}/pusher/auth`,
      headers: { Authorization: `Bearer ${env('TOKEN')}` },
    },
  });
  const outcome = {};
  const events = [];
  for (const name of [env('ALLOWED'), env('REFUSED')]) {
    const channel = pusher.subscribe(name);
    channel.bind('pusher:subscription_succeeded', () => { outcome[name] = 'subscribed'; });
    channel.bind('pusher:subscription_error', (error) => { outcome[name] = `refused ${error.status}`; });
    channel.bind_global((event, data) => {
      if (!event.startsWith('pusher:')) {
        events.push({ channel: name, event, data });
      }
    });
  }
  await until('both subscriptions answered', () => Object.keys(outcome).length === 2, WAIT_MS);
  await step('subscribed', { outcome, transport: pusher.connection.connection.transport.name });
  await until('an event', () => events.length > 0);
  pusher.disconnect();
  return { events, outcome };
});
