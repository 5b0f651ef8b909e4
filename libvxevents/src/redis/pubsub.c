/* The Redis backplane's pub/sub and channel streams (DESIGN §7, §12): every broadcast runs
 * the PUB script (scripts.lua) on the commands connection, pipelined — the channel's next
 * offset, the cluster's seq, the append to the channel's Redis Stream and the PUBLISH to
 * <prefix>:ch:<channel> in one atomic step — and is kept until Redis acknowledged it:
 * first in the backlog (not sent: starting, down, or a post-outage flush pending), then in
 * the sent list (written, reply pending; replies come back in order). Both count against
 * redis_backlog_max, reserved on the caller's thread (cost/reserve). The subscriber
 * connection SUBSCRIBEs to every channel open here, recorded in r->chans (its own record:
 * subscribe state and outstanding acks), and hands what other instances publish to the
 * node's handler (ev->bp.h->deliver); a channel is "ready" once its SUBSCRIBE is confirmed.
 *
 *
 * Delivery, this instance's own broadcasts included, is what arrives on the subscriber
 * connection, in offset order per channel (rchan.offset is the last delivered here): a
 * message with an offset already delivered is a duplicate and dropped; one beyond the next
 * is held while the missing ones are read from the stream (HIST), which is also how a
 * channel catches up after the subscriber connection came back, and how it learns its
 * position when it opens (subscription_succeeded waits for that). So a message that reached
 * Redis reaches every subscriber exactly once, and a resend after a lost reply (the PUB
 * script skips what it already ran, by this instance's sequence number) changes nothing.
 * The origin delivers its own broadcasts when they come back from Redis, not before: a
 * broadcast has no offset until Redis assigned it. During an outage broadcasts are held
 * (redis_backlog_max) and delivered everywhere, here included, once Redis has them.
 *
 * Calls: ops (conn.c's table) -> here -> hiredis; here -> ev->bp.h (deliver, position,
 * channel_ready); here -> conn.c (vxr_drain_check, at shutdown). */
#include "redis_int.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define LOCAL_MARK ",\"" VXR_F_LOCAL "\":1"

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

/* vx_publish's callback, once: with the offset, or why there is none. */
void vxr_msg_done(qmsg *m, int status, uint64_t offset, const char *epoch) {
  if (!m->done.cb)
    return;
  m->done.cb(status, offset, epoch ? epoch : "", m->done.data);
  m->done.cb = NULL;
}

static void release_msg(vx_redis *r, qmsg *m) {
  size_t b = m->klen + m->plen;
  vxr_msg_done(m, VX_EUNPUBLISHED, 0, NULL); /* if nobody told it yet */
  r->held -= b;
  vxr_release(r->ev, b);
  free(m);
}

/* Keys of a channel's stream under the prefix: <p><kind><name>. */
static size_t stream_key(vx_redis *r, const char *kind, const char *name, size_t n, char *out) {
  size_t kl = strlen(kind);
  memcpy(out, r->prefix, r->prefix_len);
  memcpy(out + r->prefix_len, kind, kl);
  memcpy(out + r->prefix_len + kl, name, n);
  return r->prefix_len + kl + n;
}

static void fresh_epoch(vx_redis *r, char out[9]) {
  char id[VX_SOCKET_ID_LEN + 1];
  vx__random_id(r->ev, id);
  memcpy(out, id, 8);
  out[8] = '\0';
}

