// Private channels: tokens signed with the shared secret (here by Node's own crypto, an
// implementation independent of the core's), verified by the server on every subscribe.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, nonce, publish, withServer, plain } from './helpers.mjs';
import { SECRET, sign } from './sign.mjs';

const T = { timeout: 20000 };

const withAuthServer = (fn, extra = []) => withServer({ args: ['--auth-secret', SECRET, ...extra] }, fn);
const isSubReply = (channel) => (m) =>
  (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === channel;

async function trySubscribe(client, msg) {
  client.send({ type: 'subscribe', ...msg });
  return client.next(isSubReply(msg.channel));
}

test('valid_private_token_subscribes_and_receives_events', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `private-user.${nonce()}`;
    const c = await connect(srv);
    const r = await trySubscribe(c, { channel: ch, auth: sign(c.socketId, ch) });
    assert.deepEqual(plain(r), { type: 'subscription_succeeded', channel: ch });
    await publish(srv, { channel: ch, event: 'notification', data: { message: 'hi' } });
    assert.deepEqual(plain(await c.next(isEvent(ch, 'notification'))), {
      type: 'event', channel: ch, event: 'notification', data: { message: 'hi' },
    });
  });
});

test('private_subscribe_refusals_keep_the_connection_open', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `private-doc.${nonce()}`;
    const c = await connect(srv);
    const other = await connect(srv);
    const cases = [
      ['no token', { channel: ch }],
      ['empty token', { channel: ch, auth: '' }],
      ['malformed token', { channel: ch, auth: 'garbage' }],
      ['token not a string', { channel: ch, auth: 42 }],
      ['token signed for another socket (replay from B)', { channel: ch, auth: sign(other.socketId, ch) }],
      ['token for another channel', { channel: ch, auth: sign(c.socketId, `${ch}x`) }],
      ['token signed with another secret', { channel: ch, auth: sign(c.socketId, ch, undefined, `${SECRET}!`) }],
      ['uppercase hex', { channel: ch, auth: sign(c.socketId, ch).toUpperCase() }],
      ['truncated signature', { channel: ch, auth: sign(c.socketId, ch).slice(0, -2) }],
      ['right token with a suffix', { channel: ch, auth: `${sign(c.socketId, ch)}00` }],
    ];
    for (const [what, msg] of cases) {
      const r = await trySubscribe(c, msg);
      assert.equal(r.type, 'subscription_error', `${what}: ${JSON.stringify(r)}`);
      assert.equal(typeof r.error, 'string', what);
    }
    // Not subscribed by any of those: a broadcast does not arrive...
    await publish(srv, { channel: ch, event: 'secret', data: 1 });
    await c.expectNone(isEvent(ch, 'secret'), 200, 'an event on a refused channel');
    // ...and the connection still works: the right token subscribes.
    const ok = await trySubscribe(c, { channel: ch, auth: sign(c.socketId, ch) });
    assert.equal(ok.type, 'subscription_succeeded');
  });
});

test('token_captured_from_socket_a_is_refused_on_socket_b', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `private-account.${nonce()}`;
    const a = await connect(srv);
    const b = await connect(srv);
    const tokenA = sign(a.socketId, ch);
    assert.equal((await trySubscribe(a, { channel: ch, auth: tokenA })).type, 'subscription_succeeded');
    const r = await trySubscribe(b, { channel: ch, auth: tokenA });
    assert.equal(r.type, 'subscription_error');
    assert.match(r.error, /another connection/);
  });
});

test('private_channels_are_refused_when_no_secret_is_configured', T, async () => {
  await withServer(async (srv) => {
    const ch = `private-x.${nonce()}`;
    const c = await connect(srv);
    const r = await trySubscribe(c, { channel: ch, auth: sign(c.socketId, ch) });
    assert.equal(r.type, 'subscription_error');
    assert.match(r.error, /authSecret/);
  });
});

test('short_auth_secret_is_a_startup_error_that_says_32', T, async () => {
  const { spawnSync } = await import('node:child_process');
  const { SERVER_BIN } = await import('./helpers.mjs');
  const r = spawnSync(SERVER_BIN, ['--port', '0', '--auth-secret', 'too-short'], { encoding: 'utf8', timeout: 5000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /32/);
});

test('auth_endpoint_of_the_standalone_server_signs_nothing_private', T, async () => {
  await withAuthServer(async (srv) => {
    const post = (body) =>
      fetch(`http://127.0.0.1:${srv.port}/ws/auth`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
    let r = await post({ socketId: 'abc', channel: 'public-room' });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { auth: null });
    r = await post({ socketId: 'abc', channel: 'private-x' });
    assert.equal(r.status, 403);
    assert.equal(typeof (await r.json()).error, 'string');
    r = await post({ socketId: 'abc' });
    assert.equal(r.status, 400);
    const body = await r.json();
    assert.equal(body.error, 'Validation failed');
    assert.ok(body.details.some((d) => d.path === 'channel'));
    r = await post({ socketId: 'abc', channel: 'bad name' });
    assert.equal(r.status, 400);
    r = await fetch(`http://127.0.0.1:${srv.port}/ws/auth`, { method: 'POST', body: '{"socketId":"a","channel":"c"}}' });
    assert.equal(r.status, 400);
  });
});

test('auth_endpoint_without_secret_answers_500_for_private', T, async () => {
  await withServer(async (srv) => {
    const r = await fetch(`http://127.0.0.1:${srv.port}/ws/auth`, {
      method: 'POST', body: JSON.stringify({ socketId: 'abc', channel: 'private-x' }),
    });
    assert.equal(r.status, 500);
    assert.deepEqual(await r.json(), { error: 'authSecret is not configured' });
  });
});

test('garbage_subscribe_messages_never_break_the_server', { timeout: 60000 }, async () => {
  await withAuthServer(async (srv) => {
    const c = await connect(srv);
    let seed = 12345;
    const rnd = (n) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const pieces = ['private-', 'presence-', 'a', ':', '"', '\\', '{', '}', '[', ']', 'é', '😀', ' ', '\u0000',
      c.socketId, sign(c.socketId, 'private-a'), 'null', '1e999', '-', '.'];
    const word = () => Array.from({ length: rnd(8) }, () => pieces[rnd(pieces.length)]).join('');
    for (let i = 0; i < 1500; i++) {
      const kind = rnd(4);
      if (kind === 0) c.send(word());
      else if (kind === 1) c.send(JSON.stringify({ type: 'subscribe', channel: word(), auth: word(), channel_data: word() }));
      else if (kind === 2) c.send(JSON.stringify({ type: 'subscribe', channel: `presence-${word()}`, auth: word(), channel_data: JSON.stringify({ id: word(), info: word() }) }));
      else c.send(JSON.stringify({ type: ['message', 'unsubscribe', 'subscribe', word()][rnd(4)], channel: word(), event: word(), data: word() }));
    }
    await c.barrier();
    const h = await fetch(`http://127.0.0.1:${srv.port}/health`);
    assert.equal(h.status, 200);
    // The connection that sent all of it is still served.
    const ch = `private-after.${nonce()}`;
    c.send({ type: 'subscribe', channel: ch, auth: sign(c.socketId, ch) });
    assert.equal((await c.next(isSubReply(ch))).type, 'subscription_succeeded');
  });
});
