// vxevents chat example: a Fastify app with a public room, a presence list ("who is
// online") and private notifications. Run from the repository root:
//
//   npm install && npm run example:chat        then open http://localhost:3000
//
// "Login" is a name kept in a cookie, standing in for the app's real authentication: an
// onRequest hook turns it into request.user, which the authorizer then sees.

import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { eventsPlugin } from 'vxevents';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
const SECRET = process.env.EVENTS_SECRET || randomBytes(32).toString('hex');

const app = Fastify({ logger: { level: process.env.LOG_LEVEL || 'info' } });

app.decorateRequest('user', null);
app.addHook('onRequest', async (request) => {
  const m = /(?:^|;\s*)chat_user=([^;]+)/.exec(request.headers.cookie || '');
  if (!m) return;
  try {
    const user = JSON.parse(decodeURIComponent(m[1]));
    if (typeof user.id === 'string' && typeof user.name === 'string') request.user = user;
  } catch {
    // a malformed cookie is just "not logged in"
  }
});

app.register(
  eventsPlugin({
    driver: 'ws',
    path: '/ws',
    authSecret: SECRET,
    authorizer: async (channel, request) => {
      if (channel.type === 'public') return { authorized: true };
      const user = request.user;
      if (!user) return { authorized: false, error: 'Not authenticated' };
      if (channel.name.startsWith('private-user.')) {
        if (channel.name.replace('private-user.', '') !== user.id) {
          return { authorized: false, error: 'Access denied' };
        }
      }
      if (channel.type === 'presence') {
        return { authorized: true, member: { id: user.id, info: { name: user.name } } };
      }
      return { authorized: true };
    },
  }),
);

app.get('/', async (request, reply) => {
  reply.type('text/html; charset=utf-8');
  return readFile(path.join(HERE, 'public', 'index.html'));
});

// The browser client, as the package ships it (vxevents/client is one ESM file).
const CLIENT_FILE = fileURLToPath(import.meta.resolve('vxevents/client'));
app.get('/client.mjs', async (request, reply) => {
  reply.type('text/javascript; charset=utf-8');
  return readFile(CLIENT_FILE);
});

app.post('/login', async (request, reply) => {
  const name = String((request.body && request.body.name) || '').trim().slice(0, 40);
  if (!name) return reply.code(400).send({ error: 'name required' });
  const user = { id: randomBytes(6).toString('hex'), name };
  reply.header('set-cookie', `chat_user=${encodeURIComponent(JSON.stringify(user))}; Path=/; SameSite=Strict`);
  return user;
});

app.get('/me', async (request) => ({ user: request.user }));

// What a page refetches when a reconnect could not replay what it missed: the room's recent
// messages, from the channel's stream (the core keeps them; see README "Recovery").
app.get('/messages', async (request, reply) => {
  if (!request.user) return reply.code(401).send({ error: 'log in first' });
  const { events } = await request.events.history('chat.lobby', { limit: 50 });
  return events.filter((e) => e.event === 'message.sent').map((e) => e.data);
});

// Public room: everyone subscribed to chat.lobby gets the message except the sender's own
// socket (its page shows the message right away).
app.post('/messages', async (request, reply) => {
  if (!request.user) return reply.code(401).send({ error: 'log in first' });
  const { text, socketId } = request.body || {};
  if (typeof text !== 'string' || !text.trim()) return reply.code(400).send({ error: 'text required' });
  const message = { from: request.user.name, text: text.slice(0, 500), at: Date.now() };
  if (typeof socketId === 'string' && socketId) {
    await request.events.broadcastExcept('chat.lobby', 'message.sent', message, socketId);
  } else {
    await request.events.broadcast('chat.lobby', 'message.sent', message);
  }
  return message;
});

// Private notification to one user.
app.post('/poke', async (request, reply) => {
  if (!request.user) return reply.code(401).send({ error: 'log in first' });
  const to = request.body && request.body.to;
  if (typeof to !== 'string' || !/^[0-9a-f]{12}$/.test(to)) return reply.code(400).send({ error: 'bad user id' });
  await request.events.broadcast(`private-user.${to}`, 'notification', {
    message: `${request.user.name} poked you`,
  });
  return { ok: true };
});

app.get('/stats', async (request) => ({
  online: await request.events.presenceMembers('presence-chat.lobby'),
  lobbySubscribers: await request.events.subscriberCount('chat.lobby'),
  channels: await request.events.channels(),
}));

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    app.close().then(() => process.exit(0));
  });
}

await app.listen({ host: HOST, port: PORT });
