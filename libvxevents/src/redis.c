/* Redis between instances: pub/sub for broadcasts, cluster-wide counts and presence.
 *
 * Two hiredis async connections live on the instance's loop: `sub` SUBSCRIBEs to
 * <prefix>:ch:<channel> while the channel has local subscribers; `cmd` PUBLISHes every
 * broadcast there (pipelined: no round trip per broadcast) and runs the scripts. The payload
 * names the origin instance (which already delivered locally and skips its own echo) and
 * the `except` socket. A local subscription is acknowledged to its client only once Redis
 * confirmed the SUBSCRIBE, so nothing published after the ack can be missed.
 *
 * A broadcast is kept until Redis acknowledged its PUBLISH (a reply arrived): first in the
 * backlog (the connection is starting or down, or a post-outage flush is pending), then in
 * the sent list (written, reply pending; replies come back in order). Both count against
 * redis_backlog_max, so a stalled Redis fills the bound as surely as an unreachable one, and
 * a broadcast over the bound is refused before it is delivered anywhere. When the
 * connection drops, the sent list goes back to the head of the backlog and is published
 * again after reconnecting: Redis may have executed some of it (at-least-once for that
 * window), but nothing is silently lost. Shutdown publishes the backlog first, waiting for
 * the connection and the replies within its grace period, and reports what is left.
 *
 * Liveness: every instance runs a heartbeat script each VX_BEAT_MS. The script reads Redis's
 * own clock (TIME), so the instances' clocks do not matter; it records when each instance
 * last beat and reaps those silent for longer than VX_BEAT_WINDOW_MS (their counts and
 * presence members go, with the member_removed events they owed). When the script sees
 * that nobody at all beat for VX_BEAT_GAP_MS, Redis was stalled (or the whole fleet was):
 * nobody is reaped then until every instance had a full window to beat again, so a stall
 * of any length reaps no live instance. An instance that finds it was reaped all the same
 * (its own loop was stalled past the window) registers again, publishing the member_added
 * events the others are now owed.
 *
 * Both connections reconnect with capped exponential backoff and jitter; `sub`
 * re-subscribes every channel that has local subscribers, `cmd` re-registers this
 * instance's counts and members once its first heartbeat is answered. Cluster-wide queries
 * wait for that (bounded by redis_connect_timeout_ms) instead of answering from the local
 * view, and fail with VX_EUNAVAILABLE when Redis cannot answer. */
#include "vx_int.h"

#include <cjson/cJSON.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct vx_redis vx_redis;

/* ---- hiredis on our libuv loop ----
 * A small adapter of our own rather than hiredis's bundled one: that one ignores a poll
 * error status, so a refused connect (EPOLLERR) is never reported and reconnection
 * stalls. Here an error wakes hiredis for both directions so it finds the socket error. */
typedef struct rpoll {
  uv_poll_t h;
  redisAsyncContext *ac;
  int events;
} rpoll;

static void rpoll_cb(uv_poll_t *h, int status, int events) {
  rpoll *p = h->data;
  if (status < 0)
    events = p->events ? p->events : UV_READABLE;
  if (p->ac && (events & UV_READABLE))
    redisAsyncHandleRead(p->ac);
  if (p->ac && (events & UV_WRITABLE))
    redisAsyncHandleWrite(p->ac);
}

static void rpoll_update(rpoll *p, int events) {
  p->events = events;
  if (events)
    uv_poll_start(&p->h, events, rpoll_cb);
  else
    uv_poll_stop(&p->h);
}

static void rpoll_add_read(void *d) { rpoll_update(d, ((rpoll *)d)->events | UV_READABLE); }
static void rpoll_del_read(void *d) { rpoll_update(d, ((rpoll *)d)->events & ~UV_READABLE); }
static void rpoll_add_write(void *d) { rpoll_update(d, ((rpoll *)d)->events | UV_WRITABLE); }
static void rpoll_del_write(void *d) { rpoll_update(d, ((rpoll *)d)->events & ~UV_WRITABLE); }
static void rpoll_closed(uv_handle_t *h) { free(h->data); }
static void rpoll_cleanup(void *d) {
  rpoll *p = d;
  p->ac = NULL;
  uv_close((uv_handle_t *)&p->h, rpoll_closed);
}

static int rpoll_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  rpoll *p = calloc(1, sizeof *p);
  if (!p)
    return REDIS_ERR;
  if (uv_poll_init_socket(loop, &p->h, ac->c.fd) != 0) {
    free(p);
    return REDIS_ERR;
  }
  p->h.data = p;
  p->ac = ac;
  ac->ev.data = p;
  ac->ev.addRead = rpoll_add_read;
  ac->ev.delRead = rpoll_del_read;
  ac->ev.addWrite = rpoll_add_write;
  ac->ev.delWrite = rpoll_del_write;
  ac->ev.cleanup = rpoll_cleanup;
  return REDIS_OK;
}


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
  size_t klen, plen;
  char data[]; /* key then payload */
} qmsg;

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

/* Instances whose counts or presence entries must go (reaped, or leaving at shutdown).
 * <prefix>:ich:<id> lists the channels where instance <id> has a count, so this touches
 * only its own keys. Shared by the heartbeat and the leave scripts. */
#define LUA_REAP_FN                                                                        \
  "local function reap(p, id) "                                                            \
  "for _, ch in ipairs(redis.call('SMEMBERS', p .. ':ich:' .. id)) do "                    \
  "local k = p .. ':count:' .. ch redis.call('HDEL', k, id) "                              \
  "if redis.call('HLEN', k) == 0 then redis.call('SREM', p .. ':channels', ch) end end "   \
  "redis.call('DEL', p .. ':ich:' .. id) "                                                 \
  "for _, e in ipairs(redis.call('SMEMBERS', p .. ':ipres:' .. id)) do "                   \
  "local nl = string.find(e, '\\n', 1, true) if nl then "                                 \
  "local ch = string.sub(e, 1, nl - 1) local mid = string.sub(e, nl + 1) "                 \
  "local pm = p .. ':pm:' .. ch .. ':' .. mid redis.call('SREM', pm, id) "                 \
  "if redis.call('SCARD', pm) == 0 then local pi = p .. ':pinfo:' .. ch "                  \
  "local j = redis.call('HGET', pi, mid) if j then redis.call('HDEL', pi, mid) "           \
  "redis.call('PUBLISH', p .. ':ch:' .. ch, "                                              \
  "'{\"o\":\"\",\"x\":null,\"e\":\"member_removed\",\"d\":' .. j .. '}') end end end end " \
  "redis.call('DEL', p .. ':ipres:' .. id) redis.call('HDEL', p .. ':seen', id) end "

/* Cluster-wide subscriber counts: <prefix>:count:<channel> is a hash of instance id ->
 * local subscribers, <prefix>:channels the set of channels with any, <prefix>:ich:<id> the
 * channels of one instance. Scripts keep them consistent atomically; they are loaded once
 * per connection and run with EVALSHA. KEYS: count, channels, ich; ARGV: id, n, channel. */
static const char SCRIPT_ADD[] =
    "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) "
    "if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[3]) "
    "else redis.call('SADD', KEYS[3], ARGV[3]) end "
    "if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) "
    "else redis.call('SADD', KEYS[2], ARGV[3]) end "
    "return n";
static const char SCRIPT_SET[] = /* absolute value, when (re-)registering */
    "if tonumber(ARGV[2]) > 0 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('SADD', KEYS[2], ARGV[3]) redis.call('SADD', KEYS[3], ARGV[3]) "
    "else redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[3]) "
    "if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end end "
    "return 1";
static const char SCRIPT_SUM[] =
    "local t = 0 for _, v in ipairs(redis.call('HVALS', KEYS[1])) do t = t + tonumber(v) end "
    "return t";
