/* The Redis backplane's connections and lifetime: our own hiredis adapter for libuv, the
 * redis_url parser, the two connections (`cmd` publishes and runs the scripts, `sub`
 * SUBSCRIBEs) with capped exponential backoff and jitter, start / stop (shutdown publishes
 * what is held, waiting within its grace) / done / force / free, and the ops table
 * (vx__backplane_redis) that the rest of the core sees through ev->bp.
 *
 * The design of the whole backplane:
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
 * view, and fail with VX_EUNAVAILABLE when Redis cannot answer.
 *
 * Calls: ops -> here -> pubsub.c / cluster.c (vxr_*) -> hiredis; here -> loop.c
 * (vx__loop_shutdown_progress); back up only through ev->bp.h (in pubsub.c, cluster.c and
 * the subscriber's reset here). */
#include "redis_int.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rconn_connect(rconn *rc);
static void retry_cb(uv_timer_t *t);

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

/* redis://[[user]:password@]host[:port][/db], rediss:// the same over TLS (tls.c) */
static int parse_url(vx_redis *r, const char *url) {
  const char *p;
  if (strncmp(url, "redis://", 8) == 0)
    p = url + 8;
#if HIREDIS_MAJOR == 0
  /* tls.c moves the descriptor of hiredis 0.x under TLS; hiredis 1.x checks a connect by
   * calling connect() again on it, which the socketpair it becomes would refuse. */
  else if (strncmp(url, "rediss://", 9) == 0)
    p = url + 9;
#endif
  else
    return VX_EINVAL;
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
  vxr_backlog_flush(r);
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

void vxr_leave_cluster(vx_redis *r) {
  if (!r->registered || !r->cmd.ac)
    return;
  if (redisAsyncCommand(r->cmd.ac, NULL, NULL, "EVALSHA %s 0 %s %s", r->sha[S_LEAVE_ALL], r->prefix,
                        r->origin) == REDIS_OK)
    r->registered = false;
}

/* During shutdown, after anything that may have emptied the backlog. */
void vxr_drain_check(vx_redis *r) {
  if (!r->closing || r->forced || r->handles_closed)
    return;
  vxr_backlog_flush(r);
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

void vxr_on_auth_reply(redisAsyncContext *ac, void *reply, void *priv) {
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
    vx__log(r->ev, rc->backoff_ms <= 100 ? VX_LOG_WARN : VX_LOG_DEBUG, "redis %s:%d: %s", r->host,
            r->port, ac->errstr);
    rc->ac = NULL; /* hiredis frees the context after this callback */
    schedule_retry(rc);
    if (r->closing)
      vx__loop_shutdown_progress(r->ev);
    return;
  }
  if (r->password) {
    if (r->user)
      redisAsyncCommand(ac, vxr_on_auth_reply, NULL, "AUTH %s %s", r->user, r->password);
    else
      redisAsyncCommand(ac, vxr_on_auth_reply, NULL, "AUTH %s", r->password);
  }
  if (r->db && !rc->is_sub)
    redisAsyncCommand(ac, vxr_on_auth_reply, NULL, "SELECT %d", r->db);
  rc->ready = true;
  rc->backoff_ms = 0;
  r->ev->m.redis_ready[rc->is_sub] = true; /* metrics.c */
  if (rc->was_connected)
    r->ev->m.redis_reconnects++;
  vx__log(r->ev, VX_LOG_INFO, "redis %s connected to %s:%d", rc->is_sub ? "subscriber" : "commands",
          r->host, r->port);
  if (r->closing) { /* connected only to publish what shutdown still holds */
    vxr_backlog_flush(r);
    vxr_leave_cluster(r);
    vxr_drain_check(r);
    return;
  }
  if (rc->is_sub) {
    /* Every channel with local subscribers, again (after an outage they were being served
     * locally only). */
    for (uint32_t i = 0; i < r->chans.cap; i++)
      if (r->chans.slots[i].key)
        vxr_subscribe_key(r, r->chans.slots[i].val);
  } else {
    vxr_load_scripts(r); /* and the first heartbeat, whose answer registers this instance */
    if (r->qhead) {
      if (rc->was_connected) { /* after an outage: let the others re-subscribe first */
        r->flush_scheduled = true;
        uv_timer_start(&r->flush_timer, flush_cb, VX_REDIS_FLUSH_DELAY, 0);
      } else {
        vxr_backlog_flush(r); /* broadcasts made while starting up */
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
  r->ev->m.redis_ready[rc->is_sub] = false; /* metrics.c */
  if (!rc->is_sub) {
    /* Unacknowledged PUBLISHes are published again after reconnecting. */
    vxr_requeue_sent(r);
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
  /* rediss://: the socket goes under TLS before anything watches its descriptor. */
  if ((strncmp(r->ev->opts.redis_url, "rediss://", 9) == 0 &&
       vx__tls_redis_wrap(r->ev, ac->c.fd, r->host) != 0) ||
      rpoll_attach(ac, &r->ev->loop) != REDIS_OK) {
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

void vxr_query_timer_cb(uv_timer_t *t);

static int bp_start(vx_events *ev) {
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
  uv_timer_start(&r->live_timer, vxr_live_tick, VX_BEAT_MS, VX_BEAT_MS);
  vxr_scripts_init(r);
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
static void bp_stop(vx_events *ev, uint32_t grace_ms) {
  vx_redis *r = ev->bp.state;
  if (!r || r->closing)
    return;
  r->closing = true;
  r->drain_deadline = uv_now(&ev->loop) + (grace_ms ? grace_ms : ev->opts.redis_connect_timeout_ms);
  if (r->flush_scheduled) { /* a post-outage flush still waiting for its delay: now */
    r->flush_scheduled = false;
    uv_timer_stop(&r->flush_timer);
  }
  uv_timer_stop(&r->live_timer);
  vxr_queries_fail_unsent(r, VX_ECLOSED);
  uv_timer_stop(&r->sub.retry);
  if (r->sub.ac) {
    redisAsyncContext *ac = r->sub.ac;
    r->sub.ac = NULL;
    r->sub.ready = false;
    redisAsyncFree(ac);
  }
  if (r->cmd.ready) {
    vxr_backlog_flush(r);
    vxr_leave_cluster(r);
  }
  vxr_drain_check(r);
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

static bool bp_done(vx_events *ev) {
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

static bool bp_overdue(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  return r && r->closing && !r->forced && uv_now(&ev->loop) >= r->drain_deadline;
}

/* The grace is over with Redis still not done: drop the connections. Replies still
 * pending come back NULL; their broadcasts are counted as not published. */
static void bp_force(vx_events *ev) {
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

static uint64_t bp_unpublished(vx_events *ev) {
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

static void bp_free(vx_events *ev) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  qmsg *lists[2] = {r->qhead, r->shead};
  for (int i = 0; i < 2; i++) {
    while (lists[i]) {
      qmsg *m = lists[i];
      lists[i] = m->next;
      vxr_msg_done(m, VX_EUNPUBLISHED, 0, NULL);
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
      vxr_chan_free(r->chans.slots[i].val);
  vx__map_free(&r->chans);
  free(r->user);
  free(r->password);
  free(r);
  ev->bp.state = NULL;
}

const vx_backplane_ops vx__backplane_redis = {
    .name = "redis",
    .start = bp_start,
    .stop = bp_stop,
    .done = bp_done,
    .overdue = bp_overdue,
    .force = bp_force,
    .unpublished = bp_unpublished,
    .free = bp_free,
    .cost = vxr_cost,
    .reserve = vxr_reserve,
    .release = vxr_release,
    .publish = vxr_publish,
    .channel_open = vxr_channel_open,
    .channel_close = vxr_channel_close,
    .channel_ready = vxr_channel_ready,
    .count = vxr_count,
    .presence_join = vxr_presence_join,
    .presence_leave = vxr_presence_leave,
    .query = vxr_query,
    .assigns_offsets = true,
    .history = vxr_history,
};