/* The PUB script for one queued broadcast. */
static int send_pub(vx_redis *r, qmsg *m) {
  const char *name = m->data + r->prefix_len + VXR_KLEN(VXR_K_CHANNEL);
  size_t n = m->klen - r->prefix_len - VXR_KLEN(VXR_K_CHANNEL);
  char st[64 + 4 + VX_CHANNEL_MAX], sx[64 + 4 + VX_CHANNEL_MAX], seq[80], ep[80], ps[80];
  char sn[24], maxlen[16], ttl[16], stttl[16], epoch[9];
  size_t stl = stream_key(r, VXR_K_ST, name, n, st), sxl = stream_key(r, VXR_K_SX, name, n, sx);
  int seql = snprintf(seq, sizeof seq, "%s" VXR_K_SEQ, r->prefix);
  int epl = snprintf(ep, sizeof ep, "%s" VXR_K_EPOCH, r->prefix);
  int psl = snprintf(ps, sizeof ps, "%s" VXR_K_PUBSEQ, r->prefix);
  int snl = snprintf(sn, sizeof sn, "%llu", (unsigned long long)m->seq);
  int mll = snprintf(maxlen, sizeof maxlen, "%u", r->ev->opts.history_size);
  int ttll = snprintf(ttl, sizeof ttl, "%u", r->ev->opts.history_ttl_ms);
  int stll = snprintf(stttl, sizeof stttl, "%u", VXR_ST_TTL_MS);
  fresh_epoch(r, epoch);
  const char *argv[16] = {"EVALSHA", r->sha[S_PUB], "6",   st,   sx,     m->data,          seq, ep,
                          ps,        r->origin,     sn,    epoch, maxlen, ttl, m->data + m->klen, stttl};
  size_t lens[16] = {7,           40,          1,           stl,         sxl, m->klen, (size_t)seql,
                     (size_t)epl, (size_t)psl, 16,          (size_t)snl, 8,   (size_t)mll, (size_t)ttll,
                     m->plen,     (size_t)stll};
  return redisAsyncCommandArgv(r->cmd.ac, on_published, m, 16, argv, lens);
}

/* Send the backlog in order while the commands connection takes it. */
void vxr_backlog_flush(vx_redis *r) {
  while (r->qhead && r->cmd.ready && r->cmd.ac) {
    qmsg *m = r->qhead;
    if (send_pub(r, m) != REDIS_OK)
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
    vx__log(r->ev, VX_LOG_ERROR, "redis refused a broadcast: %s", rep->str);
  } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4 &&
             rep->element[0]->type == REDIS_REPLY_INTEGER &&
             rep->element[2]->type == REDIS_REPLY_STRING &&
             rep->element[3]->type == REDIS_REPLY_STRING) {
    r->ev->bp.h->position(r->ev, NULL, 0, NULL, 0, 0, rep->element[3]->str);
    vxr_msg_done(m, 0, (uint64_t)rep->element[0]->integer, rep->element[2]->str);
  } else {
    vxr_msg_done(m, 0, 0, NULL); /* a resend of one whose reply was lost: offset unknown */
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
                size_t cmlen, const char *except, size_t reserved, const vx_published *done) {
  vx_redis *r = ev->bp.state;
  if (!r || r->closing) {
    /* Redis never started (out of memory) or is being closed: nothing can reach it. Not
     * silent: counted with what close reports. */
    vxr_release(ev, reserved);
    if (done && done->cb)
      done->cb(VX_EUNPUBLISHED, 0, "", done->data);
    if (r)
      r->refused += n;
    else
      vx__log(ev, VX_LOG_ERROR, "redis is not running: broadcast not published");
    return 0;
  }
  /* Redis unreachable (starting, or an outage): delivered here now, marked so that this
   * instance does not deliver it again when it comes back from Redis with its offset. */
  bool local_now = !r->cmd.ready;
  size_t lm = local_now ? sizeof LOCAL_MARK - 1 : 0;
  size_t plen = payload_len(event, elen, dlen, cmlen, except) + lm;
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
      if (k == 0)
        return VX_ENOMEM; /* nothing queued: the caller reports it */
      return VX_ENOMEM;
    }
    m->next = NULL;
    m->seq = ++r->pub_seq;
    m->done = (vx_published){NULL, NULL};
    if (k == 0 && done)
      m->done = *done;
    m->klen = klen;
    m->plen = plen;
    vxr_channel_key(r, channels[k], lens[k], m->data);
    if (first) {
      memcpy(m->data + klen, first->data + first->klen, plen);
    } else {
      payload_write(r, m->data + klen, event, elen, data, dlen, cmark, cmlen, except);
      if (lm) {
        memcpy(m->data + klen + plen - lm - 1, LOCAL_MARK, lm);
        m->data[klen + plen - 1] = '}';
      }
    }
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
  return local_now ? VX_BP_LOCAL_NOW : 0;
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

void vxr_chan_free(rchan *c) {
  while (c->phead) {
    pmsg *p = c->phead;
    c->phead = p->next;
    free(p);
  }
  free(c);
}