/* The heartbeat. ARGV: prefix, id, window, gap (ms). <prefix>:seen maps instance id ->
 * Redis time of its last beat, <prefix>:beat is the last beat of anyone, <prefix>:grace
 * the time before which nobody is reaped (set after a stall), <prefix>:reaped:<id> marks a
 * reaped instance for a while. Returns {status, instances reaped now}: status "ok" (known),
 * "reaped" (this instance was reaped: register again, with events) or "new" (not known:
 * first beat, or Redis lost its data; register quietly). */
static const char SCRIPT_BEAT[] =
    /* Redis 3.2-4 allow writes after TIME only with effects replication (the default since 5) */
    "if redis.replicate_commands then redis.replicate_commands() end "
    LUA_REAP_FN
    "local p, me = ARGV[1], ARGV[2] local window, gap = tonumber(ARGV[3]), tonumber(ARGV[4]) "
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local last = tonumber(redis.call('GET', p .. ':beat') or '0') "
    "if last > 0 and now - last > gap then "
    "redis.call('SET', p .. ':grace', string.format('%d', now + window), 'PX', window) end "
    "redis.call('SET', p .. ':beat', string.format('%d', now)) "
    "local status = 'ok' "
    "if not redis.call('HGET', p .. ':seen', me) then "
    "if redis.call('DEL', p .. ':reaped:' .. me) == 1 then status = 'reaped' "
    "else status = 'new' end end "
    "redis.call('HSET', p .. ':seen', me, string.format('%d', now)) "
    "local gone = 0 "
    "if now >= tonumber(redis.call('GET', p .. ':grace') or '0') then "
    "local s = redis.call('HGETALL', p .. ':seen') "
    "for i = 1, #s, 2 do if now - tonumber(s[i + 1]) > window then reap(p, s[i]) "
    "redis.call('SET', p .. ':reaped:' .. s[i], '1', 'PX', ARGV[5]) gone = gone + 1 end end end "
    "return {status, gone}";
/* Leaving at shutdown: the same clean-up as a reap, at once. ARGV: prefix, id. */
static const char SCRIPT_LEAVE_ALL[] = LUA_REAP_FN "reap(ARGV[1], ARGV[2]) return 1";

/* Presence: <prefix>:pm:<channel>:<id> is the set of instances where member <id> has a
 * connection, <prefix>:pinfo:<channel> maps id -> member JSON, <prefix>:ipres:<instance>
 * lists "<channel>\n<id>" for reaping. member_added / member_removed are PUBLISHed by the
 * scripts themselves (origin "", so every instance delivers them, this one included):
 * exactly once per cluster-wide join or leave, atomically with the bookkeeping. */
static const char SCRIPT_JOIN[] =
    "redis.call('SADD', KEYS[1], ARGV[1]) redis.call('SADD', KEYS[3], ARGV[4]) "
    "if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then "
    "redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) "
    "if ARGV[6] == '0' then redis.call('PUBLISH', KEYS[4], "
    "'{\"o\":\"\",\"x\":' .. ARGV[5] .. ',\"e\":\"member_added\",\"d\":' .. ARGV[3] .. '}') end end "
    "return redis.call('HVALS', KEYS[2])";
static const char SCRIPT_LEAVE[] =
    "redis.call('SREM', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[4]) "
    "if redis.call('SCARD', KEYS[1]) == 0 then local j = redis.call('HGET', KEYS[2], ARGV[2]) "
    "if j then redis.call('HDEL', KEYS[2], ARGV[2]) redis.call('PUBLISH', KEYS[4], "
    "'{\"o\":\"\",\"x\":null,\"e\":\"member_removed\",\"d\":' .. j .. '}') end end "
    "return 1";

enum { S_ADD, S_SET, S_SUM, S_BEAT, S_LEAVE_ALL, S_JOIN, S_LEAVE, S_COUNT };
static const char *const scripts[S_COUNT] = {SCRIPT_ADD,       SCRIPT_SET,  SCRIPT_SUM,
                                             SCRIPT_BEAT,      SCRIPT_LEAVE_ALL,
                                             SCRIPT_JOIN,      SCRIPT_LEAVE};

/* What this backplane knows of a channel open on this instance: its own record, so that it
 * never reads the hub's. */
enum { RS_NONE = 0, RS_SUBSCRIBING, RS_SUBSCRIBED };
typedef struct rchan {
  uint32_t acks;  /* SUBSCRIBE replies still on their way */
  uint32_t count; /* local subscribers (what the count scripts register) */
  uint8_t state;  /* RS_* */
  size_t n;
  char name[];    /* NUL-terminated; the key of r->chans */
} rchan;

struct vx_redis {
  vx_events *ev;
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
  bool closing;        /* shutdown began: publish what is left, then disconnect */
  bool forced;         /* the grace is over: give up */
  bool handles_closed;
  bool synced;         /* `cmd` registered this instance after its first heartbeat reply:
                          queries may run */
  bool registered;     /* this instance has been in the cluster view: leave it at close */
  bool beating;        /* a heartbeat is on its way */
  uv_timer_t flush_timer; /* the post-outage delay; at shutdown, the deferred disconnect */
  uv_timer_t live_timer;  /* heartbeats */
  uv_timer_t query_timer; /* the oldest query's deadline */
  qmsg *qhead, *qtail; /* backlog: not sent yet */
  qmsg *shead, *stail; /* sent, reply pending (replies arrive in this order) */
  size_t held;         /* bytes in both lists */
  uint64_t refused;    /* PUBLISHes answered with an error, broadcasts made after close */
  uint64_t drain_deadline;
  rquery *queries, *queries_tail;
  vx_map chans; /* channel name -> rchan: every channel open here (channel_open) */
  char sha[S_COUNT][41];
};

static void rconn_connect(rconn *rc);
static void retry_cb(uv_timer_t *t);
static void load_scripts(vx_redis *r);
static void live_tick(uv_timer_t *t);
static void run_script(vx_redis *r, int which, redisCallbackFn *cb, void *priv, const char *name,
                       size_t n, const char *arg2);
static void queries_send(vx_redis *r);
static void queries_fail_unsent(vx_redis *r, int status);
static void backlog_flush(vx_redis *r);
static void drain_check(vx_redis *r);
/* ---- URL ---- */

static int pct(const char *s, size_t n, char **out) {
  char *d = malloc(n + 1);
  if (!d)
    return VX_ENOMEM;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n) {
      char h[3] = {s[i + 1], s[i + 2], 0};
      d[o++] = (char)strtol(h, NULL, 16);
      i += 2;
    } else {
      d[o++] = s[i];
    }
  }
  d[o] = 0;
  *out = d;
  return 0;
}

/* redis://[[user]:password@]host[:port][/db] */
static int parse_url(vx_redis *r, const char *url) {
  const char *p;
  if (strncmp(url, "redis://", 8) == 0)
    p = url + 8;
  else
    return VX_EINVAL; /* rediss:// (TLS) is not supported yet */
  const char *at = strrchr(p, '@');
  const char *slash = strchr(at ? at : p, '/');
  if (at && slash && slash < at)
    return VX_EINVAL;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
      if (colon > p && pct(p, (size_t)(colon - p), &r->user))
        return VX_ENOMEM;
      if (pct(colon + 1, (size_t)(at - colon - 1), &r->password))
        return VX_ENOMEM;
    } else if (at > p && pct(p, (size_t)(at - p), &r->password)) {
      return VX_ENOMEM;
    }
    p = at + 1;
  }
  const char *hend = slash ? slash : p + strlen(p);
  const char *colon = NULL;
  if (*p == '[') { /* [ipv6]:port */
    const char *rb = memchr(p, ']', (size_t)(hend - p));
    if (!rb)
      return VX_EINVAL;
    if ((size_t)(rb - p - 1) >= sizeof r->host)
      return VX_EINVAL;
    memcpy(r->host, p + 1, (size_t)(rb - p - 1));
    r->host[rb - p - 1] = 0;
    colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
  } else {
    colon = memchr(p, ':', (size_t)(hend - p));
    const char *he = colon ? colon : hend;
    if (he == p || (size_t)(he - p) >= sizeof r->host)
      return VX_EINVAL;
    memcpy(r->host, p, (size_t)(he - p));
    r->host[he - p] = 0;
  }
  r->port = 6379;
  if (colon) {
    char *end;
    long v = strtol(colon + 1, &end, 10);
    if (end != hend || v <= 0 || v > 65535)
      return VX_EINVAL;
    r->port = (int)v;
  }
  if (slash && slash[1]) {
    char *end;
    long v = strtol(slash + 1, &end, 10);
    if (*end || v < 0 || v > 1000000)
      return VX_EINVAL;
    r->db = (int)v;
  }
  return 0;
}

