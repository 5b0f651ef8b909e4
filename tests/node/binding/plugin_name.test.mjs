// The plugin answers to two Fastify plugin names: 'vxevents' and '@veloxts/events' (the
// API it reproduces), so a real plugin declaring `dependencies: ['@veloxts/events']` loads
// after it and sees app.events.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import fp from 'fastify-plugin';
import { eventsPlugin } from 'vxevents';
import { connect } from './helpers.mjs';

/** A plugin written for @veloxts/events: a route that broadcasts through app.events. */
const announcements = fp(
  async (app) => {
    app.post('/announce', async (request) => {
      await app.events.broadcast('announcements', 'new-feature', request.body);
      return { ok: true };
    });
  },
  { name: 'announcements', fastify: '5.x', dependencies: ['@veloxts/events'], decorators: { fastify: ['events'] } },
);

test('loads_a_plugin_depending_on_veloxts_events_and_serves_its_route', async () => {
  const app = Fastify();
  app.register(eventsPlugin({ driver: 'ws', path: '/ws' }));
  app.register(announcements);
  await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const { port } = app.server.address();
    assert.equal(app.hasPlugin('@veloxts/events'), true);
    assert.equal(app.hasPlugin('vxevents'), true);
    const ws = await connect(`ws://127.0.0.1:${port}/ws`);
    assert.equal((await ws.subscribe('announcements')).type, 'subscription_succeeded');
    const res = await fetch(`http://127.0.0.1:${port}/announce`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'Dark Mode Released!' }),
    });
    assert.equal(res.status, 200);
    const got = await ws.waitFor((m) => m.event === 'new-feature', 'the announcement');
    assert.deepEqual(got.data, { title: 'Dark Mode Released!' });
    await ws.close();
  } finally {
    await app.close();
  }
});

test('loads_a_plugin_depending_on_vxevents', async () => {
  const app = Fastify();
  app.register(eventsPlugin());
  let seen = null;
  app.register(fp(async (a) => (seen = a.events), { name: 'uses-vxevents', dependencies: ['vxevents'] }));
  try {
    await app.ready();
    assert.equal(seen, app.events);
  } finally {
    await app.close();
  }
});

test('a_dependent_registered_first_still_fails_with_fastify_s_own_error', async () => {
  // The alias is recorded when eventsPlugin loads; order still matters, as for any plugin.
  const app = Fastify();
  app.register(fp(async () => {}, { name: 'early', dependencies: ['@veloxts/events'] }));
  app.register(eventsPlugin());
  try {
    await assert.rejects(app.ready(), { code: 'FST_ERR_PLUGIN_DEPENDENCY_NOT_REGISTERED' });
  } finally {
    await app.close();
  }
});