void vxr_channel_close(vx_events *ev, const char *name, size_t n) {
  vx_redis *r = ev->bp.state;
  if (!r)
    return;
  rchan *c = vx__map_del(&r->chans, name, n);
  if (c)
    vxr_chan_free(c);
  if (r->sub.ready && !r->closing) {
    char key[64 + 4 + VX_CHANNEL_MAX];
    size_t kl = vxr_channel_key(r, name, n, key);
    redisAsyncCommand(r->sub.ac, NULL, NULL, "UNSUBSCRIBE %b", key, kl);
  }
}

/* Ready once subscribed and the stream's position is known; while the subscriber
 * connection is down a channel is acknowledged at once (with what this instance knows). */
bool vxr_channel_ready(vx_events *ev, const char *name, size_t n) {
  vx_redis *r = ev->bp.state;
  rchan *c = r ? vx__map_get(&r->chans, name, n) : NULL;
  if (!c)
    return true;
  if (c->state == RS_SUBSCRIBING)
    return false;
  return c->known || c->state == RS_NONE;
}

/* ---- a channel's messages, in order ---- */

/* A message as published by the PUB script, parsed (spans into the payload). */
typedef struct env {
  const char *o, *x, *e, *d, *p, *q;
  size_t ol, xl, el, dl, pl, ql;
  uint64_t f, g;
  bool mine_delivered; /* this instance's, delivered here already */
  char extra[32 + 256];
  size_t xlen;
} env;

static uint64_t json_u64(const char *v, size_t n) {
  uint64_t x = 0;
  for (size_t i = 0; i < n && v[i] >= '0' && v[i] <= '9'; i++)
    x = x * 10 + (uint64_t)(v[i] - '0');
  return x;
}

static bool env_parse(const char *p, size_t pl, env *m) {
  const char *f, *g, *cv, *uv;
  size_t fl, gl, cvl, uvl;
  if (!vx__json_valid(p, pl) || !vx__json_field(p, pl, VXR_F_ORIGIN, &m->o, &m->ol) ||
      !vx__json_field(p, pl, VXR_F_EVENT, &m->e, &m->el) ||
      !vx__json_field(p, pl, VXR_F_DATA, &m->d, &m->dl) ||
      !vx__json_field(p, pl, VXR_F_EXCEPT, &m->x, &m->xl) || m->e[0] != '"')
    return false;
  m->f = vx__json_field(p, pl, VXR_F_OFFSET, &f, &fl) ? json_u64(f, fl) : 0;
  m->mine_delivered = false;
  if (vx__json_field(p, pl, VXR_F_LOCAL, &f, &fl))
    m->mine_delivered = true; /* checked against the origin by the caller */
  m->g = vx__json_field(p, pl, VXR_F_SEQ, &g, &gl) ? json_u64(g, gl) : 0;
  m->pl = m->ql = 0;
  if (vx__json_field(p, pl, VXR_F_EPOCH, &m->p, &m->pl) && m->p[0] == '"' && m->pl >= 2) {
    m->p++;
    m->pl -= 2;
  }
  if (vx__json_field(p, pl, VXR_F_CEPOCH, &m->q, &m->ql) && m->q[0] == '"' && m->ql >= 2) {
    m->q++;
    m->ql -= 2;
  }
  /* A client event: the envelope gets "client":true and the sender's id, as at origin. */
  m->xlen = 0;
  if (vx__json_field(p, pl, VXR_F_CLIENT, &cv, &cvl) && cv[0] == '{') {
    bool has_uid = vx__json_field(cv, cvl, VXR_F_USER, &uv, &uvl) && uvl <= 256;
    m->xlen = vx__client_extra(m->extra, has_uid ? uv : NULL, has_uid ? uvl : 0);
  }
  return true;
}

/* Deliver one message here. The event name and except id are JSON strings written by the
 * publisher; the parser unescapes them (one small parse per message, not per recipient). */
static bool from_here(vx_redis *r, const env *m) {
  return m->ol == 18 && memcmp(m->o + 1, r->origin, 16) == 0;
}

static void env_deliver(vx_redis *r, rchan *ch, const env *m) {
  cJSON *ej = cJSON_ParseWithLength(m->e, m->el);
  cJSON *xj = m->x[0] == '"' ? cJSON_ParseWithLength(m->x, m->xl) : NULL;
  bool quiet = m->mine_delivered && from_here(r, m);
  if (cJSON_IsString(ej))
    r->ev->bp.h->deliver(r->ev, ch->name, ch->n, ej->valuestring, strlen(ej->valuestring), m->d,
                         m->dl, m->extra, m->xlen, cJSON_IsString(xj) ? xj->valuestring : NULL, m->f,
                         m->g, quiet);
  cJSON_Delete(ej);
  cJSON_Delete(xj);
}