int vx__redis_url_valid(const char *url) {
  vx_redis r;
  memset(&r, 0, sizeof r);
  int e = parse_url(&r, url);
  free(r.user);
  free(r.password);
  return e;
}


/* ---- keys and payloads ---- */

static size_t channel_key(vx_redis *r, const char *name, size_t n, char *out) {
  memcpy(out, r->prefix, r->prefix_len);
  memcpy(out + r->prefix_len, ":ch:", 4);
  memcpy(out + r->prefix_len + 4, name, n);
  return r->prefix_len + 4 + n;
}

/* {"o":"<origin>","x":"<except>"|null,"e":"<event>","d":<data>[,"c":{["u":<user id>]}]}
 * where "c" (the `cmark` fragment) marks a client event and carries its sender's id. */
#define PL_O "{\"o\":\""
#define PL_X "\",\"x\":"
#define PL_E ",\"e\":"
#define PL_D ",\"d\":"
#define PL_FIXED (sizeof PL_O - 1 + 16 + sizeof PL_X - 1 + sizeof PL_E - 1 + sizeof PL_D - 1 + 1)

static size_t payload_len(const char *event, size_t elen, size_t dlen, size_t cmlen,
                          const char *except) {
  size_t xl = except ? vx__json_escaped_len(except, strlen(except)) + 2 : 4;
  return PL_FIXED + xl + vx__json_escaped_len(event, elen) + 2 + dlen + cmlen;
}

static void payload_write(vx_redis *r, char *d, const char *event, size_t elen, const char *data,
                          size_t dlen, const char *cmark, size_t cmlen, const char *except) {
  memcpy(d, PL_O, sizeof PL_O - 1);
  d += sizeof PL_O - 1;
  memcpy(d, r->origin, 16);
  d += 16;
  memcpy(d, PL_X, sizeof PL_X - 1);
  d += sizeof PL_X - 1;
  if (except) {
    *d++ = '"';
    d = vx__json_escape_into(d, except, strlen(except));
    *d++ = '"';
  } else {
    memcpy(d, "null", 4);
    d += 4;
  }
  memcpy(d, PL_E, sizeof PL_E - 1);
  d += sizeof PL_E - 1;
  *d++ = '"';
  d = vx__json_escape_into(d, event, elen);
  *d++ = '"';
  memcpy(d, PL_D, sizeof PL_D - 1);
  d += sizeof PL_D - 1;
  memcpy(d, data, dlen);
  d += dlen;
  if (cmlen)
    memcpy(d, cmark, cmlen);
  d[cmlen] = '}';
}

/* Any thread: reads only options that never change after vx_new. Must equal what
 * vx__redis_publish holds for the same broadcast. */
static size_t vx__redis_cost(vx_events *ev, const char *const *channels, size_t n, const char *event,
                      size_t dlen, const char *except) {
  size_t plen = payload_len(event, strlen(event), dlen, 0, except);
  size_t pre = strlen(ev->opts.redis_prefix ? ev->opts.redis_prefix : "vx") + 4;
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += pre + strlen(channels[i]) + plen;
  return total;
}

static bool vx__redis_reserve(vx_events *ev, size_t cost) {
  size_t cur = atomic_load(&ev->redis_backlog);
  do {
    if (cur + cost > ev->opts.redis_backlog_max)
      return false;
  } while (!atomic_compare_exchange_weak(&ev->redis_backlog, &cur, cur + cost));
  return true;
}

static void vx__redis_release(vx_events *ev, size_t cost) {
  if (cost)
    atomic_fetch_sub(&ev->redis_backlog, cost);
}

/* ---- the backlog and the sent list ---- */

static void on_published(redisAsyncContext *ac, void *reply, void *priv);

static void release_msg(vx_redis *r, qmsg *m) {
  size_t b = m->klen + m->plen;
  r->held -= b;
  vx__redis_release(r->ev, b);
  free(m);
}

/* Send the backlog in order while the commands connection takes it. */
static void backlog_flush(vx_redis *r) {
  while (r->qhead && r->cmd.ready && r->cmd.ac) {
    qmsg *m = r->qhead;
    if (redisAsyncCommand(r->cmd.ac, on_published, m, "PUBLISH %b %b", m->data, m->klen,
                          m->data + m->klen, m->plen) != REDIS_OK)
      return; /* disconnecting: it stays queued (and is counted at shutdown) */
    r->qhead = m->next;
    if (!r->qhead)
      r->qtail = NULL;
    m->next = NULL;
    if (r->stail)
      r->stail->next = m;
    else
      r->shead = m;
    r->stail = m;
  }
}

/* Redis answered a PUBLISH (the oldest one sent), or the connection is going away (NULL:
 * the message stays in the sent list; on_disconnect puts it back into the backlog). */
static void on_published(redisAsyncContext *ac, void *reply, void *priv) {
  rconn *rc = ac->data;
  vx_redis *r = rc->r;
  redisReply *rep = reply;
  qmsg *m = priv;
  if (!rep)
    return;
  if (r->shead != m) { /* cannot happen: replies come in order */
    vx__log(r->ev, VX_LOG_ERROR, "redis: PUBLISH reply out of order");
    return;
  }
  r->shead = m->next;
  if (!r->shead)
    r->stail = NULL;
  if (rep->type == REDIS_REPLY_ERROR) {
    r->refused++;
    vx__log(r->ev, VX_LOG_ERROR, "redis refused a PUBLISH: %s", rep->str);
  }
  release_msg(r, m);
  if (r->closing)
    drain_check(r);
}

/* The sent list goes back to the head of the backlog, in order. */
static void requeue_sent(vx_redis *r) {
  if (!r->shead)
    return;
  r->stail->next = r->qhead;
  if (!r->qhead)
    r->qtail = r->stail;
  r->qhead = r->shead;
  r->shead = r->stail = NULL;
}

static int vx__redis_publish(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                      const char *event, size_t elen, const char *data, size_t dlen,
                      const char *cmark, size_t cmlen, const char *except, size_t reserved) {
  vx_redis *r = ev->bp.state;
  if (!r || r->closing) {
    /* Redis never started (out of memory) or is being closed: nothing can reach it. Not
     * silent: counted with what close reports. */
    vx__redis_release(ev, reserved);
    if (r)
      r->refused += n;
    else
      vx__log(ev, VX_LOG_ERROR, "redis is not running: broadcast not published");
    return 0;
  }
  size_t plen = payload_len(event, elen, dlen, cmlen, except);
  size_t need = 0;
  for (size_t k = 0; k < n; k++)
    need += r->prefix_len + 4 + lens[k] + plen;
  if (reserved) {
    /* The caller reserved exactly this much (vx__redis_cost); keep it as held bytes. */
    if (reserved > need)
      vx__redis_release(ev, reserved - need);
    else if (reserved < need)
      atomic_fetch_add(&ev->redis_backlog, need - reserved);
  } else if (!vx__redis_reserve(ev, need)) {
    return VX_EBACKLOG;
  }
  qmsg *first = NULL;
  for (size_t k = 0; k < n; k++) {
    size_t klen = r->prefix_len + 4 + lens[k];
    qmsg *m = malloc(sizeof *m + klen + plen);
    if (!m) {
      size_t left = 0;
      for (size_t j = k; j < n; j++)
        left += r->prefix_len + 4 + lens[j] + plen;
      vx__redis_release(ev, left);
      backlog_flush(r);
      return VX_ENOMEM;
    }
    m->next = NULL;
    m->klen = klen;
    m->plen = plen;
    channel_key(r, channels[k], lens[k], m->data);
    if (first)
      memcpy(m->data + klen, first->data + first->klen, plen);
    else
      payload_write(r, m->data + klen, event, elen, data, dlen, cmark, cmlen, except);
    first = m;
    if (r->qtail)
      r->qtail->next = m;
    else
      r->qhead = m;
    r->qtail = m;
    r->held += klen + plen;
  }
  if (!r->flush_scheduled)
    backlog_flush(r);
  return 0;
}

