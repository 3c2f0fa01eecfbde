'use strict';
// pusher-js's own authorizer against an app's auth endpoints (tidings.integrations.*):
// no customHandler, just channelAuthorization / userAuthentication pointed at AUTH_URL, with
// an X-User header standing for the app's session. Alice subscribes to PRIVATE_OK (allowed)
// and PRIVATE_REFUSED (refused: pusher-js reports the HTTP status), joins PRESENCE with Bob,
// and signs in.
const Pusher = require('pusher-js');
const { HOST, PORT, KEY, env, until, main } = require('./lib');

function authClient(user) {
  const headers = { 'X-User': user };
  const authUrl = env('AUTH_URL');
  const pusher = new Pusher(KEY, {
    cluster: 'local',
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    disableStats: true,
    enabledTransports: ['ws'],
    channelAuthorization: { endpoint: `${authUrl}/pusher/auth`, transport: 'ajax', headers },
    userAuthentication: { endpoint: `${authUrl}/pusher/user-auth`, transport: 'ajax', headers },
  });
  return pusher;
}

// Resolves with {ok: true} or {ok: false, error} once the subscription is answered.
function subscription(pusher, name) {
  return new Promise((resolve) => {
    const channel = pusher.subscribe(name);
    channel.bind('pusher:subscription_succeeded', () => resolve({ ok: true, channel }));
    channel.bind('pusher:subscription_error', (error) =>
      resolve({ ok: false, error: { type: error.type, status: error.status } }),
    );
  });
}

main(async () => {
  const alice = authClient('alice');
  const bob = authClient('bob');
  const ok = await subscription(alice, env('PRIVATE_OK'));
  const refused = await subscription(alice, env('PRIVATE_REFUSED'));
  const presenceName = env('PRESENCE');
  const bobIn = await subscription(bob, presenceName);
  const aliceIn = await subscription(alice, presenceName);
  const members = [];
  if (aliceIn.ok) {
    aliceIn.channel.members.each((m) => members.push({ id: m.id, info: m.info }));
  }
  alice.signin();
  await until('alice signed in', () => alice.user.user_data !== null);
  const result = {
    private_ok: ok.ok,
    private_refused: refused.ok ? 'subscribed' : refused.error,
    presence_ok: bobIn.ok && aliceIn.ok,
    members: members.sort((a, b) => (a.id < b.id ? -1 : 1)),
    me: aliceIn.ok ? { id: aliceIn.channel.members.me.id, info: aliceIn.channel.members.me.info } : null,
    user_data: alice.user.user_data,
  };
  alice.disconnect();
  bob.disconnect();
  return result;
});
