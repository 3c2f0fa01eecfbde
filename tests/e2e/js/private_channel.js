'use strict';
// Private channel auth: a correctly signed client subscribes; a client signing with the wrong
// secret gets pusher:subscription_error on the channel, stays connected on the same socket and
// can still subscribe to a public channel.
const { env, makeClient, connected, subscribed, until, framesOf, main } = require('./lib');

main(async () => {
  const privateName = env('PRIVATE_CHANNEL');
  const publicName = env('PUBLIC_CHANNEL');
  const good = makeClient();
  const bad = makeClient({ secret: 'not-the-app-secret' });
  await Promise.all([connected(good, 'good client'), connected(bad, 'bad client')]);

  const goodChannel = await subscribed(good, privateName);

  const badChannel = bad.pusher.subscribe(privateName);
  const subscriptionErrors = [];
  let succeeded = false;
  badChannel.bind('pusher:subscription_error', (data) => subscriptionErrors.push(data));
  badChannel.bind('pusher:subscription_succeeded', () => {
    succeeded = true;
  });
  await until(`pusher:subscription_error on ${privateName}`, () => subscriptionErrors.length > 0 || succeeded);
  const socketBefore = bad.pusher.connection.socket_id;
  const stateAfterError = bad.pusher.connection.state;
  const publicChannel = await subscribed(bad, publicName);
  return {
    good_subscribed: goodChannel.subscribed,
    bad_succeeded: succeeded,
    subscription_errors: subscriptionErrors,
    subscription_error_frames: framesOf(bad, 'pusher:subscription_error'),
    bad_state_after_error: stateAfterError,
    bad_state_at_end: bad.pusher.connection.state,
    bad_socket_unchanged: socketBefore === bad.pusher.connection.socket_id,
    bad_connection_errors: bad.errors,
    bad_closes: bad.closes,
    public_subscribed: publicChannel.subscribed,
  };
});
