'use strict';
// Presence over TRANSPORT with two clients A (ALICE) and B (BOB):
//  A joins alone; B joins (A: member_added BOB); B unsubscribes (A: member_removed BOB);
//  B joins again (A: member_added BOB); B disconnects. pusher-js sends nothing when an HTTP
//  transport disconnects, so the server finds out when the session expires
//  (http_session_timeout), after which A gets member_removed.
const { TRANSPORT, WAIT_MS, env, makeClient, connected, subscribed, until, framesOf, roundTrip, main } =
  require('./fallback_lib');

function memberList(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  list.sort((x, y) => (x.id < y.id ? -1 : 1));
  return list;
}

main(async () => {
  const channelName = env('CHANNEL');
  const a = makeClient({ transport: TRANSPORT, presence: { user_id: env('ALICE'), user_info: { name: 'Alice' } } });
  const b = makeClient({ transport: TRANSPORT, presence: { user_id: env('BOB'), user_info: { name: 'Bob' } } });
  await Promise.all([connected(a, 'A'), connected(b, 'B')]);
  const added = [];
  const removed = [];
  const result = {};

  const chA = await subscribed(a, channelName);
  chA.bind('pusher:member_added', (m) => added.push({ id: m.id, info: m.info }));
  chA.bind('pusher:member_removed', (m) => removed.push({ id: m.id, info: m.info }));
  result.a_alone = { count: chA.members.count, me: chA.members.me, members: memberList(chA) };

  const chB = await subscribed(b, channelName);
  result.b_join = { count: chB.members.count, me: chB.members.me, members: memberList(chB) };
  await until('member_added on A', () => added.length >= 1);
  result.a_after_join = { count: chA.members.count, added: added.slice(), members: memberList(chA) };

  b.pusher.unsubscribe(channelName);
  await roundTrip(b); // the unsubscribe has been handled
  await until('member_removed on A after the unsubscribe', () => removed.length >= 1);
  result.a_after_unsubscribe = { count: chA.members.count, removed: removed.slice(), members: memberList(chA) };

  await subscribed(b, channelName);
  await until('member_added on A after B came back', () => added.length >= 2);
  b.pusher.disconnect();
  const left = Date.now();
  await until('member_removed on A after B disconnected', () => removed.length >= 2, 2 * WAIT_MS);
  result.removed_after_disconnect_ms = Date.now() - left;
  result.a_after_disconnect = { count: chA.members.count, removed: removed.slice(), members: memberList(chA) };
  result.member_added_frames = framesOf(a, 'pusher_internal:member_added', channelName).map((f) => f.data);
  result.member_removed_frames = framesOf(a, 'pusher_internal:member_removed', channelName).map((f) => f.data);
  result.transports = [a.transports, b.transports];
  return result;
});
