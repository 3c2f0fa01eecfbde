'use strict';
// A local HTTP server that plays the app's snapshot endpoint (`snapshotUrl`). Each request is
// recorded and answered by `answer(request)`, which returns {status, body} (or a promise of
// it), so a test decides when the snapshot leaves: after the events it wants to race with it.

const http = require('node:http');

async function snapshotServer(answer) {
  const requests = [];
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    const request = { method: req.method, url: req.url, headers: req.headers, dropped: false };
    // Resolves when the exchange ends; `dropped` tells whether the client hung up first.
    request.closed = new Promise((resolve) =>
      res.on('close', () => {
        request.dropped = !res.writableEnded;
        resolve();
      }),
    );
    requests.push(request);
    try {
      const { status = 200, body } = await answer(request);
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    } catch (error) {
      res.writeHead(500, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: String(error) }));
    }
  });
  // A request the test never answers must not keep close() waiting.
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}/snapshot`;
  return {
    url,
    requests,
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports = { snapshotServer };
