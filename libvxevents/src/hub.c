/* The hub: channels, subscriptions and broadcast.
 *
 * A channel holds an array of subscription pointers; a subscription knows its index, so
 * joining and leaving are O(1) (swap-remove). A broadcast builds its frame once and
 * queues a reference on every recipient: no allocation per recipient once each
 * connection's queue ring has grown to its working size.
 *
 * Calls: node -> hub -> the connection's transport (send), and hub -> the backplane's ops
 * (ev->bp: channel open/close, counts, presence join/leave). The backplane comes back
 * through the node's handler, which uses vx__hub_deliver, vx__hub_channel and
 * vx__hub_each_member; the hub never asks which backplane it has. */
#include "vx_int.h"

#include <stdlib.h>
#include <string.h>

static vx_channel *channel_get(vx_events *ev, const char *name, size_t n, bool create) {
  vx_channel *ch = vx__map_get(&ev->channels, name, n);
  if (ch || !create)
    return ch;
  ch = calloc(1, sizeof *ch + n + 1);
  if (!ch)
    return NULL;
  memcpy(ch->name, name, n);
  ch->name_len = n;
  if (vx__map_put(&ev->channels, ch->name, n, ch) != 0) {
    free(ch);
    return NULL;
  }
  /* Its stream (history.c), kept on from earlier broadcasts or new with a fresh epoch; none
   * only out of memory (events then carry no offset). */
  ch->st = vx__stream_get(ev, ch->name, n, true);
  if (ch->st)
    vx__stream_attach(ev, ch->st, ch);
  ev->bp.ops->channel_open(ev, ch->name, n); /* the backplane follows it while it is open */
  return ch;
}

static void channel_drop_if_empty(vx_events *ev, vx_channel *ch) {
  if (ch->nsubs)
    return;
  ev->bp.ops->channel_close(ev, ch->name, ch->name_len);
  if (ch->st)
    vx__stream_detach(ev, ch->st);
  vx__map_del(&ev->channels, ch->name, ch->name_len);
  vx__map_free(&ch->members); /* every member went with its last subscription */
  free(ch->subs);
  free(ch);
}

/* Queue one broadcast to every subscriber of `ch` but `skip`, each in its connection's
 * encoding (built once per encoding, shared). Subscribers being replayed to (a recovery)
 * get it later, from the stream, in order; `live` false (presence events, not part of the
 * stream) reaches them at once. Never closes anything itself (slow consumers are only
 * marked), so callers may hold channel pointers across it. */
static void channel_send(vx_channel *ch, vx_frames *f, vx_conn *skip, bool live) {
  bool held = live && ch->nreplaying;
  for (uint32_t i = 0; i < ch->nsubs; i++) {
    vx_conn *c = ch->subs[i]->conn;
    if (c == skip || (held && (ch->subs[i]->flags & VXS_F_REPLAYING)))
      continue;
    vx_buf *b = vx__frames_get(f, c->enc);
    if (b)
      vx__conn_send(c, b);
    else
      vx__conn_oom(c); /* its encoding could not be built: closed, never left with a gap */
  }
}

static void member_event(vx_events *ev, vx_channel *ch, const char *event, vx_member *m,
                         vx_conn *skip) {
  vx_buf *b = vx__envelope_frame(ch->name, ch->name_len, event, strlen(event), m->json, m->json_len,
                                 NULL, 0);
  if (b) {
    vx_frames f;
    vx__frames_init(&f, ev, b, 0);
    channel_send(ch, &f, skip, false);
    vx__frames_release(&f);
    vx__buf_unref(b);
  }
}

vx_sub *vx__hub_sub_of(vx_conn *c, const char *name, size_t n) {
  for (uint32_t i = 0; i < c->nsubs; i++)
    if (c->subs[i]->ch->name_len == n && memcmp(c->subs[i]->ch->name, name, n) == 0)
      return c->subs[i];
  return NULL;
}

