// Types of vxevents/client (client/index.mjs).

export type ConnectionState = 'initialized' | 'connecting' | 'connected' | 'disconnected' | 'failed';
export type TransportName = 'ws' | 'sse';

export interface ClientOptions {
  /** Server base URL (`https://host`) or WebSocket URL (`wss://host/ws`). Default: the page's location. */
  url?: string;
  /** WebSocket path when `url` is an http(s) URL. Default `/ws`. */
  path?: string;
  /** SSE endpoint path (default `/events`), or a full `sseUrl`. */
  ssePath?: string;
  sseUrl?: string;
  /** Where private/presence tokens come from: POST `{socketId, channel}` → `{auth, channel_data?}`. Default `{path}/auth`. */
  authEndpoint?: string;
  /** Extra headers for the auth endpoint (and SSE subscribe requests); a function is called per request. */
  authHeaders?: Record<string, string> | (() => Record<string, string>);
  /** Transports in order of preference. Default `['ws', 'sse']`. */
  transports?: TransportName[];
  /** WebSocket / EventSource / fetch implementations; default the globals. */
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: typeof fetch;
  /** Reconnect backoff: min(maxDelay, minDelay * factor^attempt) * (1 - jitter * random). */
  minDelay?: number;
  maxDelay?: number;
  factor?: number;
  jitter?: number;
  /** Failed attempts in a row before the state becomes `failed`. Default Infinity. */
  maxRetries?: number;
  /** Idle time before a `{"type":"ping"}` (0: off), and how long to wait for any answer. */
  pingInterval?: number;
  pongTimeout?: number;
  /** How long one connection attempt may take before it is abandoned. */
  connectTimeout?: number;
  /** Connect at once (on the next microtask). Default true. */
  autoConnect?: boolean;
}

export interface StateChange {
  previous: ConnectionState;
  current: ConnectionState;
  socketId?: string;
  transport?: TransportName;
  attempt?: number;
  code?: number;
  reason?: string;
}

export interface EventMeta {
  channel: string;
  event: string;
  /** The event's position in its channel's stream (absent while the server's Redis is down). */
  offset?: number;
  /** A client event (trigger) of another subscriber. */
  client: boolean;
  /** On presence channels, the signed id of a client event's sender. */
  user_id?: string | number;
}

export interface Member {
  id: string | number;
  info?: unknown;
}

export interface SubscriptionSucceeded {
  /** true: every event missed since the last one seen was replayed; false: refetch your state. */
  recovered: boolean;
  /** true when this is a resubscription after a reconnect. */
  resubscribed: boolean;
  members?: Member[];
}

export declare class Subscription {
  readonly client: Client;
  readonly channel: string;
  subscribed: boolean;
  position: { offset: number; epoch: string } | null;
  /** Presence: id → info, kept up to date. */
  members: Map<string | number, unknown>;
  /** Presence: this connection's member as signed by the auth endpoint. */
  me: Member | null;
  on(event: 'subscription_succeeded', fn: (info: SubscriptionSucceeded) => void): this;
  on(event: 'subscription_error', fn: (info: { error: string }) => void): this;
  on(event: 'member_added' | 'member_removed', fn: (member: Member) => void): this;
  on(event: string, fn: (data: any, meta: EventMeta) => void): this;
  off(event: string, fn?: (...args: any[]) => void): this;
  onAny(fn: (event: string, data: any, meta: EventMeta) => void): this;
  offAny(fn?: (...args: any[]) => void): this;
  /** Client event on a private/presence channel; false when not connected (WebSocket only). */
  trigger(event: string, data?: unknown): boolean;
  unsubscribe(): void;
}

export declare class Client {
  constructor(options?: ClientOptions);
  readonly options: Required<ClientOptions>;
  state: ConnectionState;
  socketId: string | null;
  channels: Map<string, Subscription>;
  wsUrl: string;
  sseUrl: string;
  authEndpoint: string;
  on(event: 'state_change', fn: (s: StateChange) => void): this;
  on(event: ConnectionState, fn: (s: StateChange) => void): this;
  on(event: 'error', fn: (e: { error: string }) => void): this;
  on(event: 'resumed', fn: (m: { type: 'resumed'; recovered: boolean; replayed: number }) => void): this;
  on(event: string, fn: (...args: any[]) => void): this;
  off(event: string, fn?: (...args: any[]) => void): this;
  connect(): void;
  disconnect(): void;
  subscribe(channel: string): Subscription;
  unsubscribe(channel: string): void;
  channel(name: string): Subscription | undefined;
}

export declare function createClient(options?: ClientOptions): Client;
export default createClient;