/* ---- subscriptions ---- */

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

static void subscribe_key(vx_redis *r, rchan *c) {
  char key[64 + 4 + VX_CHANNEL_MAX];
  size_t kl = channel_key(r, c->name, c->n, key);
  c->acks++;
  c->state = RS_SUBSCRIBING;
  redisAsyncCommand(r->sub.ac, on_sub_reply, NULL, "SUBSCRIBE %b", key, kl);
}

static void channel_open(vx_events *ev, const char *name, size_t n) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  rchan *c = calloc(1, sizeof *c + n + 1);
  if (c) {
    memcpy(c->name, name, n);
    c->n = n;
  }
  if (!c || vx__map_put(&r->chans, c->name, n, c) != 0) {
    free(c);
    vx__log(ev, VX_LOG_ERROR, "redis: out of memory: channel served locally only");
    return;
  }
  /* Not ready or closing: acknowledged at once, local delivery only until Redis is back. */
  if (!r->closing && r->sub.ready)
    subscribe_key(r, c);
}

static void channel_close(vx_events *ev, const char *name, size_t n) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  free(vx__map_del(&r->chans, name, n));
  if (r->sub.ready && !r->closing) {
    char key[64 + 4 + VX_CHANNEL_MAX];
    size_t kl = channel_key(r, name, n, key);
    redisAsyncCommand(r->sub.ac, NULL, NULL, "UNSUBSCRIBE %b", key, kl);
  }
}

static bool channel_ready(vx_events *ev, const char *name, size_t n) {
  vx_redis *r = ev->bp.state;
  rchan *c = r ? vx__map_get(&r->chans, name, n) : NULL;
  return !c || c->state != RS_SUBSCRIBING;
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv) {
  (void)priv;
  rconn *rc = ac->data;
  vx_redis *r = rc->r;
  redisReply *rep = reply;
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
      rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING)
    return;
  const char *kind = rep->element[0]->str;
  const char *key = rep->element[1]->str;
  size_t kl = rep->element[1]->len;
  size_t pre = r->prefix_len + 4;
  if (kl <= pre || memcmp(key, r->prefix, r->prefix_len) != 0)
    return;
  const char *name = key + pre;
  size_t n = kl - pre;
  rchan *ch = vx__map_get(&r->chans, name, n);
  if (strcmp(kind, "subscribe") == 0) {
    if (!ch)
      return;
    if (ch->acks > 1) {
      ch->acks--;
      return; /* a later SUBSCRIBE of the same key is still on its way */
    }
    ch->acks = 0;
    ch->state = RS_SUBSCRIBED;
    r->ev->bp.h->channel_ready(r->ev, ch->name, ch->n);
  } else if (strcmp(kind, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
    const char *p = rep->element[2]->str;
    size_t pl = rep->element[2]->len;
    const char *o, *x, *e, *d;
    size_t ol, xl, el, dl;
    if (!vx__json_valid(p, pl) || !vx__json_field(p, pl, "o", &o, &ol) ||
        !vx__json_field(p, pl, "e", &e, &el) || !vx__json_field(p, pl, "d", &d, &dl) ||
        !vx__json_field(p, pl, "x", &x, &xl) || e[0] != '"')
      return;
    if (ol == 18 && memcmp(o + 1, r->origin, 16) == 0)
      return; /* our own broadcast, already delivered here */
    if (!ch)
      return;
    /* The event name and except id are JSON strings written by the publisher; the parser
     * unescapes them (one small parse per message received, not per recipient). */
    cJSON *ej = cJSON_ParseWithLength(e, el);
    cJSON *xj = x[0] == '"' ? cJSON_ParseWithLength(x, xl) : NULL;
    /* A client event: the envelope gets "client":true and the sender's id, as at origin. */
    const char *cv, *uv;
    size_t cvl, uvl;
    char extra[32 + 256];
    size_t xlen = 0;
    if (vx__json_field(p, pl, "c", &cv, &cvl) && cv[0] == '{') {
      static const char CL[] = ",\"client\":true", UID[] = ",\"user_id\":";
      memcpy(extra, CL, sizeof CL - 1);
      xlen = sizeof CL - 1;
      if (vx__json_field(cv, cvl, "u", &uv, &uvl) && uvl <= 256) {
        memcpy(extra + xlen, UID, sizeof UID - 1);
        xlen += sizeof UID - 1;
        memcpy(extra + xlen, uv, uvl);
        xlen += uvl;
      }
    }
    if (cJSON_IsString(ej))
      r->ev->bp.h->deliver(r->ev, ch->name, ch->n, ej->valuestring, strlen(ej->valuestring), d,
                           dl, extra, xlen, cJSON_IsString(xj) ? xj->valuestring : NULL);
    cJSON_Delete(ej);
    cJSON_Delete(xj);
  }
}

/* ---- connections ---- */

/* Shutdown wants the commands connection only to publish what is still in the backlog. */
static bool wanted(rconn *rc) {
  vx_redis *r = rc->r;
  if (r->handles_closed)
    return false;
  return !r->closing || (!rc->is_sub && !r->forced && r->qhead);
}

static void schedule_retry(rconn *rc) {
  if (!wanted(rc) || uv_is_active((uv_handle_t *)&rc->retry))
    return;
  rc->backoff_ms = rc->backoff_ms ? rc->backoff_ms * 2 : 100;
  if (rc->backoff_ms > VX_REDIS_BACKOFF_MAX)
    rc->backoff_ms = VX_REDIS_BACKOFF_MAX;
  /* +-25 % jitter so a fleet does not reconnect in lockstep */
  uint32_t j = (uint32_t)((uv_hrtime() >> 10) % (rc->backoff_ms / 2 + 1));
  uv_timer_start(&rc->retry, retry_cb, rc->backoff_ms * 3 / 4 + j, 0);
}

static void flush_cb(uv_timer_t *t) {
  vx_redis *r = t->data;
  r->flush_scheduled = false;
  backlog_flush(r);
}

/* Shutdown: the backlog is empty and nothing needs a connection any more. The commands
 * connection is disconnected gracefully (hiredis first waits for every pending reply: the
 * PUBLISH acknowledgements are counted as they come), from a timer rather than from inside
 * a hiredis callback. */
static void disconnect_cb(uv_timer_t *t) {
  vx_redis *r = t->data;
  redisAsyncContext *ac = r->cmd.ac;
  if (!ac || r->qhead)
    return;
  if (ac->c.flags & REDIS_CONNECTED) {
    if (!(ac->c.flags & REDIS_DISCONNECTING))
      redisAsyncDisconnect(ac); /* on_disconnect clears ->ac once the replies are in */
  } else {
    r->cmd.ac = NULL; /* still connecting: no callback will come */
    redisAsyncFree(ac);
    vx__loop_shutdown_progress(r->ev);
  }
}

