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

class EventsManager {
  #native;
  #closing = null;
  #port;

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

  async broadcast(channel, event, data, except) {
    this.#native.broadcast(str(channel, 'channel'), str(event, 'event'), json(data), exceptId(except));
  }

  async broadcastToMany(channels, event, data, except) {
    if (!Array.isArray(channels)) throw optionError('channels must be an array of channel names');
    if (channels.length === 0) return;
    channels.forEach((c) => str(c, 'channel'));
    this.#native.broadcastMany(channels, str(event, 'event'), json(data), exceptId(except));
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
    if (this.#closing === null) this.#closing = this.#native.close(graceMs);
    return this.#closing;
  }
}

module.exports = { EventsManager, json };
