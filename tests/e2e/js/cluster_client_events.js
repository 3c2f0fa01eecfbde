'use strict';
// Client events over three nodes on a private channel: A (node 0) triggers client-typing; B
// (node 1) and C (node 2) get it. B answers client-ack; once A has the ack, A's own
// client-typing would already have come back to A if the server echoed it.
const { env, makeClientOn, connected, subscribed, until, framesOf, main } = require('./cluster_lib');

main(async () => {
  const channelName = env('CHANNEL');
  const [a, b, c] = [makeClientOn(0), makeClientOn(1), makeClientOn(2)];
  await Promise.all([connected(a, 'A'), connected(b, 'B'), connected(c, 'C')]);
  const chA = await subscribed(a, channelName);
  const chB = await subscribed(b, channelName);
  const chC = await subscribed(c, channelName);
  const typing = { a: [], b: [], c: [] };
  const ack = { a: [], b: [], c: [] };
  for (const [key, ch] of [['a', chA], ['b', chB], ['c', chC]]) {
    ch.bind('client-typing', (data, metadata) => typing[key].push({ data, metadata }));
    ch.bind('client-ack', (data, metadata) => ack[key].push({ data, metadata }));
  }
  const triggered = chA.trigger('client-typing', { text: 'héllo ✓' });
  await until('client-typing on B and C', () => typing.b.length > 0 && typing.c.length > 0);
  chB.trigger('client-ack', { ok: 1 });
  await until('client-ack on A and C', () => ack.a.length > 0 && ack.c.length > 0);
  return {
    triggered,
    typing,
    ack,
    typing_frames_on_a: framesOf(a, 'client-typing'),
    ack_frames_on_b: framesOf(b, 'client-ack'),
  };
});
