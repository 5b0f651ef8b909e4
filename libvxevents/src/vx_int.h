/* Private structures and vx__ prototypes shared by the core's source files.
 * Everything here is touched only on the instance's loop thread unless marked
 * "any thread". */
#ifndef VX_INT_H
#define VX_INT_H

#include "vxevents.h"
#include "backplane.h"
#include "transport.h"
#include "tls.h"

#include <http_parser.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <wslay/wslay.h>

#define VX_SOCKET_ID_LEN 32 /* 128 random bits as hex */
#define VX_CHANNEL_MAX 200  /* bytes in a channel name */
#define VX_EVENT_MAX 200    /* bytes in an event name */
#define VX_BATCH_MAX 100    /* broadcasts per /api/batch, channels per broadcast_many */
#define VX_JSON_DEPTH_MAX 128
#define VX_HTTP_HEADER_MAX 16384
#define VX_HTTP_DEADLINE_MS 10000 /* a request must arrive whole within this */
#define VX_READ_BUF 65536

/* ---- buf.c: reference-counted immutable byte buffers ----
 * A broadcast frame is built once into one vx_buf; every recipient's send queue holds
 * a reference. Loop thread only, so the count is a plain integer. */
typedef struct vx_buf {
  uint32_t refs;
  uint32_t len;
  char data[];
} vx_buf;

vx_buf *vx__buf_new(size_t len); /* refs = 1, contents uninitialized */
static inline vx_buf *vx__buf_ref(vx_buf *b) {
  b->refs++;
  return b;
}
void vx__buf_unref(vx_buf *b);

/* ---- map.c: string-keyed open-addressing hash map ----
 * Keys are borrowed from the values (a connection's id, a channel's name): the map
 * stores the pointer, so a key must live as long as its entry. */
typedef struct vx_map_entry {
  const char *key; /* NULL = empty slot */
  uint32_t hash;
  uint32_t klen;
  void *val;
} vx_map_entry;

typedef struct vx_map {
  vx_map_entry *slots;
  uint32_t cap; /* power of two, 0 before first insert */
  uint32_t len;
} vx_map;

uint32_t vx__hash(const char *s, size_t len);
void *vx__map_get(const vx_map *m, const char *key, size_t klen);
int vx__map_put(vx_map *m, const char *key, size_t klen, void *val); /* 0 or VX_ENOMEM */
void *vx__map_del(vx_map *m, const char *key, size_t klen);
void vx__map_free(vx_map *m);

/* ---- protocol.c: JSON text helpers ---- */

/* Growable byte string for building small messages (not used on the broadcast path). */
typedef struct vx_str {
  char *p;
  size_t len, cap;
  bool oom;
} vx_str;
void vx__str_add(vx_str *s, const char *p, size_t n);
void vx__str_addz(vx_str *s, const char *p);
void vx__str_add_json_string(vx_str *s, const char *p, size_t n); /* with quotes */
void vx__str_free(vx_str *s);

bool vx__utf8_valid(const char *p, size_t n);
/* Whole `p` is exactly one JSON value (whitespace around allowed), valid UTF-8,
 * nesting at most VX_JSON_DEPTH_MAX. Allocates nothing. */
bool vx__json_valid(const char *p, size_t n);
/* Length of the one JSON value at `p` (after leading whitespace), 0 if none. */
size_t vx__json_value_len(const char *p, size_t n);
/* In a JSON object text, the raw text of the top-level member `key` (compared without
 * unescaping). Used to splice `data` verbatim instead of re-serializing it. */
bool vx__json_field(const char *obj, size_t n, const char *key, const char **v, size_t *vn);
/* Raw spans of up to `max` elements of a JSON array; returns max + 1 when there are more. */
size_t vx__json_array_items(const char *arr, size_t n, const char **items, size_t *lens,
                            size_t max);
/* Does any string in this JSON text contain the escape \u0000? C strings from the parser
 * would silently stop there. */
bool vx__json_has_nul(const char *p, size_t n);
bool vx__channel_valid(const char *name, size_t n);
/* A channel's kind, from its prefix ("private-", "presence-" or none). */
typedef enum { VX_CH_PUBLIC = 0, VX_CH_PRIVATE, VX_CH_PRESENCE } vx_chkind;
vx_chkind vx__channel_kind(const char *name, size_t n);
extern const char *const vx__channel_kind_names[3];   /* "public", "private", "presence" */
size_t vx__json_escaped_len(const char *p, size_t n); /* without quotes */
char *vx__json_escape_into(char *dst, const char *p, size_t n);

/* Build a server->client frame (unmasked, FIN, text) whose payload is `payload`. */
vx_buf *vx__frame_text(const char *payload, size_t n);
/* Header bytes for a text frame of `n` payload bytes: returns header length (2, 4, 10). */
size_t vx__frame_header(uint8_t *hdr, uint8_t opcode, uint64_t n);

