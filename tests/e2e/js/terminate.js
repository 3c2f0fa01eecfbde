'use strict';
// terminate_user_connections: client T signs in as USER_ID, client O stays anonymous. The test
// terminates USER_ID over REST; T's connection must be closed by the server, O stays connected.
const { env, QUIET_MS, makeClient, connected, signedIn, until, framesOf, sleep, step, main } = require('./lib');

main(async () => {
  const userId = env('USER_ID');
  const t = makeClient({ user: { id: userId } });
  const o = makeClient();
  await Promise.all([connected(t, 'T'), connected(o, 'O')]);
  await signedIn(t);
  const oSocket = o.pusher.connection.socket_id;
  await step('signed-in');
  await until('the server to close T', () => t.closes.length > 0);
  // pusher-js must not come back: a 4000-4099 close code means "do not reconnect".
  await sleep(QUIET_MS);
  return {
    t_closes: t.closes,
    t_error_frames: framesOf(t, 'pusher:error').map((f) => f.data),
    t_errors: t.errors,
    t_states: t.states,
    t_state: t.pusher.connection.state,
    o_state: o.pusher.connection.state,
    o_socket_unchanged: o.pusher.connection.socket_id === oSocket,
    o_closes: o.closes,
  };
});
