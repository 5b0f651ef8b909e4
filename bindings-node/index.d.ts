// Type declarations for vxevents (hand-written; the runtime is lib/index.cjs / lib/index.mjs).
//
// This file is the CommonJS entry's declarations (package.json `exports` -> require -> types)
// and holds every type. index.d.mts, the ES module entry's, re-exports it and declares the
// default export the ESM way; a new runtime export goes in both files, a new type here only.

import type { FastifyPluginAsync, FastifyInstance, FastifyRequest } from 'fastify';

/** From the channel name's prefix: none = public, `private-`, `presence-`. */
export type ChannelType = 'public' | 'private' | 'presence';

/** A channel as the authorizer sees it. */
export interface Channel {
  /** Full name, e.g. `private-user.123` or `presence-chat.room-1`. */
  name: string;
  /** From the prefix: none = public, `private-`, `presence-`. */
  type: ChannelType;
}

/** A member of a presence channel. */
export interface PresenceMember {
  id: string | number;
  info?: Record<string, unknown>;
}

/** What an authorizer answers. */
export interface ChannelAuthResult {
  authorized: boolean;
  /** Reason sent with the 403 when `authorized` is false. */
  error?: string;
  /** Required for presence channels: who the subscriber is. */
  member?: PresenceMember;
}

/**
 * What the authorizer receives for requests the core serves itself (with `listen`, the
 * dedicated port's POST {path}/auth and {path}/subscribe): no Fastify hooks ran, so there is
 * no `user`; decide from the headers (e.g. a bearer token).
 */
export interface CoreRequest {
  method: 'POST';
  url: string;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  /** The parsed JSON body, or null. */
  body: unknown;
  raw: null;
  user: undefined;
}

export type ChannelAuthorizer = (
  channel: Channel,
  request: FastifyRequest | CoreRequest,
) => ChannelAuthResult | Promise<ChannelAuthResult>;

/**
 * TLS on the dedicated port (the port then speaks TLS only: wss:// and https://, ALPN
 * http/1.1). Each value is PEM text (a string, or a Buffer / Uint8Array, starting "-----BEGIN ") or the path
 * of a PEM file; the core loads them when the plugin is created and throws (code ETLS)
 * with the reason when they cannot be used.
 */
export interface ListenTlsOptions {
  /** The certificate, then any intermediates (the chain). */
  cert: string | Uint8Array;
  /** Its private key (no passphrase). */
  key: string | Uint8Array;
  /** Given: clients must present a certificate signed by one of these CAs. */
  ca?: string | Uint8Array;
}

export interface ListenOptions {
  /** Default '127.0.0.1'. */
  host?: string;
  /** 0 picks a free port (see EventsManager.port). */
  port?: number;
  /** TLS on this port; see ListenTlsOptions. */
  tls?: ListenTlsOptions;
}

/** How clients connect: 'ws' (WebSocket) or 'sse' (Server-Sent Events). */
export type EventsDriver = 'ws' | 'sse';

/**
 * Every option of eventsPlugin() and getEvents(); EventsWsOptions / EventsSseOptions narrow it per driver.
 * The bounds and defaults of the core options are the core's options table (the same as
 * `vxevents-server --help`); a value out of them throws at the call with the core's message.
 */
