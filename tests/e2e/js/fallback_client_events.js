'use strict';
// Client events between H (on TRANSPORT) and W (on WebSocket) on PRIVATE_CHANNEL, both ways.
// H sends client-h; once W has it, W sends client-w; once H has that, H sends client-sentinel.
// The server handles each connection's messages in order, so an echo of client-h to H would
// reach H before client-w, and an echo of client-w to W before client-sentinel.
const { TRANSPORT, env, makeClient, connected, subscribed, until, framesOf, main } = require('./fallback_lib');

main(async () => {
  const channelName = env('PRIVATE_CHANNEL');
  const h = makeClient({ transport: TRANSPORT });
  const w = makeClient({ transport: 'ws' });
  await Promise.all([connected(h, 'H'), connected(w, 'W')]);
  const chH = await subscribed(h, channelName);
  const chW = await subscribed(w, channelName);
  const onH = [];
  const onW = [];
  chH.bind_global((event, data) => event.startsWith('client-') && onH.push({ event, data }));
  chW.bind_global((event, data) => event.startsWith('client-') && onW.push({ event, data }));

  const sentH = chH.trigger('client-h', { from: 'http', text: 'héllo ✓' });
  await until('client-h on W', () => onW.length >= 1);
  const sentW = chW.trigger('client-w', { from: 'ws', n: [1, 2, 3] });
  await until('client-w on H', () => onH.length >= 1);
  chH.trigger('client-sentinel', { last: true });
  await until('client-sentinel on W', () => onW.length >= 2);
  return {
    sent: [sentH, sentW],
    on_h: onH,
    on_w: onW,
    frames_h: framesOf(h, 'client-h').concat(framesOf(h, 'client-w'), framesOf(h, 'client-sentinel')),
    frames_w: framesOf(w, 'client-h').concat(framesOf(w, 'client-w'), framesOf(w, 'client-sentinel')),
    errors: [h.errors, w.errors],
    transports: [h.transports, w.transports],
  };
});
