/* Redis pub/sub between instances.
 *
 * Two hiredis async connections live on the instance's loop: `sub` SUBSCRIBEs to
 * <prefix>:ch:<channel> while the channel has local subscribers, `cmd` PUBLISHes every
 * broadcast there (pipelined: hiredis appends to its output buffer, no round trip). The
 * payload names the origin instance (which already delivered locally and skips its own
 * echo) and the `except` socket. A local subscription is acknowledged to its client only
 * once Redis confirmed the SUBSCRIBE, so nothing published after the ack can be missed.
 *
 * While `cmd` is down, broadcasts for other instances wait in a bounded FIFO that is
 * flushed, in order, on reconnect; past the bound vx_broadcast fails with VX_EBACKLOG.
 * Both connections reconnect with capped exponential backoff and jitter; `sub`
 * re-subscribes every channel that has local subscribers. */
#include "vx_int.h"

#include <cjson/cJSON.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Cluster-wide subscriber counts: <prefix>:count:<channel> is a hash of instance id ->
 * local subscribers, <prefix>:channels the set of channels with any. Scripts keep the two
 * consistent atomically; they are loaded once per connection and run with EVALSHA. */
static const char SCRIPT_ADD[] =
    "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) "
    "if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end "
    "if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) "
    "else redis.call('SADD', KEYS[2], ARGV[3]) end "
    "return n";
static const char SCRIPT_SET[] = /* absolute value, after a reconnect */
    "if tonumber(ARGV[2]) > 0 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('SADD', KEYS[2], ARGV[3]) else redis.call('HDEL', KEYS[1], ARGV[1]) "
    "if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end end "
    "return 1";
static const char SCRIPT_SUM[] =
    "local t = 0 for _, v in ipairs(redis.call('HVALS', KEYS[1])) do t = t + tonumber(v) end "
    "return t";
/* Instances whose liveness key expired lose their counts (run by every instance). */
static const char SCRIPT_REAP[] =
    "local p = ARGV[1] local gone = 0 "
    "for _, id in ipairs(redis.call('SMEMBERS', p .. ':instances')) do "
    "if redis.call('EXISTS', p .. ':alive:' .. id) == 0 then "
    "for _, ch in ipairs(redis.call('SMEMBERS', p .. ':channels')) do "
    "local k = p .. ':count:' .. ch redis.call('HDEL', k, id) "
    "if redis.call('HLEN', k) == 0 then redis.call('SREM', p .. ':channels', ch) end end "
    "for _, e in ipairs(redis.call('SMEMBERS', p .. ':ipres:' .. id)) do "
    "local nl = string.find(e, '\\n', 1, true) if nl then "
    "local ch = string.sub(e, 1, nl - 1) local mid = string.sub(e, nl + 1) "
    "local pm = p .. ':pm:' .. ch .. ':' .. mid redis.call('SREM', pm, id) "
    "if redis.call('SCARD', pm) == 0 then local pi = p .. ':pinfo:' .. ch "
    "local j = redis.call('HGET', pi, mid) if j then redis.call('HDEL', pi, mid) "
    "redis.call('PUBLISH', p .. ':ch:' .. ch, "
    "'{\"o\":\"\",\"x\":null,\"e\":\"member_removed\",\"d\":' .. j .. '}') end end end end "
    "redis.call('DEL', p .. ':ipres:' .. id) "
    "redis.call('SREM', p .. ':instances', id) gone = gone + 1 end end "
    "return gone";

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

enum { S_ADD, S_SET, S_SUM, S_REAP, S_JOIN, S_LEAVE, S_COUNT };
static const char *const scripts[S_COUNT] = {SCRIPT_ADD,  SCRIPT_SET,  SCRIPT_SUM,
                                             SCRIPT_REAP, SCRIPT_JOIN, SCRIPT_LEAVE};

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
  bool resolving, resolved, closing, flush_scheduled;
  uv_timer_t flush_timer;
  qmsg *qhead, *qtail;
  size_t qbytes, qmax;
  vx_map acks; /* key -> outstanding SUBSCRIBE replies (as intptr_t) */
  char sha[S_COUNT][41];
  uv_timer_t live_timer; /* refreshes our liveness key, reaps dead instances */
};

static void rconn_connect(rconn *rc);
static void retry_cb(uv_timer_t *t);
static void load_scripts(vx_redis *r);
static void live_tick(uv_timer_t *t);
static void run_script(vx_redis *r, int which, redisCallbackFn *cb, void *priv, const char *name,
                       size_t n, const char *arg2);