bool vx__hub_is_subscribed(vx_conn *c, const char *name, size_t n) {
  return vx__hub_sub_of(c, name, n) != NULL;
}

static vx_sub *add_sub(vx_conn *c, const char *name, size_t n, const vx_recover *rec, int *err);
static vx_sub *add_sub_plain(vx_conn *c, const char *name, size_t n, int *err);

int vx__hub_subscribe_rec(vx_conn *c, const char *name, size_t n, const vx_recover *rec) {
  if (vx__hub_is_subscribed(c, name, n))
    return 0; /* already live: nothing to recover */
  int err = 0;
  add_sub(c, name, n, rec, &err);
  return err;
}

int vx__hub_subscribe(vx_conn *c, const char *name, size_t n) {
  return vx__hub_subscribe_rec(c, name, n, NULL);
}

/* Join `c` to channel `name` (not yet subscribed). Returns the subscription, or NULL with
 * *err = VX_EINVAL (per-connection limit) or VX_ENOMEM. */
static vx_sub *add_sub(vx_conn *c, const char *name, size_t n, const vx_recover *rec, int *err) {
  vx_recover *copy = NULL;
  if (rec && !(copy = malloc(sizeof *copy))) {
    *err = VX_ENOMEM;
    return NULL;
  }
  if (copy)
    *copy = *rec;
  vx_sub *s = add_sub_plain(c, name, n, err);
  if (s)
    s->rec = copy;
  else
    free(copy);
  return s;
}

static vx_sub *add_sub_plain(vx_conn *c, const char *name, size_t n, int *err) {
  vx_events *ev = c->ev;
  if (c->nsubs >= ev->opts.max_channels_per_conn) {
    *err = VX_EINVAL;
    return NULL;
  }
  *err = VX_ENOMEM;
  if (c->nsubs == c->subcap) {
    uint32_t ncap = c->subcap ? c->subcap * 2 : 2;
    vx_sub **ns = realloc(c->subs, ncap * sizeof *ns);
    if (!ns)
      return NULL;
    c->subs = ns;
    c->subcap = ncap;
  }
  vx_channel *ch = channel_get(ev, name, n, true);
  if (!ch)
    return NULL;
  if (ch->nsubs == ch->cap) {
    uint32_t ncap = ch->cap ? ch->cap * 2 : 4;
    vx_sub **ns = realloc(ch->subs, ncap * sizeof *ns);
    if (!ns) {
      channel_drop_if_empty(ev, ch);
      return NULL;
    }
    ch->subs = ns;
    ch->cap = ncap;
  }
  vx_sub *s = malloc(sizeof *s);
  if (!s) {
    channel_drop_if_empty(ev, ch);
    return NULL;
  }
  s->conn = c;
  s->ch = ch;
  s->member = NULL;
  s->ack_members = NULL;
  s->rec = NULL;
  s->next = 0;
  s->replay_nxt = NULL;
  s->flags = 0;
  s->idx = ch->nsubs;
  ch->subs[ch->nsubs++] = s;
  c->subs[c->nsubs++] = s;
  ev->bp.ops->count(ev, ch->name, ch->name_len, +1);
  *err = 0;
  return s;
}

static void sub_remove(vx_events *ev, vx_sub *s) {
  vx_channel *ch = s->ch;
  vx_sub *last = ch->subs[--ch->nsubs];
  ch->subs[s->idx] = last;
  last->idx = s->idx;
  ev->bp.ops->count(ev, ch->name, ch->name_len, -1);
  vx_member *m = s->member;
  if (s->flags & VXS_F_REPLAYING)
    vx__node_replay_stop(s);
  free(s->ack_members);
  free(s->rec);
  free(s);
  /* The user's last connection on the channel left: everyone else hears it once. */
  if (m && --m->conns == 0) {
    vx__map_del(&ch->members, m->id, m->id_len);
    if (!ev->bp.ops->presence_leave(ev, ch->name, ch->name_len, m))
      member_event(ev, ch, "member_removed", m, NULL);
    free(m);
  }
  channel_drop_if_empty(ev, ch);
}

