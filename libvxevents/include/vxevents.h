/* vxevents — real-time event broadcasting core.
 *
 * One `vx_events` instance owns one event loop running on its own thread. Every
 * connection, channel and subscription lives on that thread. Every function below is
 * thread-safe unless it says otherwise: it copies its arguments into a command, queues it
 * and returns; results come back through callbacks that run on the loop thread.
 *
 * Callback guarantee: if a function returns an error, its callback never runs; otherwise
 * the callback runs exactly once (with status VX_ECLOSED if the instance closed first).
 * Anything a callback receives is borrowed for the duration of that call only.
 *
 * This header includes no libuv, wslay, OpenSSL or cJSON type: handles are opaque.
 */
#ifndef VXEVENTS_H
#define VXEVENTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define VX_EXTERN __attribute__((visibility("default")))
#else
#define VX_EXTERN
#endif

#define VX_VERSION_MAJOR 0
#define VX_VERSION_MINOR 1
#define VX_VERSION_PATCH 0
#define VX_VERSION_STRING "0.1.0"

/* Error codes: 0 is success, every error is negative. One list yields the enum,
 * vx_strerror() and vx_err_name(). */
#define VX_ERRNO_MAP(XX)                                                                           \
  XX(EINVAL, -1, "invalid argument")                                                               \
  XX(ENOMEM, -2, "out of memory")                                                                  \
  XX(ECLOSED, -3, "instance is closed")                                                            \
  XX(EADDRINUSE, -4, "address already in use")                                                     \
  XX(EIO, -5, "input/output error")                                                                \
  XX(ESECRET, -6, "authSecret must be at least 32 characters")                                     \
  XX(ECHANNEL, -7, "invalid channel name")                                                         \
  XX(EJSON, -8, "data is not valid JSON")                                                          \
  XX(ETOOBIG, -9, "payload too large")                                                             \
  XX(ENOTFOUND, -10, "not found")                                                                  \
  XX(ELISTEN, -11, "cannot listen on the given address")                                           \
  XX(EBUSY, -12, "operation already in progress")                                                  \
  XX(ETHREAD, -13, "cannot start the event loop thread")                                           \
  XX(EBACKLOG, -14, "Redis is unreachable and the broadcast backlog is full")                      \
  XX(EUNAVAILABLE, -15,                                                                            \
     "Redis is unavailable (not connected within the connect timeout, "                            \
     "or the connection was lost before it answered)")                                             \
  XX(EUNPUBLISHED, -16, "broadcasts accepted before close were not published to Redis")            \
  XX(EAGAIN, -17, "no capacity now: try again when the core has drained (flow control)")        \
  XX(ETLS, -18, "TLS certificate, key or CA cannot be used")

typedef enum {
#define VX_ERR_ENUM(name, code, text) VX_##name = (code),
  VX_ERRNO_MAP(VX_ERR_ENUM)
#undef VX_ERR_ENUM
} vx_errno;

/* A static English description of `err` ("unknown error" for unknown codes). */
VX_EXTERN const char *vx_strerror(int err);
/* The code's stable name without prefix, e.g. "EINVAL" (for bindings' `.code`). */
VX_EXTERN const char *vx_err_name(int err);

typedef struct vx_events vx_events;

/* Host hooks. They run on the loop thread and must not block. `socket_id` and the
 * other strings are borrowed for the call only. */
typedef void (*vx_connect_cb)(const char *socket_id, void *data);
typedef void (*vx_disconnect_cb)(const char *socket_id, void *data);
typedef void (*vx_log_cb)(int level, const char *message, void *data);

#define VX_LOG_ERROR 0
#define VX_LOG_WARN 1
#define VX_LOG_INFO 2
#define VX_LOG_DEBUG 3

/* One log line with its fields, for hosts that write structured logs (on_log_record). Every
 * string is borrowed for the call; a field the line does not have is NULL. */
typedef struct vx_log_record {
  int level;             /* VX_LOG_* */
  const char *message;   /* the same text on_log receives */
  const char *socket_id; /* the connection the line is about */
  const char *channel;   /* the channel the line is about */
} vx_log_record;
typedef void (*vx_log_record_cb)(const vx_log_record *rec, void *data);

