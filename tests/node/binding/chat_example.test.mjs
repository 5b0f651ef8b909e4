// The chat example runs with one command and its flows work end to end: login, public room,
// presence list, private notification; SIGTERM closes it cleanly.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect } from './helpers.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function startExample() {
  const proc = spawn(process.execPath, [path.join(ROOT, 'examples', 'chat', 'server.mjs')], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`example did not start: ${out}`)), 5000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.stderr.on('data', (d) => (out += d));
  });
  return { proc, port, exited };
}

async function login(base, name) {
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const user = await res.json();
  const cookie = res.headers.get('set-cookie').split(';')[0];
  const post = async (url, body) => {
    const r = await fetch(`${base}${url}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie },
      body: JSON.stringify(body),
    });
    return r.json();
  };
  return { user, cookie, post };
}

test('chat_example_runs_and_serves_room_presence_and_private_notifications', async () => {
  const ex = startExample();
  try {
    const port = await ex.port;
    const base = `http://127.0.0.1:${port}`;
    assert.match(await (await fetch(base)).text(), /vxevents chat/);

    const alice = await login(base, 'Alice');
    const bob = await login(base, 'Bob');
    const wa = await connect(`ws://127.0.0.1:${port}/ws`);
    const wb = await connect(`ws://127.0.0.1:${port}/ws`);

    for (const [who, ws] of [
      [alice, wa],
      [bob, wb],
    ]) {
      assert.equal((await ws.subscribe('chat.lobby')).type, 'subscription_succeeded');
      const p = await who.post('/ws/auth', { socketId: ws.socketId, channel: 'presence-chat.lobby' });
      const ack = await ws.subscribe('presence-chat.lobby', p);
      assert.equal(ack.type, 'subscription_succeeded', JSON.stringify(ack));
      const q = await who.post('/ws/auth', { socketId: ws.socketId, channel: `private-user.${who.user.id}` });
      assert.equal((await ws.subscribe(`private-user.${who.user.id}`, q)).type, 'subscription_succeeded');
    }
    const added = await wa.waitFor((m) => m.event === 'member_added', 'Bob joining');
    assert.equal(added.data.info.name, 'Bob');

    await alice.post('/messages', { text: 'hello', socketId: wa.socketId });
    const msg = await wb.waitFor((m) => m.event === 'message.sent', 'the message at Bob');
    assert.equal(msg.data.text, 'hello');

    await alice.post('/poke', { to: bob.user.id });
    const note = await wb.waitFor((m) => m.event === 'notification', 'the poke at Bob');
    assert.equal(note.data.message, 'Alice poked you');

    const closing = wa.closed;
    ex.proc.kill('SIGTERM');
    assert.equal(await closing, 1001);
    assert.deepEqual(await ex.exited, { code: 0, signal: null });
  } finally {
    ex.proc.kill('SIGKILL');
  }
});
