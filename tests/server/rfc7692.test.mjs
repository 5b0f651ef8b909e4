// RFC 7692 permessage-deflate negotiation, probed with raw handshakes: an offer
// with an unknown, repeated or invalid parameter is declined (§5) and the next
// offer is considered; an accepted server_max_window_bits is echoed
// (§7.1.2.1); a long list of offers is read whole.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import WebSocket from 'ws';
import { isEvent, ms, nonce, publish, rawHttp, withServer, wsAccept } from './helpers.mjs';

const T = { timeout: 30000 };

function offer(port, ext) {
  const key = randomBytes(16).toString('base64');
  const lines = [
    `GET /ws HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${key}`,
    'Sec-WebSocket-Version: 13',
    ...(Array.isArray(ext) ? ext : [ext]).map((v) => `Sec-WebSocket-Extensions: ${v}`),
  ];
  return { key, request: `${lines.join('\r\n')}\r\n\r\n` };
}

/** The Sec-WebSocket-Extensions answer to `ext` ('' when declined). */
async function negotiate(srv, ext) {
  const { key, request } = offer(srv.port, ext);
  const res = await rawHttp(srv.port, request);
  assert.equal(res.status, 101, res.raw);
  assert.equal(res.headers['sec-websocket-accept'], wsAccept(key));
  return res.headers['sec-websocket-extensions'] || '';
}

/** Split an extension answer into its parameters (lower-cased names). */
function params(answer) {
  const [name, ...rest] = answer.split(';').map((s) => s.trim());
  return { name, params: rest.map((p) => p.toLowerCase()).sort() };
}

const ACCEPTED = ['client_no_context_takeover', 'server_no_context_takeover'];

const declined = [
  'permessage-deflate; foo=bar',
  'permessage-deflate; x-unknown',
  'permessage-deflate; client_max_window_bits=7',
  'permessage-deflate; client_max_window_bits=16',
  'permessage-deflate; client_max_window_bits=08',
  'permessage-deflate; client_max_window_bits=',
  'permessage-deflate; client_max_window_bits=abc',
  'permessage-deflate; server_max_window_bits',
  'permessage-deflate; server_max_window_bits=7',
  'permessage-deflate; server_max_window_bits=16',
  'permessage-deflate; server_max_window_bits=10',
  'permessage-deflate; server_no_context_takeover=1',
  'permessage-deflate; client_no_context_takeover=true',
  'permessage-deflate; server_no_context_takeover; server_no_context_takeover',
  'permessage-deflate; client_max_window_bits; client_max_window_bits=10',
  'permessage-deflate; server_max_window_bits=15; server_max_window_bits=15',
  'permessage-deflate; server_max_window_bits="15',
  'permessage-deflate; ; server_no_context_takeover',
  'permessage-deflate;',
  'permessage-deflatex',
  'x-webkit-deflate-frame',
];

test('offers_with_unknown_repeated_or_invalid_parameters_are_declined', T, async () => {
  await withServer(async (srv) => {
    for (const ext of declined) {
      assert.equal(await negotiate(srv, ext), '', `offer ${JSON.stringify(ext)} must be declined`);
    }
  });
});

test('valid_offers_are_accepted_with_no_context_takeover_both_ways', T, async () => {
  await withServer(async (srv) => {
    for (const ext of [
      'permessage-deflate',
      'PerMessage-Deflate',
      'permessage-deflate; client_max_window_bits',
      'permessage-deflate; client_max_window_bits=8',
      'permessage-deflate; client_max_window_bits="10"',
      'permessage-deflate;client_max_window_bits=15',
      'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
      'permessage-deflate ; client_no_context_takeover',
      'x-webkit-deflate-frame, permessage-deflate',
    ]) {
      const answer = params(await negotiate(srv, ext));
      assert.equal(answer.name, 'permessage-deflate', `offer ${JSON.stringify(ext)}`);
      assert.deepEqual(answer.params, ACCEPTED, `offer ${JSON.stringify(ext)}`);
    }
  });
});

