// The publish API: authorization, validation, size limit, and the switch
// that turns it off.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { api, connect, isEvent, ms, nonce, rawHttp, randomKey, withServer } from './helpers.mjs';

const T = { timeout: 20000 };
const GOOD = { channel: 'c', event: 'e', data: { x: 1 } };

test('broadcast_answers_200_success_true', T, async () => {
  await withServer(async (srv) => {
    const res = await api(srv, '/api/broadcast', { body: GOOD });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { success: true });
    assert.match(res.headers.get('content-type') || '', /application\/json/);
  });
});

test('batch_answers_200_with_count', T, async () => {
  await withServer(async (srv) => {
    const res = await api(srv, '/api/batch', { body: { batch: [GOOD, { ...GOOD, event: 'f' }, { channels: ['a', 'b'], event: 'g' }] } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { success: true, count: 3 });
  });
});

test('broadcast_without_data_delivers_an_event', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('nodata');
    const res = await api(srv, '/api/broadcast', { body: { channel: 'nodata', event: 'bare' } });
    assert.equal(res.status, 200, res.text);
    const m = await c.next(isEvent('nodata', 'bare'));
    assert.equal(m.type, 'event');
  });
});

test('missing_bearer_answers_401_and_publishes_nothing', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    for (const route of ['/api/broadcast', '/api/batch']) {
      const body = route === '/api/batch' ? { batch: [GOOD] } : GOOD;
      const res = await api(srv, route, { body, auth: false });
      assert.equal(res.status, 401, `${route}: ${res.text}`);
      assert.deepEqual(res.json, { error: 'Unauthorized' });
    }
    await c.expectNone((m) => m.type === 'event', 250, 'event from an unauthorized request');
  });
});

test('wrong_bearer_answers_401_and_publishes_nothing', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    const wrong = [
      `Bearer ${randomKey()}`,
      `Bearer ${srv.apiKey}x`,
      `Bearer ${srv.apiKey.slice(0, -1)}`,
      `Basic ${srv.apiKey}`,
      srv.apiKey,
      'Bearer ',
      'Bearer',
      `Bearer  ${srv.apiKey}x`,
    ];
    for (const auth of wrong) {
      const res = await api(srv, '/api/broadcast', { body: GOOD, auth });
      assert.equal(res.status, 401, `Authorization: ${auth} → ${res.status} ${res.text}`);
      assert.deepEqual(res.json, { error: 'Unauthorized' });
    }
    await c.expectNone((m) => m.type === 'event', 250, 'event from an unauthorized request');
  });
});

async function expect400(srv, route, body, wantPath, what) {
  const res = await api(srv, route, { body });
  assert.equal(res.status, 400, `${what}: ${res.status} ${res.text}`);
  assert.ok(res.json, `${what}: body is not JSON: ${res.text}`);
  assert.equal(res.json.error, 'Validation failed', `${what}: ${res.text}`);
  assert.ok(Array.isArray(res.json.details) && res.json.details.length > 0, `${what}: details: ${res.text}`);
  for (const d of res.json.details) {
    assert.equal(typeof d.path, 'string', `${what}: ${res.text}`);
    assert.equal(typeof d.message, 'string', `${what}: ${res.text}`);
  }
  if (wantPath !== undefined) {
    assert.ok(res.json.details.some((d) => d.path === wantPath || d.path.startsWith(`${wantPath}`)), `${what}: want a detail for ${wantPath}: ${res.text}`);
  }
  return res.json;
}

