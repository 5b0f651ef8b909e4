'use strict';
// Channel authorization shared by the Fastify routes and the core's own routes (the
// latter only when the core serves a dedicated port): running the host's authorizer.

const { channelType } = require('./options.cjs');

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
 * The core's authorize hook. The core's own routes are reachable only when it serves a
 * dedicated port (`trustCore`); then they are decided here with a request-like object.
 * Otherwise nothing should arrive, and anything that does is refused.
 */
function makeCoreAuthorizer(o, manager, trustCore) {
  const answer = (req, d) => {
    try {
      manager.authReply(req.id, d.ok, d.ok && d.member ? JSON.stringify(d.member) : null, d.ok ? null : d.error);
    } catch {
      // The instance closed meanwhile: the request went with it.
    }
  };
  return (req) => {
    if (!trustCore) {
      answer(req, { ok: false, error: 'Forbidden' });
      return;
    }
    decide(o, req.channel, requestFromCore(req)).then(
      (d) => answer(req, d),
      () => answer(req, { ok: false, error: 'Authorization failed' }),
    );
  };
}

module.exports = { decide, makeCoreAuthorizer };
