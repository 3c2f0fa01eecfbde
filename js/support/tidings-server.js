'use strict';
// A real `tidings serve` for the Node tests, started as a child process on a free port with a
// config file in a temporary directory (removed at stop()), plus what the tests do with it:
// REST publishes signed like Pusher's server SDKs do, and pusher-js clients pointed at it.
//
// The Python comes from TIDINGS_PYTHON (tests/e2e/test_tidings_js.py sets it to the venv's
// interpreter), else the repository's .venv.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const Pusher = require('pusher-js');
const { WAIT_MS, until } = require('./wait');

const APP = { id: '4321', key: 'live-key', secret: 'live-secret' };
const PYTHON = process.env.TIDINGS_PYTHON || path.resolve(__dirname, '../../.venv/bin/python');

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function hmac(secret, text) {
  return crypto.createHmac('sha256', secret).update(text).digest('hex');
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

async function isReady(port) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/ready`);
    return response.status === 200;
  } catch {
    return false;
  }
}

// The app's TOML: strings, numbers and booleans as JSON writes them; `history` (a list of
// {pattern, size, ttl}) as [[apps.history]] tables.
function appToml({ history = [], ...settings }) {
  const pairs = (object) => Object.entries(object).map(([k, v]) => `${k} = ${JSON.stringify(v)}`);
  return ['[[apps]]', ...pairs(settings), ...history.flatMap((rule) => ['[[apps.history]]', ...pairs(rule)])];
}

// Starts the server and waits for /ready. `app` adds settings to the one app (for example
// live_snapshot_url, or history rules). A port taken between freePort() and the bind gets
// another try.
async function startTidings(app = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-js-'));
  const lines = appToml({ ...APP, client_events: false, ...app });
  const config = path.join(dir, 'tidings.toml');
  fs.writeFileSync(config, lines.join('\n') + '\n');
  const logPath = path.join(dir, 'server.log');
  const logs = () => fs.readFileSync(logPath, 'utf8');

  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const log = fs.openSync(logPath, 'a');
    const child = spawn(
      PYTHON,
      ['-m', 'tidings', 'serve', '--host', '127.0.0.1', '--port', String(port), '--config', config],
      { cwd: dir, env: { ...process.env, PYTHONUNBUFFERED: '1' }, stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
    const deadline = Date.now() + 4 * WAIT_MS;
    while (!exited(child) && !(await isReady(port)) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (!exited(child) && (await isReady(port))) return tidingsHandle(port, child, dir, logs);
    child.kill('SIGKILL');
    if (attempt < 2 && logs().includes('address already in use')) continue;
    const output = logs(); // read before the directory goes
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`tidings serve did not become ready on port ${port}:\n${output}`);
  }
}

// Soketi (the benchmark peer: bench/servers.py installs it, tests/e2e/test_tidings_js.py
// passes its bin/server.js as SOKETI_SERVER) with the same app: a Pusher-protocol server
// without Tidings' extensions (no tidings:snapshot), as hosted Pusher is. The same handle as
// startTidings's: REST publishes, pusher-js clients, stop().
async function startSoketi(script = process.env.SOKETI_SERVER) {
  if (!script) throw new Error('SOKETI_SERVER is not set: the path of Soketi\'s bin/server.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'soketi-js-'));
  const logPath = path.join(dir, 'soketi.log');
  const logs = () => fs.readFileSync(logPath, 'utf8');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const env = {
      ...process.env,
      SOKETI_HOST: '127.0.0.1',
      SOKETI_PORT: String(port),
      SOKETI_DEFAULT_APP_ID: APP.id,
      SOKETI_DEFAULT_APP_KEY: APP.key,
      SOKETI_DEFAULT_APP_SECRET: APP.secret,
      SOKETI_ADAPTER_DRIVER: 'local',
      SOKETI_QUEUE_DRIVER: 'sync',
      SOKETI_CACHE_DRIVER: 'memory',
      SOKETI_RATE_LIMITER_DRIVER: 'local',
      SOKETI_METRICS_ENABLED: 'false',
      SOKETI_METRICS_HOST: '127.0.0.1',
      SOKETI_METRICS_SERVER_PORT: String(await freePort()),
      // Its discovery always runs: by unicast on loopback, on a port of its own.
      SOKETI_CLUSTER_HOST: '127.0.0.1',
      SOKETI_CLUSTER_UNICAST_ADDRESSES: '127.0.0.1',
      SOKETI_CLUSTER_PORT: String(await freePort()),
      SOKETI_SHUTDOWN_GRACE_PERIOD: '1000',
    };
    const log = fs.openSync(logPath, 'a');
    const child = spawn(process.execPath, [script, 'start'], { cwd: dir, env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const deadline = Date.now() + 4 * WAIT_MS;
    while (!exited(child) && !(await isReady(port)) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (!exited(child) && (await isReady(port))) return tidingsHandle(port, child, dir, logs);
    child.kill('SIGKILL');
    if (attempt < 2 && logs().includes('EADDRINUSE')) continue;
    const output = logs();
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`Soketi did not become ready on port ${port}:\n${output}`);
  }
}

function tidingsHandle(port, child, dir, logs) {
  const clients = [];

  // A REST call signed as Pusher's server SDKs sign it.
  async function post(endpoint, json, what) {
    const body = JSON.stringify(json);
    const pathName = `/apps/${APP.id}/${endpoint}`;
    const query = new URLSearchParams({
      auth_key: APP.key,
      auth_timestamp: String(Math.floor(Date.now() / 1000)),
      auth_version: '1.0',
      body_md5: crypto.createHash('md5').update(body).digest('hex'),
    }).toString(); // keys already in sorted order, as the signature requires
    const signature = hmac(APP.secret, `POST\n${pathName}\n${query}`);
    const response = await fetch(`http://127.0.0.1:${port}${pathName}?${query}&auth_signature=${signature}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body,
    });
    if (response.status !== 200) throw new Error(`${what}: HTTP ${response.status} ${await response.text()}`);
  }

  return {
    port,
    logs,

    // POST /apps/{id}/events, signed as Pusher's REST API wants it.
    publish(channel, name, data, socketId) {
      const body = { name, channels: [channel], data: JSON.stringify(data) };
      if (socketId) body.socket_id = socketId;
      return post('events', body, `publish ${name} on ${channel}`);
    },

    // POST /apps/{id}/batch_events: events of one channel, {name, data} each (10 at most).
    publishBatch(channel, events) {
      const batch = events.map(({ name, data }) => ({ channel, name, data: JSON.stringify(data) }));
      return post('batch_events', { batch }, `a batch of ${events.length} on ${channel}`);
    },

    // A pusher-js client on this server (or on `wsPort`, a proxy in front of it); private
    // channels are authorized here with the app secret (the app's /pusher/auth would do the same).
    client({ wsPort = port } = {}) {
      const pusher = new Pusher(APP.key, {
        cluster: 'local',
        wsHost: '127.0.0.1',
        wsPort,
        forceTLS: false,
        disableStats: true,
        enabledTransports: ['ws'],
        channelAuthorization: {
          customHandler: ({ socketId, channelName }, callback) =>
            callback(null, { auth: `${APP.key}:${hmac(APP.secret, `${socketId}:${channelName}`)}` }),
        },
      });
      clients.push(pusher);
      return pusher;
    },

    async stop() {
      for (const pusher of clients) pusher.disconnect();
      if (!exited(child)) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3 * WAIT_MS);
        await gone;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// Resolves when the pusher-js client is connected.
function connected(pusher) {
  return until('pusher-js connected', () => pusher.connection.state === 'connected');
}

module.exports = { APP, startTidings, startSoketi, connected };
