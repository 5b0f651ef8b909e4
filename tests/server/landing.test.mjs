// The landing page (GET /): served by the standalone server from the binary, with no outside
// resource; in headless Chromium (Debian's chromium driven by playwright-core, never a
// downloaded browser) it connects, subscribes, publishes through its own box with the API
// key and shows the event in its log. The screenshot goes to build/test-output/.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { connect, isEvent, nonce, rawHttp, REPO_ROOT, withServer } from './helpers.mjs';

const T = { timeout: 60000 };
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(REPO_ROOT, 'build', 'test-output');
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function withBrowser(fn) {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  fs.mkdirSync(OUT, { recursive: true });
  const profile = fs.mkdtempSync(path.join(REPO_ROOT, 'build', 'chromium-profile-'));
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(8000);
    await fn(page);
  } finally {
    if (context) await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

test('landing_page_subscribes_publishes_with_the_api_key_and_shows_the_event', T, async () => {
  await withServer(async (srv) => {
    await withBrowser(async (page) => {
      const errors = [];
      const outside = [];
      page.on('pageerror', (err) => errors.push(String(err)));
      page.on('request', (req) => {
        const u = new URL(req.url());
        if (u.host !== `127.0.0.1:${srv.port}`) outside.push(req.url());
      });
      await page.goto(srv.url + '/');
      await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
      assert.match(await page.textContent('#url'), new RegExp(`ws://127\\.0\\.0\\.1:${srv.port}/ws$`));
      assert.match(await page.textContent('#sid'), /^socket [0-9a-f]{32}$/);

      const channel = `landing-${nonce()}`;
      await page.fill('#channel', channel);
      await page.click('#subscribe');
      await page.waitForFunction((ch) => document.getElementById('log').textContent.includes(
        `"type":"subscription_succeeded","channel":"${ch}"`), channel);

      // Another client on the channel sees the page's publish too.
      const other = await connect(srv);
      await other.subscribe(channel);

      await page.fill('#apikey', srv.apiKey);
      await page.fill('#pub-channel', channel);
      await page.fill('#pub-event', 'order.created');
      await page.fill('#pub-data', '{"orderId": 42}');
      await page.click('#publish');
      await page.waitForFunction(() => document.getElementById('pub-status').textContent.startsWith('200'));
      await page.waitForFunction((ch) => document.getElementById('log').textContent.includes(
        `"channel":"${ch}","event":"order.created","data":{"orderId":42}`), channel);
      const m = await other.next(isEvent(channel, 'order.created'));
      assert.deepEqual(m.data, { orderId: 42 });

      // A wrong key shows the 401 instead.
      await page.fill('#apikey', 'wrong');
      await page.click('#publish');
      await page.waitForFunction(() => document.getElementById('pub-status').textContent.startsWith('401'));
      await page.fill('#apikey', srv.apiKey);
      await page.click('#publish');
      await page.waitForFunction(() => document.getElementById('pub-status').textContent.startsWith('200'));

      await page.screenshot({ path: path.join(OUT, 'landing-page.png'), fullPage: true });
      assert.deepEqual(errors, []);
      assert.deepEqual(outside, [], 'the page loads nothing from elsewhere');
    });
  });
});

test('landing_page_is_html_self_contained_and_can_be_turned_off', T, async () => {
  await withServer(async (srv) => {
    const res = await fetch(srv.url + '/');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    const html = await res.text();
    assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=/i, 'no outside resource');
    assert.match(html, /const WS_PATH = "\/ws";/);
    const head = await rawHttp(srv.port, 'HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
  });
  await withServer({ args: ['--landing-page', '0'] }, async (srv) => {
    assert.equal((await fetch(srv.url + '/')).status, 404);
  });
});

test('with_path_slash_upgrades_are_the_websocket_and_a_plain_get_is_the_page', T, async () => {
  await withServer({ args: ['--path', '/'] }, async (srv) => {
    const c = await connect(srv, { url: `ws://127.0.0.1:${srv.port}/` });
    await c.subscribe(`root-${nonce()}`);
    const res = await fetch(srv.url + '/');
    assert.equal(res.status, 200);
    assert.match(await res.text(), /const WS_PATH = "\/";/);
    await withBrowser(async (page) => {
      await page.goto(srv.url + '/');
      await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
    });
  });
  await withServer({ args: ['--path', '/', '--landing-page', '0'] }, async (srv) => {
    assert.equal((await fetch(srv.url + '/')).status, 426);
  });
});