test('broadcast_with_bad_body_answers_400_with_details', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    await expect400(srv, '/api/broadcast', { channel: 'c', data: 1 }, 'event', 'no event');
    await expect400(srv, '/api/broadcast', { channel: 'c', event: 7 }, 'event', 'event not a string');
    await expect400(srv, '/api/broadcast', { channel: 'c', event: '' }, 'event', 'empty event');
    await expect400(srv, '/api/broadcast', { channel: 5, event: 'e' }, 'channel', 'channel not a string');
    await expect400(srv, '/api/broadcast', { channel: ['c'], event: 'e' }, 'channel', 'channel an array');
    await expect400(srv, '/api/broadcast', { event: 'e', data: 1 }, undefined, 'neither channel nor channels');
    await expect400(srv, '/api/broadcast', { channels: 'c', event: 'e' }, 'channels', 'channels not an array');
    await expect400(srv, '/api/broadcast', { channels: ['c', 3], event: 'e' }, 'channels', 'channels holding a number');
    await expect400(srv, '/api/broadcast', '{"channel":"c","event":', undefined, 'truncated JSON');
    await expect400(srv, '/api/broadcast', 'not json', undefined, 'not JSON');
    await expect400(srv, '/api/broadcast', '', undefined, 'empty body');
    await expect400(srv, '/api/broadcast', '[1,2]', undefined, 'array body');
    await expect400(srv, '/api/broadcast', 'null', undefined, 'null body');
    await c.expectNone((m) => m.type === 'event', 250, 'event from a rejected request');
  });
});

test('broadcast_body_with_trailing_garbage_answers_400', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    await expect400(srv, '/api/broadcast', '{"channel":"c","event":"e","data":1}}', undefined, 'trailing brace');
    await expect400(srv, '/api/broadcast', '{"channel":"c","event":"e","data":1} x', undefined, 'trailing word');
    await c.expectNone((m) => m.type === 'event', 250, 'event from a malformed body');
  });
});

test('batch_with_bad_body_answers_400_with_details_and_publishes_nothing', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    await expect400(srv, '/api/batch', { batch: 'nope' }, 'batch', 'batch not an array');
    await expect400(srv, '/api/batch', {}, 'batch', 'no batch');
    await expect400(srv, '/api/batch', { batch: [GOOD, { channel: 'c' }] }, undefined, 'second item without event');
    await expect400(srv, '/api/batch', { batch: [GOOD, 42] }, undefined, 'item not an object');
    const tooMany = Array.from({ length: 101 }, (_, i) => ({ channel: 'c', event: 'e', data: i }));
    await expect400(srv, '/api/batch', { batch: tooMany }, 'batch', '101 items');
    await c.expectNone((m) => m.type === 'event', 300, 'event from a rejected batch (validation must happen before publishing)');
  });
});

test('batch_of_exactly_100_is_accepted', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    const items = Array.from({ length: 100 }, (_, i) => ({ channel: 'c', event: 'e', data: i }));
    const res = await api(srv, '/api/batch', { body: { batch: items } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { success: true, count: 100 });
    for (let i = 0; i < 100; i++) assert.equal((await c.next(isEvent('c', 'e'))).data, i);
  });
});

test('body_over_max_payload_answers_413', T, async () => {
  await withServer({ args: ['--max-payload', '4096'] }, async (srv) => {
    const c = await connect(srv);
    await c.subscribe('big');
    const under = { channel: 'big', event: 'e', data: 'u'.repeat(3900) };
    const ok = await api(srv, '/api/broadcast', { body: under });
    assert.equal(ok.status, 200, `a ${JSON.stringify(under).length}-byte body: ${ok.text}`);
    await c.next(isEvent('big', 'e'));

    const over = JSON.stringify({ channel: 'big', event: 'e', data: 'o'.repeat(8000) });
    const req =
      `POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.apiKey}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(over)}\r\nConnection: close\r\n\r\n${over}`;
    const res = await rawHttp(srv.port, req);
    assert.equal(res.status, 413, res.raw.slice(0, 300));

    const big = await api(srv, '/api/batch', { body: { batch: [{ channel: 'big', event: 'e', data: 'b'.repeat(5000) }] } }).catch((err) => ({ status: `fetch failed: ${err.cause?.code || err.message}` }));
    assert.equal(big.status, 413);
    await c.expectNone((m) => m.type === 'event', 250, 'event from an oversized request');
  });
});

