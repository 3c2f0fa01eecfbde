'use strict';
// A Pusher-protocol server for the recovery plugin's tests: just enough WebSocket (RFC 6455) on
// node:http for pusher-js, public channels, and the recovery wire format of Tidings issue 16
// (the `tidings` field of pusher:subscribe; positions, replays, `recovered`, tidings:unrecovered;
// every event to an opted-in subscription carries `"tidings":{"offset":n}` last).
//
// A channel keeps its last `history(channel)` events (0: a channel without history).
// The test drives it: publish(), drop() a socket's TCP connection without a close frame (a
// network failure), restart() a channel's stream under a new epoch, and reads what the clients
// sent (`subscribes`) and what each socket received (`sent`).

const crypto = require('node:crypto');
const http = require('node:http');
const { until } = require('./wait');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'; // RFC 6455 section 1.3
const MAX_FRAME = 64 * 1024; // client frames bigger than this close the socket (1009)

function encodeFrame(opcode, payload) {
  const length = payload.length;
  let header;
  if (length < 126) header = Buffer.from([0x80 | opcode, length]);
  else if (length < 65536) {
    header = Buffer.alloc(4);
    header.writeUInt16BE(length, 2);
    header[1] = 126;
  } else {
    header = Buffer.alloc(10);
    header.writeBigUInt64BE(BigInt(length), 2);
    header[1] = 127;
  }
  header[0] = 0x80 | opcode;
  return Buffer.concat([header, payload]);
}

// One WebSocket connection: decodes the client's masked frames (section 5.2) and hands each
// text message to onText. pusher-js never fragments, so continuation frames are not handled.
class Socket {
  constructor(tcp, onText, onClose) {
    this.tcp = tcp;
    this.buffer = Buffer.alloc(0);
    tcp.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      let frame;
      while ((frame = this.nextFrame())) {
        if (frame.opcode === 0x1) onText(frame.payload.toString('utf8'));
        else if (frame.opcode === 0x8) this.close(1000);
        else if (frame.opcode === 0x9) this.write(0xa, frame.payload);
      }
    });
    tcp.on('close', onClose);
    tcp.on('error', () => {}); // a dropped peer; 'close' follows
  }

  nextFrame() {
    const b = this.buffer;
    if (b.length < 2) return null;
    let length = b[1] & 0x7f;
    let at = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = b.readUInt16BE(2);
      at = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      length = Number(b.readBigUInt64BE(2));
      at = 10;
    }
    if (length > MAX_FRAME) {
      this.close(1009);
      return null;
    }
    if (b.length < at + 4 + length) return null;
    const mask = b.subarray(at, at + 4);
    const payload = Buffer.from(b.subarray(at + 4, at + 4 + length));
    for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
    this.buffer = b.subarray(at + 4 + length);
    return { opcode: b[0] & 0x0f, payload };
  }

  write(opcode, payload) {
    if (!this.tcp.destroyed) this.tcp.write(encodeFrame(opcode, payload));
  }

  send(text) {
    this.write(0x1, Buffer.from(text, 'utf8'));
  }

  close(code) {
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    this.write(0x8, payload);
    this.tcp.end();
  }
}

