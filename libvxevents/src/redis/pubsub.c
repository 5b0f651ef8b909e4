/* The Redis backplane's pub/sub: every broadcast is PUBLISHed to <prefix>:ch:<channel>
 * (keys.h) on the commands connection, pipelined, and kept until Redis acknowledged it:
 * first in the backlog (not sent: starting, down, or a post-outage flush pending), then in
 * the sent list (written, reply pending; replies come back in order). Both count against
 * redis_backlog_max, reserved on the caller's thread (cost/reserve). The subscriber
 * connection SUBSCRIBEs to every channel open here, recorded in r->chans (its own record:
 * subscribe state and outstanding acks), and hands what other instances publish to the
 * node's handler (ev->bp.h->deliver); a channel is "ready" once its SUBSCRIBE is confirmed.
 *
 * Calls: ops (conn.c's table) -> here -> hiredis; here -> ev->bp.h (deliver, channel_ready);
 * here -> conn.c (vxr_drain_check, at shutdown). */
#include "redis_int.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static size_t payload_len(const char *event, size_t elen, size_t dlen, size_t cmlen,
                          const char *except) {
  size_t xl = except ? vx__json_escaped_len(except, strlen(except)) + 2 : 4;
  return VXR_PL_FIXED + xl + vx__json_escaped_len(event, elen) + 2 + dlen + cmlen;
}

static void payload_write(vx_redis *r, char *d, const char *event, size_t elen, const char *data,
                          size_t dlen, const char *cmark, size_t cmlen, const char *except) {
  memcpy(d, VXR_PL_O, sizeof VXR_PL_O - 1);
  d += sizeof VXR_PL_O - 1;
  memcpy(d, r->origin, 16);
  d += 16;
  memcpy(d, VXR_PL_X, sizeof VXR_PL_X - 1);
  d += sizeof VXR_PL_X - 1;
  if (except) {
    *d++ = '"';
    d = vx__json_escape_into(d, except, strlen(except));
    *d++ = '"';
  } else {
    memcpy(d, "null", 4);
    d += 4;
  }
  memcpy(d, VXR_PL_E, sizeof VXR_PL_E - 1);
  d += sizeof VXR_PL_E - 1;
  *d++ = '"';
  d = vx__json_escape_into(d, event, elen);
  *d++ = '"';
  memcpy(d, VXR_PL_D, sizeof VXR_PL_D - 1);
  d += sizeof VXR_PL_D - 1;
  memcpy(d, data, dlen);
  d += dlen;
  if (cmlen)
    memcpy(d, cmark, cmlen);
  d[cmlen] = '}';
}

/* Any thread: reads only options that never change after vx_new. Must equal what
 * vxr_publish holds for the same broadcast. */
size_t vxr_cost(vx_events *ev, const char *const *channels, size_t n, const char *event,
                size_t dlen, const char *except) {
  size_t plen = payload_len(event, strlen(event), dlen, 0, except);
  size_t pre = strlen(ev->opts.redis_prefix ? ev->opts.redis_prefix : "vx") + 4;
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += pre + strlen(channels[i]) + plen;
  return total;
}

bool vxr_reserve(vx_events *ev, size_t cost) {
  size_t cur = atomic_load(&ev->redis_backlog);
  do {
    if (cur + cost > ev->opts.redis_backlog_max)
      return false;
  } while (!atomic_compare_exchange_weak(&ev->redis_backlog, &cur, cur + cost));
  return true;
}

void vxr_release(vx_events *ev, size_t cost) {
  if (cost)
    atomic_fetch_sub(&ev->redis_backlog, cost);
}

/* ---- the backlog and the sent list ---- */

static void on_published(redisAsyncContext *ac, void *reply, void *priv);

static void release_msg(vx_redis *r, qmsg *m) {
  size_t b = m->klen + m->plen;
  r->held -= b;
  vxr_release(r->ev, b);
  free(m);
}

/* Send the backlog in order while the commands connection takes it. */
void vxr_backlog_flush(vx_redis *r) {
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
    vxr_drain_check(r);
}

/* The sent list goes back to the head of the backlog, in order. */
void vxr_requeue_sent(vx_redis *r) {
  if (!r->shead)
    return;
  r->stail->next = r->qhead;
  if (!r->qhead)
    r->qtail = r->stail;
  r->qhead = r->shead;
  r->shead = r->stail = NULL;
}

int vxr_publish(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                const char *event, size_t elen, const char *data, size_t dlen, const char *cmark,
                size_t cmlen, const char *except, size_t reserved) {
  vx_redis *r = ev->bp.state;
  if (!r || r->closing) {
    /* Redis never started (out of memory) or is being closed: nothing can reach it. Not
     * silent: counted with what close reports. */
    vxr_release(ev, reserved);
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
    /* The caller reserved exactly this much (vxr_cost); keep it as held bytes. */
    if (reserved > need)
      vxr_release(ev, reserved - need);
    else if (reserved < need)
      atomic_fetch_add(&ev->redis_backlog, need - reserved);
  } else if (!vxr_reserve(ev, need)) {
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
      vxr_release(ev, left);
      vxr_backlog_flush(r);
      return VX_ENOMEM;
    }
    m->next = NULL;
    m->klen = klen;
    m->plen = plen;
    vxr_channel_key(r, channels[k], lens[k], m->data);
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
    vxr_backlog_flush(r);
  return 0;
}

/* ---- subscriptions ---- */

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

void vxr_subscribe_key(vx_redis *r, rchan *c) {
  char key[64 + 4 + VX_CHANNEL_MAX];
  size_t kl = vxr_channel_key(r, c->name, c->n, key);
  c->acks++;
  c->state = RS_SUBSCRIBING;
  redisAsyncCommand(r->sub.ac, on_sub_reply, NULL, "SUBSCRIBE %b", key, kl);
}

void vxr_channel_open(vx_events *ev, const char *name, size_t n) {
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
    vxr_subscribe_key(r, c);
}

void vxr_channel_close(vx_events *ev, const char *name, size_t n) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  free(vx__map_del(&r->chans, name, n));
  if (r->sub.ready && !r->closing) {
    char key[64 + 4 + VX_CHANNEL_MAX];
    size_t kl = vxr_channel_key(r, name, n, key);
    redisAsyncCommand(r->sub.ac, NULL, NULL, "UNSUBSCRIBE %b", key, kl);
  }
}

bool vxr_channel_ready(vx_events *ev, const char *name, size_t n) {
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
    if (!vx__json_valid(p, pl) || !vx__json_field(p, pl, VXR_F_ORIGIN, &o, &ol) ||
        !vx__json_field(p, pl, VXR_F_EVENT, &e, &el) ||
        !vx__json_field(p, pl, VXR_F_DATA, &d, &dl) ||
        !vx__json_field(p, pl, VXR_F_EXCEPT, &x, &xl) || e[0] != '"')
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
    if (vx__json_field(p, pl, VXR_F_CLIENT, &cv, &cvl) && cv[0] == '{') {
      bool has_uid = vx__json_field(cv, cvl, VXR_F_USER, &uv, &uvl) && uvl <= 256;
      xlen = vx__client_extra(extra, has_uid ? uv : NULL, has_uid ? uvl : 0);
    }
    if (cJSON_IsString(ej))
      r->ev->bp.h->deliver(r->ev, ch->name, ch->n, ej->valuestring, strlen(ej->valuestring), d, dl,
                           extra, xlen, cJSON_IsString(xj) ? xj->valuestring : NULL);
    cJSON_Delete(ej);
    cJSON_Delete(xj);
  }
}
