// The browser side of channel auth, runnable in Node 20 (global fetch; `ws` stands in for
// the browser's WebSocket): connect, ask the app's /ws/auth for a token, subscribe with
// `auth` (and `channel_data` for presence), print what arrives.
//
//   node examples/auth-client.mjs [http://127.0.0.1:3031] [user-id:Name]
import WebSocket from 'ws';

const base = process.argv[2] || 'http://127.0.0.1:3031';
const user = process.argv[3] || '42:Ada';
const socket = new WebSocket(`${base.replace(/^http/, 'ws')}/ws`);

async function subscribeWithAuth(channel) {
  const response = await fetch(`${base}/ws/auth`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-User': user },
    body: JSON.stringify({ socketId: socket.socketId, channel }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`${channel}: ${response.status} ${body.error}`);
  socket.send(JSON.stringify({ type: 'subscribe', channel, auth: body.auth, channel_data: body.channel_data }));
}

socket.on('message', async (raw) => {
  const message = JSON.parse(raw);
  console.log(JSON.stringify(message));
  if (message.event === 'connected') {
    socket.socketId = message.data.socketId;
    await subscribeWithAuth(`private-user.${user.split(':')[0]}`);
    await subscribeWithAuth('presence-lobby');
  }
  if (message.type === 'subscription_succeeded' && message.channel === 'presence-lobby') {
    setTimeout(() => socket.close(), 200);
  }
});
socket.on('close', (code) => console.log(`closed ${code}`));
