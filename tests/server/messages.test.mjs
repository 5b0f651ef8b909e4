// Client → server messages: ping, bad JSON, unknown types, bad channels.
// A bad message earns an error message and leaves the connection open.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, nonce, publish, withServer, plain } from './helpers.mjs';

const T = { timeout: 20000 };

const isError = (m) => m.type === 'error';
const isSubAnswer = (m) => m.type === 'subscription_succeeded' || m.type === 'subscription_error';

async function expectUsable(srv, c) {
  const ch = `usable-${nonce()}`;
  await c.subscribe(ch);
  await publish(srv, { channel: ch, event: 'still-here', data: 1 });
  await c.next(isEvent(ch, 'still-here'));
  assert.equal(c.ws.readyState, 1, 'connection is still open');
}

test('ping_is_answered_with_pong', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (let i = 0; i < 3; i++) {
      c.send({ type: 'ping' });
      assert.deepEqual(await c.next(), { type: 'pong' });
    }
  });
});

test('malformed_json_gets_error_and_connection_stays_usable', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (const bad of ['{"type":"subscribe",', 'not json at all', '', '{"type":"subscribe" "channel":"x"}']) {
      c.send(bad);
      const m = await c.next(undefined, undefined, `the answer to ${JSON.stringify(bad)}`);
      assert.equal(m.type, 'error', `answer to ${JSON.stringify(bad)}: ${JSON.stringify(m)}`);
      assert.equal(typeof m.error, 'string');
      assert.ok(m.error.length > 0);
    }
    await expectUsable(srv, c);
  });
});

test('json_with_trailing_garbage_is_malformed', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    c.send('{"type":"subscribe","channel":"trailing"}}');
    const m = await c.next();
    assert.equal(m.type, 'error', `answer: ${JSON.stringify(m)}`);
    await expectUsable(srv, c);
  });
});

test('json_that_is_not_an_object_gets_error', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (const bad of ['[]', '42', '"subscribe"', 'null', '{"type":42}', '{}']) {
      c.send(bad);
      const m = await c.next(undefined, undefined, `the answer to ${bad}`);
      assert.equal(m.type, 'error', `answer to ${bad}: ${JSON.stringify(m)}`);
    }
    await expectUsable(srv, c);
  });
});

test('unknown_message_type_gets_error', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    c.send({ type: 'dance', channel: 'x' });
    const m = await c.next();
    assert.equal(m.type, 'error', JSON.stringify(m));
    assert.equal(typeof m.error, 'string');
    await expectUsable(srv, c);
  });
});

test('subscribe_without_channel_is_refused', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (const msg of [{ type: 'subscribe' }, { type: 'subscribe', channel: 42 }, { type: 'subscribe', channel: null }, { type: 'subscribe', channel: ['a'] }]) {
      c.send(msg);
      const m = await c.next(undefined, undefined, `the answer to ${JSON.stringify(msg)}`);
      assert.ok(m.type === 'error' || m.type === 'subscription_error', `answer to ${JSON.stringify(msg)}: ${JSON.stringify(m)}`);
    }
    await expectUsable(srv, c);
  });
});

test('invalid_channel_names_get_subscription_error', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    const bad = [
      ['empty', ''],
      ['201 bytes', 'a'.repeat(201)],
      ['space', 'has space'],
      ['leading space', ' lead'],
      ['tab', 'tab\there'],
      ['newline', 'new\nline'],
      ['unicode', 'café'],
      ['emoji', 'ch-🎉'],
      ['slash-star', 'a*b'],
      ['hash', 'a#b'],
      ['quote', 'a"b'],
      ['backslash', 'a\\b'],
      ['198 ascii + 2-byte char (201 bytes)', `${'a'.repeat(199)}é`],
    ];
    for (const [what, channel] of bad) {
      c.send({ type: 'subscribe', channel });
      const m = await c.next(undefined, undefined, `the answer to subscribing to ${what}`);
      assert.equal(m.type, 'subscription_error', `${what} channel answered ${JSON.stringify(m).slice(0, 300)}`);
      assert.equal(typeof m.error, 'string', `${what}: error reason`);
    }
    // None of them were joined: a broadcast to a bad name cannot reach us.
    await expectUsable(srv, c);
  });
});

test('channel_name_with_nul_byte_is_refused_not_truncated', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    // JSON can carry U+0000; a C string cannot. "nul\u0000tail" must not
    // silently become a subscription to "nul".
    c.send({ type: 'subscribe', channel: 'nul\u0000tail' });
    const m = await c.next(undefined, undefined, 'the answer to a channel with a NUL byte');
    assert.equal(m.type, 'subscription_error', `answered ${JSON.stringify(m)}`);
    await publish(srv, { channel: 'nul', event: 'leak', data: 1 });
    await c.expectNone((x) => x.type === 'event', 250, 'event of the truncated channel name');
  });
});

test('valid_channel_names_at_the_edges_are_accepted', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    const good = ['x', 'a'.repeat(200), 'AZaz09_-=@,.;:/', 'orders/eu-west:1;v=2@x,y.z'];
    for (const channel of good) {
      c.send({ type: 'subscribe', channel });
      const m = await c.next(isSubAnswer, undefined, `the answer to ${channel.slice(0, 30)}`);
      assert.deepEqual(plain(m), { type: 'subscription_succeeded', channel });
    }
    await publish(srv, { channel: 'a'.repeat(200), event: 'long', data: 1 });
    await c.next(isEvent('a'.repeat(200), 'long'));
  });
});

test('private_and_presence_channels_get_subscription_error', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (const channel of ['private-x', 'presence-x', 'private-orders', 'presence-room-1']) {
      c.send({ type: 'subscribe', channel });
      const m = await c.next(undefined, undefined, `the answer to ${channel}`);
      assert.equal(m.type, 'subscription_error', `${channel} answered ${JSON.stringify(m)}`);
      assert.equal(m.channel, channel);
      assert.equal(typeof m.error, 'string');
    }
    // Even with something that looks like an auth token.
    c.send({ type: 'subscribe', channel: 'private-y', auth: `${c.socketId}:${'0'.repeat(64)}` });
    const m = await c.next();
    assert.equal(m.type, 'subscription_error', JSON.stringify(m));
    await publish(srv, { channel: 'private-x', event: 'secret', data: 1 });
    await c.expectNone((x) => x.type === 'event', 250, 'event on a refused channel');
    await expectUsable(srv, c);
  });
});

test('many_bad_messages_in_a_row_do_not_close_the_connection', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (let i = 0; i < 100; i++) c.send(i % 2 ? '{oops' : { type: 'nope', i });
    for (let i = 0; i < 100; i++) await c.next(isError, undefined, `error #${i}`);
    await expectUsable(srv, c);
  });
});
