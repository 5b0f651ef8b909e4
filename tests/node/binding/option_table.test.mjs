// The Node options and the core's options table cannot drift: every table row with a Node
// name is accepted by eventsPlugin() and declared in index.d.ts's EventsPluginOptions, and the
// table's bounds are the ones enforced (min-1 and max+1 refused, naming the option).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { eventsPlugin, getEvents, closeEvents } from 'vxevents';
import { connect, startApp } from './helpers.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const require = createRequire(import.meta.url);
const { TABLE } = require(path.join(ROOT, 'bindings-node', 'lib', 'options.cjs'));
const NODE_ROWS = TABLE.filter((r) => r.node);

/** A value inside the row's bounds. */
function good(row) {
  switch (row.type) {
    case 'bool':
      return !row.default;
    case 'path':
      return '/p';
    case 'redis':
      return 'redis://127.0.0.1:1';
    case 'secret':
    case 'string':
      return 'x'.repeat(Math.max(row.min, 1));
    default:
      return row.min;
  }
}

/** Values just outside the row's bounds, with the code the core gives them. */
function outside(row) {
  switch (row.type) {
    case 'uint':
    case 'size':
      return [...(row.min > 0 ? [[row.min - 1, 'EINVAL']] : []), [row.max + 1, 'EINVAL']];
    case 'secret':
      return [['x'.repeat(row.min - 1), 'ESECRET'], ['x'.repeat(row.max + 1), 'EINVAL']];
    case 'path':
      return [['/' + 'p'.repeat(row.max), 'EINVAL']];
    case 'redis':
      return [['redis://' + 'h'.repeat(row.max), 'EINVAL']];
    case 'string':
      // An empty string means "unset" (the default), so only the upper bound is outside.
      return [['x'.repeat(row.max + 1), 'EINVAL']];
    default:
      return [];
  }
}

function declaredOptions() {
  const dts = fs.readFileSync(path.join(ROOT, 'bindings-node', 'index.d.ts'), 'utf8');
  const body = dts.match(/export interface EventsPluginOptions \{([\s\S]*?)\n\}/);
  assert.ok(body, 'index.d.ts declares EventsPluginOptions');
  // Top-level members only: two spaces of indent, then `name?:`.
  return new Set([...body[1].matchAll(/^ {2}([A-Za-z]+)\?:/gm)].map((m) => m[1]));
}

test('the_table_reaches_node_with_compression_and_historySize', () => {
  const names = NODE_ROWS.map((r) => r.node);
  for (const n of ['compression', 'historySize', 'historyTtl', 'historyMaxBytes', 'authSecret', 'redis', 'maxPayloadSize']) assert.ok(names.includes(n), n);
});

test('every_row_with_a_node_name_is_accepted_and_declared', () => {
  const declared = declaredOptions();
  for (const row of NODE_ROWS) {
    assert.equal(typeof eventsPlugin({ [row.node]: good(row) }), 'function', row.node);
    assert.ok(declared.has(row.node), `index.d.ts EventsPluginOptions declares ${row.node}`);
  }
  // And the other way: everything declared is an option eventsPlugin() knows.
  for (const name of declared) {
    const value = { driver: 'ws', sse: true, authorizer: () => true, listen: null, onConnect: () => {} }[name];
    const row = NODE_ROWS.find((r) => r.node === name);
    const options = { [name]: row ? good(row) : value };
    if (name.startsWith('on')) options[name] = () => {};
    assert.equal(typeof eventsPlugin(options), 'function', name);
  }
});