#define VX_LIVENESS_MS 2000 /* dead instances are reaped within 3 x this */

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

/* ---- the backlog ---- */

static void publish_now(vx_redis *r, const char *key, size_t klen, const char *p, size_t plen) {
  redisAsyncCommand(r->cmd.ac, NULL, NULL, "PUBLISH %b %b", key, klen, p, plen);
}

static void backlog_flush(vx_redis *r) {
  while (r->qhead && r->cmd.ready) {
    qmsg *m = r->qhead;
    r->qhead = m->next;
    if (!r->qhead)
      r->qtail = NULL;
    publish_now(r, m->data, m->klen, m->data + m->klen, m->plen);
    r->qbytes -= m->klen + m->plen;
    atomic_store(&r->ev->redis_backlog, r->qbytes);
    free(m);
  }
}

static int backlog_push(vx_redis *r, const char *key, size_t klen, const char *p, size_t plen) {
  if (r->qbytes + klen + plen > r->qmax)
    return VX_EBACKLOG;
  qmsg *m = malloc(sizeof *m + klen + plen);
  if (!m)
    return VX_ENOMEM;
  m->next = NULL;
  m->klen = klen;
  m->plen = plen;
  memcpy(m->data, key, klen);
  memcpy(m->data + klen, p, plen);
  if (r->qtail)
    r->qtail->next = m;
  else
    r->qhead = m;
  r->qtail = m;
  r->qbytes += klen + plen;
  atomic_store(&r->ev->redis_backlog, r->qbytes);
  return 0;
}

/* Publish one broadcast for the other instances:
 * {"o":"<origin>","x":"<except>"|null,"e":"<event>","d":<data>[,"c":{["u":<user id>]}]}
 * where "c" marks a client event (and carries its sender's presence id). */
int vx__redis_publish(vx_events *ev, const char *channel, size_t clen, const char *event,
                      size_t elen, const char *data, size_t dlen, bool client,
                      const char *user_id, size_t uidlen, const char *except) {
  vx_redis *r = ev->redis;
  if (!r || r->closing)
    return 0;
  vx_str s = {0};
  vx__str_addz(&s, "{\"o\":\"");
  vx__str_addz(&s, r->origin);
  vx__str_addz(&s, "\",\"x\":");
  if (except)
    vx__str_add_json_string(&s, except, strlen(except));
  else
    vx__str_addz(&s, "null");
  vx__str_addz(&s, ",\"e\":");
  vx__str_add_json_string(&s, event, elen);
  vx__str_addz(&s, ",\"d\":");
  vx__str_add(&s, data, dlen);
  if (client) {
    vx__str_addz(&s, ",\"c\":{");
    if (user_id) {
      vx__str_addz(&s, "\"u\":");
      vx__str_add(&s, user_id, uidlen);
    }
    vx__str_addz(&s, "}");
  }
  vx__str_addz(&s, "}");
  if (s.oom) {
    vx__str_free(&s);
    return VX_ENOMEM;
  }
  char key[64 + 4 + VX_CHANNEL_MAX];
  size_t kl = channel_key(r, channel, clen, key);
  int rc = 0;
  if (r->cmd.ready && !r->qhead && !r->flush_scheduled)
    publish_now(r, key, kl, s.p, s.len);
  else
    rc = backlog_push(r, key, kl, s.p, s.len);
  vx__str_free(&s);
  return rc;
}

/* ---- subscriptions ---- */

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

static void subscribe_key(vx_redis *r, const char *name, size_t n) {
  char key[64 + 4 + VX_CHANNEL_MAX];
  size_t kl = channel_key(r, name, n, key);
  intptr_t want = (intptr_t)vx__map_get(&r->acks, name, n);
  /* The map borrows its keys: the channel's name lives as long as the channel, and the
   * entry is dropped with the channel (vx__redis_channel_gone). */
  vx_channel *ch = vx__map_get(&r->ev->channels, name, n);
  if (!ch)
    return;
  vx__map_put(&r->acks, ch->name, n, (void *)(want + 1));
  ch->rstate = VX_RS_SUBSCRIBING;
  redisAsyncCommand(r->sub.ac, on_sub_reply, NULL, "SUBSCRIBE %b", key, kl);
}