/* The event envelope {"type":"event","channel":..,"event":..,"data":..<extra>} framed for
 * WebSocket, built in one allocation. `data` must already be valid JSON; `extra` (may be
 * empty) is spliced before the closing brace: the server-set members of client events,
 * e.g. ,"client":true,"user_id":"u1". */
vx_buf *vx__envelope_frame(const char *channel, size_t clen, const char *event, size_t elen,
                           const char *data, size_t dlen, const char *extra, size_t xlen);
/* The same with ,"offset":<offset> last (offset 0: none), the channel stream's position. */
vx_buf *vx__envelope_frame_at(const char *channel, size_t clen, const char *event, size_t elen,
                              const char *data, size_t dlen, const char *extra, size_t xlen,
                              uint64_t offset);
/* The `extra` of a client event: ,"client":true[,"user_id":<uid raw JSON>] into `out`
 * (room for 32 + uidlen bytes, uidlen <= 256). Returns its length. */
size_t vx__client_extra(char *out, const char *uid, size_t uidlen);

/* ---- the instance and its connections ---- */

typedef struct vx_conn vx_conn;
typedef struct vx_conn_up vx_conn_up;
typedef struct vx_channel vx_channel;

/* A presence member: one per user id per channel, however many connections it has. */
typedef struct vx_member {
  uint32_t conns;  /* subscriptions of this user on the channel */
  size_t id_len;   /* raw JSON text of the id value, the dedupe key */
  size_t json_len; /* {"id":..,"info":..} */
  char *id;        /* points into json */
  char json[];
} vx_member;

/* A subscribe's request to recover (DESIGN §12): the offset and epoch it saw last. */
#define VX_EPOCH_MAX 32
enum { VX_REC_OFFSET = 0, VX_REC_SEQ };
typedef struct vx_recover {
  uint8_t kind;    /* VX_REC_OFFSET: a WebSocket recover {offset, epoch} of the channel;
                      VX_REC_SEQ: an SSE Last-Event-ID "<epoch>-<seq>" (ev->sse_tag) */
  uint64_t offset; /* the last offset (or seq) the client has */
  char epoch[VX_EPOCH_MAX + 1];
} vx_recover;

/* An SSE stream that reconnected with Last-Event-ID: every channel it subscribes to
 * recovers from there; "resumed" tells the outcome for its ?channels= once all are acked. */
typedef struct vx_resume {
  vx_recover rec;
  uint32_t pending;  /* ?channels= subscriptions not acknowledged yet */
  uint32_t replayed; /* events replayed to them */
  bool ok;           /* every one recovered so far */
  bool started;      /* the ?channels= are all subscribed */
  bool told;         /* "resumed" went out */
} vx_resume;

/* Subscription flags (vx_sub.flags). */
enum {
  VXS_F_DEFERRED = 1u << 0,  /* subscription_succeeded waits for the backplane */
  VXS_F_REPLAYING = 1u << 1, /* recovering: live events are held back (replayed from the
                                stream in order) until the replay reaches them */
  VXS_F_FETCHING = 1u << 2,  /* a replay waits for older entries from the backplane */
};

typedef struct vx_sub {
  vx_conn *conn;
  vx_channel *ch;
  vx_member *member;         /* presence channels only */
  char *ack_members;         /* a deferred presence ack: its members JSON (NUL-terminated) */
  vx_recover *rec;           /* the subscribe asked to recover (until its ack went out) */
  uint64_t next;             /* replaying: the next offset this subscriber gets */
  struct vx_sub *replay_nxt; /* ev->replays */
  uint32_t fetch_id;         /* the backplane fetch its replay waits for */
  uint32_t idx;              /* position in ch->subs */
  uint8_t flags;             /* VXS_F_* */
} vx_sub;

typedef struct vx_stream vx_stream;

struct vx_channel {
  vx_sub **subs;
  uint32_t nsubs, cap;
  uint32_t nreplaying; /* subs with VXS_F_REPLAYING: the fan-out checks the flag only then */
  vx_map members;      /* presence channels: id -> vx_member */
  vx_stream *st;       /* the channel's stream (history.c); NULL only out of memory */
  size_t name_len;
  char name[]; /* NUL-terminated */
};

