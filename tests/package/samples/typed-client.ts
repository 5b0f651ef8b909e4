// Code typed against the documented names: the protocol's messages, the options per driver,
// a default import from ESM (what "masquerading as CJS" types broke with TS2349).
import Fastify from 'fastify';
import eventsPlugin, {
  type BroadcastEvent, type Channel, type ChannelAuthorizer, type ChannelType, type ClientMessage,
  type EventsManager, type EventsSseOptions, type EventsWsOptions, type PresenceMember,
  type ServerMessage, getEventsFromInstance,
} from 'vxevents';

const ws: EventsWsOptions = { driver: 'ws', path: '/ws', pingInterval: 30000 };
const sse: EventsSseOptions = { driver: 'sse', path: '/events', retryInterval: 3000 };
const authorizer: ChannelAuthorizer = (channel: Channel) => ({ authorized: channel.type === 'public' });
const app = Fastify();
await app.register(eventsPlugin({ ...ws, authorizer }));
await app.register(eventsPlugin(sse));
const manager: EventsManager = app.events;
const same: EventsManager = getEventsFromInstance(app);
app.get('/', async (request) => request.events.subscriberCount('orders'));

const kind: ChannelType = 'presence';
const b: BroadcastEvent<{ orderId: number }> = { channel: 'orders', event: 'order.created', data: { orderId: 1 } };
await manager.broadcast(b.channel, b.event, b.data, b.except);
const out: ClientMessage = { type: 'subscribe', channel: 'presence-room', auth: 'a:b', channel_data: '{}' };

function onMessage(m: ServerMessage): string | PresenceMember[] | undefined {
  switch (m.type) {
    case 'subscription_succeeded': return m.data?.members;
    case 'subscription_error': return m.error;
    case 'error': return m.error;
    case 'event': return m.event;
    case 'pong': return undefined;
  }
}
void [same, kind, out, onMessage];
