/* tidings.js: Tidings.liveCollection(channel, options) keeps the rows of one live channel
 * equal to the server's. ES2017, no dependencies. Docs: js/README.md (Tidings repository). */
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

  const Tidings = { liveCollection };
  if (typeof module === 'object' && module.exports) module.exports = Tidings;
  else root.Tidings = Tidings;
})(typeof self !== 'undefined' ? self : this);
