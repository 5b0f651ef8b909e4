// The seed's primary usage through real Velox (@veloxts/core, router, validation; see
// velox.mjs for where they come from): its first two samples and its procedure sample run as
// the seed writes them, except `await veloxApp({ port: 0, host })` (veloxApp returns a Promise;
// port 0 and loopback for the test). A procedure's `ctx.events.broadcast(...)` reaches a real
// `ws` client. The TypeScript augmentation of @veloxts/core's BaseContext compiles with Velox
// and does not break an app without it.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import Fastify from 'fastify';
import { eventsPlugin } from 'vxevents';
import { startRedis } from '../../server/redis.mjs';
import { connect, postJson, SECRET } from './helpers.mjs';
import { installVelox, ROOT, startVeloxApp, tsc, VELOX_DIR } from './velox.mjs';

const asUser = (user) => ({ 'x-user': JSON.stringify(user) });

/** Runs the sample app `name`, hands `fn` its base URLs, and stops it the way Velox does. */
async function withVeloxApp(name, env, fn) {
  const app = startVeloxApp(name, { EVENTS_SECRET: SECRET, ...env });
  let clients = [];
  try {
    const port = await app.port;
    await fn({ base: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws`, track: (c) => (clients.push(c), c) });
    // SIGTERM: Velox's graceful shutdown (app.stop() -> Fastify close) closes our clients.
    const closing = clients.map((c) => c.closed);
    const exit = await app.stop();
    assert.deepEqual(await Promise.all(closing), clients.map(() => 1001));
    assert.deepEqual(exit, { code: 0, signal: null }, app.output());
    clients = [];
  } finally {
    await app.stop();
  }
}

describe('Velox', () => {
  before(async () => {
    await installVelox();
  });

  test('seed_sample_1_serves_websocket_on_a_velox_app', async () => {
    await withVeloxApp('basic.mjs', {}, async ({ wsUrl, track }) => {
      const ws = track(await connect(wsUrl));
      assert.match(ws.socketId, /\S{8,}/);
      assert.equal((await ws.subscribe('orders')).type, 'subscription_succeeded');
    });
  });

  test('seed_sample_2_with_redis_secret_and_authorizer', async () => {
    const redis = await startRedis();
    try {
      await withVeloxApp('secured.mjs', { REDIS_URL: redis.url }, async ({ base, wsUrl, track }) => {
        const ws = track(await connect(wsUrl));
        assert.equal((await ws.subscribe('orders')).type, 'subscription_succeeded');
        const refused = await postJson(`${base}/ws/auth`, { socketId: ws.socketId, channel: 'private-user.1' });
        assert.equal(refused.status, 403);
        assert.deepEqual(refused.body, { error: 'Authentication required' });
        const pub = await postJson(`${base}/ws/auth`, { socketId: ws.socketId, channel: 'orders' });
        assert.deepEqual(pub.body, { auth: null });
      });
    } finally {
      await redis.stop();
    }
  });

  test('seed_procedure_broadcasts_with_ctx_events', async () => {
    await withVeloxApp('orders_app.mjs', {}, async ({ base, wsUrl, track }) => {
      const user = { id: 'u42', name: 'Ada' };
      const ws = track(await connect(wsUrl));
      assert.equal((await ws.subscribe('orders')).type, 'subscription_succeeded');
      const token = await postJson(`${base}/ws/auth`, { socketId: ws.socketId, channel: 'private-user.u42' }, asUser(user));
      assert.equal(token.status, 200, JSON.stringify(token.body));
      assert.equal((await ws.subscribe('private-user.u42', token.body)).type, 'subscription_succeeded');

      const res = await postJson(`${base}/api/orders`, { productId: 'p-1', quantity: 3 }, asUser(user));
      assert.ok(res.status === 200 || res.status === 201, `POST /api/orders: ${res.status} ${JSON.stringify(res.body)}`);
      const order = { id: 'order-1', productId: 'p-1', quantity: 3, total: 30 };
      assert.deepEqual(res.body, order);
      const created = await ws.waitFor((m) => m.event === 'order.created', 'order.created from the procedure');
      assert.equal(created.channel, 'orders');
      assert.deepEqual(created.data, { orderId: 'order-1', total: 30 });
      const confirmed = await ws.waitFor((m) => m.event === 'order.confirmed', 'order.confirmed from the procedure');
      assert.equal(confirmed.channel, 'private-user.u42');
      assert.deepEqual(confirmed.data, order);

      // Zod's validation still answers for a bad body (the procedure never ran).
      const bad = await postJson(`${base}/api/orders`, { productId: 1 }, asUser(user));
      assert.equal(bad.status, 400, JSON.stringify(bad.body));
    });
  });

  test('types_give_BaseContext_events_with_velox_and_compile_without_it', async () => {
    const dir = path.join(ROOT, 'build', 'velox-types');
    const index = path.join(ROOT, 'bindings-node', 'index.d.ts');
    // Incremental (the build info stays in the project folder): a rerun with nothing changed
    // takes a fraction of the first compile.
    const write = (name, files) => {
      const p = path.join(dir, name);
      fs.mkdirSync(p, { recursive: true });
      for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(p, f), text);
      return p;
    };
    const tsconfig = (paths) =>
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          incremental: true,
          skipLibCheck: false,
          module: 'node16',
          moduleResolution: 'node16',
          target: 'es2022',
          lib: ['es2022', 'esnext.disposable'],
          typeRoots: [path.join(VELOX_DIR, 'node_modules', '@types')],
          types: ['node'],
          paths: { vxevents: [index], ...paths },
        },
        include: ['*.ts'],
      });

    // No @veloxts/core anywhere above build/velox-types: the augmentation must not break this.
    const plain = write('plain', {
      'tsconfig.json': tsconfig({}),
      'app.ts': [
        "import Fastify from 'fastify';",
        "import { eventsPlugin, type EventsManager } from 'vxevents';",
        'const app = Fastify();',
        "app.register(eventsPlugin({ driver: 'ws', path: '/ws', sse: { path: '/events' } }));",
        "app.get('/', async (request) => { const m: EventsManager = request.events; await m.broadcast('a', 'b', 1); return 'ok'; });",
        '',
      ].join('\n'),
    });
    await tsc(plain);

    // With Velox: its BaseContext as @veloxts/core declares it (the builds used above carry no
    // .d.ts), and a procedure-like function that only knows BaseContext.
    const velox = write('velox', {
      'tsconfig.json': tsconfig({ '@veloxts/core': ['./velox-core.d.ts'] }),
      'velox-core.d.ts': [
        "import type { FastifyReply, FastifyRequest } from 'fastify';",
        'export interface BaseContext { request: FastifyRequest; reply: FastifyReply; }',
        '',
      ].join('\n'),
      'procedure.ts': [
        "import type { BaseContext } from '@veloxts/core';",
        "import type { EventsManager } from 'vxevents';",
        'export async function createOrder(ctx: BaseContext): Promise<EventsManager> {',
        "  await ctx.events.broadcast('orders', 'order.created', { orderId: 1 });",
        "  await ctx.events.broadcastToMany(['user.1', 'user.2'], 'notification', { message: 'hi' });",
        '  return ctx.events;',
        '}',
        '',
      ].join('\n'),
    });
    await tsc(velox);
  });
});

test('leaves_request_context_alone_without_velox', async () => {
  const app = Fastify();
  app.register(eventsPlugin());
  app.get('/ctx', async (request) => ({ context: request.context === undefined ? 'none' : typeof request.context }));
  try {
    const res = await app.inject({ method: 'GET', url: '/ctx' });
    assert.deepEqual(res.json(), { context: 'none' });
  } finally {
    await app.close();
  }
});

test('keeps_an_events_the_app_put_on_request_context_itself', async () => {
  const app = Fastify();
  const mine = { mine: true };
  app.addHook('onRequest', async (request) => {
    request.context = { request, events: mine };
  });
  app.register(eventsPlugin());
  app.get('/ctx', async (request) => ({ same: request.context.events === mine }));
  try {
    assert.deepEqual((await app.inject({ method: 'GET', url: '/ctx' })).json(), { same: true });
  } finally {
    await app.close();
  }
});
