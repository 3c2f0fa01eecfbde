'use strict';
// Watchlist: A signs in watching B; then B signs in on another client (A: online [B]);
// then B disconnects (A: offline [B]).
const { env, makeClient, connected, signedIn, until, framesOf, main } = require('./lib');

main(async () => {
  const userA = env('USER_A');
  const userB = env('USER_B');
  const a = makeClient({ user: { id: userA, watchlist: [userB] } });
  const b = makeClient({ user: { id: userB } });
  const online = [];
  const offline = [];
  a.pusher.user.watchlist.bind('online', (event) => online.push(event));
  a.pusher.user.watchlist.bind('offline', (event) => offline.push(event));
  await connected(a, 'A');
  await signedIn(a);
  const onlineAtSignin = online.length;
  await connected(b, 'B');
  await signedIn(b);
  await until(`watchlist online for ${userB} on A`, () => online.some((e) => (e.user_ids || []).includes(userB)));
  b.pusher.disconnect();
  await until(`watchlist offline for ${userB} on A`, () => offline.length > 0);
  return {
    online_events: online,
    offline_events: offline,
    online_events_before_b: onlineAtSignin,
    watchlist_frames: framesOf(a, 'pusher_internal:watchlist_events').map((f) => f.data),
    a_errors: a.errors,
    a_state: a.pusher.connection.state,
  };
});
