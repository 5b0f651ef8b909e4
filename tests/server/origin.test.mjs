// The Origin policy (--allowed-origins): real WebSocket clients (`ws`, which sends the
// Origin header it is given, as a browser does), SSE and the HTTP routes with raw requests.
// A refused origin gets 403 before any upgrade; requests without Origin pass.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import WebSocket from 'ws';
import { connect, ms, nonce, rawHttp, SERVER_BIN, withServer } from './helpers.mjs';
import { scrape, value } from './prometheus.mjs';

const T = { timeout: 30000 };
const LIST = 'https://app.example.com, *.example.org, http://localhost:5173, https://*.shop.example.net';

/** Open a WebSocket with this Origin; resolves 'open' or the HTTP status it was refused with. */
function tryWs(srv, origin) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(srv.wsUrl, origin === undefined ? {} : { origin, handshakeTimeout: ms(3000) });
    const timer = setTimeout(() => reject(new Error(`no answer for origin ${origin}`)), ms(4000));
    ws.on('open', () => { clearTimeout(timer); ws.terminate(); resolve('open'); });
    ws.on('unexpected-response', (req, res) => { clearTimeout(timer); req.destroy(); resolve(res.statusCode); });
    ws.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

const allowed = [
  'https://app.example.com',
  'HTTPS://APP.EXAMPLE.COM', // scheme and host are case-insensitive
  'https://a.example.org',
  'http://a.example.org', // a pattern without scheme admits http and https
  'https://deep.sub.example.org',
  'http://localhost:5173',
  'https://x.shop.example.net',
];
const refused = [
  'https://evil-example.org', // not a subdomain: the dot is part of the pattern
  'https://example.org', // the apex is not under *.example.org
  'https://a.example.org.evil.com', // the suffix must end the host
  'https://a.example.org:8443', // a port must be listed
  'http://app.example.com', // the entry names https
  'https://app.example.com:443', // an explicit port is not the entry's
  'http://localhost:5174',
  'http://localhost', // no port is not port 5173
  'http://x.shop.example.net', // that pattern names https
  'null', // sandboxed frames and file:// pages
  'https://app.example.com/path', // not an origin
  'app.example.com', // no scheme
  'https://*.example.org', // a pattern is not an origin
];

test('allowed_origins_admits_listed_origins_and_refuses_lookalikes_with_403', T, async () => {
  await withServer({ args: ['--allowed-origins', LIST] }, async (srv) => {
    for (const o of allowed) assert.equal(await tryWs(srv, o), 'open', `origin ${o} should be allowed`);
    for (const o of refused) assert.equal(await tryWs(srv, o), 403, `origin ${o} should be refused`);
    // Non-browser clients send no Origin: allowed.
    assert.equal(await tryWs(srv, undefined), 'open');
    const f = (await scrape(srv)).families;
    assert.equal(value(f, 'vxevents_rejected_connections_total', { reason: 'origin' }), refused.length);
  });
});

test('refused_origin_gets_403_on_sse_auth_and_publish_routes_not_on_health', T, async () => {
  await withServer({ args: ['--allowed-origins', 'https://app.example.com'] }, async (srv) => {
    const req = (method, path, origin, body = '') =>
      rawHttp(srv.port, `${method} ${path} HTTP/1.1\r\nHost: x\r\n${origin ? `Origin: ${origin}\r\n` : ''}` +
        `Authorization: Bearer ${srv.apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`);
    const evil = 'https://evil.example.com';
    for (const [m, p, b] of [['GET', '/events', ''], ['POST', '/ws/auth', '{"socketId":"a.b","channel":"c"}'],
      ['POST', '/events/subscribe', '{"connectionId":"a.b","channel":"c"}'],
      ['POST', '/api/broadcast', '{"channel":"c","event":"e"}']]) {
      const r = await req(m, p, evil, b);
      assert.equal(r.status, 403, `${m} ${p}: ${r.raw?.toString().slice(0, 300)}`);
      assert.match(r.body.toString(), /Origin not allowed/);
    }
    const okSse = await rawHttp(srv.port, 'GET /events HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n\r\n', ms(500))
      .catch((e) => e);
    // An allowed stream stays open: the helper times out waiting for its end, after the 200.
    assert.match(String(okSse.message || okSse.statusLine), /200 OK/);
    const pub = await req('POST', '/api/broadcast', 'https://app.example.com', '{"channel":"c","event":"e"}');
    assert.equal(pub.status, 200);
    const noOrigin = await req('POST', '/api/broadcast', null, '{"channel":"c","event":"e"}');
    assert.equal(noOrigin.status, 200);
    // /health and /metrics are not for pages: no Origin check.
    assert.equal((await req('GET', '/health', evil)).status, 200);
    // Two Origin headers are refused, whatever they say.
    const twice = await rawHttp(srv.port, 'GET /events HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n' +
      'Origin: https://app.example.com\r\nConnection: close\r\n\r\n');
    assert.equal(twice.status, 403);
  });
});

test('every_origin_is_allowed_when_the_list_is_unset_or_star', T, async () => {
  for (const args of [[], ['--allowed-origins', '*']]) {
    await withServer({ args }, async (srv) => {
      for (const o of ['https://anything.test', 'null', 'http://localhost:1'])
        assert.equal(await tryWs(srv, o), 'open', `${args.join(' ')} origin ${o}`);
      const c = await connect(srv, { wsOptions: { origin: 'https://elsewhere.test' } });
      await c.subscribe(`o-${nonce()}`);
    });
  }
});

test('a_malformed_allowed_origins_entry_stops_startup_naming_it', T, async () => {
  for (const bad of ['https://', 'ftp//x', 'https://a.example.com/path', '*.', 'https://*', 'https://a:99999']) {
    const r = spawnSync(SERVER_BIN, ['--port', '0', '--allowed-origins', `https://ok.example.com,${bad}`], { encoding: 'utf8', timeout: 5000 });
    assert.equal(r.status, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, /allowed_origins: '.*' is not an origin/, bad);
  }
});