export interface EventsPluginOptions {
  /** 'ws' (WebSocket, default) or 'sse' (Server-Sent Events). */
  driver?: EventsDriver;
  /** Endpoint path; default '/ws' ('/events' for SSE). The auth route is `${path}/auth`. */
  path?: string;
  /**
   * With driver 'ws': also serve the SSE fallback from the same instance (one broadcast reaches
   * both kinds of client): `GET sse.path` plus `POST sse.path/subscribe|unsubscribe`.
   * `true` means `{ path: '/events' }`. heartbeatInterval and retryInterval apply to it.
   */
  sse?: boolean | { path?: string };
  /**
   * redis://[[user]:password@]host[:port][/db] URL for horizontal scaling (undefined = single
   * instance); rediss:// for TLS to Redis (see redisTlsCa, redisTlsCert, redisTlsVerify).
   */
  redis?: string;
  /** rediss://: PEM CA certificates (text or a file path) Redis's certificate is checked against; default the system's. */
  redisTlsCa?: string;
  /** rediss://: a PEM client certificate (text or a file path) for Redis's tls-auth-clients; with redisTlsKey. */
  redisTlsCert?: string;
  /** rediss://: the PEM private key of redisTlsCert. */
  redisTlsKey?: string;
  /** rediss://: check Redis's certificate and host name; default true (false only for tests). */
  redisTlsVerify?: boolean;
  /** Redis key and channel prefix; default 'vx'. */
  redisPrefix?: string;
  /** Bytes of broadcasts Redis has not acknowledged yet (unreachable or stalled; default 16 MiB); past it broadcasts reject with EBACKLOG and are delivered nowhere. */
  redisBacklogMax?: number;
  /**
   * Ms a cluster-wide query waits for the Redis connection and then for the answer before it
   * rejects with EUNAVAILABLE; also how long close() gives Redis to take the broadcasts still
   * held (default 5000).
   */
  redisConnectTimeout?: number;
  /** Secret for signing private/presence tokens, at least 32 characters. */
  authSecret?: string;
  /** Decides channel access; default: public yes, private/presence no. */
  authorizer?: ChannelAuthorizer;
  /** WebSocket keep-alive ping period in ms (default 30000, 0 disables). */
  pingInterval?: number;
  /** Largest client message in bytes (default 1048576). */
  maxPayloadSize?: number;
  /** SSE heartbeat period in ms (default 15000). */
  heartbeatInterval?: number;
  /** SSE client reconnect delay in ms (default 3000). */
  retryInterval?: number;
  /** Unsent bytes per connection before it is closed with 1008 (default 1 MiB). */
  maxSendQueue?: number;
  /** Flow control: unsent bytes of the clients past which broadcasts wait (default 16 MiB). */
  flowHighWater?: number;
  /** Flow control: waiting broadcasts go on once the unsent bytes drained to this (default 0: half of flowHighWater). */
  flowLowWater?: number;
  /** Bytes of broadcasts accepted and not yet sent out; past it broadcast() stays pending (default 1 MiB). */
  maxCommandQueue?: number;
  /** ms in total one client may hold broadcasts back before it stops pacing them (default 10000). */
  slowConsumerMs?: number;
  /** Kernel send buffer per client socket in bytes (default 262144; 0 = the kernel's autotuned one). */
  socketSendBuffer?: number;
  /** Connections beyond this get 503 (default 100000). */
  maxConnections?: number;
  /** Subscriptions per connection (default 100). */
  maxChannelsPerConnection?: number;
  /** Client events ({type:'message'}) accepted per connection per second (default 10; 0 = off). */
  clientEventsPerSecond?: number;
  /** Largest presence channel_data in bytes (default 2048). */
  maxMemberSize?: number;
  /** Presence members per channel (default 10000). */
  maxPresenceMembers?: number;
  /**
   * Accept permessage-deflate from WebSocket clients that offer it; a broadcast is compressed
   * once for all of them (default true).
   */
  compression?: boolean;
  /**
   * Broadcasts kept per channel so a client that reconnects (WebSocket `recover`, SSE
   * `Last-Event-ID`) gets what it missed (default 100; 0 = none). Replaces `sseHistory`.
   */
  historySize?: number;
  /** How long (ms) a broadcast stays in its channel's history (default 300000). */
  historyTtl?: number;
  /** Bytes of history for all channels together (default 4 MiB). */
  historyMaxBytes?: number;
  /**
   * Origins whose pages may open a WebSocket or an event stream handed to the core, e.g.
   * `['https://app.example.com', '*.example.com', 'http://localhost:5173']` (or one comma
   * list). Another Origin gets 403 before the upgrade; requests without an Origin header
   * (programs, not browsers) are allowed. Unset: every origin. The app's own Fastify routes
   * (the auth route included) are not covered: guard them in the app.
   */
  allowedOrigins?: string | string[];
  /** Runs when a WebSocket connection opened (after `connected` was sent). */
  onConnect?: (socketId: string) => void | Promise<void>;
  /** Runs when a connection is gone. */
  onDisconnect?: (socketId: string) => void | Promise<void>;
  /** Runs after the core accepted and rebroadcast a client event. */
  onClientEvent?: (event: ClientEvent) => void | Promise<void>;
  /** Serve on a dedicated port instead of taking upgrades on the app's server. */
  listen?: ListenOptions;
}

/** The options both drivers share. */
export type EventsBaseOptions = Omit<EventsPluginOptions,
  'driver' | 'pingInterval' | 'maxPayloadSize' | 'compression' | 'heartbeatInterval' | 'retryInterval'>;

/** eventsPlugin({ driver: 'ws', ... }): WebSocket, with its keep-alive and message size. */
export interface EventsWsOptions extends EventsBaseOptions {
  driver?: 'ws';
  /** WebSocket keep-alive ping period in ms (default 30000, 0 disables). */
  pingInterval?: number;
  /** Largest client message in bytes (default 1048576). */
  maxPayloadSize?: number;
  /** Accept permessage-deflate from WebSocket clients (default true). */
  compression?: boolean;
}

