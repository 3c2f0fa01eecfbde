'use strict';
// Users over three nodes. W (WATCHER, watchlist [USER]) on node 0; U1 and U2 both signed in as
// USER, on nodes 1 and 2; O anonymous on node 2.
//  1. W signs in, then U1: W hears USER is online; then U2 signs in as well.
//  2. Step "signed-in": the test sends notify and notify-end to USER through node 0; both of
//     USER's sockets get each once, O nothing (notify-end is the sentinel).
//  3. Step "notified": the test terminates USER's connections through node 0: U1 and U2 are
//     closed with 4009, O stays, W hears USER is offline.
const {
  env, QUIET_MS, makeClientOn, connected, signedIn, until, framesOf, sleep, appEvents, step, main,
} = require('./cluster_lib');

main(async () => {
  const userId = env('USER_ID');
  const watcherId = env('WATCHER_ID');
  const w = makeClientOn(0, { user: { id: watcherId, watchlist: [userId] } });
  const u1 = makeClientOn(1, { user: { id: userId, user_info: { on: 'node1' } } });
  const u2 = makeClientOn(2, { user: { id: userId, user_info: { on: 'node2' } } });
  const o = makeClientOn(2);
  const online = [];
  const offline = [];
  w.pusher.user.watchlist.bind('online', (event) => online.push(event));
  w.pusher.user.watchlist.bind('offline', (event) => offline.push(event));
  await Promise.all([connected(w, 'W'), connected(u1, 'U1'), connected(u2, 'U2'), connected(o, 'O')]);
  await signedIn(w);
  await signedIn(u1);
  await until(`watchlist online for ${userId} on W`, () => online.some((e) => (e.user_ids || []).includes(userId)));
  await signedIn(u2);
  const oSocket = o.pusher.connection.socket_id;

  const userChannel = `#server-to-user-${userId}`;
  await step('signed-in');
  await until('notify-end on U1 and U2', () =>
    [u1, u2].every((c) => framesOf(c, 'notify-end').length > 0),
  );
  const notified = { u1: appEvents(u1, userChannel), u2: appEvents(u2, userChannel), o: o.frames.filter((f) => f.event.startsWith('notify')) };

  await step('notified');
  await until('the server to close U1 and U2', () => u1.closes.length > 0 && u2.closes.length > 0);
  await until(`watchlist offline for ${userId} on W`, () => offline.length > 0);
  await sleep(QUIET_MS);
  return {
    notified,
    online_events: online,
    offline_events: offline,
    closes: { u1: u1.closes, u2: u2.closes },
    error_frames: { u1: framesOf(u1, 'pusher:error').map((f) => f.data), u2: framesOf(u2, 'pusher:error').map((f) => f.data) },
    states: { u1: u1.pusher.connection.state, u2: u2.pusher.connection.state },
    o_state: o.pusher.connection.state,
    o_socket_unchanged: o.pusher.connection.socket_id === oSocket,
    o_closes: o.closes,
    w_state: w.pusher.connection.state,
  };
});
