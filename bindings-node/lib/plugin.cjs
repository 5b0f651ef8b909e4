'use strict';
// eventsPlugin(options): the Fastify plugin.
//
// driver 'ws': WebSocket upgrades for `path` on the app's own server are handed to the core
// (same port). driver 'sse' (or `sse: { path }` beside driver 'ws', for both at once on one
// instance): `GET path` is hijacked and handed to the core the same way. In both cases the
// accepted socket's fd is duplicated and given to the core together with the request bytes
// Node already read, then Node's socket is destroyed (closing only Node's copy).
// `POST {path}/auth` (ws) and `POST {path}/subscribe` (sse) are Fastify routes, so the app's
// own authentication (request.user) is visible to the authorizer.

const tls = require('node:tls');
const fp = require('fastify-plugin');
const native = require('./native.cjs');
const { EventsManager } = require('./manager.cjs');
const { normalizeOptions, coreOptions, channelType, socketIdValid } = require('./options.cjs');
const { optionError } = require('./errors.cjs');
const { decide, makeCoreAuthorizer } = require('./authorize.cjs');

const CHANNEL_RE = /^[A-Za-z0-9_\-=@,.;:/]{1,200}$/;
const LEVELS = ['error', 'warn', 'info', 'debug'];
const byInstance = new WeakMap();

// Fastify plugin names this plugin answers to: its own, and the one of the API it reproduces,
// so plugins written for @veloxts/events (`dependencies: ['@veloxts/events']`) load on it.
const NAME = 'vxevents';
const ALIAS = '@veloxts/events';

/**
 * Registers ALIAS as a loaded plugin on `app`. A plugin's name is fastify-plugin metadata, one
 * per function, so the second name is an empty plugin of its own; wrapped with fastify-plugin,
 * it is recorded on the same instance as this one, before any plugin registered after it.
 */
const alias = fp(async function vxeventsAlias() {}, { fastify: '5.x', name: ALIAS });

/** The request line and headers exactly as received, for the core's HTTP parser. */
function rawRequest(req) {
  let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const h = req.rawHeaders;
  for (let i = 0; i < h.length; i += 2) text += `${h[i]}: ${h[i + 1]}\r\n`;
  text += '\r\n';
  // Node decoded the header bytes as latin1; this gives the same bytes back.
  return Buffer.from(text, 'latin1');
}

function pathnameOf(url) {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

function isTlsServer(app) {
  return app.server instanceof tls.Server || Boolean(app.initialConfig && app.initialConfig.https);
}

/** Give the connection behind `socket` to the core; Node's socket is destroyed either way. */
function handOff(manager, log, req, socket, head) {
  const handle = socket._handle;
  const fd = handle && handle.fd;
  if (typeof fd === 'number' && fd >= 0) {
    // Node must not read another byte: everything from here belongs to the core.
    if (typeof handle.readStop === 'function') handle.readStop();
    try {
      manager.adopt(fd, head && head.length ? Buffer.concat([rawRequest(req), head]) : rawRequest(req));
    } catch (err) {
      log.warn({ err }, 'vxevents: could not hand a connection to the core');
    }
  }
  socket.destroy();
}

/**
 * A manager over a new native instance. `logger` (pino-like) receives the core's log lines
 * and hook errors; `withAuthorizer` installs the core's authorize hook.
 */
function createManager(o, { logger = null, withAuthorizer = true } = {}) {
  const report = logger ? (err) => logger.error({ err }, 'vxevents: a hook threw') : undefined;
  // Only messages the app's logger would print cross over from the core's thread.
  const pinoLevel = logger && typeof logger.level === 'string' ? logger.level : 'silent';
  const level = { fatal: 0, error: 0, warn: 1, info: 2, debug: 3, trace: 3 }[pinoLevel];
  const log =
    logger && level !== undefined ? (lvl, message) => logger[LEVELS[lvl] || 'debug'](`vxevents: ${message}`) : null;
  const copts = coreOptions(o, report, log, level);
  let manager = null;
  if (withAuthorizer) {
    // Late-bound: the manager exists only after the instance does.
    const hook = (req) => coreAuthorizer(req);
    copts.onAuthorize = hook;
  }
  let coreAuthorizer = () => {};
  const events = new native.Events(copts);
  let port = null;
  if (o.listen) {
    try {
      if (o.listen.tls) events.configureTls(o.listen.tls.cert, o.listen.tls.key, o.listen.tls.ca ?? null);
      port = events.listen(o.listen.host, o.listen.port);
    } catch (err) {
      events.close(0);
      throw err;
    }
  }
  manager = new EventsManager(events, port);
  coreAuthorizer = makeCoreAuthorizer(o, manager, Boolean(o.listen));
  return { manager, events };
}

function validationError(reply, details) {
  return reply.code(400).send({ error: 'Validation failed', details });
}

/** POST {path}/auth (DESIGN §6/§10): signs with the core after the app's authorizer. */
function authRoute(o, manager) {
  return async function vxeventsAuth(request, reply) {
    const body = request.body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      return reply.code(400).send({ error: 'Expected a JSON body {socketId, channel}' });
    }
    const { socketId, channel } = body;
    // The core's rule, checked before the channel type or the app's authorizer: a socket id
    // the core would never issue gets 400 here, on public channels too.
    if (!socketIdValid(socketId)) {
      return reply.code(400).send({ error: 'socketId must be 1 to 64 of A-Z a-z 0-9 . - _' });
    }
    if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
      return reply.code(400).send({ error: 'channel must be a valid channel name' });
    }
    if (channelType(channel) === 'public') return { auth: null };
    if (!o.authSecret) return reply.code(500).send({ error: 'authSecret is not configured' });

    const d = await decide(o, channel, request);
    if (!d.ok) return reply.code(403).send({ error: d.error });
    const channelData = d.member ? JSON.stringify(d.member) : null;
    let auth;
    try {
      auth = manager.sign(socketId, channel, channelData);
    } catch (err) {
      if (err.code === 'EINVAL') return reply.code(400).send({ error: 'Invalid socketId or channel' });
      throw err;
    }
    return channelData === null ? { auth } : { auth, channel_data: channelData };
  };
}

