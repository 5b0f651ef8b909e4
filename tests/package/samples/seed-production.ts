import { veloxApp } from '@veloxts/core';
import { eventsPlugin } from 'vxevents';

const app = await veloxApp();
app.register(eventsPlugin({
  driver: 'ws',
  path: '/ws',
  redis: process.env.REDIS_URL,
  authSecret: process.env.EVENTS_SECRET,
  authorizer: async (channel, request) => {
    if (channel.type === 'public') {
      return { authorized: true };
    }
    const user = request.user;
    if (!user) {
      return { authorized: false, error: 'Authentication required' };
    }
    if (channel.type === 'presence') {
      return { authorized: true, member: { id: user.id, info: { name: user.name } } };
    }
    return { authorized: true };
  },
}));
await app.start();

// The drivers' options.
app.register(eventsPlugin({
  driver: 'ws',
  path: '/ws',
  redis: process.env.REDIS_URL, // For horizontal scaling
  authSecret: process.env.EVENTS_SECRET, // For private/presence channels
  pingInterval: 30000, // Keep-alive (default: 30s)
  maxPayloadSize: 1048576, // Max message size (default: 1MB)
}));
app.register(eventsPlugin({
  driver: 'sse',
  path: '/events',
  heartbeatInterval: 15000, // Keep-alive (default: 15s)
  retryInterval: 3000, // Client reconnect delay (default: 3s)
}));

// Channel authorization.
app.register(eventsPlugin({
  driver: 'ws',
  path: '/ws',
  authSecret: process.env.EVENTS_SECRET,
  authorizer: async (channel, request) => {
    // Public channels - allow all
    if (channel.type === 'public') {
      return { authorized: true };
    }
    // Require authentication
    const user = request.user;
    if (!user) {
      return { authorized: false, error: 'Not authenticated' };
    }
    // Private user channels - only owner
    if (channel.name.startsWith('private-user.')) {
      const channelUserId = channel.name.replace('private-user.', '');
      if (channelUserId !== user.id) {
        return { authorized: false, error: 'Access denied' };
      }
    }
    // Presence channels - include member info
    if (channel.type === 'presence') {
      return {
        authorized: true,
        member: { id: user.id, info: { name: user.name, avatar: user.avatar } },
      };
    }
    return { authorized: true };
  },
}));