bool vx__redis_channel_new(vx_events *ev, vx_channel *ch) {
  vx_redis *r = ev->redis;
  if (!r || r->closing || !r->sub.ready)
    return false; /* acknowledged at once: local delivery only until Redis is back */
  subscribe_key(r, ch->name, ch->name_len);
  return true;
}

void vx__redis_channel_gone(vx_events *ev, vx_channel *ch) {
  vx_redis *r = ev->redis;
  if (!r)
    return;
  vx__map_del(&r->acks, ch->name, ch->name_len);
  if (r->sub.ready && !r->closing) {
    char key[64 + 4 + VX_CHANNEL_MAX];
    size_t kl = channel_key(r, ch->name, ch->name_len, key);
    redisAsyncCommand(r->sub.ac, NULL, NULL, "UNSUBSCRIBE %b", key, kl);
  }
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
  vx_channel *ch = vx__map_get(&r->ev->channels, name, n);
  if (strcmp(kind, "subscribe") == 0) {
    if (!ch)
      return;
    intptr_t want = (intptr_t)vx__map_get(&r->acks, name, n);
    if (want > 1) {
      vx__map_put(&r->acks, ch->name, n, (void *)(want - 1));
      return; /* a later SUBSCRIBE of the same key is still on its way */
    }
    vx__map_del(&r->acks, name, n);
    ch->rstate = VX_RS_SUBSCRIBED;
    vx__node_channel_ready(r->ev, ch);
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
    if (cJSON_IsString(ej)) {
      const char *names[1] = {ch->name};
      size_t lens[1] = {ch->name_len};
      vx__hub_deliver(r->ev, names, lens, 1, ej->valuestring, strlen(ej->valuestring), d, dl,
                      extra, xlen, cJSON_IsString(xj) ? xj->valuestring : NULL);
    }
    cJSON_Delete(ej);
    cJSON_Delete(xj);
  }
}

/* ---- connections ---- */

