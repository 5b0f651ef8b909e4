// vxevents/client: the browser (and Node >= 20) client of a vxevents server.
// One ESM file, no dependencies: it is its own single-file build.
//
// WebSocket first, Server-Sent Events as a fallback; reconnects with bounded exponential
// backoff and jitter; resubscribes every channel with the last {offset, epoch} it saw (DESIGN
// §12) so nothing is lost or doubled, and says `recovered: true|false` per subscription.

class Emitter {
  constructor() {
    this._handlers = new Map();
    this._any = [];
  }
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, []);
    this._handlers.get(event).push(fn);
    return this;
  }
  off(event, fn) {
    const list = this._handlers.get(event);
    if (list) this._handlers.set(event, fn ? list.filter((f) => f !== fn) : []);
    return this;
  }
  onAny(fn) {
    this._any.push(fn);
    return this;
  }
  offAny(fn) {
    this._any = fn ? this._any.filter((f) => f !== fn) : [];
    return this;
  }
  _emit(event, ...args) {
    for (const fn of [...(this._handlers.get(event) || [])]) fn(...args);
  }
}

const isPrivate = (ch) => ch.startsWith('private-') || ch.startsWith('presence-');
const isPresence = (ch) => ch.startsWith('presence-');

class Subscription extends Emitter {
  constructor(client, channel) {
    super();
    this.client = client;
    this.channel = channel;
    this.subscribed = false;
    this.position = null; // {offset, epoch} of the last event seen
    this.members = new Map(); // presence: id -> info
    this.me = null; // presence: {id, info} as signed for this connection
    this._recovering = false;
  }
  /** Client event on a private/presence channel (WebSocket only). */
  trigger(event, data) {
    if (!isPrivate(this.channel)) throw new Error('client events need a private- or presence- channel');
    if (!this.subscribed) throw new Error(`not subscribed to ${this.channel}`);
    return this.client._send({ type: 'message', channel: this.channel, event, data });
  }
  unsubscribe() {
    this.client.unsubscribe(this.channel);
  }
  _event(m) {
    if (typeof m.offset === 'number' && !m.client) {
      const p = this.position;
      if (p && p.offset >= m.offset) return; // already seen (replay overlap)
      if (p) p.offset = m.offset;
    }
    if (isPresence(this.channel) && !m.client && (m.event === 'member_added' || m.event === 'member_removed')) {
      const id = m.data && m.data.id;
      if (m.event === 'member_added') this.members.set(id, m.data.info);
      else this.members.delete(id);
      this._emit(m.event, m.data);
      return;
    }
    const meta = { channel: m.channel, event: m.event, offset: m.offset, client: !!m.client, user_id: m.user_id };
    this._emit(m.event, m.data, meta);
    for (const fn of [...this._any]) fn(m.event, m.data, meta);
  }
  _succeeded(m) {
    const d = m.data || {};
    const asked = this._recovering;
    this._recovering = false;
    const recovered = asked && m.recovered === true;
    if (!recovered && typeof d.offset === 'number') this.position = { offset: d.offset, epoch: d.epoch };
    if (Array.isArray(d.members)) {
      this.members = new Map(d.members.map((x) => [x.id, x.info]));
    }
    this.subscribed = true;
    this._emit('subscription_succeeded', { recovered, resubscribed: asked || m.recovered !== undefined, members: d.members });
  }
}

class WsTransport {
  constructor(client, url) {
    const WS = client.options.WebSocket || globalThis.WebSocket;
    this.name = 'ws';
    this.ws = new WS(url);
    this.ws.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(typeof e.data === 'string' ? e.data : String(e.data));
      } catch {
        return;
      }
      client._message(this, m);
    };
    this.ws.onclose = (e) => client._closed(this, e && e.code);
    this.ws.onerror = () => {};
  }
  send(m) {
    if (this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }
  close() {
    this.ws.onclose = this.ws.onmessage = null;
    try {
      this.ws.close();
    } catch {
      // not open yet
    }
  }
}

