// Type declarations for vxevents (hand-written; the runtime is lib/index.cjs / lib/index.mjs).

import type { FastifyPluginAsync, FastifyInstance, FastifyRequest } from 'fastify';

/** A channel as the authorizer sees it. */
export interface Channel {
  /** Full name, e.g. `private-user.123` or `presence-chat.room-1`. */
  name: string;
  /** From the prefix: none = public, `private-`, `presence-`. */
  type: 'public' | 'private' | 'presence';
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

export interface ListenOptions {
  /** Default '127.0.0.1'. */
  host?: string;
  /** 0 picks a free port (see EventsManager.port). */
  port?: number;
  /** Not supported by the core yet. */
  tls?: unknown;
}

export interface EventsPluginOptions {
  /** 'ws' (WebSocket, default) or 'sse' (Server-Sent Events). */
  driver?: 'ws' | 'sse';
  /** Endpoint path; default '/ws' ('/events' for SSE). The auth route is `${path}/auth`. */
  path?: string;
  /**
   * With driver 'ws': also serve the SSE fallback from the same instance (one broadcast reaches
   * both kinds of client): `GET sse.path` plus `POST sse.path/subscribe|unsubscribe`.
   * `true` means `{ path: '/events' }`. heartbeatInterval and retryInterval apply to it.
   */
  sse?: boolean | { path?: string };
  /** redis:// or rediss:// URL for horizontal scaling (undefined = single instance). */
  redis?: string;
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
  /** Runs when a WebSocket connection opened (after `connected` was sent). */
  onConnect?: (socketId: string) => void | Promise<void>;
  /** Runs when a connection is gone. */
  onDisconnect?: (socketId: string) => void | Promise<void>;
  /** Runs after the core accepted and rebroadcast a client event. */
  onClientEvent?: (event: ClientEvent) => void | Promise<void>;
  /** Serve on a dedicated port instead of taking upgrades on the app's server. */
  listen?: ListenOptions;
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
}

/** Broadcasting and queries. Every method returns a Promise. */
export interface EventsManager {
  /** Send `event` with `data` (JSON-serialized once) to every subscriber of `channel`. */
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
  stats(): Promise<EventsStats>;
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

export declare function eventsPlugin(options?: EventsPluginOptions): FastifyPluginAsync;
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
