'use strict';
// A TCP proxy on a free port in front of a local server, so that a test can cut a client's
// connection the way a network failure does: both sockets destroyed, no close frame sent.

const net = require('node:net');

async function tcpProxy(targetPort) {
  const pairs = new Set();
  let waiting = null; // while held: the clients that connected, not yet passed on
  const server = net.createServer((client) => {
    if (waiting) waiting.push(client);
    else pass(client);
  });
  function pass(client) {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = [client, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of pair) {
      socket.on('error', end);
      socket.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    // Cuts every connection open now; new ones go through.
    cut() {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    // New connections wait (the network is still down) until release().
    hold() {
      waiting = waiting || [];
    },
    release() {
      const clients = waiting || [];
      waiting = null;
      for (const client of clients) if (!client.destroyed) pass(client);
    },
    close() {
      for (const client of waiting || []) client.destroy();
      waiting = null;
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports = { tcpProxy };