static void leave_cluster(vx_redis *r) {
  if (!r->registered || !r->cmd.ac)
    return;
  if (redisAsyncCommand(r->cmd.ac, NULL, NULL, "EVALSHA %s 0 %s %s", r->sha[S_LEAVE_ALL],
                        r->prefix, r->origin) == REDIS_OK)
    r->registered = false;
}

/* During shutdown, after anything that may have emptied the backlog. */
static void drain_check(vx_redis *r) {
  if (!r->closing || r->forced || r->handles_closed)
    return;
  backlog_flush(r);
  if (r->qhead) { /* waiting for the connection: make sure an attempt is on its way */
    if (!r->cmd.ac && !r->resolving && !uv_is_active((uv_handle_t *)&r->cmd.retry))
      schedule_retry(&r->cmd);
    return;
  }
  uv_timer_stop(&r->cmd.retry);
  if (!r->shead) { /* everything acknowledged: do not wait long for the rest */
    uint64_t linger = uv_now(&r->ev->loop) + VX_REDIS_LINGER_MS;
    if (linger < r->drain_deadline)
      r->drain_deadline = linger;
  }
  if (r->cmd.ac && !uv_is_active((uv_handle_t *)&r->flush_timer))
    uv_timer_start(&r->flush_timer, disconnect_cb, 0, 0);
  vx__loop_shutdown_progress(r->ev);
}

static void on_auth_reply(redisAsyncContext *ac, void *reply, void *priv) {
  (void)priv;
  rconn *rc = ac->data;
  redisReply *rep = reply;
  if (rep && rep->type == REDIS_REPLY_ERROR)
    vx__log(rc->r->ev, VX_LOG_ERROR, "redis %s: %s", rc->is_sub ? "subscriber" : "commands",
            rep->str);
}

static void on_connect(const redisAsyncContext *cac, int status) {
  redisAsyncContext *ac = (redisAsyncContext *)cac;
  rconn *rc = ac->data;
  vx_redis *r = rc->r;
  if (status != REDIS_OK) {
    /* Loud once per outage, quiet on every retry after that. */
    vx__log(r->ev, rc->backoff_ms <= 100 ? VX_LOG_WARN : VX_LOG_DEBUG, "redis %s:%d: %s",
            r->host, r->port, ac->errstr);
    rc->ac = NULL; /* hiredis frees the context after this callback */
    schedule_retry(rc);
    if (r->closing)
      vx__loop_shutdown_progress(r->ev);
    return;
  }
  if (r->password) {
    if (r->user)
      redisAsyncCommand(ac, on_auth_reply, NULL, "AUTH %s %s", r->user, r->password);
    else
      redisAsyncCommand(ac, on_auth_reply, NULL, "AUTH %s", r->password);
  }
  if (r->db && !rc->is_sub)
    redisAsyncCommand(ac, on_auth_reply, NULL, "SELECT %d", r->db);
  rc->ready = true;
  rc->backoff_ms = 0;
  vx__log(r->ev, VX_LOG_INFO, "redis %s connected to %s:%d", rc->is_sub ? "subscriber" : "commands",
          r->host, r->port);
  if (r->closing) { /* connected only to publish what shutdown still holds */
    backlog_flush(r);
    leave_cluster(r);
    drain_check(r);
    return;
  }
  if (rc->is_sub) {
    /* Every channel with local subscribers, again (after an outage they were being served
     * locally only). */
    for (uint32_t i = 0; i < r->chans.cap; i++)
      if (r->chans.slots[i].key)
        subscribe_key(r, r->chans.slots[i].val);
  } else {
    load_scripts(r); /* and the first heartbeat, whose answer registers this instance */
    if (r->qhead) {
      if (rc->was_connected) { /* after an outage: let the others re-subscribe first */
        r->flush_scheduled = true;
        uv_timer_start(&r->flush_timer, flush_cb, VX_REDIS_FLUSH_DELAY, 0);
      } else {
        backlog_flush(r); /* broadcasts made while starting up */
      }
    }
  }
  rc->was_connected = true;
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
  redisAsyncContext *ac = (redisAsyncContext *)cac;
  rconn *rc = ac->data;
  vx_redis *r = rc->r;
  rc->ac = NULL;
  rc->ready = false;
  if (!rc->is_sub) {
    /* Unacknowledged PUBLISHes are published again after reconnecting. */
    requeue_sent(r);
    r->synced = false;
    r->beating = false;
  }
  if (r->closing) {
    schedule_retry(rc); /* only if the backlog still wants a connection */
    vx__loop_shutdown_progress(r->ev);
    return;
  }
  vx__log(r->ev, VX_LOG_WARN, "redis %s lost (%s); reconnecting",
          rc->is_sub ? "subscriber" : "commands", status == REDIS_OK ? "closed" : ac->errstr);
  if (rc->is_sub) {
    /* Channels are served locally until the subscriber is back; nobody waits for an ack. */
    for (uint32_t i = 0; i < r->chans.cap; i++) {
      rchan *ch = r->chans.slots[i].key ? r->chans.slots[i].val : NULL;
      if (ch) {
        ch->acks = 0;
        ch->state = RS_NONE;
        r->ev->bp.h->channel_ready(r->ev, ch->name, ch->n);
      }
    }
  }
  schedule_retry(rc);
}