int vx__member_parse(const char *cd, size_t n, vx_member **out, const char **err) {
  *out = NULL;
  const char *id, *info = "null";
  size_t idn, infon = 4;
  if (!vx__json_valid(cd, n) || vx__json_has_nul(cd, n)) {
    *err = "channel_data must be a JSON object without NUL characters";
    return VX_EINVAL;
  }
  if (!vx__json_field(cd, n, "id", &id, &idn)) {
    *err = "channel_data must be a JSON object with an id";
    return VX_EINVAL;
  }
  bool is_str = id[0] == '"';
  bool is_num = id[0] == '-' || (id[0] >= '0' && id[0] <= '9');
  if ((!is_str && !is_num) || (is_str && idn <= 2) || idn > 256) {
    *err = "channel_data id must be a non-empty string or a number (at most 256 bytes)";
    return VX_EINVAL;
  }
  vx__json_field(cd, n, "info", &info, &infon);
  size_t jl = 6 + idn + 8 + infon + 1; /* {"id":  ,"info":  } */
  vx_member *m = malloc(sizeof *m + jl + 1);
  if (!m) {
    *err = "server out of memory";
    return VX_ENOMEM;
  }
  char *p = m->json;
  memcpy(p, "{\"id\":", 6);
  memcpy(p + 6, id, idn);
  memcpy(p + 6 + idn, ",\"info\":", 8);
  memcpy(p + 14 + idn, info, infon);
  p[14 + idn + infon] = '}';
  p[jl] = '\0';
  m->json_len = jl;
  m->id = p + 6;
  m->id_len = idn;
  m->conns = 0;
  *out = m;
  return 0;
}

/* Takes ownership of `m`. The joining connection is answered by the backplane's join
 * (backplane.h: through the node's members handler, now or later). */
int vx__hub_subscribe_presence(vx_conn *c, const char *name, size_t n, vx_member *m,
                               const vx_recover *rec, const char **err) {
  vx_events *ev = c->ev;
  const vx_backplane_ops *bp = ev->bp.ops;
  if (vx__hub_is_subscribed(c, name, n)) {
    vx_channel *cur = channel_get(ev, name, n, false);
    if (cur)
      bp->presence_join(ev, cur->name, cur->name_len, m, c->id, false);
    free(m);
    return 0;
  }
  vx_channel *ch = channel_get(ev, name, n, false);
  vx_member *have = ch ? vx__map_get(&ch->members, m->id, m->id_len) : NULL;
  if (!have && ch && ch->members.len >= ev->opts.max_presence_members) {
    free(m);
    *err = "presence channel is full";
    return VX_EINVAL;
  }
  int e = 0;
  vx_sub *s = add_sub(c, name, n, rec, &e);
  if (!s) {
    free(m);
    *err = e == VX_EINVAL ? "too many channels on this connection" : "server out of memory";
    return e;
  }
  ch = s->ch;
  if (have) {
    free(m);
    m = have;
    bp->presence_join(ev, ch->name, ch->name_len, m, c->id, false);
  } else {
    if (vx__map_put(&ch->members, m->id, m->id_len, m) != 0) {
      free(m);
      c->subs[--c->nsubs] = NULL;
      sub_remove(ev, s);
      *err = "server out of memory";
      return VX_ENOMEM;
    }
    /* A new user: the others hear of it; the joining connection sees itself in the
     * member list of its subscription_succeeded instead. A cluster backplane decides
     * whether the user is new anywhere and announces it to every instance itself. */
    if (!bp->presence_join(ev, ch->name, ch->name_len, m, c->id, true))
      member_event(ev, ch, "member_added", m, c);
  }
  m->conns++;
  s->member = m;
  return 0;
}

