'use strict';
// Presence members are users, not sockets. Clients: A (user ALICE), B1 and B2 (both user BOB).
//  1. A joins alone; 2. B1 joins (A: member_added BOB); 3. B2 joins as BOB too (A: no second
//  member_added). B2 then sends a client event on the channel: the server handles B2's
//  subscribe before that event, so once A (and B1) have it any duplicate member_added would
//  already have arrived. 4. B2 disconnects: BOB still has B1, so no member_removed (watched for
//  QUIET_MS, there is no sentinel for a disconnect). 5. B1 disconnects: A gets member_removed.
const { env, QUIET_MS, makeClient, connected, subscribed, until, framesOf, sleep, main } = require('./lib');

function memberList(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  list.sort((x, y) => (x.id < y.id ? -1 : 1));
  return list;
}

main(async () => {
  const channelName = env('CHANNEL');
  const alice = env('ALICE');
  const bob = env('BOB');
  const a = makeClient({ presence: { user_id: alice, user_info: { name: 'Alice' } } });
  const b1 = makeClient({ presence: { user_id: bob, user_info: { name: 'Bob' } } });
  const b2 = makeClient({ presence: { user_id: bob, user_info: { name: 'Bob' } } });
  await Promise.all([connected(a, 'A'), connected(b1, 'B1'), connected(b2, 'B2')]);

  const added = { a: [], b1: [], b2: [] };
  const removed = { a: [], b1: [], b2: [] };
  const track = (key, channel) => {
    channel.bind('pusher:member_added', (m) => added[key].push({ id: m.id, info: m.info }));
    channel.bind('pusher:member_removed', (m) => removed[key].push({ id: m.id, info: m.info }));
  };

  const result = {};
  const chA = await subscribed(a, channelName);
  track('a', chA);
  result.a_alone = { count: chA.members.count, me: chA.members.me, members: memberList(chA) };

  const chB1 = await subscribed(b1, channelName);
  track('b1', chB1);
  result.b1_join = { count: chB1.members.count, me: chB1.members.me, members: memberList(chB1) };
  await until('member_added on A after B1 joined', () => added.a.length >= 1);
  result.a_after_b1 = { count: chA.members.count, added: added.a.slice() };

  const chB2 = await subscribed(b2, channelName);
  track('b2', chB2);
  result.b2_join = { count: chB2.members.count, me: chB2.members.me, members: memberList(chB2) };
  const hello = [];
  chA.bind('client-hello', (data, metadata) => hello.push({ to: 'a', data, metadata }));
  chB1.bind('client-hello', (data, metadata) => hello.push({ to: 'b1', data, metadata }));
  chB2.trigger('client-hello', { from: 'b2' });
  await until('client-hello from B2 on A and B1', () => hello.length >= 2);
  result.hello = hello.sort((x, y) => (x.to < y.to ? -1 : 1));
  result.a_after_b2 = {
    count: chA.members.count,
    added: added.a.slice(),
    member_added_frames: framesOf(a, 'pusher_internal:member_added', channelName).map((f) => f.data),
  };
  result.b1_added_frames_after_b2 = framesOf(b1, 'pusher_internal:member_added', channelName).map((f) => f.data);

  b2.pusher.disconnect();
  await until('B2 to be disconnected', () => b2.pusher.connection.state === 'disconnected');
  await sleep(QUIET_MS);
  result.a_after_b2_left = {
    count: chA.members.count,
    removed: removed.a.slice(),
    member_removed_frames: framesOf(a, 'pusher_internal:member_removed', channelName).map((f) => f.data),
  };

  b1.pusher.disconnect();
  await until('member_removed on A after B1 left', () => removed.a.length >= 1);
  result.a_after_b1_left = {
    count: chA.members.count,
    removed: removed.a.slice(),
    members: memberList(chA),
  };
  await sleep(QUIET_MS);
  result.a_member_removed_frames = framesOf(a, 'pusher_internal:member_removed', channelName).map((f) => f.data);
  result.a_member_added_frames = framesOf(a, 'pusher_internal:member_added', channelName).map((f) => f.data);
  return result;
});