/* Format `rec` as one line ending in "\n" into `out` (always NUL-terminated when outlen > 0):
 * with `json` 0, "PROGRAM: LEVEL: MESSAGE" (PROGRAM omitted when NULL); with `json` 1, one JSON
 * object {"level","time" (RFC 3339, UTC, milliseconds),"message", then "socket_id" and
 * "channel" when set, and "program" when given}. A line longer than `outlen` is cut (a JSON
 * line stays valid: the message is shortened). Thread-safe. Returns the length written. */
VX_EXTERN size_t vx_log_format(const vx_log_record *rec, int json, const char *program, char *out,
                               size_t outlen);

/* A client event ({"type":"message"} on a private/presence channel the socket is
 * subscribed to), after the core accepted and rebroadcast it. `data` is JSON text. */
typedef void (*vx_client_event_cb)(const char *socket_id, const char *channel, const char *event,
                                   const char *data, size_t data_len, void *hook_data);

/* Channel authorization asked of the host by the core's own HTTP routes:
 * POST {path}/auth (kind VX_AUTH_TOKEN) and, with SSE, POST {sse_path}/subscribe (kind
 * VX_AUTH_SUBSCRIBE). Every string is borrowed for the duration of the call. The host
 * answers exactly once, from any thread, with vx_auth_reply(ev, req->id, ...); a request
 * not answered within 10 s gets 503. */
#define VX_AUTH_TOKEN 1
#define VX_AUTH_SUBSCRIBE 2
typedef struct vx_auth_request {
  uint64_t id;              /* pass to vx_auth_reply */
  int kind;                 /* VX_AUTH_TOKEN or VX_AUTH_SUBSCRIBE */
  const char *socket_id;    /* from the body (socketId / connectionId) */
  const char *channel;      /* from the body, already checked to be a valid name */
  const char *channel_type; /* "public", "private" or "presence" */
  const char *method;       /* "POST" */
  const char *url;          /* request target, query included */
  const char *headers;      /* every header, "Name: value\r\n" each */
  size_t headers_len;
  const char *body; /* the raw JSON body */
  size_t body_len;
} vx_auth_request;
typedef void (*vx_authorize_cb)(const vx_auth_request *req, void *hook_data);

