// RFC 6455 conformance at the frame level, probed with hand-written frames over
// a raw socket: every protocol violation is answered with a close frame (1002,
// or 1007 for a close reason that is not UTF-8) before the connection ends
// (§7.1.7), never with a bare TCP close; close codes registered after the RFC
// are echoed; a ping gets its pong even when a close follows in the same read
// (§5.5.2).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { OP, connectRaw, encodeFrame, health, ms, waitFor, withServer, plain } from './helpers.mjs';

const T = { timeout: 20000 };

/** A masked client frame with a hand-made header: `len7` and `ext` as given. */
function rawHeaderFrame(b0, len7, ext = Buffer.alloc(0), payload = Buffer.alloc(0)) {
  const key = randomBytes(4);
  const masked = Buffer.from(payload.map((x, i) => x ^ key[i & 3]));
  return Buffer.concat([Buffer.from([b0, 0x80 | len7]), ext, key, masked]);
}

function u64(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

function closePayload(code, reason = Buffer.alloc(0)) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, Buffer.isBuffer(reason) ? reason : Buffer.from(reason)]);
}

/** Send `bytes` and expect a close frame with `code`, then the end of the connection. */
async function expectCloseCode(srv, bytes, code, what) {
  const c = await connectRaw(srv, { label: what });
  c.sock.write(bytes);
  const frame = await c.waitCloseFrame(ms(3000));
  assert.equal(frame.code, code, `${what}: close frame ${JSON.stringify(frame)}`);
  await c.waitEnd(ms(5000));
  return c;
}

const violations = [
  ['ping_with_126_byte_payload', () => rawHeaderFrame(0x89, 126, Buffer.from([0, 126]), Buffer.alloc(126, 0x61))],
  ['fragmented_ping', () => encodeFrame(OP.PING, 'abc', { fin: false })],
  ['fragmented_close', () => encodeFrame(OP.CLOSE, closePayload(1000), { fin: false })],
  ['close_with_126_byte_payload', () => rawHeaderFrame(0x88, 126, Buffer.from([0, 126]), closePayload(1000, 'r'.repeat(124)))],
  ['frame_length_2_pow_63', () => rawHeaderFrame(0x81, 127, u64(2n ** 63n))],
  ['frame_length_2_pow_64_minus_1', () => rawHeaderFrame(0x81, 127, u64(2n ** 64n - 1n))],
  ['non_minimal_16_bit_length', () => rawHeaderFrame(0x81, 126, Buffer.from([0, 5]), Buffer.from('{"a":'))],
  ['non_minimal_64_bit_length', () => rawHeaderFrame(0x81, 127, u64(200), Buffer.alloc(200, 0x20))],
  ['close_with_1_byte_payload', () => encodeFrame(OP.CLOSE, Buffer.from([0x03]))],
  ['close_with_unmasked_payload', () => encodeFrame(OP.CLOSE, closePayload(1000), { mask: false })],
  ['close_with_reserved_bit', () => encodeFrame(OP.CLOSE, closePayload(1000), { rsv: 4 })],
];

for (const [name, make] of violations) {
  test(`${name}_is_answered_with_close_1002`, T, async () => {
    await withServer(async (srv) => {
      await expectCloseCode(srv, make(), 1002, name);
      await waitFor(() => health(srv), (h) => h.connections === 0, ms(3000), 'the connection to be gone');
    });
  });
}

test('violation_split_across_reads_is_answered_with_close_1002', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv);
    const bytes = rawHeaderFrame(0x81, 127, u64(2n ** 63n));
    // The header arrives in three pieces; the verdict needs all of it.
    c.sock.write(bytes.subarray(0, 1));
    await c.expectNone(() => true, 100, 'anything after one header byte');
    c.sock.write(bytes.subarray(1, 5));
    await c.expectNone(() => true, 100, 'anything after five header bytes');
    c.sock.write(bytes.subarray(5));
    assert.equal((await c.waitCloseFrame()).code, 1002);
    await c.waitEnd(ms(5000));
  });
});

test('invalid_close_codes_are_answered_with_1002', T, async () => {
  await withServer(async (srv) => {
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]) {
      await expectCloseCode(srv, encodeFrame(OP.CLOSE, closePayload(code)), 1002, `close code ${code}`);
    }
  });
});

