'use strict';
// User signin: pusher.signin() through userAuthentication.customHandler, then events sent by
// the test with send_to_user() arrive on pusher.user.bind(). The test sends "notify" and then
// "notify-end"; once "notify-end" is here any duplicate "notify" would be here too.
const { env, makeClient, connected, signedIn, until, framesOf, step, main } = require('./lib');

main(async () => {
  const userId = env('USER_ID');
  const client = makeClient({ user: { id: userId, user_info: { name: 'Signed In' } } });
  await connected(client);
  const userEvents = [];
  client.pusher.user.bind('notify', (data) => userEvents.push({ event: 'notify', data }));
  client.pusher.user.bind('notify-end', (data) => userEvents.push({ event: 'notify-end', data }));
  await signedIn(client);
  const userChannel = `#server-to-user-${userId}`;
  await until(
    `subscription to ${userChannel} answered`,
    () =>
      framesOf(client, 'pusher_internal:subscription_succeeded', userChannel).length > 0 ||
      framesOf(client, 'pusher:subscription_error', userChannel).length > 0,
  );
  await step('signed-in', { socket_id: client.pusher.connection.socket_id });
  await until('notify-end on pusher.user', () => userEvents.some((e) => e.event === 'notify-end'));
  return {
    user_data: client.pusher.user.user_data,
    signin_success_frames: framesOf(client, 'pusher:signin_success'),
    user_channel_frames: framesOf(client, undefined, userChannel).map((f) => ({ event: f.event, data: f.data })),
    user_events: userEvents,
    errors: client.errors,
    state: client.pusher.connection.state,
  };
});