typedef struct vx_options {
  const char *path;                   /* WebSocket endpoint path; default "/ws" */
  uint32_t ping_interval_ms;          /* keep-alive ping period; default 30000; 0 disables */
  size_t max_payload;                 /* largest client message / HTTP body; default 1 MiB */
  size_t max_send_queue;              /* unsent bytes per connection before 1008; default 1 MiB */
  uint32_t max_connections;           /* further connections get 503; default 100000 */
  uint32_t max_channels_per_conn;     /* subscriptions per connection; default 100 */
  const char *api_key;                /* enables POST /api/broadcast|batch; NULL = off */
  const char *auth_secret;            /* HMAC key for private/presence tokens, >= 32 chars; NULL =
                                   private/presence subscriptions are refused */
  vx_authorize_cb authorize;          /* NULL = public yes, private/presence no */
  vx_client_event_cb on_client_event; /* optional */
  uint32_t client_events_per_sec;     /* per connection; default 10; 0 disables client events */
  size_t max_member_size;             /* presence channel_data bytes; default 2048 */
  uint32_t max_presence_members;      /* per channel; default 10000 */
  const char *sse_path;               /* Server-Sent Events endpoint, e.g. "/events"; NULL = off.
                                   Also serves {sse_path}/subscribe and /unsubscribe */
  uint32_t heartbeat_interval_ms;     /* SSE comment heartbeat; default 15000; 0 disables */
  uint32_t retry_interval_ms;         /* SSE "retry:" sent to clients; default 3000 */
  int permessage_deflate;             /* accept permessage-deflate (RFC 7692, no context takeover:
                                   a broadcast is compressed once for all); default 1 */
  uint32_t history_size;              /* broadcasts kept per channel (its stream's history, DESIGN
                                   §12) so a client reconnecting with recover / Last-Event-ID
                                   gets what it missed; default 100; 0 = none (offsets are
                                   still assigned). Replaces sse_history */
  uint32_t history_ttl_ms;            /* how long a broadcast stays in the history; with Redis
                                   also the expiry of an idle channel's stream; default
                                   300000 (5 minutes) */
  size_t history_max_bytes;           /* bytes of history in memory for all channels together;
                                   over it the channels quiet the longest lose theirs first;
                                   default 4 MiB */
  const char *redis_url;              /* redis://[[user]:password@]host[:port][/db]; NULL = single
                                   instance. Broadcasts then reach every instance sharing it */
  const char *redis_prefix;           /* key and channel prefix; default "vx" */
  size_t redis_backlog_max;           /* bytes of broadcasts not yet acknowledged by Redis (waiting
                                   for the connection, or sent and awaiting the reply);
                                   default 16 MiB; past it vx_broadcast returns VX_EBACKLOG */
  uint32_t redis_connect_timeout_ms;  /* how long a cluster-wide query waits for the Redis
                                   connection and then for its answer before failing with
                                   VX_EUNAVAILABLE; also the grace vx_close gives Redis when
                                   called with grace_ms 0. Default 5000; with redis_url,
                                   outside 1 .. 3600000 vx_new returns VX_EINVAL */
  /* operations: the Origin policy, metrics, the landing page */
  const char *allowed_origins; /* comma list of origins ("https://app.example.com",
                                  "http://localhost:5173") and patterns ("*.example.com", also
                                  with a scheme or a port; "*" = all); a request whose Origin
                                  header matches none gets 403 (WebSocket upgrade, SSE, the
                                  auth, subscribe and publish routes). NULL = every origin.
                                  Requests without Origin (non-browser clients) are allowed */
  int metrics;                 /* serve GET /metrics (Prometheus text); default 1. It needs
                                  'Authorization: Bearer <metrics_token, or api_key when no
                                  metrics_token>'; with neither set it answers 404 */
  const char *metrics_token;   /* bearer token of GET /metrics; NULL = the api_key */
  int landing_page;            /* serve the demo page at GET / (and GET {path} without an
                                  upgrade when path is "/"); default 0 (vxevents-server: 1) */
  size_t flow_high_water;             /* unsent bytes of the connections past which queued
                                   broadcasts wait; default 16 MiB (see vx_wait_capacity) */
  size_t flow_low_water;              /* ... until they drained to this; default 0: half of
                                   flow_high_water (so is any value not below it) */
  size_t max_command_queue;           /* bytes of broadcasts accepted and not yet run; past it
                                   vx_broadcast returns VX_EAGAIN; default 1 MiB */
  size_t socket_send_buffer;          /* SO_SNDBUF of client sockets: what the kernel holds per
                                   connection beyond the send queue (a copy per connection,
                                   where the queue shares one frame between all); default
                                   256 KiB; 0 = the kernel's autotuned default */
  uint32_t slow_consumer_ms;          /* how long in total a connection may hold producers back
                                   before it stops counting (and is closed at max_send_queue);
                                   default 10000 */
  uint32_t publish_wait_ms;           /* how long a publish API request waits for capacity
                                   before 503 + Retry-After; default 5000 */
  /* TLS. Each value is a PEM file's path, or PEM text itself (starting "-----BEGIN ").
   * With tls_cert and tls_key the listener (vx_listen) serves TLS only: wss:// and https://
   * on the one port, ALPN http/1.1; vx_tls_reload loads them again. */
  const char *tls_cert;       /* certificate, then any intermediates (the chain) */
  const char *tls_key;        /* its private key (no passphrase) */
  const char *tls_ca;         /* given: clients must present a certificate signed by these */
  const char *redis_tls_ca;   /* rediss://: CAs that sign Redis's certificate; NULL = system */
  const char *redis_tls_cert; /* rediss://: a client certificate for Redis (tls-auth-clients) */
  const char *redis_tls_key;  /* and its key */
  int redis_tls_verify;       /* rediss://: verify Redis's certificate and name; default 1 */
  vx_connect_cb on_connect;           /* optional */
  vx_disconnect_cb on_disconnect;     /* optional */
  vx_log_cb on_log;                   /* optional; NULL logs nothing */
  vx_log_record_cb on_log_record;     /* optional; used instead of on_log when set */
  int log_level;                      /* messages up to this level reach on_log; default WARN */
  void *hook_data;                    /* passed to every hook above */
} vx_options;