/* The WebSocket frame of a stored message (a history read), carrying its offset. */
static void sync_channel(vx_redis *r, rchan *ch);

static bool same_epoch(const rchan *ch, const env *m) {
  return m->pl == strlen(ch->epoch) && memcmp(m->p, ch->epoch, m->pl) == 0;
}

/* Hold a message until the offsets before it are in (sorted by offset, no duplicates). */
static void hold(rchan *ch, const env *m, const char *p, size_t pl) {
  if (ch->npending >= VXR_PENDING_MAX) {
    ch->overflow = true; /* it is in the stream: the next read brings it */
    return;
  }
  pmsg **pp = &ch->phead;
  while (*pp && (*pp)->offset < m->f)
    pp = &(*pp)->next;
  if (*pp && (*pp)->offset == m->f)
    return;
  pmsg *x = malloc(sizeof *x + pl);
  if (!x) {
    ch->overflow = true;
    return;
  }
  x->offset = m->f;
  x->len = pl;
  memcpy(x->data, p, pl);
  x->next = *pp;
  *pp = x;
  ch->npending++;
}

/* One message of the channel, live or read back: delivered if it is the next offset,
 * dropped if it was delivered already, held (and the gap read from the stream) if it is
 * beyond. */
static void arrive(vx_redis *r, rchan *ch, const char *p, size_t pl, bool live) {
  env m;
  if (!env_parse(p, pl, &m))
    return;
  if (!m.f) {
    /* Presence events (the JOIN/LEAVE scripts) are not part of the stream: at once. */
    if (live && !from_here(r, &m))
      env_deliver(r, ch, &m);
    return;
  }
  if (!ch->known || ch->fetching || !same_epoch(ch, &m)) {
    if (live) {
      hold(ch, &m, p, pl);
      if (ch->known && !ch->fetching)
        sync_channel(r, ch); /* another epoch: the stream was lost and began again */
    }
    return;
  }
  if (m.f <= ch->offset)
    return; /* delivered already */
  if (m.f != ch->offset + 1) {
    if (live) {
      hold(ch, &m, p, pl);
      sync_channel(r, ch);
      return;
    }
    /* A read of the stream skipping offsets: those were trimmed before this instance got
     * them. Its subscribers miss them (a recovery later says so); delivery goes on. */
    vx__log(r->ev, VX_LOG_WARN, "redis: %.*s: offsets %llu..%llu were trimmed from the stream "
            "before this instance read them", (int)ch->n, ch->name,
            (unsigned long long)ch->offset + 1, (unsigned long long)m.f - 1);
  }
  ch->offset = m.f;
  env_deliver(r, ch, &m);
}

static void drain_pending(vx_redis *r, rchan *ch) {
  while (ch->phead && !ch->fetching) {
    pmsg *x = ch->phead;
    if (x->offset > ch->offset + 1) {
      sync_channel(r, ch);
      return;
    }
    ch->phead = x->next;
    ch->npending--;
    arrive(r, ch, x->data, x->len, false);
    free(x);
  }
  if (ch->overflow && !ch->fetching) {
    ch->overflow = false;
    sync_channel(r, ch);
  }
}

typedef struct hctx {
  vx_redis *r;
  bool sync; /* a channel's own catch-up, else a history op for the node */
  vx_bp_history_cb cb;
  void *ctx;
  size_t n;
  char name[VX_CHANNEL_MAX + 1];
} hctx;

static void on_hist(redisAsyncContext *ac, void *reply, void *priv);