static void schedule_retry(rconn *rc) {
  vx_redis *r = rc->r;
  if (r->closing || uv_is_active((uv_handle_t *)&rc->retry))
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
  if (rc->is_sub) {
    /* Every channel with local subscribers, again (after an outage they were being served
     * locally only). */
    for (uint32_t i = 0; i < r->ev->channels.cap; i++) {
      vx_channel *ch = r->ev->channels.slots[i].key ? r->ev->channels.slots[i].val : NULL;
      if (ch)
        subscribe_key(r, ch->name, ch->name_len);
    }
  } else {
    load_scripts(r);
  }
  if (!rc->is_sub && r->qhead) {
    if (rc->was_connected) { /* after an outage: let the others re-subscribe first */
      r->flush_scheduled = true;
      uv_timer_start(&r->flush_timer, flush_cb, VX_REDIS_FLUSH_DELAY, 0);
    } else {
      backlog_flush(r); /* broadcasts made while starting up */
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
  if (r->closing)
    return;
  vx__log(r->ev, VX_LOG_WARN, "redis %s lost (%s); reconnecting",
          rc->is_sub ? "subscriber" : "commands", status == REDIS_OK ? "closed" : ac->errstr);
  if (rc->is_sub) {
    /* Channels are served locally until the subscriber is back; nobody waits for an ack. */
    vx__map_free(&r->acks);
    for (uint32_t i = 0; i < r->ev->channels.cap; i++) {
      vx_channel *ch = r->ev->channels.slots[i].key ? r->ev->channels.slots[i].val : NULL;
      if (ch) {
        ch->rstate = VX_RS_NONE;
        vx__node_channel_ready(r->ev, ch);
      }
    }
  }
  schedule_retry(rc);
}

static void rconn_connect(rconn *rc) {
  vx_redis *r = rc->r;
  if (r->closing || rc->ac)
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
    return;
  if (!r->resolved) {
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

int vx__redis_start(vx_events *ev) {
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
  r->qmax = ev->opts.redis_backlog_max;
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
  uv_timer_init(&ev->loop, &r->live_timer);
  r->live_timer.data = r;
  uv_timer_start(&r->live_timer, live_tick, VX_LIVENESS_MS, VX_LIVENESS_MS);
  for (int i = 0; i < S_COUNT; i++) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    EVP_Digest(scripts[i], strlen(scripts[i]), md, &ml, EVP_sha1(), NULL);
    for (unsigned k = 0; k < 20; k++)
      snprintf(r->sha[i] + 2 * k, 3, "%02x", md[k]);
  }
  ev->redis = r;
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

/* Stop: flush what hiredis holds (a graceful disconnect writes pending commands first),
 * drop reconnects. The loop ends once the contexts' poll handles are closed. */
void vx__redis_stop(vx_events *ev) {
  vx_redis *r = ev->redis;
  if (!r || r->closing)
    return;
  r->closing = true;
  /* A backlog still waiting for its delay goes out now, before the graceful disconnect. */
  if (r->flush_scheduled) {
    r->flush_scheduled = false;
    backlog_flush(r);
  }
  uv_close((uv_handle_t *)&r->flush_timer, NULL);
  uv_close((uv_handle_t *)&r->live_timer, NULL);
  /* Leave the cluster view at once instead of waiting for the liveness key to expire. */
  if (r->cmd.ready) {
    for (uint32_t i = 0; i < ev->channels.cap; i++) {
      vx_channel *ch = ev->channels.slots[i].key ? ev->channels.slots[i].val : NULL;
      if (ch)
        run_script(r, S_SET, NULL, NULL, ch->name, ch->name_len, "0");
    }
    char k[96];
    snprintf(k, sizeof k, "%s:alive:%s", r->prefix, r->origin);
    redisAsyncCommand(r->cmd.ac, NULL, NULL, "DEL %s", k);
    snprintf(k, sizeof k, "%s:instances", r->prefix);
    redisAsyncCommand(r->cmd.ac, NULL, NULL, "SREM %s %s", k, r->origin);
  }
  uv_close((uv_handle_t *)&r->cmd.retry, NULL);
  uv_close((uv_handle_t *)&r->sub.retry, NULL);
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->gai);
  rconn *both[2] = {&r->sub, &r->cmd};
  for (int i = 0; i < 2; i++) {
    redisAsyncContext *ac = both[i]->ac;
    if (!ac)
      continue;
    if (ac->c.flags & REDIS_CONNECTED) {
      redisAsyncDisconnect(ac); /* on_disconnect clears ->ac once pending replies are in */
    } else {
      both[i]->ac = NULL; /* still connecting: nothing to flush, and no callback will come */
      redisAsyncFree(ac);
    }
  }
}

void vx__redis_free(vx_events *ev) {
  vx_redis *r = ev->redis;
  if (!r)
    return;
  while (r->qhead) {
    qmsg *m = r->qhead;
    r->qhead = m->next;
    free(m);
  }
  vx__map_free(&r->acks);
  free(r->user);
  free(r->password);
  free(r);
  ev->redis = NULL;
}

bool vx__redis_busy(vx_events *ev) {
  vx_redis *r = ev->redis;
  return r && (r->cmd.ac || r->sub.ac || r->resolving);
}

/* Shutdown deadline passed with Redis still not done: drop the connections. */
void vx__redis_force(vx_events *ev) {
  vx_redis *r = ev->redis;
  if (!r)
    return;
  r->closing = true;
  if (r->sub.ac) {
    redisAsyncContext *ac = r->sub.ac;
    r->sub.ac = NULL;
    redisAsyncFree(ac);
  }
  if (r->cmd.ac) {
    redisAsyncContext *ac = r->cmd.ac;
    r->cmd.ac = NULL;
    redisAsyncFree(ac);
  }
}

/* ---- cluster-wide counts ---- */

static void count_key(vx_redis *r, const char *name, size_t n, char *out, size_t *kl) {
  memcpy(out, r->prefix, r->prefix_len);
  memcpy(out + r->prefix_len, ":count:", 7);
  memcpy(out + r->prefix_len + 7, name, n);
  *kl = r->prefix_len + 7 + n;
}

static void run_script(vx_redis *r, int which, redisCallbackFn *cb, void *priv, const char *name,
                       size_t n, const char *arg2) {
  char ck[64 + 7 + VX_CHANNEL_MAX], sk[80];
  size_t ckl;
  count_key(r, name, n, ck, &ckl);
  int skl = snprintf(sk, sizeof sk, "%s:channels", r->prefix);
  const char *argv[8] = {"EVALSHA", r->sha[which], "2", ck, sk, r->origin, arg2, name};
  size_t lens[8] = {7, 40, 1, ckl, (size_t)skl, 16, strlen(arg2), n};
  redisAsyncCommandArgv(r->cmd.ac, cb, priv, 8, argv, lens);
}

/* The local subscriber count of a channel changed by delta. */
void vx__redis_count(vx_events *ev, const char *name, size_t n, int delta) {
  vx_redis *r = ev->redis;
  if (!r || !r->cmd.ready || r->closing)
    return; /* re-registered in full on reconnect */
  run_script(r, S_ADD, NULL, NULL, name, n, delta > 0 ? "1" : "-1");
}

static void register_all(vx_redis *r) {
  char v[24];
  for (uint32_t i = 0; i < r->ev->channels.cap; i++) {
    vx_channel *ch = r->ev->channels.slots[i].key ? r->ev->channels.slots[i].val : NULL;
    if (!ch)
      continue;
    snprintf(v, sizeof v, "%u", ch->nsubs);
    run_script(r, S_SET, NULL, NULL, ch->name, ch->name_len, v);
  }
}

static void live_tick(uv_timer_t *t) {
  vx_redis *r = t->data;
  if (!r->cmd.ready || r->closing)
    return;
  char k[96], ms[16];
  snprintf(k, sizeof k, "%s:alive:%s", r->prefix, r->origin);
  snprintf(ms, sizeof ms, "%d", 3 * VX_LIVENESS_MS);
  redisAsyncCommand(r->cmd.ac, NULL, NULL, "SET %s 1 PX %s", k, ms);
  snprintf(k, sizeof k, "%s:instances", r->prefix);
  redisAsyncCommand(r->cmd.ac, NULL, NULL, "SADD %s %s", k, r->origin);
  redisAsyncCommand(r->cmd.ac, NULL, NULL, "EVALSHA %s 0 %s", r->sha[S_REAP], r->prefix);
}

static void register_presence(vx_redis *r);

static void load_scripts(vx_redis *r) {
  for (int i = 0; i < S_COUNT; i++)
    redisAsyncCommand(r->cmd.ac, on_auth_reply, NULL, "SCRIPT LOAD %s", scripts[i]);
  live_tick(&r->live_timer);
  register_all(r);
  register_presence(r);
}

typedef struct {
  vx_events *ev;
  int kind; /* 0 count, 1 has, 2 channels */
  void *cb, *data;
  char name[VX_CHANNEL_MAX + 1];
} rquery;

static void answer_local(rquery *q) {
  size_t n = strlen(q->name);
  if (q->kind == 0)
    ((vx_count_cb)q->cb)(0, vx__hub_count(q->ev, q->name, n), q->data);
  else if (q->kind == 1)
    ((vx_count_cb)q->cb)(0, vx__hub_count(q->ev, q->name, n) > 0, q->data);
  else
    vx__hub_channels_local(q->ev, (vx_channels_cb)q->cb, q->data);
}

static void on_query(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  rquery *q = priv;
  redisReply *rep = reply;
  if (q->kind < 2 && rep && rep->type == REDIS_REPLY_INTEGER) {
    uint64_t v = rep->integer > 0 ? (uint64_t)rep->integer : 0;
    ((vx_count_cb)q->cb)(0, q->kind == 1 ? v > 0 : v, q->data);
  } else if (q->kind == 2 && rep && rep->type == REDIS_REPLY_ARRAY) {
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
  } else {
    answer_local(q); /* Redis went away or refused: the local view is the best answer */
  }
  free(q);
}

/* Answer a count/has/channels query for the whole cluster; false = answer locally. */
bool vx__redis_query(vx_events *ev, int kind, const char *name, void *cb, void *data) {
  vx_redis *r = ev->redis;
  if (!r || !r->cmd.ready || r->closing)
    return false;
  rquery *q = calloc(1, sizeof *q);
  if (!q)
    return false;
  q->ev = ev;
  q->kind = kind;
  q->cb = cb;
  q->data = data;
  if (name)
    snprintf(q->name, sizeof q->name, "%s", name);
  if (kind < 2) {
    run_script(r, S_SUM, on_query, q, q->name, strlen(q->name), "0");
  } else {
    char k[80];
    snprintf(k, sizeof k, "%s:channels", r->prefix);
    redisAsyncCommand(r->cmd.ac, on_query, q, "SMEMBERS %s", k);
  }
  return true;
}

/* ---- cluster-wide presence ---- */

typedef struct {
  vx_events *ev;
  char socket_id[VX_SOCKET_ID_LEN + 1];
  char channel[VX_CHANNEL_MAX + 1];
  vx_json_cb cb; /* presence_members query instead of an ack */
  void *data;
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

/* The cluster's member list arrived: answer the query, or send the joining connection its
 * subscription_succeeded (if it is still here and still subscribed). */
static void on_members(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  pctx *p = priv;
  redisReply *rep = reply;
  vx_events *ev = p->ev;
  size_t n = strlen(p->channel), ml = 0;
  char *members = rep && rep->type == REDIS_REPLY_ARRAY ? members_array(rep, &ml) : NULL;
  if (!members) /* Redis went away: the local list is the best answer */
    members = vx__hub_members_json(ev, p->channel, n, &ml);
  if (p->cb) {
    p->cb(members ? 0 : VX_ENOMEM, members, members ? ml : 0, p->data);
  } else {
    vx_conn *c = vx__map_get(&ev->sockets, p->socket_id, VX_SOCKET_ID_LEN);
    if (c && !c->closed && vx__hub_is_subscribed(c, p->channel, n) && members)
      vx__node_sub_reply(c, p->channel, n, NULL, members, ml);
  }
  free(members);
  free(p);
}

static void presence_script(vx_redis *r, int which, const char *ch, size_t cn, vx_member *m,
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
  redisAsyncCommandArgv(r->cmd.ac, cb, priv, 13, argv, lens);
}

static bool presence_ready(vx_events *ev) {
  return ev->redis && ev->redis->cmd.ready && ev->redis->sub.ready && !ev->redis->closing;
}

/* A connection joined a presence channel. With Redis up, the cluster takes over: the
 * script registers the member (publishing member_added if the user is new everywhere) and
 * answers with every member, from which the connection's subscription_succeeded is built.
 * Returns false when Redis is down (local presence only). */
bool vx__redis_presence_join(vx_events *ev, vx_channel *ch, vx_member *m, vx_conn *c,
                             bool new_locally) {
  if (!presence_ready(ev))
    return false;
  vx_redis *r = ev->redis;
  pctx *p = calloc(1, sizeof *p);
  if (!p)
    return false;
  p->ev = ev;
  memcpy(p->socket_id, c->id, VX_SOCKET_ID_LEN + 1);
  memcpy(p->channel, ch->name, ch->name_len + 1);
  if (new_locally) {
    presence_script(r, S_JOIN, ch->name, ch->name_len, m, c->id, false, on_members, p);
  } else {
    char pi[64 + 8 + VX_CHANNEL_MAX];
    snprintf(pi, sizeof pi, "%s:pinfo:%s", r->prefix, ch->name);
    redisAsyncCommand(r->cmd.ac, on_members, p, "HVALS %s", pi);
  }
  return true;
}

/* The last local connection of member m left channel ch. */
bool vx__redis_presence_leave(vx_events *ev, vx_channel *ch, vx_member *m) {
  vx_redis *r = ev->redis;
  if (!r || !r->cmd.ready)
    return false;
  presence_script(r, S_LEAVE, ch->name, ch->name_len, m, NULL, false, NULL, NULL);
  return presence_ready(ev);
}

bool vx__redis_presence_list(vx_events *ev, const char *ch, vx_json_cb cb, void *data) {
  if (!presence_ready(ev))
    return false;
  pctx *p = calloc(1, sizeof *p);
  if (!p)
    return false;
  p->ev = ev;
  p->cb = cb;
  p->data = data;
  snprintf(p->channel, sizeof p->channel, "%s", ch);
  char pi[64 + 8 + VX_CHANNEL_MAX];
  snprintf(pi, sizeof pi, "%s:pinfo:%s", ev->redis->prefix, ch);
  redisAsyncCommand(ev->redis->cmd.ac, on_members, p, "HVALS %s", pi);
  return true;
}

/* After a reconnect: this instance's members, registered again without events (the other
 * instances' subscribers already know them). */
static void register_presence(vx_redis *r) {
  for (uint32_t i = 0; i < r->ev->channels.cap; i++) {
    vx_channel *ch = r->ev->channels.slots[i].key ? r->ev->channels.slots[i].val : NULL;
    if (!ch)
      continue;
    for (uint32_t j = 0; j < ch->members.cap; j++) {
      vx_member *m = ch->members.slots[j].key ? ch->members.slots[j].val : NULL;
      if (m)
        presence_script(r, S_JOIN, ch->name, ch->name_len, m, NULL, true, NULL, NULL);
    }
  }
}