/* Fill `opts` with the defaults listed above. Not thread-sensitive. */
VX_EXTERN void vx_options_init(vx_options *opts);

/* The options table: one entry per settable vx_options field (the hooks are not in it),
 * the single source of the defaults, bounds, vxevents-server flags (--<flag>), environment
 * variables, the Node and Python option names, and the help text. */
enum {
  VX_OPT_UINT = 1, /* uint32_t */
  VX_OPT_SIZE,     /* size_t */
  VX_OPT_BOOL,     /* int, 0 or 1 */
  VX_OPT_LEVEL,    /* int, VX_LOG_ERROR..VX_LOG_DEBUG; "error".."debug" as text */
  VX_OPT_STRING,   /* const char *; min/max bound the length */
  VX_OPT_PATH,     /* const char *, an absolute URL path */
  VX_OPT_SECRET,   /* const char *, at least min characters (VX_ESECRET below) */
  VX_OPT_REDIS     /* const char *, a redis:// URL */
};
typedef struct vx_option_info {
  const char *name;           /* the vx_options field, e.g. "ping_interval_ms" */
  int type;                   /* VX_OPT_* */
  uint64_t default_number;    /* numeric types */
  const char *default_string; /* string types (NULL = none) */
  uint64_t min, max;          /* bounds of the value, or of a string's length */
  const char *flag;           /* vxevents-server flag without the dashes */
  const char *env;            /* environment variable of vxevents-server */
  const char *node;           /* Node option name, NULL when Node does not offer it */
  const char *python;         /* Python option name, NULL when Python does not offer it */
  const char *help;           /* one sentence */
  size_t offset;              /* offsetof(vx_options, field) */
} vx_option_info;

/* The table (static storage); `*n` (may be NULL) receives its length. */
VX_EXTERN const vx_option_info *vx_option_table(size_t *n);

/* Set one option from text, as a flag, an environment variable or a binding gives it.
 * `name` is any of the entry's names (field, flag, Node or Python name). Numbers are
 * decimal; booleans 0/1/true/false/on/off; log levels error/warn/info/debug; an empty value
 * restores the default (no API key, no secret, SSE and Redis off). A string value is
 * borrowed: keep it alive until vx_new has copied it. On error, `err` (may be NULL)
 * receives a message that names the option and the allowed values. Not thread-sensitive.
 * Returns 0, VX_EINVAL (unknown option, bad value), VX_ESECRET (secret too short). */
VX_EXTERN int vx_options_set(vx_options *opts, const char *name, const char *value, char *err,
                             size_t errlen);

/* Check every option against the table (what vx_new does first). On error `err` (may be
 * NULL) receives a message naming the field that failed and why.
 * Returns 0, VX_EINVAL, VX_ESECRET. */
VX_EXTERN int vx_options_check(const vx_options *opts, char *err, size_t errlen);

/* Create an instance and start its loop thread. Strings in `opts` are copied.
 * `opts` may be NULL for the defaults. On success `*out` is the new handle.
 * Returns 0, VX_EINVAL (an option out of its bounds: vx_options_check says which),
 * VX_ESECRET, VX_ENOMEM, VX_ETHREAD. */
VX_EXTERN int vx_new(vx_events **out, const vx_options *opts);

/* Listen on host:port (port 0 picks a free one). Blocks the CALLING thread until the
 * loop thread has bound the socket (so errors are reported here), then returns.
 * `*bound_port` (may be NULL) receives the actual port.
 * Returns 0, VX_EINVAL (bad host), VX_EADDRINUSE, VX_ELISTEN, VX_EBUSY (already
 * listening), VX_ECLOSED. */
VX_EXTERN int vx_listen(vx_events *ev, const char *host, int port, int *bound_port);