test('close_reason_that_is_not_utf8_is_answered_with_1007', T, async () => {
  await withServer(async (srv) => {
    await expectCloseCode(srv, encodeFrame(OP.CLOSE, closePayload(1000, Buffer.from([0xce, 0xba, 0xff]))), 1007, 'bad reason');
  });
});

test('close_codes_registered_after_the_rfc_are_echoed', T, async () => {
  await withServer(async (srv) => {
    for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]) {
      await expectCloseCode(srv, encodeFrame(OP.CLOSE, closePayload(code, 'bye κ')), code, `close code ${code}`);
    }
  });
});

test('close_without_payload_is_answered_with_an_empty_close', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv);
    c.sendFrame(OP.CLOSE, Buffer.alloc(0));
    const frame = await c.waitCloseFrame();
    assert.equal(frame.code, null, JSON.stringify(frame));
    await c.waitEnd(ms(5000));
  });
});

test('close_split_across_reads_is_echoed', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv);
    const bytes = encodeFrame(OP.CLOSE, closePayload(1012, 'restarting'));
    for (const [a, b] of [[0, 1], [1, 4], [4, 7], [7, bytes.length]]) {
      c.sock.write(bytes.subarray(a, b));
      if (b < bytes.length) await c.expectNone(() => true, 50, 'anything before the whole close frame');
    }
    assert.equal((await c.waitCloseFrame()).code, 1012);
    await c.waitEnd(ms(5000));
  });
});

test('ping_followed_by_close_in_the_same_read_gets_its_pong_first', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv, { replyClose: false });
    c.sock.write(Buffer.concat([encodeFrame(OP.PING, 'last words'), encodeFrame(OP.CLOSE, closePayload(1000))]));
    const frame = await c.waitCloseFrame();
    assert.equal(frame.code, 1000);
    const ops = c.frames.map((f) => f.opcode);
    assert.deepEqual(ops.slice(-2), [OP.PONG, OP.CLOSE], `frames after connected: ${JSON.stringify(c.frames)}`);
    await c.waitEnd(ms(5000));
  });
});

test('ping_then_violation_in_the_same_read_gets_pong_then_1002', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv, { replyClose: false });
    c.sock.write(Buffer.concat([encodeFrame(OP.PING, 'p'), encodeFrame(OP.PING, 'q', { fin: false })]));
    assert.equal((await c.waitCloseFrame()).code, 1002);
    assert.deepEqual(c.frames.slice(-2).map((f) => f.opcode), [OP.PONG, OP.CLOSE]);
  });
});

test('every_ping_of_a_burst_gets_its_own_pong_in_order', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv);
    const payloads = Array.from({ length: 50 }, (_, i) => `ping-${i}`);
    c.sock.write(Buffer.concat(payloads.map((p) => encodeFrame(OP.PING, p))));
    await waitFor(async () => c.pongs.length, (n) => n >= payloads.length, ms(3000), 'a pong for every ping');
    assert.deepEqual(c.pongs, payloads);
    // The connection still works.
    await c.subscribe('after-pings');
  });
});

test('ping_between_fragments_of_a_message_is_answered_and_the_message_arrives', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv);
    c.sock.write(Buffer.concat([
      encodeFrame(OP.TEXT, '{"type":"subscribe",', { fin: false }),
      encodeFrame(OP.PING, 'mid'),
      encodeFrame(OP.CONT, '"channel":"inter', { fin: false }),
      encodeFrame(OP.PONG, 'unsolicited'),
      encodeFrame(OP.CONT, 'leaved"}'),
    ]));
    assert.deepEqual(plain(await c.next()), { type: 'subscription_succeeded', channel: 'interleaved' });
    assert.ok(c.frames.some((f) => f.opcode === OP.PONG && f.length === 3), JSON.stringify(c.frames));
  });
});

test('data_after_a_close_frame_is_ignored', T, async () => {
  await withServer(async (srv) => {
    const c = await connectRaw(srv, { replyClose: false });
    c.sock.write(Buffer.concat([
      encodeFrame(OP.CLOSE, closePayload(1000)),
      encodeFrame(OP.TEXT, JSON.stringify({ type: 'subscribe', channel: 'too-late' })),
    ]));
    assert.equal((await c.waitCloseFrame()).code, 1000);
    await c.waitEnd(ms(5000));
    assert.equal(c.textFrames, 1, 'only the connected event: nothing answered after the close');
  });
});
