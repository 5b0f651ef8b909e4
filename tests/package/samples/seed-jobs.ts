import { getEvents, closeEvents } from 'vxevents';

const events = await getEvents({ driver: 'ws', redis: process.env.REDIS_URL });
await events.broadcast('jobs', 'job.completed', { jobId: '123' });
// Clean up on shutdown
await closeEvents();