/* TLS on the listener, from any thread: `cert` (the chain), `key` and optionally `ca` (then
 * clients must present a certificate it signed) are PEM files' paths or PEM text. Loaded on
 * the calling thread; connections accepted from then on use them, open ones keep theirs.
 * Call before vx_listen for a TLS listener (the listener is then TLS only). On failure
 * `err` says why and nothing changes. Returns 0, VX_EINVAL, VX_ETLS, VX_ENOMEM. */
VX_EXTERN int vx_tls_configure(vx_events *ev, const char *cert, const char *key, const char *ca,
                               char *err, size_t errlen);
/* Load the configured certificate, key and CA files again (SIGHUP in vxevents-server): new
 * connections get the new ones, open connections are not touched; when the new files cannot
 * be used the old ones stay and `err` says why. Returns 0, VX_EINVAL (no TLS configured),
 * VX_ETLS, VX_ENOMEM. */
VX_EXTERN int vx_tls_reload(vx_events *ev, char *err, size_t errlen);

/* Hand an accepted TCP socket to the instance. `fd` becomes the instance's (it is closed
 * by the instance, also on error after return). `bytes`/`len` are the bytes already read
 * from the socket — the start of an HTTP request (request line, headers, maybe more);
 * they are copied and processed as if they had just arrived. Returns 0, VX_EINVAL
 * (fd < 0; the fd is then not taken), VX_ENOMEM, VX_ECLOSED. */
VX_EXTERN int vx_adopt(vx_events *ev, int fd, const char *bytes, size_t len);

/* Broadcast `event` with `data` (JSON text of `data_len` bytes; NULL means null) to every
 * subscriber of `channel`, skipping the connection whose socket id is `except_id`
 * (NULL = none). Everything is copied before return. The envelope is serialized once and
 * shared by all recipients.
 * With Redis the broadcast also reaches every other instance (exactly once each): it is
 * published as soon as the Redis connection is up (one made before that waits for it), and
 * kept until Redis acknowledged it; vx_shutdown reports any that never were.
 * Returns 0, VX_ECHANNEL (bad channel name), VX_EINVAL (event empty or over 200 bytes,
 * except_id too long), VX_EJSON (data not JSON), VX_ETOOBIG, VX_EAGAIN (no capacity now:
 * see vx_wait_capacity; nothing was queued), VX_EBACKLOG (the broadcasts
 * Redis has not acknowledged yet would exceed redis_backlog_max: Redis unreachable or
 * stalled; the broadcast is then delivered nowhere, this instance included), VX_ENOMEM,
 * VX_ECLOSED. */
VX_EXTERN int vx_broadcast(vx_events *ev, const char *channel, const char *event, const char *data,
                           size_t data_len, const char *except_id);

/* Same for `n` channels at once (1..100). Each recipient gets one message per channel it
 * is subscribed to. Errors as vx_broadcast; nothing is sent if any channel is invalid. */
VX_EXTERN int vx_broadcast_many(vx_events *ev, const char *const *channels, size_t n,
                                const char *event, const char *data, size_t data_len,
                                const char *except_id);

/* Flow control. A broadcast is accepted into a bounded queue (max_command_queue bytes);
 * the loop thread takes broadcasts from it only while the unsent bytes of the connections
 * stay under flow_high_water and none of them is past half its max_send_queue, and goes on
 * once they drained under flow_low_water. So a producer faster than its clients fills
 * the queue, and then vx_broadcast / vx_broadcast_many return VX_EAGAIN without queuing
 * anything (never blocking): the caller waits for capacity with one of the two calls below
 * and tries again. A connection that keeps the queue waiting longer than slow_consumer_ms
 * (in total, since its send queue was last empty) stops counting; it still gets every
 * message, and is closed with 1008 once it holds more than max_send_queue.
 *
 * vx_wait_capacity blocks the calling thread until the queue has room again (it is at most
 * half full), at most `timeout_ms` (0 = do not wait, just tell). Returns 0 (room),
 * VX_EAGAIN (still full after timeout_ms), VX_ECLOSED (the instance closed meanwhile or
 * before), VX_EINVAL (called on the loop thread, that is from a callback).
 *
 * vx_on_capacity runs `cb` once, on the loop thread, when the queue has room (soon after the
 * call if it has room already), or with status VX_ECLOSED when the instance closes first.
 * Returns 0, VX_EINVAL (cb NULL), VX_ENOMEM, VX_ECLOSED (cb then never runs). */