class SseTransport {
  constructor(client, url, lastEventId) {
    const ES = client.options.EventSource || globalThis.EventSource;
    this.name = 'sse';
    this.client = client;
    this.base = url;
    const q = lastEventId ? `${url.includes('?') ? '&' : '?'}lastEventId=${encodeURIComponent(lastEventId)}` : '';
    this.es = new ES(url + q, { withCredentials: true });
    const handle = (e) => {
      if (!e || typeof e.data !== 'string') return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (e.lastEventId && m.type === 'event' && m.channel) client._lastEventId = e.lastEventId;
      if (m.type === 'event' && m.event === 'connected') this.connectionId = m.data.connectionId;
      client._message(this, m);
    };
    for (const t of ['event', 'subscription_succeeded', 'subscription_error', 'resumed', 'pong', 'message']) {
      this.es.addEventListener(t, handle);
    }
    this.es.addEventListener('error', (e) => {
      if (e && typeof e.data === 'string') return handle(e); // a server `event: error` message
      // a dropped stream: we reconnect ourselves (with lastEventId), so new channels are resubscribed
      this.close();
      client._closed(this);
    });
  }
  send(m) {
    if (m.type === 'ping') return true; // the SSE stream has its own heartbeat
    if (m.type !== 'subscribe' && m.type !== 'unsubscribe') return false;
    const url = `${this.base}/${m.type}`;
    const body = { connectionId: this.connectionId, channel: m.channel };
    this.client
      ._post(url, body)
      .then(async (r) => {
        if (!r.ok && m.type === 'subscribe') {
          let error = `HTTP ${r.status}`;
          try {
            error = (await r.json()).error || error;
          } catch {
            // not JSON
          }
          this.client._message(this, { type: 'subscription_error', channel: m.channel, error });
        }
      })
      .catch(() => {});
    return true;
  }
  close() {
    this.closed = true;
    this.es.close();
  }
}

const DEFAULTS = {
  transports: ['ws', 'sse'],
  path: '/ws',
  ssePath: '/events',
  minDelay: 500,
  maxDelay: 30000,
  factor: 2,
  jitter: 0.5,
  maxRetries: Infinity,
  pingInterval: 25000,
  pongTimeout: 10000,
  connectTimeout: 10000,
  autoConnect: true,
};

