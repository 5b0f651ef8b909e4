// Unsubscribing stops delivery; subscribing twice does not deliver twice.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, nonce, publish, withServer } from './helpers.mjs';

const T = { timeout: 20000 };

test('unsubscribe_stops_delivery_to_that_socket_only', T, async () => {
  await withServer(async (srv) => {
    const ch = `u-${nonce()}`;
    const leaver = await connect(srv, { label: 'leaver' });
    const stayer = await connect(srv, { label: 'stayer' });
    await leaver.subscribe(ch);
    await stayer.subscribe(ch);

    await publish(srv, { channel: ch, event: 'before', data: 1 });
    await leaver.next(isEvent(ch, 'before'));
    await stayer.next(isEvent(ch, 'before'));

    leaver.send({ type: 'unsubscribe', channel: ch });
    await leaver.barrier();

    await publish(srv, { channel: ch, event: 'after', data: 2 });
    await stayer.next(isEvent(ch, 'after'));
    await leaver.expectNone((m) => m.type === 'event', 300, 'event after unsubscribe');
    await leaver.expectNone((m) => m.type === 'error' || m.type === 'subscription_error', 0, 'error for a valid unsubscribe');
  });
});

test('unsubscribe_then_subscribe_again_resumes_delivery', T, async () => {
  await withServer(async (srv) => {
    const ch = `u-${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    c.send({ type: 'unsubscribe', channel: ch });
    await c.barrier();
    await c.subscribe(ch);
    await publish(srv, { channel: ch, event: 'back', data: 1 });
    await c.next(isEvent(ch, 'back'));
    await c.expectNone(isEvent(ch, 'back'), 250, 'duplicate');
  });
});

test('subscribing_twice_is_idempotent_and_delivers_once', T, async () => {
  await withServer(async (srv) => {
    const ch = `twice-${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    c.send({ type: 'subscribe', channel: ch });
    await c.barrier();
    // A second acknowledgement is fine, an error is not.
    await c.expectNone((m) => m.type === 'subscription_error' || m.type === 'error', 0, 'error for a repeated subscribe');

    await publish(srv, { channel: ch, event: 'once', data: 1 });
    await c.next(isEvent(ch, 'once'));
    await c.expectNone(isEvent(ch, 'once'), 300, 'second delivery');

    // One unsubscribe undoes both subscribes.
    c.send({ type: 'unsubscribe', channel: ch });
    await c.barrier();
    await publish(srv, { channel: ch, event: 'gone', data: 1 });
    await c.expectNone((m) => m.type === 'event', 300, 'event after unsubscribe');
  });
});

test('unsubscribe_from_channel_never_joined_keeps_connection_usable', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    c.send({ type: 'unsubscribe', channel: `never-${nonce()}` });
    await c.barrier();
    const ch = `u-${nonce()}`;
    await c.subscribe(ch);
    await publish(srv, { channel: ch, event: 'ok', data: 1 });
    await c.next(isEvent(ch, 'ok'));
    await c.expectNone(isEvent(ch, 'ok'), 200, 'duplicate');
    assert.equal(c.ws.readyState, 1);
  });
});
