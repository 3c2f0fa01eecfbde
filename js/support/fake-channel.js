'use strict';
// A stand-in for a pusher-js channel in the unit tests: the part of its interface that
// tidings.js uses (bind, unbind, subscribed, pusher.connection.socket_id), plus emit() to
// deliver an event as pusher-js would (data already parsed from JSON).

class FakeChannel {
  constructor({ subscribed = false, socketId = '1234.5678' } = {}) {
    this.handlers = new Map();
    this.subscribed = subscribed;
    this.pusher = { connection: { socket_id: socketId } };
  }

  bind(name, callback) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(callback);
    return this;
  }

  unbind(name, callback) {
    const list = (this.handlers.get(name) || []).filter((fn) => fn !== callback);
    if (list.length) this.handlers.set(name, list);
    else this.handlers.delete(name);
    return this;
  }

  emit(name, data) {
    if (name === 'pusher:subscription_succeeded') this.subscribed = true;
    for (const callback of this.handlers.get(name) || []) callback(data);
  }

  // How many callbacks are bound, over all events (unbind() must leave none of ours).
  boundCount() {
    let count = 0;
    for (const list of this.handlers.values()) count += list.length;
    return count;
  }
}

module.exports = { FakeChannel };