static void rconn_connect(rconn *rc) {
  vx_redis *r = rc->r;
  if (rc->ac || !wanted(rc))
    return;
  redisAsyncContext *ac = redisAsyncConnect(r->ip, r->port);
  if (!ac || ac->err) {
    vx__log(r->ev, VX_LOG_WARN, "redis connect %s:%d: %s", r->host, r->port,
            ac ? ac->errstr : "out of memory");
    if (ac)
      redisAsyncFree(ac);
    schedule_retry(rc);
    return;
  }
  ac->data = rc;
  if (rpoll_attach(ac, &r->ev->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    schedule_retry(rc);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  rc->ac = ac;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  vx_redis *r = req->data;
  r->resolving = false;
  if (status == 0 && res) {
    if (res->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, r->ip, sizeof r->ip);
    else
      uv_ip4_name((struct sockaddr_in *)res->ai_addr, r->ip, sizeof r->ip);
    r->resolved = true;
  }
  uv_freeaddrinfo(res);
  if (r->closing)
    vx__loop_shutdown_progress(r->ev);
  if (!r->resolved) {
    if (status != UV_ECANCELED)
      vx__log(r->ev, VX_LOG_ERROR, "redis host %s: %s", r->host, uv_strerror(status));
    schedule_retry(&r->cmd);
    return;
  }
  rconn_connect(&r->cmd);
  rconn_connect(&r->sub);
}

static void retry_cb(uv_timer_t *t) {
  rconn *rc = t->data;
  if (!rc->r->resolved) {
    if (!rc->r->resolving) {
      rc->r->resolving = true;
      struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
      if (uv_getaddrinfo(&rc->r->ev->loop, &rc->r->gai, on_resolved, rc->r->host, NULL, &hints))
        rc->r->resolving = false;
    }
    return;
  }
  rconn_connect(rc);
}

static void query_timer_cb(uv_timer_t *t);

static int vx__redis_start(vx_events *ev) {
  vx_redis *r = calloc(1, sizeof *r);
  if (!r)
    return VX_ENOMEM;
  r->ev = ev;
  int e = parse_url(r, ev->opts.redis_url);
  if (e) {
    free(r->user);
    free(r->password);
    free(r);
    return e;
  }
  const char *prefix = ev->opts.redis_prefix ? ev->opts.redis_prefix : "vx";
  r->prefix_len = strlen(prefix);
  memcpy(r->prefix, prefix, r->prefix_len + 1);
  char id[VX_SOCKET_ID_LEN + 1];
  vx__random_id(ev, id);
  memcpy(r->origin, id, 16);
  r->cmd.r = r->sub.r = r;
  r->sub.is_sub = true;
  uv_timer_init(&ev->loop, &r->cmd.retry);
  uv_timer_init(&ev->loop, &r->sub.retry);
  r->cmd.retry.data = &r->cmd;
  r->sub.retry.data = &r->sub;
  r->gai.data = r;
  uv_timer_init(&ev->loop, &r->flush_timer);
  r->flush_timer.data = r;
  uv_timer_init(&ev->loop, &r->query_timer);
  r->query_timer.data = r;
  uv_timer_init(&ev->loop, &r->live_timer);
  r->live_timer.data = r;
  uv_timer_start(&r->live_timer, live_tick, VX_BEAT_MS, VX_BEAT_MS);
  for (int i = 0; i < S_COUNT; i++) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    EVP_Digest(scripts[i], strlen(scripts[i]), md, &ml, EVP_sha1(), NULL);
    for (unsigned k = 0; k < 20; k++)
      snprintf(r->sha[i] + 2 * k, 3, "%02x", md[k]);
  }
  ev->bp.state = r;
  /* An IP literal connects at once; a name is resolved off the loop first. */
  struct sockaddr_in6 a6;
  struct sockaddr_in a4;
  if (uv_ip4_addr(r->host, r->port, &a4) == 0 || uv_ip6_addr(r->host, r->port, &a6) == 0) {
    snprintf(r->ip, sizeof r->ip, "%.63s", r->host);
    r->resolved = true;
    rconn_connect(&r->cmd);
    rconn_connect(&r->sub);
  } else {
    retry_cb(&r->cmd.retry);
  }
  return 0;
}

/* Shutdown began. Queries not yet sent are answered VX_ECLOSED; the subscriber goes at once
 * (nothing arriving matters any more); the backlog is published, over a connection made
 * for it if need be, and this instance leaves the cluster view; then `cmd` disconnects
 * gracefully. An instance with nothing to publish is done as soon as its contexts are. */
static void vx__redis_stop(vx_events *ev, uint32_t grace_ms) {
  vx_redis *r = ev->bp.state;
  if (!r || r->closing)
    return;
  r->closing = true;
  r->drain_deadline =
      uv_now(&ev->loop) + (grace_ms ? grace_ms : ev->opts.redis_connect_timeout_ms);
  if (r->flush_scheduled) { /* a post-outage flush still waiting for its delay: now */
    r->flush_scheduled = false;
    uv_timer_stop(&r->flush_timer);
  }
  uv_timer_stop(&r->live_timer);
  queries_fail_unsent(r, VX_ECLOSED);
  uv_timer_stop(&r->sub.retry);
  if (r->sub.ac) {
    redisAsyncContext *ac = r->sub.ac;
    r->sub.ac = NULL;
    r->sub.ready = false;
    redisAsyncFree(ac);
  }
  if (r->cmd.ready) {
    backlog_flush(r);
    leave_cluster(r);
  }
  drain_check(r);
  if (!r->qhead && r->cmd.ac && !(r->cmd.ac->c.flags & REDIS_CONNECTED)) {
    redisAsyncContext *ac = r->cmd.ac; /* still connecting, and nothing to publish */
    r->cmd.ac = NULL;
    redisAsyncFree(ac);
  }
}

static void close_handles(vx_redis *r) {
  if (r->handles_closed)
    return;
  r->handles_closed = true;
  uv_close((uv_handle_t *)&r->cmd.retry, NULL);
  uv_close((uv_handle_t *)&r->sub.retry, NULL);
  uv_close((uv_handle_t *)&r->flush_timer, NULL);
  uv_close((uv_handle_t *)&r->live_timer, NULL);
  uv_close((uv_handle_t *)&r->query_timer, NULL);
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->gai);
}

static bool vx__redis_done(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return true;
  if (r->cmd.ac || r->sub.ac)
    return false;
  if (r->qhead && !r->forced && !r->handles_closed)
    return false; /* between attempts to connect, with broadcasts to publish */
  close_handles(r);
  return !r->resolving; /* a cancelled name lookup still calls back */
}

static bool vx__redis_overdue(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  return r && r->closing && !r->forced && uv_now(&ev->loop) >= r->drain_deadline;
}

/* The grace is over with Redis still not done: drop the connections. Replies still
 * pending come back NULL; their broadcasts are counted as not published. */
static void vx__redis_force(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  r->closing = true;
  r->forced = true;
  rconn *both[2] = {&r->sub, &r->cmd};
  for (int i = 0; i < 2; i++) {
    redisAsyncContext *ac = both[i]->ac;
    if (ac) {
      both[i]->ac = NULL;
      redisAsyncFree(ac);
    }
  }
  close_handles(r);
}

static uint64_t vx__redis_unpublished(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return 0;
  uint64_t n = r->refused;
  for (qmsg *m = r->qhead; m; m = m->next)
    n++;
  for (qmsg *m = r->shead; m; m = m->next)
    n++;
  return n;
}

static void vx__redis_free(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  qmsg *lists[2] = {r->qhead, r->shead};
  for (int i = 0; i < 2; i++) {
    while (lists[i]) {
      qmsg *m = lists[i];
      lists[i] = m->next;
      free(m);
    }
  }
  while (r->queries) { /* none by now: every one was answered before the loop ended */
    rquery *q = r->queries;
    r->queries = q->next;
    free(q);
  }
  for (uint32_t i = 0; i < r->chans.cap; i++)
    if (r->chans.slots[i].key)
      free(r->chans.slots[i].val);
  vx__map_free(&r->chans);
  free(r->user);
  free(r->password);
  free(r);
  ev->bp.state = NULL;
}

/* ---- cluster-wide counts ---- */

static void count_key(vx_redis *r, const char *name, size_t n, char *out, size_t *kl) {
  memcpy(out, r->prefix, r->prefix_len);
  memcpy(out + r->prefix_len, ":count:", 7);
  memcpy(out + r->prefix_len + 7, name, n);
  *kl = r->prefix_len + 7 + n;
}

static int run_script_rc(vx_redis *r, int which, redisCallbackFn *cb, void *priv,
                         const char *name, size_t n, const char *arg2) {
  char ck[64 + 7 + VX_CHANNEL_MAX], sk[80], ik[96];
  size_t ckl;
  count_key(r, name, n, ck, &ckl);
  int skl = snprintf(sk, sizeof sk, "%s:channels", r->prefix);
  int ikl = snprintf(ik, sizeof ik, "%s:ich:%s", r->prefix, r->origin);
  const char *argv[9] = {"EVALSHA", r->sha[which], "3", ck, sk, ik, r->origin, arg2, name};
  size_t lens[9] = {7, 40, 1, ckl, (size_t)skl, (size_t)ikl, 16, strlen(arg2), n};
  if (!r->cmd.ac)
    return REDIS_ERR;
  return redisAsyncCommandArgv(r->cmd.ac, cb, priv, 9, argv, lens);
}

static void run_script(vx_redis *r, int which, redisCallbackFn *cb, void *priv, const char *name,
                       size_t n, const char *arg2) {
  run_script_rc(r, which, cb, priv, name, n, arg2);
}

/* The local subscriber count of a channel changed by delta. */
static void count(vx_events *ev, const char *name, size_t n, int delta) {
  vx_redis *r = ev->bp.state;
  rchan *c = r ? vx__map_get(&r->chans, name, n) : NULL;
  if (c)
    c->count += (uint32_t)delta;
  if (!r || !r->synced || r->closing)
    return; /* registered in full once the heartbeat answers */
  run_script(r, S_ADD, NULL, NULL, name, n, delta > 0 ? "1" : "-1");
}

static void register_all(vx_redis *r) {
  char v[24];
  for (uint32_t i = 0; i < r->chans.cap; i++) {
    rchan *ch = r->chans.slots[i].key ? r->chans.slots[i].val : NULL;
    if (!ch)
      continue;
    snprintf(v, sizeof v, "%u", ch->count);
    run_script(r, S_SET, NULL, NULL, ch->name, ch->n, v);
  }
}

