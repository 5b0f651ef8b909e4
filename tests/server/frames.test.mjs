// Frame-level limits and violations: the server closes with the documented
// code (1009 too big, 1007 bad UTF-8, 1002 protocol violation).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OP, connect, connectRaw, withServer, plain } from './helpers.mjs';

const T = { timeout: 20000 };
const SMALL = { args: ['--max-payload', '1024'] };

/** A subscribe message padded with JSON whitespace to exactly `n` bytes. */
function paddedSubscribe(channel, n) {
  const core = JSON.stringify({ type: 'subscribe', channel });
  assert.ok(core.length + 2 <= n);
  return `{${' '.repeat(n - core.length)}${core.slice(1)}`;
}

test('message_of_exactly_max_payload_is_accepted', T, async () => {
  await withServer(SMALL, async (srv) => {
    const c = await connect(srv);
    const msg = paddedSubscribe('at-limit', 1024);
    assert.equal(Buffer.byteLength(msg), 1024);
    c.send(msg);
    assert.deepEqual(plain(await c.next()), { type: 'subscription_succeeded', channel: 'at-limit' });
  });
});

test('frame_over_max_payload_closes_with_1009', T, async () => {
  await withServer(SMALL, async (srv) => {
    const c = await connect(srv);
    c.send(paddedSubscribe('too-big', 1025));
    const { code } = await c.waitClose();
    assert.equal(code, 1009);
  });
});

test('large_frame_far_over_max_payload_closes_with_1009', T, async () => {
  await withServer(SMALL, async (srv) => {
    const c = await connect(srv);
    c.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(200000) }));
    const { code } = await c.waitClose();
    assert.equal(code, 1009);
  });
});

test('fragmented_message_is_reassembled', T, async () => {
  await withServer(SMALL, async (srv) => {
    const c = await connect(srv);
    c.ws.send('{"type":"subscribe",', { fin: false });
    c.ws.send('"channel":"frag', { fin: false });
    c.ws.send('mented"}', { fin: true });
    assert.deepEqual(plain(await c.next()), { type: 'subscription_succeeded', channel: 'fragmented' });
  });
});

test('fragmented_message_over_max_payload_closes_with_1009', T, async () => {
  await withServer(SMALL, async (srv) => {
    const c = await connect(srv);
    // Each fragment is under the limit, the message is not.
    c.ws.send(`{"type":"ping","pad":"${'x'.repeat(600)}`, { fin: false });
    c.ws.send(`${'y'.repeat(600)}"}`, { fin: true });
    const { code } = await c.waitClose();
    assert.equal(code, 1009);
  });
});

test('invalid_utf8_text_frame_closes_with_1007', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    // {"type":"ping","x":"<0xC3 0x28>"}: 0xC3 must be followed by a continuation byte.
    const bytes = Buffer.concat([Buffer.from('{"type":"ping","x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    c.ws.send(bytes, { binary: false });
    const { code } = await c.waitClose();
    assert.equal(code, 1007);
    await c.expectNone((m) => m.type === 'pong', 0, 'pong for an invalid message');
  });
});

test('overlong_utf8_and_surrogates_close_with_1007', T, async () => {
  await withServer(async (srv) => {
    for (const bad of [
      [0xc0, 0xaf], // overlong "/"
      [0xed, 0xa0, 0x80], // UTF-16 surrogate half
      [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
      [0xff],
    ]) {
      const c = await connect(srv);
      c.ws.send(Buffer.concat([Buffer.from('{"type":"ping","x":"'), Buffer.from(bad), Buffer.from('"}')]), { binary: false });
      const { code } = await c.waitClose();
      assert.equal(code, 1007, `bytes ${Buffer.from(bad).toString('hex')}`);
    }
  });
});

test('utf8_split_across_fragments_is_accepted', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    const euro = Buffer.from('€'); // e2 82 ac
    c.ws.send(Buffer.concat([Buffer.from('{"type":"ping","x":"'), euro.subarray(0, 1)]), { binary: false, fin: false });
    c.ws.send(Buffer.concat([euro.subarray(1), Buffer.from('"}')]), { fin: true });
    assert.deepEqual(await c.next(), { type: 'pong' });
  });
});

async function expectProtocolClose(srv, send, what) {
  const raw = await connectRaw(srv, { label: what });
  send(raw);
  const frame = await raw.waitCloseFrame();
  assert.equal(frame.code, 1002, `${what}: close code`);
  await raw.expectNone((m) => m.type === 'pong', 0, `pong for the offending frame (${what})`);
  raw.destroy();
}

test('unmasked_client_frame_closes_with_1002', T, async () => {
  await withServer(async (srv) => {
    await expectProtocolClose(srv, (r) => r.sendFrame(OP.TEXT, '{"type":"ping"}', { mask: false }), 'unmasked frame');
  });
});

test('reserved_bits_close_with_1002', T, async () => {
  await withServer(async (srv) => {
    await expectProtocolClose(srv, (r) => r.sendFrame(OP.TEXT, '{"type":"ping"}', { rsv: 4 }), 'RSV1 set');
    await expectProtocolClose(srv, (r) => r.sendFrame(OP.TEXT, '{"type":"ping"}', { rsv: 1 }), 'RSV3 set');
  });
});

test('unknown_opcode_closes_with_1002', T, async () => {
  await withServer(async (srv) => {
    await expectProtocolClose(srv, (r) => r.sendFrame(0x3, 'x'), 'opcode 3');
    await expectProtocolClose(srv, (r) => r.sendFrame(0xb, ''), 'opcode 0xB');
  });
});

test('client_close_frame_is_echoed_and_connection_ends', T, async () => {
  await withServer(async (srv) => {
    const raw = await connectRaw(srv);
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(1000);
    raw.sendFrame(OP.CLOSE, payload);
    await raw.waitEnd();
    assert.ok(raw.closeFrame, 'server answered no close frame');
    assert.equal(raw.closeFrame.code, 1000);
  });
});

test('client_ping_frame_is_answered_with_pong_frame', T, async () => {
  await withServer(async (srv) => {
    const raw = await connectRaw(srv);
    raw.sendFrame(OP.PING, 'hello');
    await raw.barrier();
    assert.ok(raw.frames.some((f) => f.opcode === OP.PONG && f.length === 5), `frames: ${JSON.stringify(raw.frames)}`);
  });
});
