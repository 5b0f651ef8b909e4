// The chat example runs with one command and its flows work end to end: login, public room,
// presence list, private notification; SIGTERM closes it cleanly. Its page works in a real
// browser (Debian's chromium driven by playwright-core; never a downloaded browser): the
// forms show and hide with login, and pressing Join twice lists the tab once.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { connect, sleep } from './helpers.mjs';

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

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Resolves once `fn()` returns a truthy value (polling every 20 ms), bounded by `ms`. */
async function until(fn, what, ms = 5000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test('chat_page_hides_forms_by_login_and_lists_a_tab_once_after_joining_twice', async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  const ex = startExample();
  fs.mkdirSync(path.join(ROOT, 'build'), { recursive: true });
  const profile = fs.mkdtempSync(path.join(ROOT, 'build', 'chromium-profile-'));
  let context = null;
  try {
    const port = await ex.port;
    const base = `http://127.0.0.1:${port}`;
    // A fresh profile each run (launchPersistentContext passes it as --user-data-dir).
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(5000);
    const errors = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    const logins = [];
    page.on('request', (req) => {
      if (req.method() === 'POST' && new URL(req.url()).pathname === '/login') logins.push(req.url());
    });

    await page.goto(base);
    assert.equal(await page.isVisible('#login'), true, 'join form visible before login');
    assert.equal(await page.isVisible('#send'), false, 'send box hidden before login');

    await page.fill('#name', 'Alice');
    // Two presses in a row, the second while the first login is still on its way.
    await page.click('#login button', { clickCount: 2, delay: 0 });

    await page.waitForFunction(() => document.getElementById('who').textContent === 'Logged in as Alice');
    await page.waitForFunction(() => /Alice \(you\)/.test(document.getElementById('members').textContent));
    assert.equal(await page.isVisible('#login'), false, 'join form hidden after login');
    assert.equal(await page.isVisible('#send'), true, 'send box visible after login');

    // The server side has settled too: one socket in the room, one member present.
    const stats = await until(async () => {
      const s = await (await fetch(`${base}/stats`)).json();
      return s.lobbySubscribers >= 1 && s.online.length >= 1 ? s : null;
    }, 'the page to join the room');
    assert.equal(logins.length, 1, `one login request (got ${logins.length})`);
    assert.equal(stats.lobbySubscribers, 1);
    assert.deepEqual(stats.online.map((m) => m.info.name), ['Alice']);
    assert.deepEqual(await page.$$eval('#members li', (lis) => lis.map((li) => li.textContent)), ['Alice (you)']);

    // The page still works: a message from another user shows up in the log.
    const bob = await fetch(`${base}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Bob' }),
    });
    const cookie = bob.headers.get('set-cookie').split(';')[0];
    await fetch(`${base}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie },
      body: JSON.stringify({ text: 'hi Alice' }),
    });
    await page.waitForFunction(() => /Bob: hi Alice/.test(document.getElementById('log').textContent));

    await page.screenshot({ path: path.join(ROOT, 'build', 'chat-page.png') });
    assert.deepEqual(errors, []);
  } finally {
    if (context) await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
    ex.proc.kill('SIGKILL');
    await ex.exited;
  }
});
