'use strict';
// Cache channels: the test triggered an event on CACHED_CHANNEL before this runs; subscribing
// must deliver it right after subscription_succeeded. EMPTY_CHANNEL has nothing cached:
// pusher:cache_miss arrives on the channel.
const { env, makeClient, connected, until, framesOf, main } = require('./lib');

main(async () => {
  const cachedName = env('CACHED_CHANNEL');
  const emptyName = env('EMPTY_CHANNEL');
  const eventName = env('EVENT');
  const client = makeClient();
  await connected(client);

  const cached = client.pusher.subscribe(cachedName);
  const cachedSeen = [];
  cached.bind_global((name, data) => cachedSeen.push({ event: name, data: data === undefined ? null : data }));
  await until(`${eventName} on ${cachedName}`, () => cachedSeen.some((e) => e.event === eventName || e.event === 'pusher:cache_miss'));

  const empty = client.pusher.subscribe(emptyName);
  const emptySeen = [];
  let cacheMiss = 0;
  empty.bind_global((name, data) => emptySeen.push({ event: name, data: data === undefined ? null : data }));
  empty.bind('pusher:cache_miss', () => {
    cacheMiss += 1;
  });
  await until(`pusher:cache_miss on ${emptyName}`, () => cacheMiss > 0 || emptySeen.some((e) => e.event === eventName));

  const order = (name) => framesOf(client, undefined, name).map((f) => f.event);
  return {
    cached_channel_events: cachedSeen,
    cached_channel_frames: order(cachedName),
    empty_channel_events: emptySeen,
    empty_channel_frames: order(emptyName),
    cache_miss_callbacks: cacheMiss,
  };
});
