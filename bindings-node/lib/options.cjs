'use strict';
// Validation and defaults for every option, in one place. The native layer only ever
// sees the normalized object built here.

const { optionError, notSupported } = require('./errors.cjs');

const KNOWN = new Set([
  'driver',
  'path',
  'redis',
  'redisPrefix',
  'redisBacklogMax',
  'redisConnectTimeout',
  'authSecret',
  'authorizer',
  'pingInterval',
  'maxPayloadSize',
  'heartbeatInterval',
  'retryInterval',
  'maxSendQueue',
  'maxConnections',
  'maxChannelsPerConnection',
  'listen',
  'sse',
  'clientEventsPerSecond',
  'maxMemberSize',
  'maxPresenceMembers',
  'onConnect',
  'onDisconnect',
  'onClientEvent',
]);

const MIN_SECRET = 32;
const PATH_RE = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;

function isSet(v) {
  return v !== undefined && v !== null && v !== '';
}

function integer(options, name, { min = 0, max = 2 ** 31 - 1, def }) {
  const v = options[name];
  if (!isSet(v)) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw optionError(`option ${name} must be an integer between ${min} and ${max} (got ${String(v)})`);
  }
  return v;
}

function hook(options, name) {
  const fn = options[name];
  if (fn === undefined || fn === null) return null;
  if (typeof fn !== 'function') throw optionError(`option ${name} must be a function`);
  return fn;
}

function checkRedis(url) {
  if (typeof url !== 'string') throw optionError('option redis must be a redis:// or rediss:// URL string');
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw optionError(`option redis is not a valid URL: ${JSON.stringify(url)} (expected redis://host:port)`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw optionError(`option redis must use redis:// or rediss:// (got ${parsed.protocol}//)`);
  }
  if (!parsed.hostname) throw optionError(`option redis has no host: ${JSON.stringify(url)}`);
  return url;
}

function checkListen(listen) {
  if (listen === undefined || listen === null || listen === false) return null;
  if (typeof listen !== 'object') throw optionError('option listen must be an object {host, port}');
  for (const k of Object.keys(listen)) {
    if (k !== 'host' && k !== 'port' && k !== 'tls') throw optionError(`unknown listen option ${JSON.stringify(k)}`);
  }
  if (isSet(listen.tls)) throw notSupported('listen.tls (TLS in the core)');
  const host = isSet(listen.host) ? listen.host : '127.0.0.1';
  if (typeof host !== 'string') throw optionError('option listen.host must be a string');
  const port = listen.port === undefined ? 0 : listen.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw optionError(`option listen.port must be an integer between 0 and 65535 (got ${String(port)})`);
  }
  return { host, port };
}

function checkPath(name, path) {
  if (typeof path !== 'string' || path.length > 200 || !PATH_RE.test(path) || (path.length > 1 && path.endsWith('/'))) {
    throw optionError(
      `option ${name} must be an absolute URL path like '/ws' (no query, no trailing slash; got ${JSON.stringify(path)})`,
    );
  }
  return path;
}

/**
 * `sse: true | { path }` beside driver 'ws': the same instance also serves Server-Sent Events
 * (the fallback for clients without WebSocket), so one broadcast reaches both kinds of client.
 * Returns the SSE path, or null when the option is absent.
 */
function checkSse(sse, wsPath) {
  if (sse === undefined || sse === null || sse === false) return null;
  if (sse !== true && (typeof sse !== 'object' || Array.isArray(sse))) {
    throw optionError("option sse must be true or an object { path } (e.g. sse: { path: '/events' })");
  }
  const o = sse === true ? {} : sse;
  for (const k of Object.keys(o)) {
    if (k !== 'path') {
      throw optionError(
        `unknown sse option ${JSON.stringify(k)} (sse takes { path }; heartbeatInterval and retryInterval are top-level options)`,
      );
    }
  }
  const path = checkPath('sse.path', isSet(o.path) ? o.path : '/events');
  if (path === wsPath) throw optionError(`option sse.path must differ from path (both are ${JSON.stringify(path)})`);
  return path;
}