/** eventsPlugin({ driver: 'sse', ... }): Server-Sent Events, with its heartbeat and retry. */
export interface EventsSseOptions extends EventsBaseOptions {
  driver: 'sse';
  /** SSE heartbeat period in ms (default 15000). */
  heartbeatInterval?: number;
  /** SSE client reconnect delay in ms (default 3000). */
  retryInterval?: number;
}

/** A client event ({type:'message'} on a private/presence channel), already rebroadcast. */
export interface ClientEvent {
  socketId: string;
  channel: string;
  event: string;
  data: unknown;
}

export interface EventsStats {
  connections: number;
  channels: number;
  messagesDelivered: number;
  bytesWritten: number;
  slowConsumerCloses: number;
  pingTimeouts: number;
  rejectedConnections: number;
  /** ms queued broadcasts waited for the clients' send queues to drain (flow control). */
  flowPausedMs: number;
  /** ms callers waited for capacity (pending broadcast() Promises, parked publish requests). */
  flowWaitMs: number;
  /** Broadcasts that found the core's queue full and had to wait. */
  flowWaits: number;
  /** Publish API requests answered 503 after waiting publishWait ms. */
  flowRefused: number;
  /** Clients that held broadcasts back past slowConsumerMs and stopped pacing them. */
  flowLagging: number;
  /** Broadcast bytes accepted and not yet sent out (now). */
  commandQueueBytes: number;
  /** Unsent bytes of the clients that pace broadcasts (now). */
  unsentBytes: number;
  /** TLS connections cut for a failed handshake or a bad record (plaintext to the TLS port, say). */
  tlsErrors: number;
  /** Bytes the channels' history holds (at most historyMaxBytes). */
  historyBytes: number;
  /** Channel streams in memory. */
  historyStreams: number;
}

/** The offset a broadcast got in its channel's stream, and the stream's epoch. */
export interface PublishResult {
  offset: number;
  epoch: string;
}

export interface HistoryOptions {
  /** Events with an offset greater than this (default 0: all kept). */
  since?: number;
  /** At most this many (default 0: the history size; at most 10000). */
  limit?: number;
}

/** An event as clients receive it, with its offset in the channel's stream. */
export interface StreamEvent<T = unknown> {
  type: 'event';
  channel: string;
  event: string;
  data: T;
  offset: number;
  client?: true;
  user_id?: string | number;
}

/** A channel's stream (DESIGN §12). `complete` is false when events after `since` are no
 * longer kept (then `events` starts later). */
export interface ChannelHistory {
  channel: string;
  epoch: string;
  offset: number;
  complete: boolean;
  events: StreamEvent[];
}

/** One broadcast: `data` goes to every subscriber of `channel` (but `except`) as event `event`. */
export interface BroadcastEvent<T = unknown> {
  channel: string;
  event: string;
  data: T;
  /** A socket id that does not receive it (the sender). */
  except?: string;
}

/** The answer of POST {path}/auth. */
export interface AuthResponse {
  /** `socketId:hex(HMAC)`, or null for a public channel. */
  auth: string | null;
  /** Presence channels: the signed member (JSON text) to send along with `auth`. */
  channel_data?: string;
}

// The wire protocol: what the server sends (WebSocket frames; the `data:` of SSE messages)...

/** First message on every connection. SSE adds `connectionId` (the same id). */
export interface ConnectedMessage {
  type: 'event';
  event: 'connected';
  data: { socketId: string; connectionId?: string };
}

/** A broadcast, a client event, or presence's member_added / member_removed. */
export interface EventMessage<T = unknown> {
  type: 'event';
  channel: string;
  event: string;
  data: T;
  offset?: number;
}

export interface MemberMessage {
  type: 'event';
  channel: string;
  event: 'member_added' | 'member_removed';
  data: PresenceMember;
}

export interface SubscriptionSucceededMessage {
  type: 'subscription_succeeded';
  channel: string;
  /** Presence channels: the members, the subscriber included. */
  data?: { members?: PresenceMember[]; offset?: number; epoch?: string };
  recovered?: boolean;
}

export interface SubscriptionErrorMessage {
  type: 'subscription_error';
  channel: string;
  error: string;
}

export interface PongMessage {
  type: 'pong';
}

/** A message the server could not accept; the connection stays open. */
export interface ErrorMessage {
  type: 'error';
  error: string;
}

export type ServerMessage =
  | ConnectedMessage
  | EventMessage
  | MemberMessage
  | SubscriptionSucceededMessage
  | SubscriptionErrorMessage
  | PongMessage
  | ErrorMessage;

// ...and what a client sends.