test('the_tables_bounds_are_enforced_naming_the_option', () => {
  let checked = 0;
  for (const row of NODE_ROWS) {
    for (const [value, code] of outside(row)) {
      assert.throws(
        () => eventsPlugin({ [row.node]: value }),
        (err) => {
          assert.equal(err.code, code, `${row.node}: ${String(value).slice(0, 20)}`);
          assert.match(err.message, new RegExp(`option ${row.node === 'path' ? 'path' : row.node}\\b`));
          return true;
        },
      );
      checked++;
    }
    if (row.type === 'uint' || row.type === 'size') {
      assert.equal(typeof eventsPlugin({ [row.node]: row.max }), 'function', `${row.node} max`);
      assert.throws(() => eventsPlugin({ [row.node]: 1.5 }), new RegExp(`option ${row.node}`));
      assert.throws(() => eventsPlugin({ [row.node]: String(row.min) }), new RegExp(`option ${row.node} must be a number`));
    }
  }
  assert.ok(checked > NODE_ROWS.length, `${checked} out-of-bounds values checked`);
});

test('getEvents_refuses_out_of_bounds_with_the_cores_message', async () => {
  const row = NODE_ROWS.find((r) => r.node === 'historySize');
  await assert.rejects(getEvents({ historySize: row.max + 1 }), (err) => {
    assert.equal(err.code, 'EINVAL');
    assert.match(err.message, new RegExp(`option historySize must be ${row.min} to ${row.max}`));
    return true;
  });
  await closeEvents();
});

test('compression_reaches_the_core', async () => {
  // `ws` offers permessage-deflate; the core takes it unless compression is false.
  for (const [options, extensions] of [[{}, /^permessage-deflate/], [{ compression: false }, /^$/]]) {
    const ctx = await startApp(options);
    try {
      const c = await connect(ctx.wsUrl);
      assert.match(c.ws.extensions, extensions, JSON.stringify(options));
      await c.close();
    } finally {
      await ctx.app.close();
    }
  }
});

/** A raw SSE stream on the app's port (a real socket, so a Last-Event-ID header can be sent). */
function sseStream(port, path, headers = '') {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`);
      resolve(sock);
    });
    sock.text = '';
    sock.on('data', (d) => {
      sock.text += d.toString('utf8');
      sock.emit('text');
    });
    sock.on('error', reject);
  });
}

/** The stream's messages ({id, msg}) once `pred` holds for them; bounded. */
function messagesWhen(sock, pred, what, ms = 3000) {
  const parse = () =>
    sock.text
      .split('\n\n')
      .map((block) => ({ id: /^id: (.*)$/m.exec(block)?.[1], data: /^data: (.*)$/m.exec(block)?.[1] }))
      .filter((b) => b.data)
      .map((b) => ({ id: b.id, msg: JSON.parse(b.data) }));
  return new Promise((resolve, reject) => {
    const check = () => {
      const all = parse();
      if (!pred(all)) return;
      clearTimeout(timer);
      sock.off('text', check);
      resolve(all);
    };
    const timer = setTimeout(() => {
      sock.off('text', check);
      reject(new Error(`timed out waiting for ${what}; got ${sock.text}`));
    }, ms);
    sock.on('text', check);
    check();
  });
}

test('historySize_reaches_the_core', async () => {
  for (const [options, replayed] of [[{}, 1], [{ historySize: 0 }, 0]]) {
    const ctx = await startApp({ sse: true, ...options });
    try {
      const s1 = await sseStream(ctx.port, '/events?channels=h');
      await messagesWhen(s1, (m) => m.some((x) => x.msg.type === 'subscription_succeeded'), 'the subscription');
      await ctx.app.events.broadcast('h', 'n', 1);
      const first = await messagesWhen(s1, (m) => m.some((x) => x.msg.event === 'n'), 'event 1');
      const lastId = first.find((x) => x.msg.event === 'n').id;
      s1.destroy();
      await ctx.app.events.broadcast('h', 'n', 2);
      const s2 = await sseStream(ctx.port, '/events?channels=h', `Last-Event-ID: ${lastId}\r\n`);
      try {
        const got = await messagesWhen(s2, (m) => m.some((x) => x.msg.type === 'resumed'), 'resumed');
        assert.equal(got.find((x) => x.msg.type === 'resumed').msg.replayed, replayed, JSON.stringify(options));
        assert.equal(got.filter((x) => x.msg.event === 'n').length, replayed);
      } finally {
        s2.destroy();
      }
    } finally {
      await ctx.app.close();
    }
  }
});