/* Connection flags (vx_conn.flags): one bit each, set and tested with vx_set/vx_has. */
enum {
  VXC_F_DIRTY = 1u << 0,             /* on ev->dirty: output to flush this iteration */
  VXC_F_DOOMED = 1u << 1,            /* on ev->doomed: a slow consumer to close */
  VXC_F_CLOSED = 1u << 2,            /* the handle is closing; nothing more happens */
  VXC_F_ALIVE = 1u << 3,             /* showed life since the last keep-alive tick */
  VXC_F_WRITING = 1u << 4,           /* a uv_write is outstanding (the kernel is full) */
  VXC_F_ANNOUNCED = 1u << 5,         /* counted as a client; the host heard on_connect */
  VXC_F_CLOSE_AFTER_FLUSH = 1u << 6, /* close once the queue is written */
  VXC_F_CLOSE_RCVD = 1u << 7,        /* the peer's close frame arrived (the gate in ws.c) */
  VXC_F_LINGERING = 1u << 8,         /* write side shut down, input discarded until EOF */
  VXC_F_READ_PAUSED = 1u << 9,       /* HTTP: reading stopped while answers exceed the bound */
  VXC_F_OOM = 1u << 10,              /* doomed because memory for it ran out (1011) */
  /* flow control (flow.c) */
  VXC_F_COUNTED = 1u << 11,   /* its unsent bytes count in ev->flow.bytes (it paces producers) */
  VXC_F_CONGESTED = 1u << 12, /* counted, and its queue passed half of max_send_queue */
  VXC_F_LAGGING = 1u << 13,   /* held producers back too long: no longer counted until it
                                 catches up (an empty queue) or is closed at the bound */
  VXC_F_PARKED = 1u << 14,    /* HTTP: a publish request waits for capacity (ev->flow.parked) */
};
#define vx_has(c, f) (((c)->flags & (f)) != 0)
#define vx_set(c, f) ((c)->flags |= (uint16_t)(f))
#define vx_clr(c, f) ((c)->flags &= (uint16_t) ~(f))
/* An open WebSocket or SSE client (not HTTP, not closing). */
#define VX_IS_CLIENT(c) ((c)->kind != VXK_HTTP && (c)->phase == VXP_OPEN)
#define VX_OPEN_AS(c, k) ((c)->kind == (k) && (c)->phase == VXP_OPEN)

typedef struct vx_http_req vx_http_req;

struct vx_conn {
  vx_events *ev;
  uv_tcp_t tcp;
  vx_conn *prev, *next;        /* ev->conns */
  vx_conn *dirty_next;         /* ev->dirty, conns with output to flush this iteration */
  vx_conn *doomed_next;        /* ev->doomed, slow consumers to close after a broadcast */
  const vx_transport *tp;      /* what the transport does (transport.h) */
  uint8_t kind;                /* vx_kind */
  uint8_t phase;               /* vx_phase */
  uint8_t enc;                 /* vx_encoding of what broadcasts send it */
  uint16_t flags;              /* VXC_F_* */
  uint32_t linger_left;        /* bytes still discarded before the socket is cut */
  uint16_t pending_close_code; /* close code queued by wslay */
  uint64_t deadline;           /* HTTP request or close handshake deadline (uv_now ms) */

  http_parser *hp;            /* HTTP phase only */
  vx_http_req *req;           /* HTTP phase only */
  wslay_event_context_ptr ws; /* created when bytes arrive, freed again between messages */
  struct {                    /* frame boundaries of the input, to know when wslay is idle */
    uint64_t remain;          /* payload bytes left in the current frame */
    uint8_t hdr[14];
    uint8_t hlen; /* header bytes collected (0 = at a frame boundary) */
    bool in_msg;  /* inside a fragmented data message */
    bool in_ctl;  /* receiving a ping or close frame (never given to wslay) */
  } fr;
  vx_buf *ctl;       /* that frame's payload as it arrives (the pong, for a ping) */
  vx_buf *pong;      /* a queued pong no write has taken yet (see vx__conn_send_pong) */
  const uint8_t *in; /* bytes wslay may read, set around wslay_event_recv */
  size_t in_len;

  /* send queue: ring of buffer references; qoff bytes of the head are already sent */
  vx_buf **q;
  uint32_t qhead, qlen, qcap;
  uint32_t qinflight; /* entries handed to an outstanding uv_write */
  size_t qoff;
  size_t qbytes;    /* unsent bytes in the queue */
  uv_write_t *wreq; /* allocated the first time the kernel is full, then kept */
  uint32_t blame_ms;    /* time it held producers back since its queue was last empty */
  uint32_t sent, sent_tick; /* bytes the kernel took (wrapping), and at the last flow tick */
  uint32_t stall_ms;        /* flow ticks in a row (in ms) in which the kernel took nothing */
  vx_conn *parked_next; /* ev->flow.parked */
  uint64_t parked_until;
  vx_tls_conn *tls; /* TLS (tls.c) under the transport; NULL = plain TCP */

