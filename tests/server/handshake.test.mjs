// The HTTP side of the listener: WebSocket handshakes over a raw socket,
// unknown paths, and GET /health.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { connect, health, ms, openRawWs, openWs, rawHttp, waitFor, withServer, wsAccept } from './helpers.mjs';

const T = { timeout: 20000 };

function upgradeRequest(port, { path = '/ws', key = randomBytes(16).toString('base64'), version = '13', omit = [], http = '1.1', extra = [] } = {}) {
  const headers = [
    ['Host', `127.0.0.1:${port}`],
    ['Upgrade', 'websocket'],
    ['Connection', 'Upgrade'],
    ['Sec-WebSocket-Key', key],
    ['Sec-WebSocket-Version', version],
    ...extra,
  ].filter(([name]) => !omit.includes(name));
  return `GET ${path} HTTP/${http}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

test('valid_handshake_answers_101_with_correct_accept', T, async () => {
  await withServer(async (srv) => {
    const key = randomBytes(16).toString('base64');
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { key }));
    assert.equal(res.status, 101, res.raw);
    assert.equal(res.headers.upgrade?.toLowerCase(), 'websocket');
    assert.match(res.headers.connection || '', /upgrade/i);
    assert.equal(res.headers['sec-websocket-accept'], wsAccept(key));
  });
});

test('handshake_without_sec_websocket_key_answers_400', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { omit: ['Sec-WebSocket-Key'] }));
    assert.equal(res.status, 400, res.raw);
  });
});

test('handshake_with_malformed_sec_websocket_key_answers_400', T, async () => {
  await withServer(async (srv) => {
    // The key must be 16 bytes, base64-encoded (24 characters).
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { key: 'c2hvcnQ=' }));
    assert.equal(res.status, 400, res.raw);
  });
});

test('handshake_with_version_8_answers_426', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { version: '8' }));
    assert.equal(res.status, 426, res.raw);
  });
});

test('handshake_without_version_answers_426_or_400', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { omit: ['Sec-WebSocket-Version'] }));
    assert.ok(res.status === 426 || res.status === 400, res.raw);
  });
});

// RFC 6455 §4.2.1: the handshake is an HTTP/1.1 (or later) GET with a Host header.
test('handshake_over_http_1_0_answers_400', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { http: '1.0' }));
    assert.equal(res.status, 400, res.raw);
    assert.match(res.body, /HTTP\/1\.1/);
  });
});

test('handshake_without_host_answers_400', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { omit: ['Host'] }));
    assert.equal(res.status, 400, res.raw);
    assert.match(res.body, /Host/);
  });
});

test('handshake_with_two_host_headers_answers_400', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { extra: [['Host', 'other.example']] }));
    assert.equal(res.status, 400, res.raw);
  });
});

test('handshake_over_http_1_1_with_host_is_accepted', T, async () => {
  await withServer(async (srv) => {
    // The minimal request a proxy may send: Host without a port, header names in odd case.
    const key = randomBytes(16).toString('base64');
    const req = `GET /ws HTTP/1.1\r\nhOsT: localhost\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n` +
      `sec-websocket-key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    const res = await rawHttp(srv.port, req);
    assert.equal(res.status, 101, res.raw);
    assert.equal(res.headers['sec-websocket-accept'], wsAccept(key));
  });
});

test('plain_get_on_websocket_path_answers_426', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\nConnection: close\r\n\r\n`);
    assert.equal(res.status, 426, res.raw);
  });
});

test('unknown_path_answers_404', T, async () => {
  await withServer(async (srv) => {
    for (const p of ['/nope', '/ws/extra', '/wss', '/api']) { // '/' is the landing page (landing.test.mjs)
      const res = await rawHttp(srv.port, `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
      assert.equal(res.status, 404, `GET ${p}: ${res.raw}`);
    }
  });
});

test('websocket_upgrade_on_unknown_path_answers_404', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { path: '/elsewhere' }));
    assert.equal(res.status, 404, res.raw);
    await assert.rejects(openWs(`ws://127.0.0.1:${srv.port}/elsewhere`), (err) => err.statusCode === 404);
  });
});

test('query_string_on_websocket_path_is_accepted', T, async () => {
  await withServer(async (srv) => {
    const c = await openWs(`${srv.wsUrl}?client=test&v=1`);
    await c.waitConnected();
  });
});

test('custom_path_flag_moves_the_websocket_endpoint', T, async () => {
  await withServer({ args: ['--path', '/realtime'] }, async (srv) => {
    assert.equal(srv.wsPath, '/realtime', 'ready line names the websocket path');
    const c = await openWs(`ws://127.0.0.1:${srv.port}/realtime`);
    await c.waitConnected();
    const res = await rawHttp(srv.port, upgradeRequest(srv.port, { path: '/ws' }));
    assert.equal(res.status, 404, res.raw);
  });
});

test('garbage_request_does_not_crash_the_server', T, async () => {
  await withServer(async (srv) => {
    const answers = [];
    for (const junk of ['\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', 'HELLO\r\n\r\n', `GET /${'a'.repeat(20000)} HTTP/1.1\r\n\r\n`, 'GET /ws HTTP/1.1\r\nHost\r\n\r\n']) {
      try {
        answers.push((await rawHttp(srv.port, junk, ms(2000))).status);
      } catch {
        answers.push('closed');
      }
    }
    for (const a of answers) assert.ok(a === 'closed' || (a >= 400 && a < 500), `answers: ${answers}`);
    const h = await health(srv);
    assert.equal(h.status, 'ok');
  });
});

test('health_answers_200_json_status_ok', T, async () => {
  await withServer(async (srv) => {
    const res = await rawHttp(srv.port, `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    assert.equal(res.status, 200, res.raw);
    assert.match(res.headers['content-type'] || '', /application\/json/);
    const body = JSON.parse(res.body);
    assert.equal(body.status, 'ok');
    assert.ok(Number.isInteger(body.connections) && body.connections >= 0, res.body);
    assert.ok(Number.isInteger(body.channels) && body.channels >= 0, res.body);
  });
});

test('health_connections_tracks_opens_and_closes', T, async () => {
  await withServer(async (srv) => {
    const base = (await health(srv)).connections;
    assert.equal(base, 0, 'no WebSocket connection yet');
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connect(srv));
    const raw = await openRawWs(srv.port, { autoPong: true });
    srv.track(raw);
    await waitFor(() => health(srv), (h) => h.connections === 4, ms(3000), 'connections == 4');
    clients[0].close(1000);
    clients[1].destroy(); // abrupt: no close handshake
    await waitFor(() => health(srv), (h) => h.connections === 2, ms(3000), 'connections == 2');
    raw.destroy();
    clients[2].close(1000);
    await waitFor(() => health(srv), (h) => h.connections === 0, ms(3000), 'connections == 0');
  });
});

test('health_channels_counts_channels_with_subscribers', T, async () => {
  await withServer(async (srv) => {
    assert.equal((await health(srv)).channels, 0);
    const a = await connect(srv);
    const b = await connect(srv);
    await a.subscribe('h1');
    await a.subscribe('h2');
    await b.subscribe('h2');
    assert.equal((await health(srv)).channels, 2);
    a.send({ type: 'unsubscribe', channel: 'h1' });
    await a.barrier();
    assert.equal((await health(srv)).channels, 1);
    a.close(1000);
    b.close(1000);
    await waitFor(() => health(srv), (h) => h.channels === 0 && h.connections === 0, ms(3000), 'no channels left');
  });
});