static void register_presence(vx_redis *r, bool loud);

/* This instance's counts and members, in full: after (re)connecting, or after finding it
 * was reaped. `loud`: the others saw this instance's members removed and are owed a
 * member_added for each that is not present elsewhere (the script decides, atomically). */
static void register_instance(vx_redis *r, bool loud) {
  register_all(r);
  register_presence(r, loud);
  r->registered = true;
}

static void on_beat(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  (void)priv;
  vx_redis *r = ((rconn *)ac->data)->r;
  redisReply *rep = reply;
  r->beating = false;
  if (!rep || r->closing)
    return;
  if (rep->type == REDIS_REPLY_ERROR) {
    vx__log(r->ev, VX_LOG_ERROR, "redis heartbeat: %s", rep->str);
    if (strncmp(rep->str, "NOSCRIPT", 8) == 0) /* SCRIPT FLUSH under us: load them again */
      load_scripts(r);
    return;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_STRING)
    return;
  const char *status = rep->element[0]->str;
  bool reaped = strcmp(status, "reaped") == 0;
  if (!r->synced) {
    register_instance(r, reaped);
    r->synced = true;
    queries_send(r);
  } else if (reaped || strcmp(status, "new") == 0) {
    vx__log(r->ev, VX_LOG_WARN,
            reaped ? "redis: this instance was reaped by the others (its heartbeats lapsed); "
                     "registering again"
                   : "redis: this instance's registration was lost; registering again");
    register_instance(r, reaped);
  }
  if (rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer > 0)
    vx__log(r->ev, VX_LOG_INFO, "redis: reaped %lld silent instance(s)",
            rep->element[1]->integer);
}

static void live_tick(uv_timer_t *t) {
  vx_redis *r = t->data;
  if (!r->cmd.ready || !r->cmd.ac || r->closing || r->beating)
    return; /* a beat still on its way (Redis stalled) stands for this one */
  char w[16], g[16], ttl[16];
  snprintf(w, sizeof w, "%d", VX_BEAT_WINDOW_MS);
  snprintf(g, sizeof g, "%d", VX_BEAT_GAP_MS);
  snprintf(ttl, sizeof ttl, "%d", VX_REAPED_TTL_MS);
  if (redisAsyncCommand(r->cmd.ac, on_beat, NULL, "EVALSHA %s 0 %s %s %s %s %s", r->sha[S_BEAT],
                        r->prefix, r->origin, w, g, ttl) == REDIS_OK)
    r->beating = true;
}

static void load_scripts(vx_redis *r) {
  for (int i = 0; i < S_COUNT; i++)
    redisAsyncCommand(r->cmd.ac, on_auth_reply, NULL, "SCRIPT LOAD %s", scripts[i]);
  live_tick(&r->live_timer);
}

/* ---- cluster-wide queries ---- */

static void query_answer_error(int kind, void *cb, void *data, int status) {
  if (kind == VX_Q_COUNT || kind == VX_Q_HAS)
    ((vx_count_cb)cb)(status, 0, data);
  else if (kind == VX_Q_CHANNELS)
    ((vx_channels_cb)cb)(status, NULL, 0, data);
  else
    ((vx_json_cb)cb)(status, NULL, 0, data);
}

static void query_unlink(vx_redis *r, rquery *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    r->queries = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    r->queries_tail = q->prev;
  q->prev = q->next = NULL;
}

static void query_arm(vx_redis *r) {
  if (r->handles_closed)
    return;
  if (!r->queries) {
    uv_timer_stop(&r->query_timer);
    return;
  }
  uint64_t now = uv_now(&r->ev->loop), d = r->queries->deadline;
  uv_timer_start(&r->query_timer, query_timer_cb, d > now ? d - now : 0, 0);
}

static char *members_array(redisReply *rep, size_t *len);

static void on_query(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  rquery *q = priv;
  vx_redis *r = q->r;
  redisReply *rep = reply;
  if (q->answered) { /* timed out already */
    free(q);
    return;
  }
  query_unlink(r, q);
  int st = !rep ? (r->closing ? VX_ECLOSED : VX_EUNAVAILABLE) : 0;
  if (rep && rep->type == REDIS_REPLY_ERROR) {
    vx__log(r->ev, VX_LOG_ERROR, "redis query: %s", rep->str);
    st = VX_EUNAVAILABLE;
  }
  if (!st && (q->kind == VX_Q_COUNT || q->kind == VX_Q_HAS) &&
      rep->type == REDIS_REPLY_INTEGER) {
    uint64_t v = rep->integer > 0 ? (uint64_t)rep->integer : 0;
    ((vx_count_cb)q->cb)(0, q->kind == VX_Q_HAS ? v > 0 : v, q->data);
  } else if (!st && q->kind == VX_Q_CHANNELS && rep->type == REDIS_REPLY_ARRAY) {
    const char **names = malloc((rep->elements + 1) * sizeof *names);
    size_t k = 0;
    for (size_t i = 0; names && i < rep->elements; i++)
      if (rep->element[i]->type == REDIS_REPLY_STRING)
        names[k++] = rep->element[i]->str;
    if (names)
      ((vx_channels_cb)q->cb)(0, names, k, q->data);
    else
      ((vx_channels_cb)q->cb)(VX_ENOMEM, NULL, 0, q->data);
    free(names);
  } else if (!st && q->kind == VX_Q_MEMBERS && rep->type == REDIS_REPLY_ARRAY) {
    size_t ml = 0;
    char *members = members_array(rep, &ml);
    ((vx_json_cb)q->cb)(members ? 0 : VX_ENOMEM, members, members ? ml : 0, q->data);
    free(members);
  } else {
    query_answer_error(q->kind, q->cb, q->data, st ? st : VX_EUNAVAILABLE);
  }
  free(q);
}

/* Hand one waiting query to hiredis; on failure it is answered VX_EUNAVAILABLE. */
static void query_send(vx_redis *r, rquery *q) {
  int rc = REDIS_ERR;
  char k[64 + 8 + VX_CHANNEL_MAX];
  if (q->kind == VX_Q_COUNT || q->kind == VX_Q_HAS) {
    rc = run_script_rc(r, S_SUM, on_query, q, q->name, strlen(q->name), "0");
  } else if (q->kind == VX_Q_CHANNELS) {
    snprintf(k, sizeof k, "%s:channels", r->prefix);
    rc = redisAsyncCommand(r->cmd.ac, on_query, q, "SMEMBERS %s", k);
  } else {
    snprintf(k, sizeof k, "%s:pinfo:%s", r->prefix, q->name);
    rc = redisAsyncCommand(r->cmd.ac, on_query, q, "HVALS %s", k);
  }
  if (rc == REDIS_OK) {
    q->sent = true;
    return;
  }
  query_unlink(r, q);
  query_answer_error(q->kind, q->cb, q->data, VX_EUNAVAILABLE);
  free(q);
}

static void queries_send(vx_redis *r) {
  rquery *next;
  for (rquery *q = r->queries; q; q = next) {
    next = q->next;
    if (!q->sent)
      query_send(r, q);
  }
  query_arm(r);
}

static void queries_fail_unsent(vx_redis *r, int status) {
  rquery *next;
  for (rquery *q = r->queries; q; q = next) {
    next = q->next;
    if (q->sent)
      continue;
    query_unlink(r, q);
    query_answer_error(q->kind, q->cb, q->data, status);
    free(q);
  }
  query_arm(r);
}

/* The oldest queries ran out of time, waiting for the connection or for their reply. */
static void query_timer_cb(uv_timer_t *t) {
  vx_redis *r = t->data;
  uint64_t now = uv_now(&r->ev->loop);
  while (r->queries && r->queries->deadline <= now) {
    rquery *q = r->queries;
    query_unlink(r, q);
    q->answered = true;
    query_answer_error(q->kind, q->cb, q->data, VX_EUNAVAILABLE);
    if (!q->sent)
      free(q); /* otherwise hiredis's callback frees it */
  }
  query_arm(r);
}