  vx_sub **subs;
  uint32_t nsubs, subcap;
  struct vx_pending_auth *pending; /* an auth request waiting for the host */
  vx_resume *resume;               /* SSE: reconnected with Last-Event-ID (node.c frees it) */
  double ce_tokens;                /* client-event token bucket */
  uint64_t ce_last_ms;
  char id[VX_SOCKET_ID_LEN + 1];
};

/* An HTTP request waiting for the host's authorize answer. */
typedef struct vx_pending_auth {
  uint64_t id;
  vx_conn *conn; /* NULL once the connection is gone */
  uint64_t deadline;
  int kind;
  char *socket_id;
  char channel[VX_CHANNEL_MAX + 1];
  struct vx_pending_auth *next;
} vx_pending_auth;

typedef struct vx_cmd vx_cmd; /* commands.h */

/* ---- metrics.c: what GET /metrics reads beside ev->stats (loop thread) ----
 * Each list below yields its enum and its label values, so a new reason is one line. */
#define VX_AUTH_REFUSAL_MAP(XX)                                                                    \
  XX(NO_SECRET, "no_secret")             /* private/presence with no auth secret configured */     \
  XX(NO_TOKEN, "missing_token")          /* subscribe without "auth" */                            \
  XX(MALFORMED, "malformed_token")       /* not <socketId>:<hex> */                                \
  XX(OTHER_SOCKET, "other_socket")       /* a token issued for another connection */               \
  XX(NO_CHANNEL_DATA, "missing_channel_data") /* presence without channel_data */                  \
  XX(MEMBER_TOO_LARGE, "member_too_large") /* channel_data over max_member_size */                 \
  XX(BAD_SIGNATURE, "bad_signature")     /* the HMAC does not match */                             \
  XX(AUTHORIZER, "authorizer")           /* the host's authorizer said no (/auth, SSE subscribe) */ \
  XX(TIMEOUT, "authorizer_timeout")      /* the host's authorizer did not answer in time */
#define VX_REJECT_MAP(XX)                                                                          \
  XX(ORIGIN, "origin")             /* Origin not in allowed_origins (403) */                       \
  XX(SHUTTING_DOWN, "shutting_down") /* upgrade or SSE while closing (503) */
enum {
#define VX_AR_ENUM(id, label) VX_AR_##id,
  VX_AUTH_REFUSAL_MAP(VX_AR_ENUM)
#undef VX_AR_ENUM
      VX_AR_COUNT
};
enum {
#define VX_RJ_ENUM(id, label) VX_RJ_##id,
  VX_REJECT_MAP(VX_RJ_ENUM)
#undef VX_RJ_ENUM
      VX_RJ_COUNT
};
#define VX_API_CODES 11   /* the statuses the publish API answers, and "other" */
#define VX_FANOUT_BUCKETS 12 /* upper bounds in metrics.c */
typedef struct vx_metrics_state {
  uint64_t bytes_in;    /* read from every socket */
  uint64_t messages_in; /* WebSocket messages from clients */
  uint64_t auth_refusals[VX_AR_COUNT];
  uint64_t rejected[VX_RJ_COUNT]; /* beside stats.rejected_connections (max_connections) */
  uint64_t api[VX_API_CODES];     /* POST /api/broadcast and /api/batch answers by status */
  uint64_t redis_reconnects;      /* Redis connections made again after a loss */
  bool redis_ready[2];            /* [0] commands, [1] subscriber connection up */
  uint64_t fanout[VX_FANOUT_BUCKETS]; /* broadcasts per fan-out time bucket (not cumulative) */
  uint64_t fanout_count, fanout_ns;
} vx_metrics_state;

struct vx_events {
  vx_options opts;
  char *path;
  char *api_key;
  char *auth_secret;
  size_t auth_secret_len;
  char *redis_url, *redis_prefix;
  size_t path_len;
  char *auth_path; /* path + "/auth" */
  size_t auth_path_len;

  uv_thread_t thread;
  bool thread_started;
  uv_loop_t loop;
  uv_async_t async;
  uv_check_t check;     /* flushes dirty connections after the I/O callbacks */
  uv_prepare_t prepare; /* and before blocking, for what timers queued */
  uv_timer_t ping_timer;
  uv_timer_t sweep_timer; /* HTTP and close-handshake deadlines, shutdown progress */
  uv_tcp_t listener;
  bool listening;

  /* any thread, under mu */
  uv_mutex_t mu;
  vx_cmd *cmd_head, *cmd_tail;
  bool closing_requested;
  size_t cmd_bytes;         /* bytes of the broadcast commands queued (max_command_queue) */
  uv_cond_t room;           /* signalled when cmd_bytes falls to half the bound, or on close */
  uint32_t room_waiters;    /* threads in vx_wait_capacity */
  struct vx_capacity_req *capacity; /* vx_on_capacity callbacks, run on the loop thread */
  uint64_t flow_wait_us;    /* stats: time callers spent waiting for capacity */
  uint64_t flow_waits;      /* stats: broadcasts refused with VX_EAGAIN / waits begun */