async function pusherServer({ history = () => 100 } = {}) {
  const connections = new Map(); // socket_id -> connection
  const channels = new Map(); // name -> {epoch, top, events, subscribers}
  const subscribes = []; // every pusher:subscribe received: {socketId, data}
  let socketCount = 0;

  const newEpoch = () => crypto.randomBytes(4).toString('hex');
  function channel(name) {
    if (!channels.has(name)) {
      channels.set(name, { epoch: newEpoch(), top: 0, events: [], subscribers: new Map() });
    }
    return channels.get(name);
  }

  // The frame of one event; an opted-in subscription gets its offset as the last key.
  function frame(name, stored, optedIn) {
    const message = { event: stored.event, channel: name, data: stored.data };
    if (optedIn && stored.offset) message.tidings = { offset: stored.offset };
    return JSON.stringify(message);
  }

  function deliver(connection, text) {
    connection.sent.push(JSON.parse(text));
    connection.socket.send(text);
  }

  // Recovered only if the asked position is in this epoch and nothing after it was trimmed.
  function recoverable(state, recover) {
    const offset = recover.offset;
    return (
      recover.epoch === state.epoch &&
      Number.isInteger(offset) &&
      offset >= state.top - state.events.length &&
      offset <= state.top
    );
  }

  // What Tidings refuses with 4303 (src/tidings/protocol/recovery.py), in short.
  function malformed(tidings) {
    if (tidings === undefined) return false;
    if (!tidings || tidings.v !== 1) return true;
    const r = tidings.recover;
    if (r === undefined) return false;
    return !(
      r && typeof r.epoch === 'string' && r.epoch.length > 0 && r.epoch.length <= 32 &&
      Number.isSafeInteger(r.offset) && r.offset >= 0 &&
      (r.socket_id === undefined || /^\d{1,20}\.\d{1,20}$/.test(r.socket_id))
    );
  }

  function subscribe(connection, data) {
    subscribes.push({ socketId: connection.id, data });
    if (malformed(data.tidings)) {
      const error = { message: 'pusher:subscribe: tidings malformed', code: 4303 };
      return deliver(connection, JSON.stringify({ event: 'pusher:error', data: error }));
    }
    const name = data.channel;
    const state = channel(name);
    const optedIn = Boolean(data.tidings && data.tidings.v === 1 && history(name) > 0);
    state.subscribers.set(connection.id, optedIn);
    const succeeded = {};
    let replay = [];
    const recover = optedIn && data.tidings.recover;
    if (optedIn) {
      succeeded.tidings = { epoch: state.epoch, offset: state.top };
      if (recover) succeeded.recovered = recoverable(state, recover);
      if (succeeded.recovered) {
        replay = state.events.filter((e) => e.offset > recover.offset && e.exclude !== recover.socket_id);
      }
    }
    const event = 'pusher_internal:subscription_succeeded';
    deliver(connection, JSON.stringify({ event, channel: name, data: JSON.stringify(succeeded) }));
    for (const stored of replay) deliver(connection, frame(name, stored, true));
    if (recover && !succeeded.recovered) {
      const position = JSON.stringify(succeeded.tidings);
      deliver(connection, JSON.stringify({ event: 'tidings:unrecovered', channel: name, data: position }));
    }
  }

  function receive(connection, text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return connection.socket.close(4000);
    }
    connection.received.push(message);
    if (message.event === 'pusher:ping') deliver(connection, JSON.stringify({ event: 'pusher:pong', data: '{}' }));
    else if (message.event === 'pusher:subscribe') subscribe(connection, message.data);
    else if (message.event === 'pusher:unsubscribe') {
      channel(message.data.channel).subscribers.delete(connection.id);
    }
  }

  const server = http.createServer((req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, tcp) => {
    const key = req.headers['sec-websocket-key'];
    if (!/^\/app\/[^/?]+/.test(req.url) || !key) return tcp.destroy();
    const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
    tcp.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const id = `${++socketCount}.${crypto.randomInt(1e6)}`;
    const connection = { id, received: [], sent: [] };
    connection.socket = new Socket(
      tcp,
      (text) => receive(connection, text),
      () => {
        connections.delete(id);
        for (const state of channels.values()) state.subscribers.delete(id);
      },
    );
    connections.set(id, connection);
    const established = JSON.stringify({ socket_id: id, activity_timeout: 120 });
    deliver(connection, JSON.stringify({ event: 'pusher:connection_established', data: established }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;

  return {
    port,
    subscribes,
    connections,

    // An event as a REST publish would send it: the next offset, stored (the last
    // history(name) kept), to every subscriber but `exclude` (a socket_id, like X-Socket-ID).
    publish(name, event, data, exclude) {
      const state = channel(name);
      const stored = { event, data: JSON.stringify(data), exclude, offset: 0 };
      const size = history(name);
      if (size > 0) {
        stored.offset = ++state.top;
        state.events.push(stored);
        if (state.events.length > size) state.events.shift();
      }
      for (const [id, optedIn] of state.subscribers) {
        if (id !== exclude) deliver(connections.get(id), frame(name, stored, optedIn));
      }
      return stored.offset;
    },

    position(name) {
      const state = channel(name);
      return { epoch: state.epoch, offset: state.top };
    },

    // The stream is lost (a memory node restarted, Redis flushed): new epoch, no events.
    restart(name) {
      Object.assign(channel(name), { epoch: newEpoch(), top: 0, events: [] });
    },

    // Cuts the TCP connection with no close frame, as a network failure would.
    drop(socketId) {
      connections.get(socketId).socket.tcp.destroy();
    },

    subscribed(socketId, name) {
      return until(`${socketId} subscribed to ${name}`, () => channel(name).subscribers.has(socketId));
    },

    // A pusher-js client options object for this server.
    options(extra = {}) {
      return {
        cluster: 'local',
        wsHost: '127.0.0.1',
        wsPort: port,
        forceTLS: false,
        disableStats: true,
        enabledTransports: ['ws'],
        ...extra,
      };
    },

    close() {
      for (const connection of connections.values()) connection.socket.tcp.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports = { pusherServer };
