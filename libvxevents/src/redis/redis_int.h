/* Private to the Redis backplane (libvxevents/src/redis/): its state and what its three
 * files call of each other. conn.c owns the connections and the lifetime (and the ops
 * table), pubsub.c the broadcasts and subscriptions, cluster.c the cluster view (counts,
 * liveness, presence, queries). Nothing outside redis/ includes this; the rest of the core
 * reaches the backplane only through ev->bp (backplane.h), and the backplane reaches back
 * only through ev->bp.h. */
#ifndef VX_REDIS_INT_H
#define VX_REDIS_INT_H

#include "../vx_int.h"
#include "keys.h"

#include <hiredis/async.h>
#include <string.h>

typedef struct vx_redis vx_redis;

/* Reconnect attempts are at most this far apart (plus 25 % jitter). */
#define VX_REDIS_BACKOFF_MAX 2000
/* A backlog built during an outage is published this long after the commands connection
 * is back, so that the other instances' subscribers, retrying on the same schedule, have
 * re-subscribed by then: pub/sub keeps nothing for a channel nobody listens to. */
#define VX_REDIS_FLUSH_DELAY (VX_REDIS_BACKOFF_MAX * 5 / 4 + 1000)
/* Heartbeats. An instance that stops beating (kill -9) is dead once it has been silent for
 * the window and is reaped at the next beat of any survivor: within window + period
 * (4.5 s) of its last beat, so within the 5 s the README promises. The window leaves a live
 * instance 2.5 s of slack for a busy loop. When nobody at all beat for longer than the gap,
 * Redis was stalled: a stall up to the gap leaves every live instance younger than
 * period + gap (3 s) < window, a longer one suspends reaping for a window. */
#define VX_BEAT_MS 1000
#define VX_BEAT_WINDOW_MS 3500
#define VX_BEAT_GAP_MS 2000
/* At shutdown, once every held broadcast is acknowledged, the other replies (the leave
 * script, a heartbeat) get this long before the connection is dropped: a responsive Redis
 * answers in well under a millisecond, and a stalled one must not hold up the close of an
 * instance that has nothing left to publish (the survivors reap it instead). */
#define VX_REDIS_LINGER_MS 200
/* A reaped instance that comes back within this time learns it was reaped. */
#define VX_REAPED_TTL_MS 3600000

typedef struct qmsg {
  struct qmsg *next;
  uint64_t seq; /* this instance's sequence number of it: the PUB script runs it once */
  vx_published done; /* vx_publish's callback (cb NULL: none) */
  size_t klen, plen;
  char data[]; /* key then payload */
} qmsg;

/* A message of a channel waiting for its turn (an earlier offset is being fetched). */
typedef struct pmsg {
  struct pmsg *next;
  uint64_t offset;
  size_t len;
  char data[];
} pmsg;

typedef struct rconn {
  vx_redis *r;
  redisAsyncContext *ac;
  uv_timer_t retry;
  uint32_t backoff_ms;
  bool ready, is_sub, was_connected;
} rconn;

/* A cluster-wide query waiting for the connection (not sent) or for its reply (sent). */
typedef struct rquery {
  struct rquery *prev, *next; /* r->queries, oldest first (so deadlines are in order) */
  vx_redis *r;
  int kind; /* VX_Q_* */
  void *cb, *data;
  uint64_t deadline;
  bool sent;     /* hiredis holds it: its callback frees the record */
  bool answered; /* the callback ran (timed out): a late reply is dropped */
  char name[VX_CHANNEL_MAX + 1];
} rquery;

enum { S_ADD, S_SET, S_SUM, S_BEAT, S_LEAVE_ALL, S_JOIN, S_LEAVE, S_PUB, S_HIST, S_COUNT };

/* What this backplane knows of a channel open on this instance: its own record, so that it
 * never reads the hub's. */
enum { RS_NONE = 0, RS_SUBSCRIBING, RS_SUBSCRIBED };
typedef struct rchan {
  uint32_t acks;  /* SUBSCRIBE replies still on their way */
  uint32_t count; /* local subscribers (what the count scripts register) */
  uint8_t state;  /* RS_* */
  /* The channel's stream as delivered here: every message is delivered once, in offset
   * order; an offset beyond the next one (the subscriber connection dropped, or the
   * channel just opened) is held while the missing ones are read from the stream. */
  bool known;        /* offset/epoch read from Redis (HIST) since the channel opened */
  bool fetching;     /* a HIST read is on its way */
  uint64_t offset;   /* the last offset delivered here */
  uint32_t npending; /* messages held in phead.. (bounded by VXR_PENDING_MAX) */
  bool overflow;     /* some were dropped from pending: read them from the stream */
  pmsg *phead;
  char epoch[VX_EPOCH_MAX + 1];
  size_t n;
  char name[]; /* NUL-terminated; the key of r->chans */
} rchan;

