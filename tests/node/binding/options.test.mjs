// Option validation: eventsPlugin() throws at the call with a message naming the problem.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { eventsPlugin, getEvents } from 'vxevents';

function throwsWith(fn, re, code) {
  assert.throws(fn, (err) => {
    assert.match(err.message, re);
    if (code) assert.equal(err.code, code);
    return true;
  });
}

test('refuses_unknown_driver', () => {
  throwsWith(() => eventsPlugin({ driver: 'socketio' }), /unknown driver "socketio"/, 'EINVAL');
});

test('refuses_short_authSecret_and_says_32', () => {
  throwsWith(() => eventsPlugin({ authSecret: 'too-short' }), /at least 32 characters/, 'ESECRET');
  assert.equal(typeof eventsPlugin({ authSecret: 'x'.repeat(32) }), 'function');
});

test('treats_unset_env_values_as_absent', () => {
  assert.equal(typeof eventsPlugin({ driver: 'ws', path: '/ws', redis: undefined, authSecret: undefined }), 'function');
});

test('refuses_bad_redis_url_with_the_cores_message', () => {
  throwsWith(() => eventsPlugin({ redis: 'not a url' }), /option redis must look like redis:\/\//, 'EINVAL');
  throwsWith(() => eventsPlugin({ redis: 'http://localhost:6379' }), /option redis must look like redis:\/\//, 'EINVAL');
});

test('accepts_rediss_and_refuses_its_bad_files_at_the_call_as_the_core_does', async () => {
  assert.equal(typeof eventsPlugin({ redis: 'rediss://localhost:6380', redisTlsVerify: false }), 'function');
  throwsWith(() => eventsPlugin({ redis: 'rediss://localhost:6380', redisTlsCa: '/nonexistent/ca.pem' }),
    /option redis_tls_ca: cannot read \/nonexistent\/ca\.pem/, 'ETLS');
  await assert.rejects(getEvents({ redis: 'rediss://localhost:6380', redisTlsCert: '/nonexistent/c.pem' }), (err) => {
    assert.equal(err.code, 'ETLS');
    assert.match(err.message, /redis_tls_cert and redis_tls_key go together/);
    return true;
  });
});

test('accepts_redis_urls_and_checks_listen_tls_files_at_the_call', () => {
  assert.equal(typeof eventsPlugin({ redis: 'redis://user:pw@localhost:6379/0', redisPrefix: 'app' }), 'function');
  throwsWith(() => eventsPlugin({ listen: { port: 0, tls: { key: 'k', cert: 'c' } } }),
    /option listen\.tls: tls_cert: cannot read c/, 'ETLS');
  throwsWith(() => eventsPlugin({ listen: { port: 0, tls: { cert: 'c' } } }), /listen\.tls\.key is required/, 'EINVAL');
  throwsWith(() => eventsPlugin({ listen: { port: 0, tls: { cert: 'c', key: 'k', pass: 'x' } } }), /unknown listen\.tls option "pass"/);
});

test('refuses_bad_path', () => {
  throwsWith(() => eventsPlugin({ path: 'ws' }), /option path/);
  throwsWith(() => eventsPlugin({ path: '/ws?x=1' }), /option path/);
  throwsWith(() => eventsPlugin({ path: '/w s' }), /option path/);
  throwsWith(() => eventsPlugin({ path: '/ws/' }), /option path/);
});

test('refuses_bad_numbers_and_unknown_options', () => {
  throwsWith(() => eventsPlugin({ pingInterval: -1 }), /pingInterval/);
  throwsWith(() => eventsPlugin({ maxPayloadSize: 0 }), /maxPayloadSize/);
  throwsWith(() => eventsPlugin({ authoriser: () => {} }), /unknown option "authoriser"/);
  throwsWith(() => eventsPlugin({ authorizer: 'yes' }), /authorizer must be a function/);
  throwsWith(() => eventsPlugin({ listen: { port: 70000 } }), /listen.port/);
});

test('getEvents_validates_too', async () => {
  await assert.rejects(getEvents({ driver: 'nope' }), /unknown driver/);
});

test('refuses_tls_app_server_and_points_to_listen_tls', async () => {
  const app = Fastify({ https: {} });
  app.register(eventsPlugin({ path: '/ws' }));
  await assert.rejects(app.ready(), /TLS.*listen: \{ host, port, tls: \{ cert, key \} \}.*TLS-terminating proxy/s);
  await app.close().catch(() => {});
});

test('reports_a_busy_dedicated_port', async () => {
  const first = Fastify();
  first.register(eventsPlugin({ listen: { host: '127.0.0.1', port: 0 } }));
  await first.ready();
  const second = Fastify();
  second.register(eventsPlugin({ listen: { host: '127.0.0.1', port: first.events.port } }));
  await assert.rejects(second.ready(), (err) => err.code === 'EADDRINUSE' || err.code === 'ELISTEN');
  await second.close().catch(() => {});
  await first.close();
});