export interface SubscribeMessage {
  type: 'subscribe';
  channel: string;
  /** private-/presence-: the token from POST {path}/auth. */
  auth?: string;
  /** presence-: the signed member from POST {path}/auth (`channelData` is accepted too). */
  channel_data?: string;
  channelData?: string;
  /** Ignored by the server (a presence member is only ever the signed channel_data). */
  data?: unknown;
  recover?: { offset: number; epoch: string };
}

export interface UnsubscribeMessage {
  type: 'unsubscribe';
  channel: string;
}

export interface PingMessage {
  type: 'ping';
}

/** A client event: private/presence channels only, sent to the others on the channel. */
export interface ClientEventMessage {
  type: 'message';
  channel: string;
  event: string;
  data?: unknown;
}

export type ClientMessage = SubscribeMessage | UnsubscribeMessage | PingMessage | ClientEventMessage;

/** Broadcasting and queries. Every method returns a Promise. */
export interface EventsManager {
  /**
   * Send `event` with `data` (JSON-serialized once, at the call) to every subscriber of
   * `channel`. Resolves when the core accepted it: at once while it has room, later while
   * clients are slower than the producer (flow control), so `await` in a loop paces itself.
   */
  broadcast(channel: string, event: string, data?: unknown, except?: string): Promise<void>;
  /** The same event to several channels (1..100). */
  broadcastToMany(channels: string[], event: string, data?: unknown, except?: string): Promise<void>;
  /** Broadcast to everyone on `channel` except the connection `socketId` (e.g. the sender). */
  broadcastExcept(channel: string, event: string, data: unknown, socketId: string): Promise<void>;
  /**
   * With `redis` the queries answer for every instance: made before the Redis connection is
   * up they wait for it, and reject with code EUNAVAILABLE when Redis cannot answer within
   * `redisConnectTimeout` — never with this instance's view alone.
   */
  subscriberCount(channel: string): Promise<number>;
  hasSubscribers(channel: string): Promise<boolean>;
  /** Channels with at least one subscriber. */
  channels(): Promise<string[]>;
  presenceMembers(channel: string): Promise<PresenceMember[]>;
  /** A broadcast to one channel resolving to the offset it got (DESIGN §12). */
  publish(channel: string, event: string, data?: unknown, except?: string | null): Promise<PublishResult>;
  /** The channel's recent events after `since` (its stream). */
  history(channel: string, options?: HistoryOptions): Promise<ChannelHistory>;
  stats(): Promise<EventsStats>;
  /**
   * This instance's metrics in Prometheus text format 0.0.4 (what `vxevents-server` serves
   * at GET /metrics), to expose on a route of the app's own:
   * `app.get('/metrics', async (req, reply) => reply.type('text/plain; version=0.0.4').send(await app.events.metrics()))`.
   */
  metrics(): Promise<string>;
  /**
   * Close every client with 1001 and free the instance. Idempotent. With `redis`, every
   * broadcast accepted before is published first (waiting for the connection and Redis's
   * acknowledgements, up to `redisConnectTimeout`); rejects with code EUNPUBLISHED and
   * `unpublished` (a count, per channel) when some could not be.
   */
  close(): Promise<void>;
  /** True once close() was called. */
  readonly closed: boolean;
  /** The dedicated port when created with `listen`, else null. */
  readonly port: number | null;
}

export declare const EventsManager: {
  prototype: EventsManager;
};

/** Errors from the core carry a stable code (EINVAL, ECHANNEL, ECLOSED, EUNAVAILABLE, ...). */
export interface VxEventsError extends Error {
  code: string;
  /** EUNPUBLISHED (from close): how many broadcasts did not reach Redis. */
  unpublished?: number;
}

export interface GetEventsOptions extends EventsPluginOptions {}

export declare function eventsPlugin(options?: EventsPluginOptions | EventsWsOptions | EventsSseOptions): FastifyPluginAsync;
export declare function getEvents(options?: GetEventsOptions): Promise<EventsManager>;
/** Close the getEvents() manager; rejects like EventsManager.close(). */
export declare function closeEvents(): Promise<void>;
export declare function getEventsFromInstance(app: FastifyInstance): EventsManager;
export declare const version: string;

export default eventsPlugin;

declare module 'fastify' {
  interface FastifyInstance {
    events: EventsManager;
  }
  interface FastifyRequest {
    events: EventsManager;
  }
}

// Velox: `ctx.events` in procedures (eventsPlugin puts the manager on request.context, which
// is the ctx of a Velox procedure). An augmentation of a module the app does not have is an
// ambient declaration nobody imports, so apps without Velox compile unchanged.
declare module '@veloxts/core' {
  interface BaseContext {
    events: EventsManager;
  }
}