/**
 * POST {path}/subscribe and /unsubscribe for SSE: decided here with the real request (so
 * request.user from the app's hooks works), then carried out by the core directly.
 */
function sseRoute(o, manager, subscribe) {
  return async function vxeventsSse(request, reply) {
    const body = request.body;
    const details = [];
    let connectionId;
    let channel;
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      details.push({ path: 'body', message: 'must be a JSON object {connectionId, channel}' });
    } else {
      connectionId = body.connectionId ?? body.socketId;
      channel = body.channel;
      if (!socketIdValid(connectionId)) {
        details.push({ path: 'connectionId', message: connectionId === undefined ? 'required' : 'must be a connection id string' });
      }
      if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
        details.push({
          path: 'channel',
          message: channel === undefined ? 'required' : 'invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)',
        });
      }
    }
    if (details.length) return validationError(reply, details);

    let member = null;
    if (subscribe) {
      if (channelType(channel) !== 'public' && !o.authSecret) {
        return reply.code(500).send({ error: 'authSecret is not configured' });
      }
      const d = await decide(o, channel, request);
      if (!d.ok) return reply.code(403).send({ error: d.error });
      if (d.member) member = JSON.stringify(d.member);
    }
    const r = await manager.sseSubscribe(connectionId, channel, member, subscribe);
    if (r.code === 'OK') return { success: true };
    if (r.code === 'ENOTFOUND') return reply.code(404).send({ error: r.message || 'Unknown connectionId' });
    return reply.code(403).send({ error: r.message || 'Forbidden' });
  };
}

/**
 * Returns a Fastify plugin serving events. Options are validated here, so a bad option
 * throws at the call, not at registration.
 */
function eventsPlugin(options) {
  const o = normalizeOptions(options);

  async function vxevents(app) {
    if (!o.listen && isTlsServer(app)) {
      throw optionError(
        'the app server uses TLS, whose sockets cannot be handed to the core; serve events on a ' +
          'dedicated port with eventsPlugin({ listen: { host, port, tls: { cert, key } } }) (TLS in the ' +
          'core) or behind a TLS-terminating proxy',
      );
    }
    if (!o.listen && (!app.server || typeof app.server.on !== 'function')) {
      throw optionError('the app has no HTTP server to take connections from; use listen: {host, port}');
    }

    if (app.hasDecorator('events')) {
      // Checked before the instance exists, so a refused registration leaks nothing.
      throw optionError(
        'app.events is already decorated (is eventsPlugin registered twice?); one registration serves ' +
          "WebSocket and SSE together: eventsPlugin({ driver: 'ws', path: '/ws', sse: { path: '/events' } })",
        'EEXIST',
      );
    }

    const { manager } = createManager(o, { logger: app.log });
    let onUpgrade = null;

    if (!o.listen && o.wsPath) {
      const server = app.server;
      onUpgrade = (req, socket, head) => {
        if (pathnameOf(req.url) !== o.wsPath) {
          // Not ours. Without any other upgrade listener Node would have destroyed it.
          if (server.listenerCount('upgrade') === 1) socket.destroy();
          return;
        }
        handOff(manager, app.log, req, socket, head);
      };
      // First in line, so another upgrade listener (a ws.Server with its own path) never
      // answers our path.
      server.prependListener('upgrade', onUpgrade);
    }

    if (o.ssePath && !o.listen) {
      app.get(o.ssePath, { exposeHeadRoute: false }, (request, reply) => {
        reply.hijack();
        handOff(manager, app.log, request.raw, request.raw.socket, null);
      });
      app.post(`${o.ssePath}/subscribe`, sseRoute(o, manager, true));
      app.post(`${o.ssePath}/unsubscribe`, sseRoute(o, manager, false));
    }

    byInstance.set(app, manager);
    app.decorate('events', manager);
    app.decorateRequest('events', {
      getter() {
        return manager;
      },
    });
    // Velox: `ctx` in a procedure is `request.context`, which Velox's own onRequest hook
    // (added when the app is created, so it runs before this one) sets to {request, reply};
    // plugins put what procedures use on it, as @veloxts/orm does with ctx.db. Without Velox
    // there is no request.context and this does nothing. An `events` the app put there
    // itself is left alone.
    app.addHook('onRequest', (request, reply, done) => {
      const ctx = request.context;
      if (ctx !== null && typeof ctx === 'object' && !('events' in ctx)) ctx.events = manager;
      done();
    });
    if (o.wsPath) app.post(`${o.wsPath}/auth`, authRoute(o, manager));
    app.register(alias);

    // preClose, not onClose: the HTTP server's close waits for open connections, so the
    // clients are closed (1001) first.
    const shutdown = async () => {
      if (onUpgrade) {
        app.server.removeListener('upgrade', onUpgrade);
        onUpgrade = null;
      }
      await manager.close();
    };
    app.addHook('preClose', shutdown);
    app.addHook('onClose', shutdown);
  }

  return fp(vxevents, { fastify: '5.x', name: NAME });
}

/** The manager registered on `app` by eventsPlugin(). */
function getEventsFromInstance(app) {
  const manager = (app && byInstance.get(app)) || (app && app.events);
  if (!(manager instanceof EventsManager)) {
    throw optionError('no vxevents plugin is registered on this Fastify instance');
  }
  return manager;
}

module.exports = { eventsPlugin, getEventsFromInstance, createManager };