char *vx__hub_members_json(vx_events *ev, const char *name, size_t n, size_t *len) {
  vx_channel *ch = channel_get(ev, name, n, false);
  vx_str s = {0};
  vx__str_addz(&s, "[");
  if (ch) {
    bool first = true;
    for (uint32_t i = 0; i < ch->members.cap; i++) {
      vx_member *m = ch->members.slots[i].key ? ch->members.slots[i].val : NULL;
      if (!m)
        continue;
      if (!first)
        vx__str_addz(&s, ",");
      first = false;
      vx__str_add(&s, m->json, m->json_len);
    }
  }
  vx__str_addz(&s, "]");
  if (s.oom) {
    vx__str_free(&s);
    return NULL;
  }
  *len = s.len;
  return s.p;
}

void vx__hub_unsubscribe(vx_conn *c, const char *name, size_t n) {
  for (uint32_t i = 0; i < c->nsubs; i++) {
    vx_sub *s = c->subs[i];
    if (s->ch->name_len == n && memcmp(s->ch->name, name, n) == 0) {
      c->subs[i] = c->subs[--c->nsubs];
      sub_remove(c->ev, s);
      return;
    }
  }
}

void vx__hub_unsubscribe_all(vx_conn *c) {
  while (c->nsubs)
    sub_remove(c->ev, c->subs[--c->nsubs]);
}

int vx__validate_broadcast(const char *const *channels, size_t n, const char *event,
                           const char *data, size_t data_len, const char *except) {
  if (n == 0 || n > VX_BATCH_MAX || !channels)
    return VX_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!channels[i] || !vx__channel_valid(channels[i], strlen(channels[i])))
      return VX_ECHANNEL;
  if (!event)
    return VX_EINVAL;
  size_t el = strlen(event);
  if (el == 0 || el > VX_EVENT_MAX || !vx__utf8_valid(event, el))
    return VX_EINVAL;
  if (except && strlen(except) > 64)
    return VX_EINVAL;
  if (data && !vx__json_valid(data, data_len))
    return VX_EJSON;
  return 0;
}

/* One broadcast to one channel: its frame (carrying `offset`, 0 = none) built once, kept in
 * the stream `st` (may be NULL) and queued to the channel's subscribers (`ch`, may be NULL). */
static int deliver_one(vx_events *ev, vx_channel *ch, vx_stream *st, const char *name, size_t n,
                       uint64_t offset, uint64_t seq, const char *event, size_t elen,
                       const char *data, size_t dlen, const char *extra, size_t xlen,
                       vx_conn *skip) {
  vx_buf *b = vx__envelope_frame_at(name, n, event, elen, data, dlen, extra, xlen, offset);
  if (!b)
    return VX_ENOMEM;
  if (st && offset)
    vx__stream_append(ev, st, offset, seq, b);
  if (ch) {
    vx_frames f;
    vx__frames_init(&f, ev, b, seq);
    channel_send(ch, &f, skip, true);
    vx__frames_release(&f);
  } else if (st) {
    vx__stream_detach(ev, st); /* nobody listens: held (or not) as history decides */
  }
  vx__buf_unref(b);
  /* Slow consumers found in this walk are closed now, before any other walk. */
  vx__conn_process_doomed(ev);
  return 0;
}

static vx_conn *except_conn(vx_events *ev, const char *except) {
  if (except && strlen(except) == VX_SOCKET_ID_LEN)
    return vx__map_get(&ev->sockets, except, VX_SOCKET_ID_LEN);
  return NULL;
}

int vx__hub_deliver(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                    const char *event, size_t elen, const char *data, size_t dlen,
                    const char *extra, size_t xlen, const char *except) {
  vx_conn *skip = except_conn(ev, except);
  bool history = vx__history_on(ev);
  /* The fan-out time (metrics.c): two clock reads per broadcast with local recipients,
   * none per recipient. */
  uint64_t t0 = 0;
  for (size_t k = 0; k < n; k++) {
    vx_channel *ch = channel_get(ev, channels[k], lens[k], false);
    /* With history on, a broadcast is kept even when nobody listens right now: the client
     * that missed it may be reconnecting. Each channel has its own offset, so its own frame. */
    vx_stream *st = ch ? ch->st : history ? vx__stream_get(ev, channels[k], lens[k], true) : NULL;
    if (!ch && !st)
      continue;
    if (ch && !t0)
      t0 = uv_hrtime();
    uint64_t offset = st ? st->offset + 1 : 0;
    int r = deliver_one(ev, ch, st, channels[k], lens[k], offset, ++ev->sse_seq, event, elen, data,
                        dlen, extra, xlen, skip);
    if (r)
      return r;
  }
  if (t0)
    vx__metrics_fanout(ev, uv_hrtime() - t0);
  return 0;
}

