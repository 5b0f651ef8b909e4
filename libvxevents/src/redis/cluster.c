/* The Redis backplane's cluster view: cluster-wide subscriber counts, liveness (the
 * heartbeat script on Redis's own clock, reaping silent instances, registering this one
 * again), presence (join / leave scripts that publish member_added / member_removed once
 * per cluster) and the count/has/channels/members queries, which wait for this instance to
 * be registered (bounded by redis_connect_timeout_ms) and fail with VX_EUNAVAILABLE when
 * Redis cannot answer. The Lua lives in scripts.lua, embedded at build time
 * (scripts_lua.h).
 *
 * Calls: ops (conn.c's table) -> here -> hiredis; here -> ev->bp.h (members, each_member). */
#include "redis_int.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "scripts_lua.h"

static const char *const scripts[S_COUNT] = {VX_LUA_ADD,
                                             VX_LUA_SET,
                                             VX_LUA_SUM,
                                             VX_LUA_REAP_FN VX_LUA_BEAT,
                                             VX_LUA_REAP_FN VX_LUA_LEAVE_ALL,
                                             VX_LUA_JOIN,
                                             VX_LUA_LEAVE,
                                             VX_LUA_PUB,
                                             VX_LUA_HIST};

void vxr_scripts_init(vx_redis *r) {
  for (int i = 0; i < S_COUNT; i++) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    EVP_Digest(scripts[i], strlen(scripts[i]), md, &ml, EVP_sha1(), NULL);
    for (unsigned k = 0; k < 20; k++)
      snprintf(r->sha[i] + 2 * k, 3, "%02x", md[k]);
  }
}

static void run_script(vx_redis *r, int which, redisCallbackFn *cb, void *priv, const char *name,
                       size_t n, const char *arg2);
static void register_presence(vx_redis *r, bool loud);

/* ---- cluster-wide counts ---- */

static void count_key(vx_redis *r, const char *name, size_t n, char *out, size_t *kl) {
  memcpy(out, r->prefix, r->prefix_len);
  memcpy(out + r->prefix_len, ":count:", 7);
  memcpy(out + r->prefix_len + 7, name, n);
  *kl = r->prefix_len + 7 + n;
}

static int run_script_rc(vx_redis *r, int which, redisCallbackFn *cb, void *priv, const char *name,
                         size_t n, const char *arg2) {
  char ck[64 + 7 + VX_CHANNEL_MAX], sk[80], ik[96];
  size_t ckl;
  count_key(r, name, n, ck, &ckl);
  int skl = snprintf(sk, sizeof sk, "%s" VXR_K_CHANNELS, r->prefix);
  int ikl = snprintf(ik, sizeof ik, "%s" VXR_K_ICH "%s", r->prefix, r->origin);
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
void vxr_count(vx_events *ev, const char *name, size_t n, int delta) {
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
      vxr_load_scripts(r);
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
    vxr_queries_send(r);
  } else if (reaped || strcmp(status, "new") == 0) {
    vx__log(r->ev, VX_LOG_WARN,
            reaped ? "redis: this instance was reaped by the others (its heartbeats lapsed); "
                     "registering again"
                   : "redis: this instance's registration was lost; registering again");
    register_instance(r, reaped);
  }
  if (rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer > 0)
    vx__log(r->ev, VX_LOG_INFO, "redis: reaped %lld silent instance(s)", rep->element[1]->integer);
}

void vxr_live_tick(uv_timer_t *t) {
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

void vxr_load_scripts(vx_redis *r) {
  for (int i = 0; i < S_COUNT; i++)
    redisAsyncCommand(r->cmd.ac, vxr_on_auth_reply, NULL, "SCRIPT LOAD %s", scripts[i]);
  vxr_live_tick(&r->live_timer);
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
  uv_timer_start(&r->query_timer, vxr_query_timer_cb, d > now ? d - now : 0, 0);
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
  if (!st && (q->kind == VX_Q_COUNT || q->kind == VX_Q_HAS) && rep->type == REDIS_REPLY_INTEGER) {
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
    snprintf(k, sizeof k, "%s" VXR_K_CHANNELS, r->prefix);
    rc = redisAsyncCommand(r->cmd.ac, on_query, q, "SMEMBERS %s", k);
  } else {
    snprintf(k, sizeof k, "%s" VXR_K_PINFO "%s", r->prefix, q->name);
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

void vxr_queries_send(vx_redis *r) {
  rquery *next;
  for (rquery *q = r->queries; q; q = next) {
    next = q->next;
    if (!q->sent)
      query_send(r, q);
  }
  query_arm(r);
}

void vxr_queries_fail_unsent(vx_redis *r, int status) {
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
void vxr_query_timer_cb(uv_timer_t *t) {
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
void vxr_query(vx_events *ev, int kind, const char *name, void *cb, void *data) {
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
  int pml = snprintf(pm, sizeof pm, "%s" VXR_K_PM "%.*s:%.*s", r->prefix, (int)cn, ch,
                     (int)m->id_len, m->id);
  int pil = snprintf(pi, sizeof pi, "%s" VXR_K_PINFO "%.*s", r->prefix, (int)cn, ch);
  int ipl = snprintf(ip, sizeof ip, "%s" VXR_K_IPRES "%s", r->prefix, r->origin);
  size_t ckl = vxr_channel_key(r, ch, cn, ck);
  int el = snprintf(entry, sizeof entry, "%.*s\n%.*s", (int)cn, ch, (int)m->id_len, m->id);
  int exl = except ? snprintf(ex, sizeof ex, "\"%s\"", except) : snprintf(ex, sizeof ex, "null");
  const char *argv[13] = {
      "EVALSHA", r->sha[which],    "4", pm, pi, ip, ck, r->origin, m->id, m->json, entry,
      ex,        quiet ? "1" : "0"};
  size_t lens[13] = {7,           40,          1,  (size_t)pml, (size_t)pil,
                     (size_t)ipl, ckl,         16, m->id_len,   m->json_len,
                     (size_t)el,  (size_t)exl, 1};
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
bool vxr_presence_join(vx_events *ev, const char *name, size_t n, const vx_member *m,
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
      snprintf(pi, sizeof pi, "%s" VXR_K_PINFO "%s", r->prefix, name);
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
bool vxr_presence_leave(vx_events *ev, const char *name, size_t n, const vx_member *m) {
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
  struct {
    vx_redis *r;
    bool loud;
  } *k = ctx;
  presence_script(k->r, S_JOIN, channel, n, m, NULL, !k->loud, NULL, NULL);
}

static void register_presence(vx_redis *r, bool loud) {
  struct {
    vx_redis *r;
    bool loud;
  } k = {r, loud};
  r->ev->bp.h->each_member(r->ev, register_member, &k);
}
