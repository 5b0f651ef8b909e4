'use strict';
// Channel authorization shared by the Fastify routes and the core's own routes: running the
// host's authorizer, and the one-time grants that carry a decision made by a Fastify route
// (with the real request) to the core's subscribe route.

const { randomBytes } = require('node:crypto');
const { channelType } = require('./options.cjs');

const GRANT_HEADER = 'x-vxevents-grant';
const GRANT_TTL_MS = 15000;

/** Run the authorizer; resolves to {ok, error?, member?} (member only for presence). */
async function decide(o, channel, request) {
  const type = channelType(channel);
  const result = await o.authorizer({ name: channel, type }, request);
  if (!result || result.authorized !== true) {
    return { ok: false, error: (result && typeof result.error === 'string' && result.error) || 'Forbidden' };
  }
  if (type !== 'presence') return { ok: true, member: null };
  const m = result.member;
  if (!m || typeof m !== 'object' || (typeof m.id !== 'string' && typeof m.id !== 'number')) {
    return { ok: false, error: 'Presence channels need a member {id, info} from the authorizer' };
  }
  return { ok: true, member: { id: m.id, info: m.info === undefined ? {} : m.info } };
}

/** Single-use decisions, bound to one (socketId, channel), expiring after GRANT_TTL_MS. */
class Grants {
  #map = new Map();

  issue(socketId, channel, decision) {
    const now = Date.now();
    for (const [k, g] of this.#map) if (g.expires < now) this.#map.delete(k);
    const token = randomBytes(16).toString('hex');
    this.#map.set(token, { socketId, channel, decision, expires: now + GRANT_TTL_MS });
    return token;
  }

  take(token, socketId, channel) {
    const g = this.#map.get(token);
    if (!g) return null;
    this.#map.delete(token);
    if (g.expires < Date.now() || g.socketId !== socketId || g.channel !== channel) return null;
    return g.decision;
  }
}

/** "Name: value\r\n" lines into a lower-cased header object. */
function parseHeaders(text) {
  const headers = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return headers;
}

/** What the authorizer gets for a request the core served itself (dedicated port). */
function requestFromCore(req) {
  let body = null;
  try {
    body = JSON.parse(req.body);
  } catch {
    body = null;
  }
  return { method: 'POST', url: req.url, headers: parseHeaders(req.headers), body, raw: null, user: undefined };
}

/**
 * The core's authorize hook. A request carrying a grant is answered with the decision the
 * Fastify route already made; other requests are decided here only when the core serves a
 * dedicated port (`trustCore`), else refused (they can only come from the loopback bridge).
 */
function makeCoreAuthorizer(o, manager, grants, trustCore) {
  const answer = (req, d) => {
    try {
      manager.authReply(req.id, d.ok, d.ok && d.member ? JSON.stringify(d.member) : null, d.ok ? null : d.error);
    } catch {
      // The instance closed meanwhile: the request went with it.
    }
  };
  return (req) => {
    const token = parseHeaders(req.headers)[GRANT_HEADER];
    if (token) {
      answer(req, grants.take(token, req.socketId, req.channel) || { ok: false, error: 'Forbidden' });
    } else if (!trustCore) {
      answer(req, { ok: false, error: 'Forbidden' });
    } else {
      decide(o, req.channel, requestFromCore(req)).then(
        (d) => answer(req, d),
        () => answer(req, { ok: false, error: 'Authorization failed' }),
      );
    }
  };
}

module.exports = { decide, Grants, makeCoreAuthorizer, GRANT_HEADER };