static int send_hist(vx_redis *r, hctx *k, uint64_t from, uint32_t count) {
  char st[64 + 4 + VX_CHANNEL_MAX], sx[64 + 4 + VX_CHANNEL_MAX], ep[80], seq[80];
  char fr[24], cn[16], ttl[16], stttl[16], epoch[9];
  size_t stl = stream_key(r, VXR_K_ST, k->name, k->n, st),
         sxl = stream_key(r, VXR_K_SX, k->name, k->n, sx);
  int epl = snprintf(ep, sizeof ep, "%s" VXR_K_EPOCH, r->prefix);
  int seql = snprintf(seq, sizeof seq, "%s" VXR_K_SEQ, r->prefix);
  int frl = snprintf(fr, sizeof fr, "%llu", (unsigned long long)(from ? from : 1));
  int cnl = snprintf(cn, sizeof cn, "%u", count);
  int ttll = snprintf(ttl, sizeof ttl, "%u", r->ev->opts.history_ttl_ms);
  int stll = snprintf(stttl, sizeof stttl, "%u", VXR_ST_TTL_MS);
  fresh_epoch(r, epoch);
  const char *argv[12] = {"EVALSHA", r->sha[S_HIST], "4", st, sx, ep, seq, fr, cn, ttl, epoch, stttl};
  size_t lens[12] = {7,           40,          1,           stl,          sxl, (size_t)epl,
                     (size_t)seql, (size_t)frl, (size_t)cnl, (size_t)ttll, 8,   (size_t)stll};
  if (!r->cmd.ac || !r->cmd.ready)
    return REDIS_ERR;
  return redisAsyncCommandArgv(r->cmd.ac, on_hist, k, 12, argv, lens);
}

/* Read the channel's position and what this instance has not delivered yet. */
static void sync_channel(vx_redis *r, rchan *ch) {
  if (ch->fetching || r->closing)
    return;
  hctx *k = calloc(1, sizeof *k);
  if (!k)
    return;
  k->r = r;
  k->sync = true;
  k->n = ch->n;
  memcpy(k->name, ch->name, ch->n + 1);
  uint32_t count = ch->known ? (r->ev->opts.history_size ? r->ev->opts.history_size : 1) : 0;
  if (send_hist(r, k, ch->known ? ch->offset + 1 : 1, count) != REDIS_OK) {
    free(k); /* the commands connection is down: its return syncs again */
    return;
  }
  ch->fetching = true;
}

static void hist_fail(hctx *k, int status) {
  vx_bp_history h = {.status = status};
  if (!k->sync)
    k->cb(k->r->ev, &h, k->ctx);
}

static const char *rstr(const redisReply *e, size_t *len) {
  if (e->type == REDIS_REPLY_STRING) {
    *len = e->len;
    return e->str;
  }
  *len = 0;
  return NULL;
}