VX_EXTERN int vx_wait_capacity(vx_events *ev, uint32_t timeout_ms);
typedef void (*vx_capacity_cb)(int status, void *data);
VX_EXTERN int vx_on_capacity(vx_events *ev, vx_capacity_cb cb, void *data);

/* 1 when `id` (`len` bytes) is a socket id the core accepts (what vx_sign and the auth and
 * SSE subscribe routes take: 1 to 64 of A-Z a-z 0-9 . - _), else 0. For the bindings, which
 * check a socket id before asking the host's authorizer. */
VX_EXTERN int vx_socket_id_valid(const char *id, size_t len);

/* Sign a channel subscription: writes "socketId:hex(HMAC-SHA256(secret,
 * socketId:channel[:channel_data]))" and a NUL into `out` (`out_len` >= 200 + 66 + the
 * socket id's length is always enough). Synchronous and thread-safe: it touches only the
 * immutable secret. Returns the string length (> 0), or VX_EINVAL (bad socket id or
 * channel, out too small), VX_ESECRET (no auth_secret configured). */
VX_EXTERN int vx_sign(vx_events *ev, const char *socket_id, const char *channel,
                      const char *channel_data, char *out, size_t out_len);

/* Answer an authorization request (see vx_authorize_cb). `authorized` 0 refuses with
 * `error` (may be NULL); otherwise for a presence channel `member_json` must be the member
 * object {"id": ..., "info": ...} (a string or number id). Thread-safe; strings copied.
 * An id that is unknown or already expired is ignored (the request was answered 503).
 * Returns 0, VX_EINVAL (bad member JSON), VX_ENOMEM, VX_ECLOSED. */
VX_EXTERN int vx_auth_reply(vx_events *ev, uint64_t id, int authorized, const char *member_json,
                            const char *error);

/* Outcome of an operation on a connection: 0 or a negative code, with a reason (borrowed,
 * may be NULL). */
typedef void (*vx_status_cb)(int status, const char *message, void *data);

/* Subscribe the Server-Sent Events stream `connection_id` to `channel` on the host's
 * authority: for hosts that authorize SSE subscriptions in their own HTTP framework rather
 * than through the core's POST {sse_path}/subscribe. The host has decided already; for a
 * presence channel `member_json` is the member {"id": .., "info": ..}. The stream receives
 * subscription_succeeded as usual. `cb` (may be NULL) gets 0, VX_ENOTFOUND (no such open
 * event stream) or VX_EINVAL with the reason (bad member, a limit). Thread-safe; strings
 * copied. Returns 0, VX_ECHANNEL, VX_EINVAL (bad connection id), VX_ENOMEM, VX_ECLOSED. */
VX_EXTERN int vx_sse_subscribe(vx_events *ev, const char *connection_id, const char *channel,
                               const char *member_json, vx_status_cb cb, void *data);
/* The reverse; `cb` gets 0 or VX_ENOTFOUND. Same returns. */
VX_EXTERN int vx_sse_unsubscribe(vx_events *ev, const char *connection_id, const char *channel,
                                 vx_status_cb cb, void *data);

/* Query callbacks. `status` is 0 or a negative code (VX_ECLOSED when the instance closed
 * before answering); on error the other arguments are 0/NULL. */
typedef void (*vx_count_cb)(int status, uint64_t count, void *data);
typedef void (*vx_channels_cb)(int status, const char *const *names, size_t n, void *data);