  /* flow control, loop thread (flow.c) */
  struct {
    size_t bytes;        /* unsent bytes of the counted connections */
    size_t half;         /* max_send_queue / 2: past it a counted connection is congested */
    uint32_t ncongested; /* counted connections past half their bound */
    uint32_t nclients;   /* counted connections */
    bool paused;         /* commands stay queued until the queues drain */
    bool timer_on;
    uint64_t paused_at;
    uint64_t paused_ms;   /* stats: total time commands stayed queued for capacity */
    uint64_t lagging;     /* stats: connections that stopped counting */
    uint64_t refused;     /* stats: publish requests answered 503 after the wait */
    uv_timer_t timer;     /* the blame tick, while paused */
    vx_conn *parked, *parked_tail; /* HTTP publish requests waiting, oldest first */
    vx_conn *resuming;             /* the parked request being answered now */
  } flow;

  /* loop thread */
  bool shutting_down;
  uint64_t shutdown_deadline;
  vx_close_cb close_cb;       /* vx_close */
  vx_shutdown_cb shutdown_cb; /* or vx_shutdown */
  void *close_data;
  vx_conn *conns;
  uint32_t nconns; /* all connections, HTTP phase included */
  uint32_t nws;    /* open WebSocket connections */
  vx_conn *dirty;
  vx_conn *doomed;
  vx_map channels;
  vx_map sockets;
  vx_stats stats;
  vx_metrics_state m;          /* metrics.c */
  char **origins;              /* allowed_origins, split and lower-cased (origin.c); NULL = all */
  size_t norigins;
  char *metrics_token;
  vx_backplane bp;             /* the other instances (backplane.h): local or Redis */
  const vx_conn_up *conn_up;   /* conn.c's way up */
  atomic_size_t redis_backlog; /* bytes of broadcasts Redis has not acknowledged yet, plus
                                  those reserved by callers whose commands are still queued;
                                  any thread (see the Redis backplane's reserve) */
  vx_pending_auth *pending;    /* auth requests waiting for the host, oldest last */
  uint64_t next_auth_id;
  uint64_t sse_seq; /* the sequence of every (broadcast, channel) pair, the SSE id: this
                       instance's own, or the cluster's (assigned by the backplane) */
  char sse_tag[VX_EPOCH_MAX + 1]; /* epoch of the SSE ids ("<tag>-<seq>"): this instance's
                              random tag, or the cluster's epoch from the backplane */
  struct z_stream_s *zdef, *zinf; /* permessage-deflate, reset per message */
  /* history.c: the channel streams (DESIGN §12) */
  vx_map streams;                /* channel name -> vx_stream, while it has history or a channel */
  vx_stream *lru_head, *lru_tail; /* streams holding history, least recently appended first */
  size_t hist_bytes;             /* what the kept history costs, against history_max_bytes */
  uint64_t lost_seq;             /* the newest sse_seq dropped with a freed stream */
  vx_sub *replays;               /* subscriptions being replayed to, paced by their queues */
  uint32_t fetch_seq;            /* ids of replay fetches from the backplane's history */
  char *sse_path;
  size_t sse_path_len;
  char *sse_sub_path, *sse_unsub_path; /* sse_path + "/subscribe", "/unsubscribe" */
  uv_timer_t heartbeat_timer;
  vx_buf *heartbeat;         /* shared: ": heartbeat" comment */
  vx_buf *ping_frame;        /* shared: ping with empty payload */
  vx_buf *pong_msg;          /* shared: {"type":"pong"} */
  uint8_t rbuf[VX_READ_BUF]; /* every read lands here and is consumed synchronously */
  vx_tls *tls;               /* the listener's certificate, the rediss:// context (tls.c) */
  uint8_t rnd[256];
  size_t rnd_pos;
};

/* Is the caller the instance's loop thread (a callback)? The public calls that wait refuse it. */
static inline bool vx__on_loop_thread(vx_events *ev) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &ev->thread);
}

/* util.c */
char *vx__dupz(const char *s);           /* NULL for NULL or out of memory */
char *vx__dupn(const char *s, size_t n); /* n bytes plus a NUL */