static void on_hist(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  hctx *k = priv;
  vx_redis *r = k->r;
  redisReply *rep = reply;
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 5 || (rep->elements - 5) % 2) {
    if (rep && rep->type == REDIS_REPLY_ERROR)
      vx__log(r->ev, VX_LOG_ERROR, "redis history read: %s", rep->str);
    rchan *ch = k->sync ? vx__map_get(&r->chans, k->name, k->n) : NULL;
    if (ch) {
      ch->fetching = false; /* the next reconnect (or message) reads again */
      if (!ch->known && rep) { /* an error reply: serve it with what is known here */
        ch->known = true;
        r->ev->bp.h->channel_ready(r->ev, ch->name, ch->n);
      }
    }
    hist_fail(k, !rep ? (r->closing ? VX_ECLOSED : VX_EUNAVAILABLE) : VX_EUNAVAILABLE);
    free(k);
    return;
  }
  size_t el, ol, cl, gl, ql;
  const char *e = rstr(rep->element[0], &el), *o = rstr(rep->element[1], &ol);
  const char *c = rstr(rep->element[2], &cl), *g = rstr(rep->element[3], &gl);
  const char *q = rstr(rep->element[4], &ql);
  char epoch[VX_EPOCH_MAX + 1] = "", cepoch[VX_EPOCH_MAX + 1] = "";
  if (e && el <= VX_EPOCH_MAX)
    memcpy(epoch, e, el), epoch[el] = '\0';
  if (q && ql <= VX_EPOCH_MAX)
    memcpy(cepoch, q, ql), cepoch[ql] = '\0';
  uint64_t last = o ? json_u64(o, ol) : 0;
  size_t nent = (rep->elements - 5) / 2;
  if (k->sync) {
    rchan *ch = vx__map_get(&r->chans, k->name, k->n);
    if (!ch) {
      free(k);
      return;
    }
    ch->fetching = false;
    bool first = !ch->known;
    if (first || strcmp(ch->epoch, epoch) != 0) {
      /* The first read (the channel follows on from here), or the stream began again. */
      memcpy(ch->epoch, epoch, sizeof epoch);
      ch->offset = first ? last : 0;
      ch->known = true;
      r->ev->bp.h->position(r->ev, ch->name, ch->n, epoch, ch->offset,
                            first && g ? json_u64(g, gl) : 0, cepoch);
      if (first)
        r->ev->bp.h->channel_ready(r->ev, ch->name, ch->n);
      else
        sync_channel(r, ch); /* read the new epoch's entries from 1 */
      if (ch->fetching) {
        free(k);
        return;
      }
    } else {
      r->ev->bp.h->position(r->ev, NULL, 0, NULL, 0, 0, cepoch);
      for (size_t i = 0; i < nent; i++) {
        size_t ml;
        const char *m = rstr(rep->element[6 + 2 * i], &ml);
        if (m)
          arrive(r, ch, m, ml, false);
      }
      if (last > ch->offset && nent) { /* more than one read's worth */
        free(k);
        sync_channel(r, ch);
        return;
      }
    }
    free(k);
    drain_pending(r, ch);
    return;
  }
  /* A history op: frames for the node. */
  vx_buf **frames = calloc(nent + 1, sizeof *frames);
  uint64_t *offs = calloc(nent + 1, sizeof *offs), *seqs = calloc(nent + 1, sizeof *seqs);
  size_t n = 0;
  bool oom = !frames || !offs || !seqs;
  for (size_t i = 0; !oom && i < nent; i++) {
    size_t ml;
    const char *m = rstr(rep->element[6 + 2 * i], &ml);
    env x;
    if (!m || !env_parse(m, ml, &x) || !x.f)
      continue;
    cJSON *ej = cJSON_ParseWithLength(x.e, x.el);
    if (cJSON_IsString(ej)) {
      frames[n] = vx__envelope_frame_at(k->name, k->n, ej->valuestring, strlen(ej->valuestring),
                                        x.d, x.dl, x.extra, x.xlen, x.f);
      if (frames[n]) {
        offs[n] = x.f;
        seqs[n++] = x.g;
      } else {
        oom = true;
      }
    }
    cJSON_Delete(ej);
  }
  if (oom) {
    hist_fail(k, VX_ENOMEM);
  } else {
    vx_bp_history h = {.status = 0,
                       .epoch = epoch,
                       .offset = last,
                       .created_seq = c ? json_u64(c, cl) : 0,
                       .last_seq = g ? json_u64(g, gl) : 0,
                       .cluster_epoch = cepoch,
                       .n = n,
                       .frames = frames,
                       .offsets = offs,
                       .seqs = seqs};
    r->ev->bp.h->position(r->ev, NULL, 0, NULL, 0, 0, cepoch);
    k->cb(r->ev, &h, k->ctx);
  }
  for (size_t i = 0; frames && i < n; i++)
    vx__buf_unref(frames[i]);
  free(frames);
  free(offs);
  free(seqs);
  free(k);
}

void vxr_history(vx_events *ev, const char *name, size_t n, uint64_t from, uint32_t count,
                 vx_bp_history_cb cb, void *ctx) {
  vx_redis *r = ev->bp.state;
  hctx *k = r && !r->closing ? calloc(1, sizeof *k) : NULL;
  if (!k) {
    vx_bp_history h = {.status = r && !r->closing ? VX_ENOMEM : r ? VX_ECLOSED : VX_EUNAVAILABLE};
    cb(ev, &h, ctx);
    return;
  }
  k->r = r;
  k->cb = cb;
  k->ctx = ctx;
  k->n = n < VX_CHANNEL_MAX ? n : VX_CHANNEL_MAX;
  memcpy(k->name, name, k->n);
  if (send_hist(r, k, from, count) != REDIS_OK) {
    hist_fail(k, VX_EUNAVAILABLE);
    free(k);
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
    /* Where the stream is (the acks wait for it), or, after the subscriber connection came
     * back, what was published meanwhile. */
    sync_channel(r, ch);
    if (ch->known && !ch->fetching)
      r->ev->bp.h->channel_ready(r->ev, ch->name, ch->n);
  } else if (strcmp(kind, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
    if (ch)
      arrive(r, ch, rep->element[2]->str, rep->element[2]->len, true);
  }
}