typedef struct vx_stats {
  uint64_t connections;          /* open WebSocket and SSE connections */
  uint64_t channels;             /* channels with at least one subscriber */
  uint64_t messages_delivered;   /* frames queued to connections since start */
  uint64_t bytes_written;        /* bytes accepted by the kernel */
  uint64_t slow_consumer_closes; /* connections closed with 1008 */
  uint64_t ping_timeouts;        /* connections dropped for not answering pings */
  uint64_t rejected_connections; /* 503 over max_connections */
  /* flow control (see vx_wait_capacity) */
  uint64_t flow_paused_ms;     /* time queued commands waited for the send queues to drain */
  uint64_t flow_wait_ms;       /* time callers waited for capacity (vx_wait_capacity, the
                                  bindings' pending broadcasts, parked publish requests) */
  uint64_t flow_waits;         /* broadcasts that found no capacity (VX_EAGAIN) */
  uint64_t flow_refused;       /* publish API requests answered 503 after publish_wait_ms */
  uint64_t flow_lagging;       /* connections that held producers back past slow_consumer_ms
                                  and stopped pacing them */
  uint64_t command_queue_bytes; /* broadcast bytes accepted and not yet run (now) */
  uint64_t unsent_bytes;        /* unsent bytes of the connections that pace producers (now) */
  uint64_t tls_errors;           /* TLS connections cut for a failed handshake or a bad record */
  uint64_t history_bytes;        /* what the channels' history holds (<= history_max_bytes) */
  uint64_t history_streams;      /* channel streams in memory (with history or subscribers) */
} vx_stats;
typedef void (*vx_stats_cb)(int status, const vx_stats *stats, void *data);

/* Cluster-wide queries. With redis_url they answer for every instance sharing the Redis,
 * never from this instance's view alone: a query made before the Redis connection is up
 * (right after vx_new) waits for it, and fails with status VX_EUNAVAILABLE when Redis is not
 * reachable within redis_connect_timeout_ms, or when the connection is lost (or Redis does
 * not answer within that time) while the query is on its way.
 *
 * Number of subscribers of `channel` (0 for unknown). Returns 0, VX_ECHANNEL, VX_ECLOSED. */
VX_EXTERN int vx_subscriber_count(vx_events *ev, const char *channel, vx_count_cb cb, void *data);
/* Whether `channel` has at least one subscriber: `count` is 1 or 0.
 * Returns 0, VX_ECHANNEL, VX_ECLOSED. */
VX_EXTERN int vx_has_subscribers(vx_events *ev, const char *channel, vx_count_cb cb, void *data);
/* Presence members of `channel` as a JSON array text [{"id":..,"info":..},...]
 * (deduplicated by id), borrowed for the callback. Returns 0, VX_ECHANNEL, VX_ECLOSED. */
typedef void (*vx_json_cb)(int status, const char *json, size_t len, void *data);
VX_EXTERN int vx_presence_members(vx_events *ev, const char *channel, vx_json_cb cb, void *data);

/* Channels with at least one subscriber. Returns 0, VX_EINVAL (cb NULL), VX_ECLOSED. */
VX_EXTERN int vx_channels(vx_events *ev, vx_channels_cb cb, void *data);
/* Counters. Returns 0, VX_EINVAL (cb NULL), VX_ECLOSED. */
VX_EXTERN int vx_stats_get(vx_events *ev, vx_stats_cb cb, void *data);

/* ---- channel streams (DESIGN §12) ----
 * Every broadcast to a channel gets the channel's next offset (+1 per broadcast) within an
 * epoch (a short string that changes when the stream's history was lost); events carry
 * "offset", subscription_succeeded carries {"offset", "epoch"}, and a client that
 * subscribes with "recover" gets what it missed. */

/* The outcome of vx_publish: status 0 with the broadcast's offset and its channel's epoch
 * (borrowed; offset 0 and epoch "" when the channel keeps no stream: no subscribers and
 * history_size 0, or a resend whose first reply Redis lost), or a negative code (the
 * broadcast's own errors, VX_EUNPUBLISHED when Redis never took it, VX_ECLOSED). */
typedef void (*vx_published_cb)(int status, uint64_t offset, const char *epoch, void *data);

/* vx_broadcast to one channel that reports the offset it got. The offset is known only
 * once the loop ran the broadcast (single instance) or Redis's script answered (with
 * redis_url), so it comes to `cb` (may be NULL), exactly once, on the loop thread.
 * Returns as vx_broadcast. */