test('wrong_method_answers_405', T, async () => {
  await withServer(async (srv) => {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await api(srv, '/api/broadcast', { method, body: method === 'GET' ? undefined : GOOD });
      assert.equal(res.status, 405, `${method}: ${res.text}`);
    }
    const res = await api(srv, '/api/batch', { method: 'GET' });
    assert.equal(res.status, 405, res.text);
  });
});

test('api_answers_404_when_started_without_api_key', T, async () => {
  await withServer({ apiKey: null }, async (srv) => {
    const c = await connect(srv);
    await c.subscribe('c');
    for (const route of ['/api/broadcast', '/api/batch']) {
      for (const auth of [false, 'Bearer anything', 'Bearer ']) {
        const body = route === '/api/batch' ? { batch: [GOOD] } : GOOD;
        const res = await api(srv, route, { body, auth });
        assert.equal(res.status, 404, `${route} with ${auth}: ${res.status} ${res.text}`);
      }
    }
    await c.expectNone((m) => m.type === 'event', 250, 'event published with the API off');
    const h = await api(srv, '/health', { method: 'GET', auth: false });
    assert.equal(h.status, 200);
  });
});

test('api_key_can_come_from_VX_API_KEY', T, async () => {
  const key = randomKey();
  await withServer({ apiKey: null, env: { VX_API_KEY: key } }, async (srv) => {
    const ch = `env-${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    const res = await api(srv, '/api/broadcast', { body: { channel: ch, event: 'e', data: 1 }, auth: `Bearer ${key}` });
    assert.equal(res.status, 200, res.text);
    await c.next(isEvent(ch, 'e'));
    const bad = await api(srv, '/api/broadcast', { body: GOOD, auth: 'Bearer nope' });
    assert.equal(bad.status, 401);
  });
});

/**
 * One TCP connection: send each request in turn, wait for its complete answer
 * (Content-Length), then the next. Resolves with the statuses and whether the
 * server closed the connection after the last answer.
 */
function sequentialRequests(port, requests, timeoutMs = ms(3000)) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const statuses = [];
    let buf = Buffer.alloc(0);
    let sent = 0;
    let closedAfterLast = false;
    const timer = setTimeout(() => done(), timeoutMs);
    function done(err) {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve({ statuses, closedAfterLast });
    }
    function sendNext() {
      if (sent < requests.length) sock.write(requests[sent++]);
    }
    sock.on('connect', sendNext);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const text = buf.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = text.slice(0, end);
        const lenMatch = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        let total;
        if (lenMatch) {
          total = end + 4 + Number(lenMatch[1]);
        } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
          const last = text.indexOf('\r\n0\r\n\r\n', end + 2);
          if (last < 0) return;
          total = last + 7;
        } else {
          total = end + 4; // no body
        }
        if (buf.length < total) return;
        statuses.push(Number(text.slice(9, 12)));
        buf = buf.subarray(total);
        if (statuses.length === requests.length) {
          // Wait briefly for the server's FIN after the last answer.
          sock.once('end', () => {
            closedAfterLast = true;
            done();
          });
          setTimeout(() => done(), ms(1000));
          return;
        }
        sendNext();
      }
    });
    sock.on('end', () => {
      if (statuses.length < requests.length) done();
    });
    sock.on('error', (err) => done(statuses.length ? undefined : err));
  });
}

test('keep_alive_serves_several_requests_and_connection_close_ends_it', T, async () => {
  await withServer(async (srv) => {
    const body = JSON.stringify(GOOD);
    const req = (conn) =>
      `POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.apiKey}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: ${conn}\r\n\r\n${body}`;
    const health = (conn) => `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: ${conn}\r\n\r\n`;
    const res = await sequentialRequests(srv.port, [req('keep-alive'), health('keep-alive'), req('close')]);
    assert.deepEqual(res.statuses, [200, 200, 200]);
    assert.equal(res.closedAfterLast, true, 'the server must close after answering Connection: close');

    const single = await sequentialRequests(srv.port, [health('close')]);
    assert.deepEqual(single, { statuses: [200], closedAfterLast: true });
  });
});