/* A count/has/channels/members query for the whole cluster. Never answered from the local
 * view: it waits (up to redis_connect_timeout_ms) until this instance is registered. */
static void vx__redis_query(vx_events *ev, int kind, const char *name, void *cb, void *data) {
  vx_redis *r = ev->bp.state;
  if (!r || r->closing) {
    query_answer_error(kind, cb, data, r ? VX_ECLOSED : VX_EUNAVAILABLE);
    return;
  }
  rquery *q = calloc(1, sizeof *q);
  if (!q) {
    query_answer_error(kind, cb, data, VX_ENOMEM);
    return;
  }
  q->r = r;
  q->kind = kind;
  q->cb = cb;
  q->data = data;
  q->deadline = uv_now(&ev->loop) + ev->opts.redis_connect_timeout_ms;
  if (name)
    snprintf(q->name, sizeof q->name, "%s", name);
  q->prev = r->queries_tail;
  if (r->queries_tail)
    r->queries_tail->next = q;
  else
    r->queries = q;
  r->queries_tail = q;
  if (r->synced && r->cmd.ac)
    query_send(r, q);
  query_arm(r);
}

/* ---- cluster-wide presence ---- */

typedef struct {
  vx_events *ev;
  char socket_id[VX_SOCKET_ID_LEN + 1];
  char channel[VX_CHANNEL_MAX + 1];
} pctx;

static char *members_array(redisReply *rep, size_t *len) {
  vx_str s = {0};
  vx__str_addz(&s, "[");
  for (size_t i = 0; i < rep->elements; i++) {
    if (rep->element[i]->type != REDIS_REPLY_STRING)
      continue;
    if (s.len > 1)
      vx__str_addz(&s, ",");
    vx__str_add(&s, rep->element[i]->str, rep->element[i]->len);
  }
  vx__str_addz(&s, "]");
  if (s.oom) {
    vx__str_free(&s);
    return NULL;
  }
  *len = s.len;
  return s.p;
}

/* The cluster's member list arrived: send the joining connection its
 * subscription_succeeded (if it is still here and still subscribed). */
static void on_members(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  pctx *p = priv;
  redisReply *rep = reply;
  vx_events *ev = p->ev;
  size_t ml = 0;
  char *members = rep && rep->type == REDIS_REPLY_ARRAY ? members_array(rep, &ml) : NULL;
  /* Without a list (Redis went away) the joining client gets the members known here. */
  ev->bp.h->members(ev, p->socket_id, p->channel, strlen(p->channel), members, ml);
  free(members);
  free(p);
}

static int presence_script(vx_redis *r, int which, const char *ch, size_t cn, const vx_member *m,
                           const char *except, bool quiet, redisCallbackFn *cb, void *priv) {
  char pm[64 + 5 + VX_CHANNEL_MAX + 260], pi[64 + 8 + VX_CHANNEL_MAX], ip[96],
      ck[64 + 4 + VX_CHANNEL_MAX], entry[VX_CHANNEL_MAX + 260], ex[40];
  int pml = snprintf(pm, sizeof pm, "%s:pm:%.*s:%.*s", r->prefix, (int)cn, ch, (int)m->id_len, m->id);
  int pil = snprintf(pi, sizeof pi, "%s:pinfo:%.*s", r->prefix, (int)cn, ch);
  int ipl = snprintf(ip, sizeof ip, "%s:ipres:%s", r->prefix, r->origin);
  size_t ckl = channel_key(r, ch, cn, ck);
  int el = snprintf(entry, sizeof entry, "%.*s\n%.*s", (int)cn, ch, (int)m->id_len, m->id);
  int exl = except ? snprintf(ex, sizeof ex, "\"%s\"", except) : snprintf(ex, sizeof ex, "null");
  const char *argv[13] = {"EVALSHA", r->sha[which], "4", pm, pi, ip, ck, r->origin, m->id,
                          m->json, entry, ex, quiet ? "1" : "0"};
  size_t lens[13] = {7, 40, 1, (size_t)pml, (size_t)pil, (size_t)ipl, ckl, 16, m->id_len,
                     m->json_len, (size_t)el, (size_t)exl, 1};
  if (!r->cmd.ac)
    return REDIS_ERR;
  return redisAsyncCommandArgv(r->cmd.ac, cb, priv, 13, argv, lens);
}

static bool presence_ready(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  return r && r->cmd.ready && r->sub.ready && !r->closing;
}

/* A connection joined a presence channel. With Redis up, the cluster takes over: the
 * script registers the member (publishing member_added if the user is new everywhere) and
 * answers with every member, from which the connection's subscription_succeeded is built.
 * Returns false when Redis is down (local presence only: the members known here answer at
 * once). */
static bool presence_join(vx_events *ev, const char *name, size_t n, const vx_member *m,
                          const char *socket_id, bool new_locally) {
  vx_redis *r = ev->bp.state;
  pctx *p = presence_ready(ev) ? calloc(1, sizeof *p) : NULL;
  int rc = REDIS_ERR;
  if (p) {
    p->ev = ev;
    memcpy(p->socket_id, socket_id, VX_SOCKET_ID_LEN + 1);
    memcpy(p->channel, name, n + 1);
    if (new_locally) {
      rc = presence_script(r, S_JOIN, name, n, m, socket_id, false, on_members, p);
    } else {
      char pi[64 + 8 + VX_CHANNEL_MAX];
      snprintf(pi, sizeof pi, "%s:pinfo:%s", r->prefix, name);
      rc = redisAsyncCommand(r->cmd.ac, on_members, p, "HVALS %s", pi);
    }
  }
  if (rc != REDIS_OK) {
    free(p);
    ev->bp.h->members(ev, socket_id, name, n, NULL, 0);
    return false;
  }
  return true;
}

/* The last local connection of member m left channel `name`. */
static bool presence_leave(vx_events *ev, const char *name, size_t n, const vx_member *m) {
  vx_redis *r = ev->bp.state;
  if (!r || !r->cmd.ready || r->closing)
    return false; /* at shutdown the instance left the cluster view in one go */
  presence_script(r, S_LEAVE, name, n, m, NULL, false, NULL, NULL);
  return presence_ready(ev);
}

/* This instance's members, registered again: quietly after a reconnect (the other
 * instances' subscribers still know them), or `loud` after this instance was reaped (they
 * saw member_removed and are owed member_added, sent to everyone, this instance's own
 * subscribers included, for each member the cluster does not have). */
static void register_member(void *ctx, const char *channel, size_t n, const vx_member *m) {
  struct { vx_redis *r; bool loud; } *k = ctx;
  presence_script(k->r, S_JOIN, channel, n, m, NULL, !k->loud, NULL, NULL);
}

static void register_presence(vx_redis *r, bool loud) {
  struct { vx_redis *r; bool loud; } k = {r, loud};
  r->ev->bp.h->each_member(r->ev, register_member, &k);
}

const vx_backplane_ops vx__backplane_redis = {
    .name = "redis",
    .start = vx__redis_start,
    .stop = vx__redis_stop,
    .done = vx__redis_done,
    .overdue = vx__redis_overdue,
    .force = vx__redis_force,
    .unpublished = vx__redis_unpublished,
    .free = vx__redis_free,
    .cost = vx__redis_cost,
    .reserve = vx__redis_reserve,
    .release = vx__redis_release,
    .publish = vx__redis_publish,
    .channel_open = channel_open,
    .channel_close = channel_close,
    .channel_ready = channel_ready,
    .count = count,
    .presence_join = presence_join,
    .presence_leave = presence_leave,
    .query = vx__redis_query,
};
