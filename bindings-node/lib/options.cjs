'use strict';
// Options: the core's options table (native.optionTable(), the same one that drives
// `vxevents-server --help`) says which core options Node offers, their bounds and defaults;
// every core option is handed to the core as text by its name and checked there
// (native.checkOptions, the core's vx_options_set), so the messages are the core's. This file
// validates only what is JavaScript's own: the driver, the path and sse shapes, the
// authorizer, the hooks and listen, and the JS type of each value.

const native = require('./native.cjs');
const { optionError } = require('./errors.cjs');

/** The core's options table: [{name, node, python, type, min, max, default, help}]. */
const TABLE = native.optionTable();
/** Core options Node offers, by their Node name (path is handled here: it may be the SSE path). */
const CORE = new Map(TABLE.filter((r) => r.node && r.node !== 'path').map((r) => [r.node, r]));
const PATH_ROW = TABLE.find((r) => r.name === 'path');

const JS_ONLY = ['driver', 'path', 'authorizer', 'listen', 'sse', 'onConnect', 'onDisconnect', 'onClientEvent'];
const KNOWN = new Set([...JS_ONLY, ...CORE.keys()]);

const MIN_SECRET = TABLE.find((r) => r.name === 'auth_secret').min;
const PATH_RE = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;

function isSet(v) {
  return v !== undefined && v !== null && v !== '';
}

/** A core option's value as the text vx_options_set parses; only the JS type is checked here. */
function coreText(row, value) {
  switch (row.type) {
    case 'uint':
    case 'size':
      if (typeof value !== 'number') {
        throw optionError(`option ${row.node} must be a number from ${row.min} to ${row.max} (got ${typeof value})`);
      }
      return String(value);
    case 'bool':
      if (typeof value !== 'boolean') throw optionError(`option ${row.node} must be true or false (got ${typeof value})`);
      return value ? '1' : '0';
    default:
      // allowedOrigins: an array of origins or patterns, or the core's comma list as is.
      if (row.name === 'allowed_origins' && Array.isArray(value)) {
        for (const o of value) {
          if (typeof o !== 'string' || o.includes(',') || !o.trim()) {
            throw optionError(`option allowedOrigins must be an array of origins like 'https://app.example.com' or '*.example.com' (got ${JSON.stringify(o)})`);
          }
        }
        return value.join(',');
      }
      if (typeof value !== 'string') throw optionError(`option ${row.node} must be a string (got ${typeof value})`);
      return value;
  }
}

/** Throws the core's refusal of `settings` ({name: text}), if any, with its code. */
function checkCore(settings) {
  const bad = native.checkOptions(settings);
  if (bad) throw optionError(`option ${bad.message}`, bad.code);
}

function hook(options, name) {
  const fn = options[name];
  if (fn === undefined || fn === null) return null;
  if (typeof fn !== 'function') throw optionError(`option ${name} must be a function`);
  return fn;
}

function checkListen(listen) {
  if (listen === undefined || listen === null || listen === false) return null;
  if (typeof listen !== 'object') throw optionError('option listen must be an object {host, port}');
  for (const k of Object.keys(listen)) {
    if (k !== 'host' && k !== 'port' && k !== 'tls') throw optionError(`unknown listen option ${JSON.stringify(k)}`);
  }
  const tls = checkTls(listen.tls);
  const host = isSet(listen.host) ? listen.host : '127.0.0.1';
  if (typeof host !== 'string') throw optionError('option listen.host must be a string');
  const port = listen.port === undefined ? 0 : listen.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw optionError(`option listen.port must be an integer between 0 and 65535 (got ${String(port)})`);
  }
  return { host, port, tls };
}

// listen.tls: { cert, key, ca? }, each PEM text (a string or Buffer starting
// "-----BEGIN ") or the path of a PEM file; the core reads and checks them.
function checkTls(tls) {
  if (!isSet(tls) || tls === false) return null;
  if (typeof tls !== 'object') throw optionError('option listen.tls must be an object {cert, key, ca?}');
  const out = {};
  for (const k of Object.keys(tls)) {
    if (k !== 'cert' && k !== 'key' && k !== 'ca') throw optionError(`unknown listen.tls option ${JSON.stringify(k)}`);
  }
  for (const k of ['cert', 'key', 'ca']) {
    let v = tls[k];
    if (!isSet(v)) {
      if (k === 'ca') continue;
      throw optionError(`option listen.tls.${k} is required (PEM text or a file path)`);
    }
    if (v instanceof Uint8Array) v = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
    if (typeof v !== 'string' || v === '' || v.includes('\0')) {
      throw optionError(`option listen.tls.${k} must be PEM text (string or Buffer) or a file path`);
    }
    out[k] = v;
  }
  // The core loads and checks them now, so bad files throw at the call with its reason.
  const bad = native.checkOptions({ tls_cert: out.cert, tls_key: out.key, ...(out.ca ? { tls_ca: out.ca } : {}) });
  if (bad) throw optionError(`option listen.tls: ${bad.message}`, bad.code);
  return out;
}

function checkPath(name, path) {
  if (
    typeof path !== 'string' ||
    path.length > PATH_ROW.max ||
    !PATH_RE.test(path) ||
    (path.length > 1 && path.endsWith('/'))
  ) {
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

  if (options.authorizer !== undefined && options.authorizer !== null && typeof options.authorizer !== 'function') {
    throw optionError('option authorizer must be a function (channel, request) => result');
  }

  // The core options, as text by name; the core checks them all now, so a bad one throws at
  // the call (eventsPlugin(), getEvents()), not when the instance is made.
  const settings = {};
  if (wsPath) settings.path = wsPath;
  if (ssePath) settings.sse_path = ssePath;
  for (const [name, row] of CORE) {
    if (isSet(options[name])) settings[name] = coreText(row, options[name]);
  }
  checkCore(settings);

  return {
    driver,
    path,
    wsPath,
    ssePath,
    settings,
    authSecret: isSet(options.authSecret) ? options.authSecret : null,
    authorizer: options.authorizer || defaultAuthorizer,
    onConnect: hook(options, 'onConnect'),
    onDisconnect: hook(options, 'onDisconnect'),
    onClientEvent: hook(options, 'onClientEvent'),
    listen: checkListen(options.listen),
  };
}

/** What the core needs to create an instance. `report(err)` receives what a hook throws. */
function coreOptions(o, report = defaultReport, log = null, logLevel = 1) {
  const c = { settings: { ...o.settings } };
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
    c.settings.log_level = String(logLevel);
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

/** The core's rule for a socket id (1 to 64 of A-Z a-z 0-9 . - _), from the addon. */
function socketIdValid(id) {
  return typeof id === 'string' && native.socketIdValid(id);
}

module.exports = { normalizeOptions, coreOptions, channelType, defaultAuthorizer, socketIdValid, TABLE, MIN_SECRET };