/* log.c: the core's one logger. A line goes to on_log_record (with its fields) or on_log. */
void vx__log(vx_events *ev, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same about a connection and/or a channel (either may be NULL). */
void vx__log_at(vx_events *ev, int level, const char *socket_id, const char *channel,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* metrics.c */
/* One broadcast's local fan-out took `ns`: one bucket search, no allocation. */
void vx__metrics_fanout(vx_events *ev, uint64_t ns);
void vx__metrics_api_status(vx_events *ev, int status);
/* commands.c: what vx_stats_get reports, filled on the loop thread. */
void vx__stats_fill(vx_events *ev, vx_stats *out);
/* The whole exposition text into `out` (out->oom on failure). */
void vx__metrics_render(vx_events *ev, vx_str *out);

/* origin.c: allowed_origins */
/* Check the option's text: 0, or VX_EINVAL with `err` naming the entry that is wrong. */
int vx__origins_check(const char *list, char *err, size_t errlen);
/* Split it into ev->origins (vx_new): 0 or VX_ENOMEM. */
int vx__origins_load(vx_events *ev, const char *list);
void vx__origins_free(vx_events *ev);
/* May a request with this Origin header value (NULL: none) go on? */
bool vx__origin_allowed(const vx_events *ev, const char *origin, size_t n);
void vx__random_id(vx_events *ev, char *out); /* VX_SOCKET_ID_LEN hex chars + NUL */

/* loop.c */
void vx__loop_shutdown_progress(vx_events *ev);

/* conn.c */
void vx__conn_accepted(vx_events *ev, vx_conn *c);
int vx__conn_read_start(vx_conn *c); /* (re)start reading a connection's socket */

/* conn.c's way up (set by vx_new): conn.c calls nothing above it directly. */
struct vx_conn_up {
  /* `c` stops being an open client (a close handshake or a cut): once per connection. */
  void (*left)(vx_conn *c);
  /* The last connection is gone (shutdown may finish). */
  void (*none_left)(vx_events *ev);
};
extern const vx_conn_up vx__conn_up;               /* loop.c: node.c's leave, loop.c's shutdown */
void vx__conn_send(vx_conn *c, vx_buf *b);         /* takes a new reference to b */
void vx__conn_send_owned(vx_conn *c, vx_buf *b);   /* takes ownership of b's reference */
void vx__conn_send_control(vx_conn *c, vx_buf *b); /* same, exempt from the bound */
/* A pong (taking b's reference; b has room for 127 bytes): once the queue is crowded it
 * replaces the payload of the pong still waiting instead of queueing another. */
void vx__conn_send_pong(vx_conn *c, vx_buf *b);
void vx__conn_mark_dirty(vx_conn *c);
/* Out of memory for something `c` was owed (a frame, a queue slot, an answer): the one way
 * the core handles it. The connection is closed right after the current walk — 1011
 * "server out of memory" for a client, cut in its HTTP phase — never left open with a gap. */
void vx__conn_oom(vx_conn *c);
void vx__conn_flush_all(vx_events *ev);
void vx__conn_terminate(vx_conn *c);
/* Input of a lingering connection is dropped (true); false: the connection reads as usual. */
bool vx__conn_discard(vx_conn *c, size_t n);
/* TLS (tls.c) encrypted the queue's head buffer: it leaves the queue as if written. */
void vx__conn_took_head(vx_conn *c);
void vx__conn_leave(vx_conn *c);
void vx__conn_close(vx_conn *c, uint16_t code, const char *reason);
void vx__conn_process_doomed(vx_events *ev);
void vx__conn_sweep(vx_events *ev);
void vx__conn_ping_all(vx_events *ev);

/* ws.c */
int vx__ws_accept_key(const char *key, size_t klen, char out[29]);
int vx__ws_start(vx_conn *c, const uint8_t *extra, size_t extra_len);
void vx__ws_on_read(vx_conn *c, const uint8_t *p, size_t n);
void vx__ws_queue_close(vx_conn *c, uint16_t code, const char *reason);

/* http.c */
int vx__http_start(vx_conn *c);
void vx__http_on_read(vx_conn *c, const uint8_t *p, size_t n);
void vx__http_free(vx_conn *c);
void vx__http_respond(vx_conn *c, int status, const char *extra_headers, const char *body,
                      bool keep_alive);

/* hub.c */
int vx__hub_subscribe(vx_conn *c, const char *name, size_t n); /* 0, VX_EINVAL (limit), VX_ENOMEM */
/* The same, a new subscription carrying a copy of `rec` (may be NULL) until its ack. */
int vx__hub_subscribe_rec(vx_conn *c, const char *name, size_t n, const vx_recover *rec);
void vx__hub_unsubscribe(vx_conn *c, const char *name, size_t n);
void vx__hub_unsubscribe_all(vx_conn *c);
bool vx__hub_is_subscribed(vx_conn *c, const char *name, size_t n);
uint64_t vx__hub_count(vx_events *ev, const char *name, size_t n);
void vx__hub_free(vx_events *ev);
int vx__validate_broadcast(const char *const *channels, size_t n, const char *event,
                           const char *data, size_t data_len, const char *except);

void vx__hub_channels_local(vx_events *ev, vx_channels_cb cb, void *data);

/* hub.c: local delivery (with Redis, also what arrives from other instances) */
int vx__hub_deliver(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                    const char *event, size_t elen, const char *data, size_t dlen,
                    const char *extra, size_t xlen, const char *except);
/* The same for one channel whose offset and SSE seq the backplane assigned (0: none, not
 * part of the stream); `send` false: only the stream records it. */
int vx__hub_deliver_at(vx_events *ev, const char *name, size_t n, uint64_t offset, uint64_t seq,
                       const char *event, size_t elen, const char *data, size_t dlen,
                       const char *extra, size_t xlen, const char *except, bool send);
vx_sub *vx__hub_sub_of(vx_conn *c, const char *name, size_t n);         /* NULL: not subscribed */
vx_channel *vx__hub_channel(vx_events *ev, const char *name, size_t n); /* NULL: none */
void vx__hub_each_member(vx_events *ev,
                         void (*fn)(void *ctx, const char *channel, size_t n,
                                    const struct vx_member *m),
                         void *ctx);

/* node.c: the subscribe / unsubscribe / broadcast flow of every entry point */
/* Subscribe `c` (authorization already decided by the caller) and answer it with
 * subscription_succeeded, now or once the channel is ready. Presence channels need
 * `member` (signed channel_data or the host's member JSON). Returns 0, or a negative code
 * with *err the reason (the caller reports it: subscription_error, an HTTP status, a
 * status callback). */
int vx__node_subscribe(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                       const char **err);
/* The same, reporting a refusal to the connection as subscription_error. */
void vx__node_subscribe_reply(vx_conn *c, const char *name, size_t n, const char *member,
                              size_t mlen);
void vx__node_unsubscribe(vx_conn *c, const char *name, size_t n);
/* `c` is no longer an open client: it leaves every channel, stops counting as connected,
 * and the host hears on_disconnect, once. */
void vx__node_left(vx_conn *c);
/* The same with a recover request (DESIGN §12; NULL: none, or the SSE stream's resume). */
int vx__node_subscribe_rec(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                           const vx_recover *rec, const char **err);
/* subscription_succeeded/_error to `c` (see node.c). */
void vx__node_sub_reply(vx_conn *c, const char *channel, size_t clen, const char *error,
                        const char *members, size_t mlen);
/* Recovery replays (node.c): start one from offset `from`, stop one (its subscription
 * goes), and replay more to each as its connection's send queue drains (loop.c, every
 * iteration; true: progress was made and more can go at once, come back soon). */
void vx__node_replay(vx_sub *s, uint64_t from);
void vx__node_replay_stop(vx_sub *s);
bool vx__node_pump(vx_events *ev);
/* SSE: the outcome of a resume so far, for its "resumed" message (sse.c). */
void vx__node_resume_started(vx_conn *c);
/* The way back from the backplane (deliver, channel_ready, members): backplane.h. */
extern const vx_backplane_handler vx__node_backplane_handler;
int vx__node_broadcast(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                       const char *event, size_t elen, const char *data, size_t dlen,
                       const char *except);
/* The same for a broadcast whose caller reserved `reserved` bytes of the Redis backlog
 * (vx_broadcast, on the caller's thread, so that EBACKLOG is returned there). */
int vx__node_broadcast_reserved(vx_events *ev, const char *const *channels, const size_t *lens,
                                size_t n, const char *event, size_t elen, const char *data,
                                size_t dlen, const char *except, size_t reserved);
/* A client event from `c` on channel `name` (already checked: subscribed, private/presence,
 * not a reserved name): delivered everywhere but to the sender, marked "client":true and,
 * on presence channels, with the sender's signed member id as "user_id". */
int vx__node_client_event(vx_conn *c, const char *name, size_t n, const char *event, size_t elen,
                          const char *data, size_t dlen);
/* Event names only the server may send (connected, member_added, member_removed, resumed,
 * subscription_*, and the prefix "vx:" kept for future server events). */
bool vx__event_reserved(const char *event, size_t elen);

/* auth.c */
bool vx__socket_id_valid(const char *id, size_t n);
int vx__auth_token(const char *secret, size_t slen, const char *socket_id, size_t idlen,
                   const char *channel, size_t clen, const char *cdata, size_t cdlen, char *out,
                   size_t out_len);
bool vx__auth_verify(vx_events *ev, const char *socket_id, const char *channel, size_t clen,
                     const char *cdata, size_t cdlen, const char *auth, size_t alen);

/* presence (hub.c) */
/* Parse signed channel_data into *out: 0, or VX_EINVAL / VX_ENOMEM with *err the reason. */
int vx__member_parse(const char *cdata, size_t n, vx_member **out, const char **err);
/* The subscription_succeeded (with the members) comes from the backplane's join, through
 * the node's members handler; the caller sends none. */
int vx__hub_subscribe_presence(vx_conn *c, const char *name, size_t n, vx_member *m,
                               const vx_recover *rec, const char **err);
char *vx__hub_members_json(vx_events *ev, const char *name, size_t n, size_t *len);

/* deflate.c */
#define VX_DEFLATE_MIN 128 /* smaller messages go out uncompressed */
/* A compressed text frame of the payload `in`; NULL when it does not shrink or on error (the
 * plain frame goes out then). */
vx_buf *vx__deflate_frame(vx_events *ev, const uint8_t *in, size_t n);
int vx__inflate_msg(vx_events *ev, const uint8_t *in, size_t n, size_t max, char **out,
                    size_t *outlen);
void vx__deflate_free(vx_events *ev);

/* sse.c */
void vx__sse_start(vx_conn *c, const char *query, const char *last_event_id);

/* history.c: the channel streams (DESIGN §12). A stream per channel: its last offset and
 * epoch, and a ring of its recent broadcasts (each a reference to the WebSocket frame the
 * broadcast was built as, which carries the offset). A stream exists while its channel
 * has subscribers or while it keeps history; an idle channel without history has none. */
typedef struct vx_hentry {
  uint64_t offset;
  uint64_t seq; /* the SSE id */
  uint64_t ms;  /* uv_now when appended */
  vx_buf *frame;
} vx_hentry;

struct vx_stream {
  vx_stream *prev, *next; /* ev->lru_head..: only while it keeps history */
  vx_hentry *ring;
  uint32_t head, len, cap;
  uint64_t offset;   /* the last offset of the stream (assigned here, or by the backplane) */
  uint64_t lost;     /* the newest offset no longer kept (0: nothing lost) */
  uint64_t lost_seq; /* the newest SSE seq no longer kept */
  vx_channel *ch;    /* the channel, while it has subscribers */
  uint64_t touched;  /* uv_now of its last append or of its channel's going */
  bool lru;          /* held by history: on ev->lru_head.., counted in hist_bytes */
  bool known;        /* offset and epoch are the backplane's (always true locally) */
  char epoch[VX_EPOCH_MAX + 1];
  size_t n;
  char name[];
};

/* The stream of channel `name`, created (with a fresh epoch) if `create`; NULL if absent
 * or out of memory. */
vx_stream *vx__stream_get(vx_events *ev, const char *name, size_t n, bool create);
/* `st` gets its channel / the channel is gone (the stream stays for the age bound). */
void vx__stream_attach(vx_events *ev, vx_stream *st, vx_channel *ch);
void vx__stream_detach(vx_events *ev, vx_stream *st);
/* Keep `frame` (a new reference) as the entry `offset` of `st` (offset > st->offset:
 * entries in between are lost). Bounded by history_size, history_ttl_ms and
 * history_max_bytes; O(1) amortized. */
void vx__stream_append(vx_events *ev, vx_stream *st, uint64_t offset, uint64_t seq, vx_buf *frame);
/* The epoch changed under the stream (the backplane's history was lost): its entries go. */
void vx__stream_reset(vx_events *ev, vx_stream *st, const char *epoch, uint64_t offset);
/* The oldest kept entry with offset >= `offset`, its index into the ring (NULL: none). */
const vx_hentry *vx__stream_from(vx_events *ev, vx_stream *st, uint64_t offset, uint32_t *idx);
const vx_hentry *vx__stream_at(const vx_stream *st, uint32_t i); /* 0 = the oldest kept */
bool vx__history_on(const vx_events *ev);
/* Start replaying to `s` from offset `from`, paced by its connection's send queue. */
void vx__history_replay(vx_sub *s, uint64_t from);
void vx__history_replay_stop(vx_sub *s); /* the subscription goes */
void vx__history_pump(vx_events *ev);    /* loop.c, every iteration: replay more */
void vx__history_sweep(vx_events *ev);   /* loop.c, on its sweep: the age bound */
void vx__history_free(vx_events *ev);
/* Send one JSON message; `type` is its "type" (the SSE event: field). */
void vx__sse_send_json(vx_conn *c, const char *type, const char *json, size_t n);
void vx__sse_heartbeat_all(vx_events *ev);

/* http.c: the auth endpoint's asynchronous answer */
void vx__http_auth_answer(vx_events *ev, uint64_t id, bool authorized, const char *member,
                          const char *error);
void vx__http_auth_expire(vx_events *ev);
void vx__http_auth_detach(vx_conn *c);

/* client.c: JSON messages from WebSocket clients */
void vx__client_message(vx_conn *c, const char *p, size_t n);
void vx__client_send_json(vx_conn *c, const char *json, size_t n);

#endif