export class Client extends Emitter {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    const base = new URL(
      this.options.url || (globalThis.location ? globalThis.location.href : 'http://localhost/'),
      globalThis.location ? globalThis.location.href : undefined,
    );
    const secure = base.protocol === 'https:' || base.protocol === 'wss:';
    const host = base.host;
    const wsPath = base.protocol.startsWith('ws') && base.pathname !== '/' ? base.pathname : this.options.path;
    this.wsUrl = `${secure ? 'wss' : 'ws'}://${host}${wsPath}${base.search}`;
    const http = `${secure ? 'https' : 'http'}://${host}`;
    this.sseUrl = this.options.sseUrl || http + this.options.ssePath;
    this.authEndpoint = this.options.authEndpoint
      ? new URL(this.options.authEndpoint, http + '/').href
      : `${http}${wsPath}/auth`;
    this.state = 'initialized';
    this.socketId = null;
    this.transport = null;
    this.channels = new Map();
    this._attempt = 0;
    this._timers = {};
    this._lastEventId = null;
    // after the caller attached its handlers, so it sees `connecting` too
    if (this.options.autoConnect) Promise.resolve().then(() => this.state === 'initialized' && this.connect());
  }

  _setState(state, detail) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit('state_change', { previous, current: state, ...detail });
    this._emit(state, detail);
  }

  _available() {
    return this.options.transports.filter((t) =>
      t === 'ws' ? !!(this.options.WebSocket || globalThis.WebSocket) : t === 'sse' ? !!(this.options.EventSource || globalThis.EventSource) : false,
    );
  }

  connect() {
    this._stopped = false;
    if (this.transport) return;
    clearTimeout(this._timers.retry);
    const list = this._available();
    if (!list.length) {
      this._setState('failed', { reason: 'no transport available (WebSocket/EventSource)' });
      return;
    }
    this._tryTransport(list, 0);
  }

  _tryTransport(list, i) {
    this._setState('connecting', { attempt: this._attempt, transport: list[i] });
    const name = list[i];
    let t;
    try {
      t = name === 'ws' ? new WsTransport(this, this.wsUrl) : new SseTransport(this, this.sseUrl, this._lastEventId);
    } catch (err) {
      t = null;
    }
    this._next = i + 1 < list.length ? () => this._tryTransport(list, i + 1) : null;
    if (!t) return this._closed(null);
    this.transport = t;
    this._opened = false;
    clearTimeout(this._timers.connect);
    this._timers.connect = setTimeout(() => {
      if (this.transport === t && !this._opened) {
        t.close();
        this._closed(t);
      }
    }, this.options.connectTimeout);
  }

  disconnect() {
    this._stopped = true;
    this._clearTimers();
    if (this.transport) this.transport.close();
    this.transport = null;
    this.socketId = null;
    for (const sub of this.channels.values()) sub.subscribed = false;
    this._setState('disconnected', { reason: 'client' });
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      clearInterval(this._timers[k]);
    }
  }

  _closed(t, code) {
    if (t && t !== this.transport) return;
    const wasOpen = this._opened;
    this.transport = null;
    this.socketId = null;
    this._opened = false;
    this._clearTimers();
    this._pingOut = false;
    for (const sub of this.channels.values()) sub.subscribed = false;
    if (this._stopped) return;
    // never got through: try the next transport at once (the SSE fallback)
    if (!wasOpen && this._next) {
      const next = this._next;
      this._next = null;
      return next();
    }
    this._setState('disconnected', { code });
    if (this._attempt >= this.options.maxRetries) {
      this._setState('failed', { reason: 'too many retries' });
      return;
    }
    const o = this.options;
    const delay = Math.min(o.maxDelay, o.minDelay * o.factor ** this._attempt) * (1 - o.jitter * Math.random());
    this._attempt++;
    this._timers.retry = setTimeout(() => this.connect(), delay);
  }

  _message(t, m) {
    if (t !== this.transport) return;
    this._lastSeen = Date.now();
    clearTimeout(this._timers.pong);
    this._pingOut = false;
    if (m.type === 'event' && m.event === 'connected' && !m.channel) {
      this._opened = true;
      this._attempt = 0;
      clearTimeout(this._timers.connect);
      this.socketId = m.data.socketId;
      this._startPing();
      this._setState('connected', { socketId: this.socketId, transport: t.name });
      for (const sub of this.channels.values()) this._subscribe(sub);
      return;
    }
    const sub = m.channel !== undefined ? this.channels.get(m.channel) : null;
    if (m.type === 'event' && sub) sub._event(m);
    else if (m.type === 'subscription_succeeded' && sub) sub._succeeded(m);
    else if (m.type === 'subscription_error' && sub) sub._emit('subscription_error', { error: m.error });
    else if (m.type === 'error') this._emit('error', { error: m.error });
    else if (m.type === 'resumed') this._emit('resumed', m);
  }

  _startPing() {
    const { pingInterval, pongTimeout } = this.options;
    if (!pingInterval) return;
    this._timers.ping = setInterval(() => {
      const t = this.transport;
      if (!t || Date.now() - this._lastSeen < pingInterval) return;
      if (t.name !== 'ws' || this._pingOut) return;
      t.send({ type: 'ping' });
      this._pingOut = true;
      this._timers.pong = setTimeout(() => {
        this._pingOut = false;
        if (this.transport === t) {
          t.close(); // a dead connection: no answer to our ping
          this._closed(t, 4000);
        }
      }, pongTimeout);
    }, Math.max(50, Math.min(pingInterval, 1000)));
  }

  _send(m) {
    if (!this.transport || !this._opened) return false;
    return this.transport.send(m);
  }

  _post(url, body) {
    let headers = this.options.authHeaders;
    if (typeof headers === 'function') headers = headers();
    return (this.options.fetch || globalThis.fetch)(url, {
      method: 'POST',
      credentials: 'include',
      headers: { 'Content-Type': 'application/json', ...(headers || {}) },
      body: JSON.stringify(body),
    });
  }

  async _subscribe(sub) {
    const t = this.transport;
    if (!t || !this._opened) return;
    const msg = { type: 'subscribe', channel: sub.channel };
    if (t.name === 'ws') {
      if (sub.position && sub.position.epoch !== undefined) {
        msg.recover = { offset: sub.position.offset, epoch: sub.position.epoch };
        sub._recovering = true;
      }
      if (isPrivate(sub.channel)) {
        const socketId = this.socketId;
        let answer;
        try {
          const r = await this._post(this.authEndpoint, { socketId, channel: sub.channel });
          if (!r.ok) throw new Error(`auth endpoint answered HTTP ${r.status}`);
          answer = await r.json();
          if (!answer || typeof answer.auth !== 'string') throw new Error('auth endpoint gave no "auth"');
        } catch (err) {
          sub._recovering = false;
          sub._emit('subscription_error', { error: err.message || String(err) });
          return;
        }
        // the connection may have changed while we waited: its next `connected` resubscribes
        if (t !== this.transport || socketId !== this.socketId || this.channels.get(sub.channel) !== sub) return;
        msg.auth = answer.auth;
        if (answer.channel_data !== undefined) {
          msg.channel_data = answer.channel_data;
          try {
            sub.me = JSON.parse(answer.channel_data);
          } catch {
            sub.me = null;
          }
        }
      }
    } else {
      sub._recovering = !!this._lastEventId;
    }
    t.send(msg);
  }

  /** Subscribe to a channel (idempotent): returns its Subscription. */
  subscribe(channel) {
    let sub = this.channels.get(channel);
    if (sub) return sub;
    sub = new Subscription(this, channel);
    this.channels.set(channel, sub);
    this._subscribe(sub);
    return sub;
  }

  unsubscribe(channel) {
    const sub = this.channels.get(channel);
    if (!sub) return;
    this.channels.delete(channel);
    sub.subscribed = false;
    this._send({ type: 'unsubscribe', channel });
  }

  channel(name) {
    return this.channels.get(name);
  }
}

export function createClient(options) {
  return new Client(options);
}

export default createClient;
