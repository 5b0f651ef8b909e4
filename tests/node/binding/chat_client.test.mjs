// The chat example on vxevents/client in a real browser (Debian's chromium driven by
// playwright-core; never a downloaded browser): two users' pages agree on who is online,
// messages flow; the connection is cut (a TCP relay in front of the app) while messages are
// published → both pages reconnect by themselves and show every message exactly once
// ("nothing missed"); the app restarts on the same port, losing its history → the pages say
// the gap could not be recovered, refetch the room's recent messages, and go on receiving.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startRelay } from '../../server/relay.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function startExample(port = 0) {
  const proc = spawn(process.execPath, [path.join(ROOT, 'examples', 'chat', 'server.mjs')], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', EVENTS_SECRET: 'chat-client-test-secret-0123456789abcdef' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`example did not start: ${out}`)), 10000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.stderr.on('data', (d) => (out += d));
    proc.on('exit', () => reject(new Error(`example exited: ${out}`)));
  });
  return { proc, ready, exited };
}

async function say(base, name, texts) {
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const cookie = res.headers.get('set-cookie').split(';')[0];
  for (const text of texts) {
    const r = await fetch(`${base}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie },
      body: JSON.stringify({ text }),
    });
    assert.equal(r.status, 200);
  }
}

const logLines = (page) => page.$$eval('#log div', (ds) => ds.map((d) => d.textContent));
const members = (page) => page.$$eval('#members li', (lis) => lis.map((li) => li.firstChild.textContent).sort());

test('chat_pages_on_the_client_reconnect_recover_every_message_once_and_report_lost_history', { timeout: 90000 }, async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  let ex = startExample();
  const port = await ex.ready;
  const direct = `http://127.0.0.1:${port}`;
  const relay = await startRelay(port);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 30000,
  });
  try {
    const pages = [];
    const errors = [];
    for (const name of ['Ada', 'Bob']) {
      const context = await browser.newContext(); // own cookies: two users
      const page = await context.newPage();
      page.setDefaultTimeout(10000);
      page.on('pageerror', (err) => errors.push(String(err)));
      await page.goto(relay.url);
      await page.fill('#name', name);
      await page.click('#login button');
      await page.waitForFunction((n) => document.getElementById('who').textContent === `Logged in as ${n}`, name);
      pages.push(page);
    }
    for (const page of pages) {
      await page.waitForFunction(() => document.querySelectorAll('#members li').length === 2);
      assert.deepEqual(await members(page), ['Ada', 'Bob'].map((n, i) => (page === pages[i] ? `${n} (you)` : n)).sort());
    }

    await say(direct, 'Carol', ['m1', 'm2']);
    for (const page of pages) await page.waitForFunction(() => /Carol: m2/.test(document.getElementById('log').textContent));

    // cut every connection through the relay, publish while the pages are away
    relay.cut();
    await say(direct, 'Carol', ['m3', 'm4', 'm5']);
    for (const page of pages) {
      await page.waitForFunction(() => /Reconnected: nothing missed/.test(document.getElementById('log').textContent));
    }
    await say(direct, 'Carol', ['m6']);
    for (const page of pages) {
      await page.waitForFunction(() => /Carol: m6/.test(document.getElementById('log').textContent));
      const carol = (await logLines(page)).filter((l) => l.startsWith('Carol: '));
      assert.deepEqual(carol, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'].map((m) => `Carol: ${m}`), 'every message exactly once, in order');
      assert.equal(await page.textContent('#status'), 'online');
    }
    await pages[0].screenshot({ path: path.join(ROOT, 'build', 'chat-client-recovered.png') });

    // restart the app on the same port: its history is gone
    ex.proc.kill('SIGTERM');
    await ex.exited;
    ex = startExample(port);
    await ex.ready;
    for (const page of pages) {
      await page.waitForFunction(() => /Reconnected: messages sent meanwhile could not be recovered/.test(document.getElementById('log').textContent), null, { timeout: 20000 });
      // and refetched the room's recent messages instead (from the new instance's stream)
      await page.waitForFunction(() => /Refetched \d+ recent messages?/.test(document.getElementById('log').textContent), null, { timeout: 10000 });
    }
    await say(direct, 'Carol', ['m7']);
    for (const page of pages) {
      await page.waitForFunction(() => /Carol: m7/.test(document.getElementById('log').textContent));
      await page.waitForFunction(() => document.querySelectorAll('#members li').length === 2);
    }
    await pages[1].screenshot({ path: path.join(ROOT, 'build', 'chat-client-restarted.png') });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await relay.close();
    ex.proc.kill('SIGKILL');
    await ex.exited;
  }
});