#define VXR_PENDING_MAX 4096

struct vx_redis {
  vx_events *ev;
  uint64_t pub_seq; /* the last qmsg's seq */
  char host[256];
  char ip[64];
  int port, db;
  char *user, *password;
  char prefix[64];
  size_t prefix_len;
  char origin[17];
  rconn cmd, sub;
  uv_getaddrinfo_t gai;
  bool resolving, resolved, flush_scheduled;
  bool closing; /* shutdown began: publish what is left, then disconnect */
  bool forced;  /* the grace is over: give up */
  bool handles_closed;
  bool synced;            /* `cmd` registered this instance after its first heartbeat reply:
                          queries may run */
  bool registered;        /* this instance has been in the cluster view: leave it at close */
  bool beating;           /* a heartbeat is on its way */
  uv_timer_t flush_timer; /* the post-outage delay; at shutdown, the deferred disconnect */
  uv_timer_t live_timer;  /* heartbeats */
  uv_timer_t query_timer; /* the oldest query's deadline */
  qmsg *qhead, *qtail;    /* backlog: not sent yet */
  qmsg *shead, *stail;    /* sent, reply pending (replies arrive in this order) */
  size_t held;            /* bytes in both lists */
  uint64_t refused;       /* PUBLISHes answered with an error, broadcasts made after close */
  uint64_t drain_deadline;
  rquery *queries, *queries_tail;
  vx_map chans; /* channel name -> rchan: every channel open here (channel_open) */
  char sha[S_COUNT][41];
};

static inline size_t vxr_channel_key(vx_redis *r, const char *name, size_t n, char *out) {
  memcpy(out, r->prefix, r->prefix_len);
  memcpy(out + r->prefix_len, VXR_K_CHANNEL, VXR_KLEN(VXR_K_CHANNEL));
  memcpy(out + r->prefix_len + VXR_KLEN(VXR_K_CHANNEL), name, n);
  return r->prefix_len + VXR_KLEN(VXR_K_CHANNEL) + n;
}

/* conn.c */
void vxr_drain_check(vx_redis *r); /* during shutdown, after anything that may empty the backlog */
void vxr_on_auth_reply(redisAsyncContext *ac, void *reply, void *priv); /* logs an error reply */
void vxr_leave_cluster(vx_redis *r); /* at shutdown: this instance's counts and members go */

/* pubsub.c */
size_t vxr_cost(vx_events *ev, const char *const *channels, size_t n, const char *event,
                size_t dlen, const char *except);
bool vxr_reserve(vx_events *ev, size_t cost);
void vxr_release(vx_events *ev, size_t cost);
int vxr_publish(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                const char *event, size_t elen, const char *data, size_t dlen, const char *cmark,
                size_t cmlen, const char *except, size_t reserved, const vx_published *done);
void vxr_backlog_flush(vx_redis *r); /* send the backlog in order while `cmd` takes it */
void vxr_requeue_sent(vx_redis *r);  /* the sent list goes back to the head of the backlog */
void vxr_subscribe_key(vx_redis *r, rchan *c);
void vxr_channel_open(vx_events *ev, const char *name, size_t n);
void vxr_channel_close(vx_events *ev, const char *name, size_t n);
bool vxr_channel_ready(vx_events *ev, const char *name, size_t n);

void vxr_history(vx_events *ev, const char *name, size_t n, uint64_t from, uint32_t count,
                 vx_bp_history_cb cb, void *ctx);
void vxr_chan_free(rchan *c); /* with what it holds */
void vxr_msg_done(qmsg *m, int status, uint64_t offset, const char *epoch);

/* cluster.c */
void vxr_scripts_init(vx_redis *r); /* their SHA1s */
void vxr_load_scripts(vx_redis *r); /* SCRIPT LOAD, then the first heartbeat */
void vxr_live_tick(uv_timer_t *t);
void vxr_count(vx_events *ev, const char *name, size_t n, int delta);
void vxr_query(vx_events *ev, int kind, const char *name, void *cb, void *data);
void vxr_queries_send(vx_redis *r);
void vxr_queries_fail_unsent(vx_redis *r, int status);
void vxr_query_timer_cb(uv_timer_t *t);
bool vxr_presence_join(vx_events *ev, const char *name, size_t n, const vx_member *m,
                       const char *socket_id, bool new_locally);
bool vxr_presence_leave(vx_events *ev, const char *name, size_t n, const vx_member *m);

#endif
