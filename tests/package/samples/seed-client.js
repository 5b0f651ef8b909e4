// The seed's browser code, checked as JavaScript (checkJs) against the DOM's types.

// Client
socket.send(JSON.stringify({ type: 'subscribe', channel: 'announcements' }));
// Client (requires auth token)
socket.send(JSON.stringify({ type: 'subscribe', channel: 'private-user.123', auth: authToken }));
// Client - receives member_added/member_removed automatically
socket.send(JSON.stringify({
  type: 'subscribe',
  channel: 'presence-chat.room-1',
  data: { id: 'user-123', name: 'Alice' },
  auth: authToken,
}));

const ws = new WebSocket('ws://localhost:3030/ws');
ws.onopen = () => {
  // Subscribe to public channel
  ws.send(JSON.stringify({ type: 'subscribe', channel: 'orders' }));
};
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  switch (message.type) {
    case 'event':
      console.log(`${message.event}:`, message.data);
      break;
    case 'subscription_succeeded':
      console.log(`Subscribed to ${message.channel}`);
      break;
    case 'subscription_error':
      console.error(`Failed: ${message.error}`);
      break;
  }
};
// Unsubscribe
ws.send(JSON.stringify({ type: 'unsubscribe', channel: 'orders' }));

export async function subscribeToPrivateChannel(socket, channel) {
  // Get auth token from server
  const response = await fetch('/ws/auth', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    credentials: 'include',
    body: JSON.stringify({ socketId: socket.socketId, channel }),
  });
  const { auth, channel_data } = await response.json();
  socket.send(JSON.stringify({ type: 'subscribe', channel, auth, channel_data }));
}

ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.event === 'member_added') {
    console.log('User joined:', message.data);
  }
  if (message.event === 'member_removed') {
    console.log('User left:', message.data);
  }
};