VX_EXTERN int vx_publish(vx_events *ev, const char *channel, const char *event, const char *data,
                         size_t data_len, const char *except_id, vx_published_cb cb, void *cb_data);

/* The history of `channel`: its events with offset > `since`, oldest first, at most `limit`
 * (0: history_size), as JSON borrowed for the callback: {"channel":..,"epoch":"..","offset":
 * <last>,"complete":bool,"events":[<the event messages as clients get them>]}. "complete"
 * is false when events after `since` are no longer kept (then "events" starts later). With
 * redis_url it reads the channel's Redis stream (any instance's broadcasts) and fails with
 * VX_EUNAVAILABLE when Redis cannot answer. Returns 0, VX_EINVAL, VX_ECHANNEL, VX_ENOMEM,
 * VX_ECLOSED. */
VX_EXTERN int vx_history(vx_events *ev, const char *channel, uint64_t since, uint32_t limit,
                         vx_json_cb cb, void *data);

/* This instance's metrics as Prometheus text exposition format 0.0.4: the same text GET
 * /metrics serves, for hosts that expose it on a route of their own. `text` is borrowed for
 * the callback, which runs once on the loop thread (status VX_ECLOSED, text NULL, when the
 * instance closed first; VX_ENOMEM when the text could not be built).
 * Returns 0, VX_EINVAL (cb NULL), VX_ENOMEM, VX_ECLOSED. */
typedef void (*vx_text_cb)(int status, const char *text, size_t len, void *data);
VX_EXTERN int vx_metrics(vx_events *ev, vx_text_cb cb, void *data);

/* Close gracefully and report what could not be published.
 *
 * Stops listening, sends close 1001 ("server shutting down") to every client and gives them
 * up to `grace_ms` (0 = 1000) to finish. With redis_url, every broadcast accepted before the
 * close is published first: if the Redis connection is still starting (the job pattern
 * vx_new, vx_broadcast, vx_shutdown) or reconnecting, close waits for it; then it waits for
 * Redis to acknowledge each PUBLISH (a reply arrived, not merely written to the socket). That
 * takes up to `grace_ms` (0 = redis_connect_timeout_ms) and no longer than needed: an
 * instance with nothing left to publish does not wait for Redis at all. This instance then
 * leaves the cluster view at once (its counts and presence members are removed, with the
 * member_removed events they owe) instead of waiting to be reaped. Once everything held
 * is acknowledged, Redis's other replies get at most 200 ms more.
 *
 * `cb` (may be NULL) runs on the loop thread once everything is closed, just before the
 * thread exits, with status 0 and unpublished 0 when everything reached Redis, or
 * VX_EUNPUBLISHED and the number of broadcasts that did not: still waiting when the grace
 * period ended, or refused by Redis (an error reply) at any time since vx_new. Counted per
 * channel: a vx_broadcast_many to 3 channels is 3.
 * Returns 0, or VX_ECLOSED if close was already requested (cb then never runs). */
typedef void (*vx_shutdown_cb)(int status, uint64_t unpublished, void *data);
VX_EXTERN int vx_shutdown(vx_events *ev, uint32_t grace_ms, vx_shutdown_cb cb, void *data);

/* vx_shutdown without the report: `cb` (may be NULL) runs once everything is closed.
 * Returns 0, or VX_ECLOSED if close was already requested (cb then never runs). */
typedef void (*vx_close_cb)(void *data);
VX_EXTERN int vx_close(vx_events *ev, uint32_t grace_ms, vx_close_cb cb, void *data);

/* Close (if not yet requested, as vx_close(ev, 0, NULL, NULL): with Redis this may wait up
 * to redis_connect_timeout_ms for broadcasts still held; call vx_shutdown first to choose the
 * grace and learn the outcome), wait for the loop thread to exit and free everything.
 * Accepts NULL. Must not be called from the loop thread (that is, from a callback). */
VX_EXTERN void vx_free(vx_events *ev);

#ifdef __cplusplus
}
#endif
#endif /* VXEVENTS_H */