test('server_max_window_bits_15_is_accepted_and_echoed', T, async () => {
  await withServer(async (srv) => {
    for (const ext of ['permessage-deflate; server_max_window_bits=15', 'permessage-deflate; server_max_window_bits="15"; client_max_window_bits']) {
      const answer = params(await negotiate(srv, ext));
      assert.equal(answer.name, 'permessage-deflate', `offer ${JSON.stringify(ext)}`);
      assert.deepEqual(answer.params, [...ACCEPTED, 'server_max_window_bits=15'].sort(), `offer ${JSON.stringify(ext)}`);
    }
  });
});

test('the_first_acceptable_offer_of_a_long_list_is_taken', T, async () => {
  await withServer(async (srv) => {
    const bad = `permessage-deflate; server_max_window_bits=9; x-padding=${'p'.repeat(200)}`;
    const good = 'permessage-deflate; server_max_window_bits=15; client_max_window_bits';
    const list = `${bad}, ${good}, permessage-deflate`;
    assert.ok(list.length > 255, `the list is ${list.length} bytes`);
    const answer = params(await negotiate(srv, list));
    assert.deepEqual(answer.params, [...ACCEPTED, 'server_max_window_bits=15'].sort(), list);
    // The same offers spread over repeated header lines.
    const again = params(await negotiate(srv, [bad, good]));
    assert.deepEqual(again.params, [...ACCEPTED, 'server_max_window_bits=15'].sort());
    // Without an acceptable one, nothing.
    assert.equal(await negotiate(srv, [bad, bad, bad]), '');
  });
});

test('ws_client_offering_server_max_window_bits_15_gets_compressed_events', T, async () => {
  await withServer(async (srv) => {
    const ch = `w15.${nonce()}`;
    const ws = new WebSocket(srv.wsUrl, { perMessageDeflate: { serverMaxWindowBits: 15, clientMaxWindowBits: true, threshold: 0 } });
    const msgs = [];
    let answer = '';
    ws.on('upgrade', (res) => {
      answer = res.headers['sec-websocket-extensions'] || '';
    });
    ws.on('message', (d) => msgs.push(JSON.parse(d)));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    try {
      assert.match(answer, /server_max_window_bits=15/);
      assert.match(ws.extensions, /permessage-deflate/);
      ws.send(JSON.stringify({ type: 'subscribe', channel: ch }));
      const waitMsg = async (pred) => {
        const t0 = Date.now();
        while (Date.now() - t0 < ms(3000)) {
          const i = msgs.findIndex(pred);
          if (i >= 0) return msgs.splice(i, 1)[0];
          await new Promise((r) => setTimeout(r, 10));
        }
        throw new Error(`no matching message in ${JSON.stringify(msgs).slice(0, 300)}`);
      };
      await waitMsg((m) => m.type === 'subscription_succeeded');
      const text = 'compressible '.repeat(500);
      await publish(srv, { channel: ch, event: 'big', data: { text } });
      assert.equal((await waitMsg(isEvent(ch, 'big'))).data.text, text);
    } finally {
      ws.close();
    }
  });
});

test('client_compressing_with_a_9_bit_window_is_understood', T, async () => {
  await withServer(async (srv) => {
    // client_max_window_bits=9 in the offer is a hint the server may ignore;
    // whatever window the client then uses, the server inflates it.
    const ws = new WebSocket(srv.wsUrl, { perMessageDeflate: { clientMaxWindowBits: 9, threshold: 0 } });
    const got = new Promise((resolve) => ws.on('message', (d) => {
      const m = JSON.parse(d);
      if (m.type === 'subscription_succeeded') resolve(m);
    }));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    try {
      assert.match(ws.extensions, /permessage-deflate/);
      const channel = `nine-bit-window-${'x'.repeat(150)}`;
      ws.send(JSON.stringify({ type: 'subscribe', channel }));
      assert.equal((await got).channel, channel);
    } finally {
      ws.close();
    }
  });
});
