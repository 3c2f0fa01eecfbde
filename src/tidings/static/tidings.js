/* tidings.js: Tidings.liveCollection(channel, options) keeps the rows of one live channel
 * equal to the server's; Tidings.socketHeaders(pusher, headers) adds X-Socket-ID to a write's
 * headers; Tidings.withRecovery(pusher, {storage}) makes a pusher-js client
 * recover the events it missed while disconnected. ES2017, no dependencies.
 * Docs: js/README.md (Tidings repository). */
(function (root) {
  'use strict';

  function liveCollection(channel, options) {
    const opts = Object.assign({ key: 'id', version: 'version', snapshotTimeout: 10000,
      maxTombstones: 10000 }, options);
    const K = opts.key;
    const V = opts.version;
    const EVENTS = ['created', 'updated', 'deleted'];
    // Laravel Echo's channel objects carry the pusher-js channel as `.subscription`.
    const source = channel.bind ? channel : channel.subscription;
    let rows = new Map(); // String(id) -> row: snapshot order, then insertion order
    const dead = new Map(); // String(id) -> version of a deleted row, oldest first
    let list = null; // .rows, built on demand after a change
    let held = null; // events held while the HTTP snapshot is on its way
    let request = null; // that request's AbortController
    const warn = (what, detail) => console.warn('tidings: ' + what, detail);
    const fail = (error) => (opts.onError ? opts.onError(error) : warn('error', error));
    const cancel = () => request && (request.abort(), (request = null));
    // A version lives in its row, or in the tombstone of a deleted one.
    const known = (id) => (rows.has(id) ? rows.get(id)[V] : dead.get(id));

    function changed(change) {
      list = null;
      if (opts.onChange) opts.onChange(collection.rows, change);
    }

    // Every event carries the row's version: one comparison drops duplicates, replays of
    // what the snapshot holds, and events overtaken by newer ones.
    function apply(type, data) {
      if (!EVENTS.includes(type)) return warn('unknown event', type);
      if (held) return void held.push([type, data]);
      if (!data || typeof data !== 'object') return warn('bad ' + type + ' event', data);
      const id = String(data[K]);
      const have = known(id);
      if (have !== undefined && !(data[V] > have)) return;
      const row = rows.get(id);
      if (type === 'deleted') {
        rows.delete(id);
        dead.set(id, data[V]);
        // Tombstones only stop late events of deleted rows; the oldest go first.
        if (dead.size > opts.maxTombstones) dead.delete(dead.keys().next().value);
        return void (row && changed({ type, id: data[K], row }));
      }
      // An update patches a row we hold; without it there is nothing to patch.
      if (type === 'updated' && !row) return;
      // Too big to send: the app fetches the row itself (and may hand it to put()).
      if (data.stale) return void (opts.onStale ? opts.onStale(data[K]) : warn('stale row', data[K]));
      const next = Object.assign({}, type === 'updated' ? row : {}, data);
      dead.delete(id);
      rows.set(id, next);
      changed({ type, id: data[K], row: next });
    }

    // A snapshot replaces the rows; a row we hold in a newer version (or deleted since)
    // keeps that state.
    function applySnapshot(snap) {
      if (!snap || !Array.isArray(snap.rows)) return fail(new Error('bad snapshot'));
      const next = new Map();
      for (const fresh of snap.rows) {
        const id = String(fresh[K]);
        const have = known(id);
        if (have === undefined || !(have > fresh[V])) {
          dead.delete(id);
          next.set(id, Object.assign({}, fresh));
        } else if (rows.has(id)) next.set(id, rows.get(id));
      }
      rows = next;
      changed({ type: 'snapshot', version: snap.version });
    }

    // The wait for a snapshot ends: apply it (if any), replay the held events.
    function release(snap) {
      const events = held || [];
      held = null;
      cancel();
      if (snap !== undefined) applySnapshot(snap);
      for (const [type, data] of events) apply(type, data);
    }

    // No Tidings snapshot: it comes over HTTP, and events are held meanwhile and replayed
    // after it: none is lost, none applies twice.
    function fetchSnapshot() {
      cancel();
      const mine = (request = new AbortController());
      held = held || [];
      const socketId = source.pusher && source.pusher.connection.socket_id;
      const headers = { Accept: 'application/json' };
      if (socketId) headers['X-Socket-ID'] = socketId;
      const timer = setTimeout(() => mine.abort(), opts.snapshotTimeout);
      const done = (snap, error) => {
        clearTimeout(timer);
        if (request !== mine) return; // superseded, or unbound
        request = null;
        release(snap);
        if (error) fail(mine.signal.aborted ? new Error('snapshot: timed out') : error);
      };
      fetch(opts.snapshotUrl, { headers, credentials: 'same-origin', signal: mine.signal })
        .then((r) => (r.ok ? r.json() : Promise.reject(new Error('snapshot: HTTP ' + r.status))))
        .then(done, (error) => done(undefined, error));
    }

    const refresh = () => opts.snapshotUrl && fetchSnapshot();
    const handlers = {
      'tidings:snapshot': release,
      'pusher:subscription_succeeded': refresh,
      'pusher:subscription_error': fail,
    };
    for (const type of EVENTS) handlers[type] = (data) => apply(type, data);
    for (const name in handlers) source.bind(name, handlers[name]);
    if (source.subscribed) refresh();

    const collection = {
      get rows() {
        return list || (list = [...rows.values()]);
      },
      get: (id) => rows.get(String(id)),
      apply,
      put: (row) => apply('created', row),
      refresh,
      unbind() {
        for (const name in handlers) source.unbind(name, handlers[name]);
        held = null;
        cancel();
      },
    };
    return collection;
  }

  // Recovery (Tidings issue 16): every subscription opts in with a `tidings` field; the server
  // answers with the channel's position {epoch, offset} and tags each event with its offset.
  // On a resubscription the plugin asks for what came after the last offset it recorded.
  function withRecovery(pusher, options) {
    const storage = (options && options.storage) || null;
    const positions = new Map(); // channel -> {epoch, offset, socket_id}
    const live = new Map(); // channel -> offset that ends the replay, once subscribed
    const storageKey = (name) => 'tidings:' + pusher.key + ':' + name;
    // What the server accepts (anything else is refused with 4303 and no subscription).
    const valid = (p) => p && typeof p.epoch === 'string' && p.epoch.length > 0 &&
      p.epoch.length <= 32 && Number.isSafeInteger(p.offset) && p.offset >= 0 &&
      /^\d{1,20}\.\d{1,20}$/.test(p.socket_id);
    // Storage can be full, disabled or hold garbage: recovery then just starts afresh.
    const store = (name, call) => { try { return storage && call(storageKey(name)); } catch (e) {} };

    function load(name) {
      if (!positions.has(name)) {
        const saved = store(name, (key) => JSON.parse(storage.getItem(key)));
        if (valid(saved)) positions.set(name, saved);
      }
      return positions.get(name);
    }
    function save(name, position) {
      positions.set(name, position);
      store(name, (key) => storage.setItem(key, JSON.stringify(position)));
    }
    function forget(name) {
      positions.delete(name);
      live.delete(name);
      store(name, (key) => storage.removeItem(key));
    }

    const send = pusher.send_event;
    pusher.send_event = function (name, data, channel) {
      if (name === 'pusher:subscribe' && data && typeof data.channel === 'string') {
        const position = load(data.channel);
        const tidings = { v: 1 };
        if (position) tidings.recover = Object.assign({}, position);
        live.delete(data.channel);
        data = Object.assign({}, data, { tidings });
      } else if (name === 'pusher:unsubscribe' && data) {
        forget(data.channel);
      }
      return send.call(this, name, data, channel);
    };

    function subscribed(name, data) {
      // Unsubscribed while pending: pusher-js has just sent pusher:unsubscribe (forgotten).
      const channel = pusher.channel(name);
      if (!channel || !channel.subscribed) return;
      const server = data && data.tidings;
      // No position: the channel keeps no history (or this is not a Tidings server).
      if (!server || typeof server.epoch !== 'string' || !Number.isInteger(server.offset)) {
        return forget(name);
      }
      const mine = positions.get(name);
      const socketId = pusher.connection.socket_id;
      if (data.recovered === true && mine && mine.epoch === server.epoch) {
        // The missed events follow, each recorded like a live one. Until they reach the top,
        // the position keeps the old socket_id, whose own events the server leaves out.
        live.set(name, server.offset);
        if (mine.offset >= server.offset) save(name, Object.assign({}, mine, { socket_id: socketId }));
      } else {
        // A fresh subscription, or one that could not recover (tidings:unrecovered follows
        // and reaches the channel's bindings): start from the server's position.
        live.set(name, server.offset);
        save(name, { epoch: server.epoch, offset: server.offset, socket_id: socketId });
      }
    }

    function recorded(name, offset) {
      const mine = positions.get(name);
      if (!live.has(name) || !mine || !(offset > mine.offset)) return;
      const socketId = offset >= live.get(name) ? pusher.connection.socket_id : mine.socket_id;
      save(name, { epoch: mine.epoch, offset, socket_id: socketId });
    }

    // Runs for each frame after pusher-js dispatched it to the app's handlers: a handler that
    // throws stops the dispatch, this never runs, and the event's offset stays unrecorded.
    // (The same holds for pusher:subscription_succeeded: if its handler throws, events of that
    // subscription are not recorded, and the next resubscription asks from the older offset.)
    function afterDispatch(message) {
      const text = message && message.data;
      if (typeof text !== 'string') return;
      if (text.indexOf('tidings') < 0 && text.indexOf('subscription_succeeded') < 0) return;
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (e) {
        return;
      }
      if (!frame || typeof frame.channel !== 'string') return;
      if (frame.event === 'pusher_internal:subscription_succeeded') {
        let data;
        try {
          data = JSON.parse(frame.data);
        } catch (e) {}
        subscribed(frame.channel, data);
      } else if (frame.tidings && Number.isInteger(frame.tidings.offset)) {
        recorded(frame.channel, frame.tidings.offset);
      }
    }

    // pusher-js binds its own listener to each new socket's transport first: ours runs after.
    function watch() {
      const connection = pusher.connection.connection;
      if (connection && connection.transport) connection.transport.bind('message', afterDispatch);
    }
    pusher.connection.bind('connected', watch);
    if (pusher.connection.state === 'connected') watch();
    return pusher;
  }

  // The headers of a write request, plus X-Socket-ID when the client is connected (what Laravel
  // Echo's interceptors add): the app's integration then leaves this connection out of the
  // events its write causes. `client`: a pusher-js client or a Laravel Echo instance.
  function socketHeaders(client, headers) {
    const out = Object.assign({}, headers);
    const pusher = client && client.connector ? client.connector.pusher : client;
    const connection = pusher && pusher.connection;
    // pusher-js keeps the id of a socket that is gone: it names nobody, so it is not sent.
    if (connection && connection.state === 'connected' && connection.socket_id) {
      out['X-Socket-ID'] = connection.socket_id;
    }
    return out;
  }

  const Tidings = { liveCollection, socketHeaders, withRecovery };
  if (typeof module === 'object' && module.exports) module.exports = Tidings;
  else root.Tidings = Tidings;
})(typeof self !== 'undefined' ? self : this);