/** Normalize eventsPlugin()/getEvents() options; throws on anything invalid. */
function normalizeOptions(options) {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object') throw optionError('options must be an object');
  for (const k of Object.keys(options)) {
    if (!KNOWN.has(k)) throw optionError(`unknown option ${JSON.stringify(k)}`);
  }

  const driver = isSet(options.driver) ? options.driver : 'ws';
  if (driver !== 'ws' && driver !== 'sse') {
    throw optionError(
      `unknown driver ${JSON.stringify(driver)} (expected 'ws' or 'sse'; for WebSocket with an SSE ` +
        `fallback on the same app use driver: 'ws' with sse: { path: '/events' })`,
    );
  }

  const path = checkPath('path', isSet(options.path) ? options.path : driver === 'sse' ? '/events' : '/ws');
  const wsPath = driver === 'ws' ? path : null;
  if (driver === 'sse' && isSet(options.sse) && options.sse !== false) {
    throw optionError("option sse adds an SSE endpoint beside driver 'ws'; with driver 'sse' the endpoint is path");
  }
  const ssePath = driver === 'sse' ? path : checkSse(options.sse, path);

  let authSecret = null;
  if (isSet(options.authSecret)) {
    if (typeof options.authSecret !== 'string') throw optionError('option authSecret must be a string');
    if (options.authSecret.length < MIN_SECRET) {
      throw optionError(
        `option authSecret must be at least ${MIN_SECRET} characters (got ${options.authSecret.length})`,
        'ESECRET',
      );
    }
    authSecret = options.authSecret;
  }

  if (options.authorizer !== undefined && options.authorizer !== null && typeof options.authorizer !== 'function') {
    throw optionError('option authorizer must be a function (channel, request) => result');
  }

  const redis = isSet(options.redis) ? checkRedis(options.redis) : null;
  if (isSet(options.redisPrefix) && typeof options.redisPrefix !== 'string') {
    throw optionError('option redisPrefix must be a string');
  }

  const normalized = {
    driver,
    path,
    wsPath,
    ssePath,
    redis,
    redisPrefix: isSet(options.redisPrefix) ? options.redisPrefix : undefined,
    redisBacklogMax: integer(options, 'redisBacklogMax', { min: 1, max: 2 ** 40, def: undefined }),
    redisConnectTimeout: integer(options, 'redisConnectTimeout', { min: 1, max: 3600000, def: undefined }),
    authSecret,
    authorizer: options.authorizer || defaultAuthorizer,
    pingInterval: integer(options, 'pingInterval', { def: 30000 }),
    maxPayloadSize: integer(options, 'maxPayloadSize', { min: 1, max: 2 ** 40, def: 1048576 }),
    heartbeatInterval: integer(options, 'heartbeatInterval', { def: 15000 }),
    retryInterval: integer(options, 'retryInterval', { def: 3000 }),
    maxSendQueue: integer(options, 'maxSendQueue', { min: 1, max: 2 ** 40, def: undefined }),
    maxConnections: integer(options, 'maxConnections', { min: 1, def: undefined }),
    maxChannelsPerConnection: integer(options, 'maxChannelsPerConnection', { min: 1, def: undefined }),
    clientEventsPerSecond: integer(options, 'clientEventsPerSecond', { def: undefined }),
    maxMemberSize: integer(options, 'maxMemberSize', { min: 1, max: 2 ** 31 - 1, def: undefined }),
    maxPresenceMembers: integer(options, 'maxPresenceMembers', { min: 1, def: undefined }),
    onConnect: hook(options, 'onConnect'),
    onDisconnect: hook(options, 'onDisconnect'),
    onClientEvent: hook(options, 'onClientEvent'),
    listen: checkListen(options.listen),
  };

  return normalized;
}

/** What the core needs to create an instance. `report(err)` receives what a hook throws. */
function coreOptions(o, report = defaultReport, log = null, logLevel = 1) {
  const c = { pingInterval: o.pingInterval, maxPayload: o.maxPayloadSize };
  if (o.wsPath) c.path = o.wsPath;
  if (o.ssePath) {
    c.ssePath = o.ssePath;
    c.heartbeatInterval = o.heartbeatInterval;
    c.retryInterval = o.retryInterval;
  }
  if (o.maxSendQueue !== undefined) c.maxSendQueue = o.maxSendQueue;
  if (o.maxConnections !== undefined) c.maxConnections = o.maxConnections;
  if (o.maxChannelsPerConnection !== undefined) c.maxChannelsPerConnection = o.maxChannelsPerConnection;
  for (const k of ['clientEventsPerSecond', 'maxMemberSize', 'maxPresenceMembers']) {
    if (o[k] !== undefined) c[k] = o[k];
  }
  if (o.authSecret) c.authSecret = o.authSecret;
  if (o.redis) c.redisUrl = o.redis;
  if (o.redisPrefix !== undefined) c.redisPrefix = o.redisPrefix;
  if (o.redisBacklogMax !== undefined) c.redisBacklogMax = o.redisBacklogMax;
  if (o.redisConnectTimeout !== undefined) c.redisConnectTimeout = o.redisConnectTimeout;
  // Hooks run on the JS thread from the core's thread-safe function: a throwing hook must
  // not become an uncaught exception of the whole process.
  const guard = (fn) => (...args) => {
    try {
      const r = fn(...args);
      if (r && typeof r.then === 'function') r.then(undefined, report);
    } catch (err) {
      report(err);
    }
  };
  if (o.onConnect) c.onConnect = guard((socketId) => o.onConnect(socketId));
  if (o.onDisconnect) c.onDisconnect = guard((socketId) => o.onDisconnect(socketId));
  if (o.onClientEvent) {
    c.onClientEvent = guard((socketId, channel, event, data) =>
      o.onClientEvent({ socketId, channel, event, data: JSON.parse(data) }),
    );
  }
  if (log) {
    c.onLog = guard(log);
    c.logLevel = logLevel;
  }
  return c;
}

function defaultReport(err) {
  process.emitWarning(`vxevents: a hook threw: ${err && err.stack ? err.stack : err}`);
}

/** Public channels yes, private and presence no. */
function defaultAuthorizer(channel) {
  return { authorized: channel.type === 'public' };
}

function channelType(name) {
  if (name.startsWith('presence-')) return 'presence';
  if (name.startsWith('private-')) return 'private';
  return 'public';
}

module.exports = { normalizeOptions, coreOptions, channelType, defaultAuthorizer, MIN_SECRET };
