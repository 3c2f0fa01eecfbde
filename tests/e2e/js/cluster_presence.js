'use strict';
// Presence over three nodes. A (ALICE) on node 0, B1 (BOB) on node 1, B2 (BOB again) on node 2,
// C (CAROL) on node 2.
//  1. A joins alone. 2. B1 joins: A gets member_added BOB. 3. B2 joins as BOB on another node:
//  nobody gets a second member_added. 4. C joins: its roster lists members of all three nodes;
//  A, B1 and B2 get member_added CAROL, published after anything B2's join could have caused.
//  5. B2 triggers client-hello: A, B1 and C get it with BOB's user_id, B2 does not (C answers
//  client-done; B2 has it after anything echoed to B2). 6. B2 disconnects: BOB is still on node 1,
//  so nobody is told (watched for QUIET_MS), then C unsubscribes: A and B1 get member_removed
//  CAROL. 7. B1 disconnects: A gets member_removed BOB.
const {
  env, QUIET_MS, makeClientOn, connected, subscribed, until, framesOf, sleep, memberList, main,
} = require('./cluster_lib');

main(async () => {
  const channelName = env('CHANNEL');
  const alice = env('ALICE');
  const bob = env('BOB');
  const carol = env('CAROL');
  const a = makeClientOn(0, { presence: { user_id: alice, user_info: { name: 'Alice' } } });
  const b1 = makeClientOn(1, { presence: { user_id: bob, user_info: { name: 'Bob' } } });
  const b2 = makeClientOn(2, { presence: { user_id: bob, user_info: { name: 'Bob' } } });
  const c = makeClientOn(2, { presence: { user_id: carol, user_info: { name: 'Carol' } } });
  await Promise.all([connected(a, 'A'), connected(b1, 'B1'), connected(b2, 'B2'), connected(c, 'C')]);

  const added = { a: [], b1: [], b2: [], c: [] };
  const removed = { a: [], b1: [], b2: [], c: [] };
  const hello = [];
  const done = [];
  const join = async (key, client) => {
    const channel = await subscribed(client, channelName);
    channel.bind('pusher:member_added', (m) => added[key].push(m.id));
    channel.bind('pusher:member_removed', (m) => removed[key].push(m.id));
    channel.bind('client-hello', (data, metadata) => hello.push({ to: key, data, metadata }));
    channel.bind('client-done', (data, metadata) => done.push({ to: key, data, metadata }));
    return { channel, roster: { count: channel.members.count, me: channel.members.me, members: memberList(channel) } };
  };
  const result = {};

  const { channel: chA, roster: aRoster } = await join('a', a);
  result.a_alone = aRoster;
  const { channel: chB1, roster: b1Roster } = await join('b1', b1);
  result.b1_join = b1Roster;
  await until('member_added BOB on A', () => added.a.includes(bob));
  const { channel: chB2, roster: b2Roster } = await join('b2', b2);
  result.b2_join = b2Roster;
  const { channel: chC, roster: cRoster } = await join('c', c);
  result.c_join = cRoster;
  await until('member_added CAROL on A, B1 and B2', () =>
    ['a', 'b1', 'b2'].every((k) => added[k].includes(carol)),
  );
  result.added_after_c = { a: added.a.slice(), b1: added.b1.slice(), b2: added.b2.slice(), c: added.c.slice() };
  result.counts_after_c = { a: chA.members.count, b1: chB1.members.count, b2: chB2.members.count, c: chC.members.count };

  chB2.trigger('client-hello', { from: 'b2' });
  await until('client-hello on A, B1 and C', () => hello.length >= 3);
  chC.trigger('client-done', {});
  await until('client-done on B2', () => done.some((d) => d.to === 'b2'));
  result.hello = hello.slice().sort((x, y) => (x.to < y.to ? -1 : 1));
  result.hello_frames_on_b2 = framesOf(b2, 'client-hello');

  b2.pusher.disconnect();
  await until('B2 to be disconnected', () => b2.pusher.connection.state === 'disconnected');
  await sleep(QUIET_MS);
  c.pusher.unsubscribe(channelName);
  await until('member_removed CAROL on A and B1', () => removed.a.includes(carol) && removed.b1.includes(carol));
  result.removed_after_c_left = { a: removed.a.slice(), b1: removed.b1.slice() };

  b1.pusher.disconnect();
  await until('member_removed BOB on A', () => removed.a.includes(bob));
  await sleep(QUIET_MS);
  result.a_at_end = {
    count: chA.members.count,
    members: memberList(chA),
    removed: removed.a.slice(),
    added: added.a.slice(),
    member_removed_frames: framesOf(a, 'pusher_internal:member_removed', channelName).map((f) => f.data),
    member_added_frames: framesOf(a, 'pusher_internal:member_added', channelName).map((f) => f.data),
  };
  return result;
});