int vx__hub_deliver_at(vx_events *ev, const char *name, size_t n, uint64_t offset, uint64_t seq,
                       const char *event, size_t elen, const char *data, size_t dlen,
                       const char *extra, size_t xlen, const char *except, bool send) {
  vx_channel *ch = channel_get(ev, name, n, false);
  if (!ch)
    return 0;
  if (seq > ev->sse_seq)
    ev->sse_seq = seq;
  if (!send) { /* delivered already: the stream keeps it */
    vx_buf *b = vx__envelope_frame_at(name, n, event, elen, data, dlen, extra, xlen, offset);
    if (!b)
      return VX_ENOMEM;
    if (ch->st)
      vx__stream_append(ev, ch->st, offset, seq, b);
    vx__buf_unref(b);
    return 0;
  }
  uint64_t t0 = uv_hrtime();
  int r = deliver_one(ev, ch, ch->st, name, n, offset, seq, event, elen, data, dlen, extra, xlen,
                      except_conn(ev, except));
  vx__metrics_fanout(ev, uv_hrtime() - t0);
  return r;
}

vx_channel *vx__hub_channel(vx_events *ev, const char *name, size_t n) {
  return channel_get(ev, name, n, false);
}

void vx__hub_each_member(vx_events *ev,
                         void (*fn)(void *ctx, const char *channel, size_t n,
                                    const struct vx_member *m),
                         void *ctx) {
  for (uint32_t i = 0; i < ev->channels.cap; i++) {
    vx_channel *ch = ev->channels.slots[i].key ? ev->channels.slots[i].val : NULL;
    if (!ch)
      continue;
    for (uint32_t j = 0; j < ch->members.cap; j++) {
      vx_member *m = ch->members.slots[j].key ? ch->members.slots[j].val : NULL;
      if (m)
        fn(ctx, ch->name, ch->name_len, m);
    }
  }
}

uint64_t vx__hub_count(vx_events *ev, const char *name, size_t n) {
  vx_channel *ch = vx__map_get(&ev->channels, name, n);
  return ch ? ch->nsubs : 0;
}

void vx__hub_free(vx_events *ev) {
  /* Connections are gone by now, so channels are too; free any stragglers anyway. */
  for (uint32_t i = 0; i < ev->channels.cap; i++) {
    vx_channel *ch = ev->channels.slots[i].key ? ev->channels.slots[i].val : NULL;
    if (ch) {
      for (uint32_t j = 0; j < ch->members.cap; j++)
        if (ch->members.slots[j].key)
          free(ch->members.slots[j].val);
      vx__map_free(&ch->members);
      for (uint32_t j = 0; j < ch->nsubs; j++)
        free(ch->subs[j]);
      free(ch->subs);
      free(ch);
    }
  }
  vx__map_free(&ev->channels);
  vx__map_free(&ev->sockets);
}

void vx__hub_channels_local(vx_events *ev, vx_channels_cb cb, void *data) {
  const char **names = malloc((ev->channels.len + 1) * sizeof *names);
  if (!names) {
    cb(VX_ENOMEM, NULL, 0, data);
    return;
  }
  size_t n = 0;
  for (uint32_t i = 0; i < ev->channels.cap; i++)
    if (ev->channels.slots[i].key)
      names[n++] = ev->channels.slots[i].key;
  cb(0, names, n, data);
  free(names);
}
