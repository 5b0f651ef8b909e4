'use strict';
// EventsManager: the Promise API over one native instance. `data` is serialized here,
// once, and handed to the core as JSON text; channel names, event names and the JSON
// itself are checked by the core (errors carry its `.code`: ECHANNEL, EINVAL, EJSON...).

const { optionError } = require('./errors.cjs');

function json(data) {
  if (data === undefined) return 'null';
  const text = JSON.stringify(data);
  return text === undefined ? 'null' : text;
}

function str(value, what) {
  if (typeof value !== 'string') throw optionError(`${what} must be a string (got ${typeof value})`);
  return value;
}

function exceptId(value) {
  if (value === undefined || value === null) return null;
  return str(value, 'except socketId');
}

// Broadcasts waiting for capacity (flow control) beyond this many are refused with EAGAIN:
// an `await`ed loop has one waiting at a time; this bounds what un-awaited calls can pile up.
const MAX_WAITING = 65536;

function closedError() {
  const err = new Error('instance is closed');
  err.code = 'ECLOSED';
  return err;
}

class EventsManager {
  #native;
  #closing = null;
  #port;
  // Flow control: broadcasts the core had no room for, in call order; each is retried
  // (in order, before any newer one) when the core says it has room again.
  #waiting = [];
  #armed = false;

  /** @internal Built by eventsPlugin()/getEvents(). */
  constructor(native, port = null) {
    this.#native = native;
    this.#port = port;
  }

  /** The dedicated port when created with `listen`, else null. */
  get port() {
    return this.#port;
  }

  get closed() {
    return this.#closing !== null;
  }

  /** Resolves once the core accepted the broadcast: at once while it has room, later when
   * its clients are slower than the producer (so `await` in a loop paces itself). */
  broadcast(channel, event, data, except) {
    try {
      const args = [str(channel, 'channel'), str(event, 'event'), json(data), exceptId(except)];
      return this.#send(() => this.#native.broadcast(...args));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  broadcastToMany(channels, event, data, except) {
    try {
      if (!Array.isArray(channels)) throw optionError('channels must be an array of channel names');
      if (channels.length === 0) return Promise.resolve();
      channels.forEach((c) => str(c, 'channel'));
      const args = [channels.slice(), str(event, 'event'), json(data), exceptId(except)];
      return this.#send(() => this.#native.broadcastMany(...args));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  // `send` returns true (accepted), false (no room: wait) or throws (refused).
  #send(send) {
    if (this.#closing !== null) throw closedError();
    if (this.#waiting.length === 0 && send()) return Promise.resolve();
    if (this.#waiting.length >= MAX_WAITING) {
      const err = new Error(
        `vxevents: ${MAX_WAITING} broadcasts are already waiting for capacity (await them)`,
      );
      err.code = 'EAGAIN';
      throw err;
    }
    return new Promise((resolve, reject) => {
      this.#waiting.push({ send, resolve, reject });
      this.#arm();
    });
  }

  #arm() {
    if (this.#armed) return;
    this.#armed = true;
    this.#native.capacity().then(
      () => {
        this.#armed = false;
        this.#drain();
      },
      (err) => {
        this.#armed = false;
        for (const w of this.#waiting.splice(0)) w.reject(err);
      },
    );
  }

  #drain() {
    while (this.#waiting.length) {
      const w = this.#waiting[0];
      let ok;
      try {
        ok = w.send();
      } catch (err) {
        this.#waiting.shift();
        w.reject(err);
        continue;
      }
      if (!ok) {
        this.#arm();
        return;
      }
      this.#waiting.shift();
      w.resolve();
    }
  }

  async broadcastExcept(channel, event, data, socketId) {
    if (typeof socketId !== 'string' || socketId === '') {
      throw optionError('broadcastExcept needs the socketId to skip');
    }
    return this.broadcast(channel, event, data, socketId);
  }

  async subscriberCount(channel) {
    return this.#native.subscriberCount(str(channel, 'channel'));
  }

  async hasSubscribers(channel) {
    return this.#native.hasSubscribers(str(channel, 'channel'));
  }

  async channels() {
    return this.#native.channels();
  }

  async presenceMembers(channel) {
    return JSON.parse(await this.#native.presenceMembers(str(channel, 'channel')));
  }

  /**
   * A broadcast to one channel that resolves to the offset it got in the channel's stream
   * and the stream's epoch ({offset, epoch}, DESIGN §12) — once the core assigned it: after
   * the loop ran it, or with Redis when Redis's script answered.
   */
  publish(channel, event, data, except) {
    try {
      const args = [str(channel, 'channel'), str(event, 'event'), json(data), exceptId(except)];
      let assigned;
      // Waits for capacity in order with broadcast() (flow control), then for the offset.
      const accepted = this.#send(() => {
        const p = this.#native.publish(...args);
        if (p === false) return false;
        assigned = p;
        return true;
      });
      return accepted.then(() => assigned);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * The channel's stream: {channel, epoch, offset, complete, events}, its events with
   * offset > since (oldest first, at most limit; 0: the history size). complete is false
   * when some after `since` are no longer kept.
   */
  async history(channel, options = {}) {
    if (options === null || typeof options !== 'object') throw optionError('history options must be an object {since, limit}');
    const { since = 0, limit = 0 } = options;
    for (const [k, v] of [['since', since], ['limit', limit]]) {
      if (!Number.isSafeInteger(v) || v < 0) throw optionError(`history ${k} must be a non-negative integer (got ${v})`);
    }
    if (limit > 10000) throw optionError(`history limit must be at most 10000 (got ${limit})`);
    return JSON.parse(await this.#native.history(str(channel, 'channel'), since, limit));
  }

  /** Core counters: connections, channels, messagesDelivered, ... */
  async metrics() {
    return this.#native.metrics();
  }

  async stats() {
    return this.#native.stats();
  }

  /** @internal Signs a subscription (used by the auth route). */
  sign(socketId, channel, channelData) {
    return this.#native.sign(socketId, channel, channelData ?? null);
  }

  /** @internal Answers the core's authorize hook. */
  /** Subscribe (or unsubscribe) an SSE stream the host has authorized; {code, message}. */
  sseSubscribe(connectionId, channel, memberJson, subscribe) {
    return this.#native.sseSubscribe(connectionId, channel, memberJson ?? null, subscribe);
  }

  authReply(id, authorized, memberJson, error) {
    this.#native.authReply(id, authorized, memberJson ?? null, error ?? null);
  }

  /** @internal Hands an accepted socket to the core. */
  adopt(fd, bytes) {
    this.#native.adopt(fd, bytes);
  }

  /** Close every client (1001) and free the instance. Idempotent. */
  close(graceMs = 0) {
    if (this.#closing === null) {
      // Broadcasts still waiting for capacity are sent first (they were called before the
      // close); those still waiting when the core closes reject with ECLOSED.
      const waiting = this.#waiting.map(
        (w) => new Promise((done) => {
          const { resolve, reject } = w;
          w.resolve = (v) => { resolve(v); done(); };
          w.reject = (e) => { reject(e); done(); };
        }),
      );
      // At most the grace period (or 2 s): a client that never reads must not hold close.
      let timer;
      const bound = new Promise((done) => { timer = setTimeout(done, graceMs || 2000); });
      this.#closing = Promise.race([Promise.all(waiting), bound]).then(() => {
        clearTimeout(timer);
        return this.#native.close(graceMs);
      });
    }
    return this.#closing;
  }
}

module.exports = { EventsManager, json };
