/* The node: the one subscribe / unsubscribe / broadcast flow behind every entry point —
 * WebSocket messages (client.c), the SSE ?channels= list and POST subscribe routes (sse.c,
 * http.c), vx_sse_subscribe and the host API (commands.c). The entry points decide whether a
 * subscription is authorized (a verified token, the host's authorizer); the node carries it
 * out the same way for all of them, answers the connection with subscription_succeeded —
 * now, or deferred until the backplane has confirmed the channel — and publishes
 * broadcasts and client events.
 *
 * Calls go down only: node -> hub (channels, subscriptions, members, local delivery),
 * node -> the connection's transport, node -> the backplane (ev->bp, backplane.h). The
 * backplane comes back through the handler registered here (vx__node_backplane_handler:
 * deliver, channel_ready, members, each_member). */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- acknowledgements and recovery (DESIGN §12) ---- */

/* Where a recovery of `s` starts: true with *from the first offset to replay (beyond the
 * stream's last offset: nothing missed), false when it cannot be complete (another epoch,
 * an offset from the future, or entries it needs are no longer kept). */
static bool recover_from(vx_events *ev, vx_stream *st, const vx_recover *r, uint64_t *from) {
  vx__stream_from(ev, st, 0, NULL); /* the age bound first */
  if (r->kind == VX_REC_SEQ) {
    /* An SSE id: every event of this channel after seq r->offset must still be kept. */
    if (strcmp(r->epoch, ev->sse_tag) != 0 || r->offset > ev->sse_seq || r->offset < st->lost_seq)
      return false;
    *from = st->offset + 1;
    for (uint32_t i = st->len; i-- > 0;) {
      const vx_hentry *e = vx__stream_at(st, i);
      if (e->seq <= r->offset)
        break;
      *from = e->offset;
    }
    return true;
  }
  if (strcmp(r->epoch, st->epoch) != 0 || r->offset > st->offset || r->offset < st->lost)
    return false;
  *from = r->offset + 1;
  return true;
}

/* The SSE "resumed" message once every ?channels= subscription of the stream is acked. */
static void resume_tell(vx_conn *c) {
  vx_resume *rs = c->resume;
  if (!rs || rs->told || !rs->started || rs->pending)
    return;
  rs->told = true;
  char msg[96];
  int n = snprintf(msg, sizeof msg, "{\"type\":\"resumed\",\"recovered\":%s,\"replayed\":%u}",
                   rs->ok ? "true" : "false", rs->replayed);
  c->tp->send_json(c, "resumed", msg, (size_t)n);
}

void vx__node_resume_started(vx_conn *c) {
  if (!c->resume)
    return;
  c->resume->started = true;
  resume_tell(c);
}

/* subscription_succeeded to `c` for `s`, built now: {"type":..,"channel":..,"data":
 * {"offset":<last>,"epoch":"<e>"[,"members":[..]]}[,"recovered":bool]}. With a recover
 * request that can be met, the replay of what the client missed starts right after it
 * (live events to `s` are held until the replay reaches them). */
static void fetch(vx_sub *s, uint64_t from, bool decide);

/* The ack itself, `recovered` -1 (no recover asked), 0 or 1; a replay from `from` follows
 * a recovery. Takes s->rec. */
static void ack_send(vx_conn *c, vx_sub *s, const char *members, size_t mlen, int recovered,
                     uint64_t from, uint64_t replayed) {
  vx_stream *st = s->ch->st;
  vx_recover *rec = s->rec;
  s->rec = NULL;
  s->flags &= (uint8_t)~VXS_F_DEFERRED;
  vx_str j = {0};
  vx__str_addz(&j, "{\"type\":\"subscription_succeeded\",\"channel\":");
  vx__str_add_json_string(&j, s->ch->name, s->ch->name_len);
  if (st || members) {
    vx__str_addz(&j, ",\"data\":{");
    if (st) {
      char off[64];
      snprintf(off, sizeof off, "\"offset\":%llu,\"epoch\":", (unsigned long long)st->offset);
      vx__str_addz(&j, off);
      vx__str_add_json_string(&j, st->epoch, strlen(st->epoch));
    }
    if (members) {
      vx__str_addz(&j, st ? ",\"members\":" : "\"members\":");
      vx__str_add(&j, members, mlen);
    }
    vx__str_addz(&j, "}");
  }
  if (recovered >= 0)
    vx__str_addz(&j, recovered ? ",\"recovered\":true" : ",\"recovered\":false");
  vx__str_addz(&j, "}");
  if (j.oom)
    vx__conn_oom(c);
  else
    c->tp->send_json(c, "subscription_succeeded", j.p, j.len);
  vx__str_free(&j);
  if (recovered == 1 && !(s->flags & VXS_F_REPLAYING) && from <= st->offset)
    vx__node_replay(s, from);
  if (rec && rec->kind == VX_REC_SEQ && c->resume && !c->resume->told && c->resume->pending) {
    vx_resume *rs = c->resume;
    rs->pending--;
    rs->ok = rs->ok && recovered == 1;
    if (recovered == 1)
      rs->replayed += (uint32_t)replayed;
    resume_tell(c);
  }
  free(rec);
}

/* Could the backplane's history (older than this instance's ring) meet `r`? */
static bool backplane_may_have(vx_events *ev, const vx_stream *st, const vx_recover *r) {
  if (!ev->bp.ops->history || !st->known)
    return false;
  if (r->kind == VX_REC_SEQ)
    return strcmp(r->epoch, ev->sse_tag) == 0;
  return strcmp(r->epoch, st->epoch) == 0 && r->offset < st->offset;
}

/* subscription_succeeded to `c` for `s`, built when it goes: {"type":..,"channel":..,
 * "data":{"offset":<last>,"epoch":"<e>"[,"members":[..]]}[,"recovered":bool]}. With a
 * recover request that can be met, the replay of what the client missed starts right after
 * it (live events to `s` are held until the replay reaches them). When only the backplane's
 * history can tell (older than the ring here), live events are held already and the ack
 * waits for its answer. */
static void send_ack(vx_conn *c, vx_sub *s, const char *members, size_t mlen) {
  vx_events *ev = c->ev;
  vx_stream *st = s->ch->st;
  vx_recover *rec = s->rec;
  uint64_t from = 0;
  if (!rec || !st) {
    ack_send(c, s, members, mlen, rec ? 0 : -1, 0, 0);
    return;
  }
  if (recover_from(ev, st, rec, &from)) {
    ack_send(c, s, members, mlen, 1, from, from <= st->offset ? st->offset - from + 1 : 0);
    return;
  }
  if (!backplane_may_have(ev, st, rec)) {
    ack_send(c, s, members, mlen, 0, 0, 0);
    return;
  }
  if (members && s->ack_members != members) {
    free(s->ack_members);
    s->ack_members = vx__dupn(members, mlen);
  }
  s->flags |= VXS_F_REPLAYING;
  s->ch->nreplaying++;
  s->replay_nxt = ev->replays;
  ev->replays = s;
  fetch(s, rec->kind == VX_REC_SEQ ? 1 : rec->offset + 1, true);
}

/* The answer to a subscribe, for either transport. Without `error` it is
 * subscription_succeeded (with "members" when `members` is given, presence channels), sent
 * when the channel is ready; otherwise subscription_error, sent at once. `channel` may be
 * any client-supplied bytes: it is escaped, and a long one is echoed as a prefix cut on a
 * character boundary. */
void vx__node_sub_reply(vx_conn *c, const char *channel, size_t clen, const char *error,
                        const char *members, size_t mlen) {
  if (!error) {
    vx_sub *s = vx__hub_sub_of(c, channel, clen);
    vx_events *ev = c->ev;
    if (!s)
      return;
    /* While the backplane has not confirmed the channel yet (a Redis SUBSCRIBE on its
     * way, the stream's position not known), the ack waits, so that nothing published
     * after it is missed; it is built when it goes. */
    if (!ev->bp.ops->channel_ready(ev, s->ch->name, s->ch->name_len)) {
      char *copy = members ? vx__dupn(members, mlen) : NULL;
      if (!members || copy) {
        free(s->ack_members);
        s->ack_members = copy;
        s->flags |= VXS_F_DEFERRED;
        return;
      }
    }
    send_ack(c, s, members, mlen);
    return;
  }
  if (clen > 256) {
    clen = 256;
    while (clen > 0 && ((uint8_t)channel[clen] & 0xC0) == 0x80)
      clen--;
  }
  vx_str s = {0};
  vx__str_addz(&s, "{\"type\":\"subscription_error\",\"channel\":");
  vx__str_add_json_string(&s, channel, clen);
  vx__str_addz(&s, ",\"error\":");
  vx__str_add_json_string(&s, error, strlen(error));
  vx__str_addz(&s, "}");
  if (!s.oom)
    c->tp->send_json(c, "subscription_error", s.p, s.len);
  vx__str_free(&s);
}

static void channel_ready(vx_events *ev, const char *name, size_t n) {
  vx_channel *ch = vx__hub_channel(ev, name, n);
  if (!ch)
    return;
  for (uint32_t i = 0; i < ch->nsubs; i++) {
    vx_sub *s = ch->subs[i];
    if (s->flags & VXS_F_DEFERRED) {
      char *m = s->ack_members;
      s->ack_members = NULL;
      send_ack(s->conn, s, m, m ? strlen(m) : 0); /* keeps its own copy if it must wait */
      free(m);
    }
  }
}

/* ---- replays ---- */

enum { PUMP_MORE, PUMP_DONE, PUMP_GAP };

/* Replay to `s` while its connection's queue has room (a quarter of max_send_queue): never
 * enough at once to make it look like a slow consumer. *sent counts the entries queued. */
static int pump_one(vx_events *ev, vx_sub *s, uint32_t *sent) {
  vx_conn *c = s->conn;
  vx_stream *st = s->ch->st;
  size_t budget = ev->opts.max_send_queue / 4;
  if (s->next > st->offset + 1)
    return PUMP_MORE; /* the backplane's history went further than what reached this
                         instance yet: live events are held until they catch up */
  while (s->next <= st->offset) {
    if (c->qbytes >= budget || vx_has(c, VXC_F_CLOSED | VXC_F_DOOMED))
      return PUMP_MORE;
    if (s->flags & VXS_F_FETCHING)
      return PUMP_MORE;
    uint32_t idx;
    const vx_hentry *e = vx__stream_from(ev, st, s->next, &idx);
    if (!e || e->offset != s->next) {
      if (!ev->bp.ops->history)
        return PUMP_GAP; /* dropped while the replay waited: it cannot go on without a gap */
      fetch(s, s->next, false); /* older than the ring here: the backplane's history */
      return PUMP_MORE;
    }
    for (; idx < st->len && c->qbytes < budget; idx++) {
      e = vx__stream_at(st, idx);
      vx_frames f;
      vx__frames_init(&f, ev, e->frame, e->seq);
      vx_buf *b = vx__frames_get(&f, c->enc);
      if (b)
        vx__conn_send(c, b);
      else
        vx__conn_oom(c);
      vx__frames_release(&f);
      s->next = e->offset + 1;
      (*sent)++;
    }
  }
  return PUMP_DONE;
}

/* The client was told recovered:true; rather than a silent gap, it loses the subscription
 * and hears why, and subscribes again (then recovered:false). */
static void unsubscribe_gap(vx_sub *s) {
  vx_conn *c = s->conn;
  char name[VX_CHANNEL_MAX + 1];
  size_t n = s->ch->name_len;
  memcpy(name, s->ch->name, n);
  vx__hub_unsubscribe(c, name, n);
  vx__node_sub_reply(c, name, n, "recovery fell behind the channel's history: subscribe again",
                     NULL, 0);
}

static void replay_end(vx_sub *s) {
  s->flags &= (uint8_t)~VXS_F_REPLAYING;
  s->ch->nreplaying--;
}

/* Run the replay at *pp; it leaves the list when it is over. */
static bool pump_at(vx_events *ev, vx_sub **pp) {
  vx_sub *s = *pp;
  uint32_t sent = 0;
  int r = pump_one(ev, s, &sent);
  if (r == PUMP_MORE) {
    return sent > 0 && !vx_has(s->conn, VXC_F_WRITING);
  }
  *pp = s->replay_nxt;
  s->replay_nxt = NULL;
  replay_end(s);
  if (r == PUMP_GAP)
    unsubscribe_gap(s);
  return false;
}

static void replay_gap(vx_events *ev, vx_sub *s) {
  (void)ev;
  vx__node_replay_stop(s);
  unsubscribe_gap(s);
}

/* ---- replays from the backplane's history ---- */

typedef struct fetch_ctx {
  uint32_t id;
  bool decide; /* the ack waits for this answer */
  char socket_id[VX_SOCKET_ID_LEN + 1];
  size_t n;
  char channel[VX_CHANNEL_MAX + 1];
} fetch_ctx;

static void send_entry(vx_events *ev, vx_conn *c, vx_buf *frame, uint64_t seq) {
  vx_frames f;
  vx__frames_init(&f, ev, frame, seq);
  vx_buf *b = vx__frames_get(&f, c->enc);
  if (b)
    vx__conn_send(c, b);
  else
    vx__conn_oom(c);
  vx__frames_release(&f);
}

/* The end of a replay that cannot go on: the subscriber is told (see pump_at). */
static void replay_gap(vx_events *ev, vx_sub *s);

static void fetched(vx_events *ev, const vx_bp_history *h, void *ctx) {
  fetch_ctx *k = ctx;
  vx_conn *c = vx__map_get(&ev->sockets, k->socket_id, VX_SOCKET_ID_LEN);
  vx_sub *s = c && !vx_has(c, VXC_F_CLOSED) ? vx__hub_sub_of(c, k->channel, k->n) : NULL;
  bool decide = k->decide;
  uint32_t id = k->id;
  free(k);
  if (!s || !(s->flags & VXS_F_FETCHING) || s->fetch_id != id)
    return; /* gone, or superseded */
  s->flags &= (uint8_t)~VXS_F_FETCHING;
  vx_stream *st = s->ch->st;
  size_t i = 0;
  bool ok = h->status == 0 && st;
  if (ok && decide && s->rec && s->rec->kind == VX_REC_SEQ) {
    /* Every event of the channel after seq `after` must be there: the stream has nothing
     * after it, or it still holds one at or before it, or it lost nothing since it began
     * (before `after`). */
    uint64_t after = s->rec->offset;
    ok = strcmp(h->cluster_epoch ? h->cluster_epoch : "", s->rec->epoch) == 0 &&
         (h->last_seq <= after || (h->n && h->seqs[0] <= after) ||
          (h->created_seq <= after && (h->n ? h->offsets[0] == 1 : h->offset == 0)));
    while (ok && i < h->n && h->seqs[i] <= after)
      i++;
    s->next = i < h->n ? h->offsets[i] : h->offset + 1;
  } else if (ok && decide) {
    ok = s->rec && strcmp(h->epoch, s->rec->epoch) == 0 &&
         (s->rec->offset == h->offset || (h->n && h->offsets[0] == s->rec->offset + 1));
    s->next = s->rec ? s->rec->offset + 1 : 0;
  } else if (ok) {
    ok = h->n && h->offsets[0] == s->next && strcmp(h->epoch, st->epoch) == 0;
  }
  if (decide) {
    char *m = s->ack_members;
    s->ack_members = NULL;
    if (!ok) {
      vx__node_replay_stop(s); /* nothing held any more: live from here */
      ack_send(c, s, m, m ? strlen(m) : 0, 0, 0, 0);
      free(m);
      return;
    }
    uint64_t last = st->offset > h->offset ? st->offset : h->offset;
    ack_send(c, s, m, m ? strlen(m) : 0, 1, s->next, last >= s->next ? last - s->next + 1 : 0);
    free(m);
  } else if (!ok) {
    replay_gap(ev, s);
    return;
  }
  for (; i < h->n; i++) {
    if (h->offsets[i] != s->next)
      continue; /* before the replay's position (or a gap: the pump finds it) */
    send_entry(ev, c, h->frames[i], h->seqs[i]);
    s->next++;
  }
  for (vx_sub **pp = &ev->replays; *pp; pp = &(*pp)->replay_nxt)
    if (*pp == s) {
      pump_at(ev, pp);
      break;
    }
  if (!uv_is_closing((uv_handle_t *)&ev->async))
    uv_async_send(&ev->async);
}

static void fetch(vx_sub *s, uint64_t from, bool decide) {
  vx_events *ev = s->conn->ev;
  fetch_ctx *k = calloc(1, sizeof *k);
  if (!k) {
    vx__conn_oom(s->conn);
    return;
  }
  k->id = s->fetch_id = ++ev->fetch_seq;
  k->decide = decide;
  memcpy(k->socket_id, s->conn->id, VX_SOCKET_ID_LEN + 1);
  k->n = s->ch->name_len;
  memcpy(k->channel, s->ch->name, k->n + 1);
  s->flags |= VXS_F_FETCHING;
  vx_stream *st = s->ch->st;
  uint64_t want = st->offset >= from ? st->offset - from + 1 : 1;
  uint32_t cap = ev->opts.history_size ? ev->opts.history_size : 1;
  ev->bp.ops->history(ev, s->ch->name, s->ch->name_len, from,
                      decide && s->rec && s->rec->kind == VX_REC_SEQ ? cap
                      : want < cap                                  ? (uint32_t)want
                                                                    : cap,
                      fetched, k);
}

void vx__node_replay(vx_sub *s, uint64_t from) {
  vx_events *ev = s->conn->ev;
  s->flags |= VXS_F_REPLAYING;
  s->next = from;
  s->ch->nreplaying++;
  s->replay_nxt = ev->replays;
  ev->replays = s;
  if (pump_at(ev, &ev->replays) && !uv_is_closing((uv_handle_t *)&ev->async))
    uv_async_send(&ev->async); /* more after the flush, without waiting for I/O */
}

void vx__node_replay_stop(vx_sub *s) {
  vx_events *ev = s->conn->ev;
  for (vx_sub **pp = &ev->replays; *pp; pp = &(*pp)->replay_nxt)
    if (*pp == s) {
      *pp = s->replay_nxt;
      break;
    }
  s->replay_nxt = NULL;
  replay_end(s);
}

bool vx__node_pump(vx_events *ev) {
  bool again = false;
  vx_sub **pp = &ev->replays;
  while (*pp) {
    vx_sub *s = *pp;
    again = pump_at(ev, pp) || again;
    if (*pp == s)
      pp = &s->replay_nxt;
  }
  return again;
}

static const char *limit_text(int r) {
  return r == VX_EINVAL ? "too many channels on this connection" : "server out of memory";
}

int vx__node_subscribe(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                       const char **err) {
  return vx__node_subscribe_rec(c, name, n, member, mlen, NULL, err);
}

static int subscribe(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                     const vx_recover *rec, const char **err);

int vx__node_subscribe_rec(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                           const vx_recover *rec, const char **err) {
  bool counted = false;
  if (!rec && c->resume) { /* an SSE stream resuming: each of its channels recovers */
    rec = &c->resume->rec;
    counted = !c->resume->started && !vx__hub_is_subscribed(c, name, n);
    if (counted)
      c->resume->pending++;
  }
  int r = subscribe(c, name, n, member, mlen, rec, err);
  if (r && counted)
    c->resume->pending--;
  return r;
}

static int subscribe(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                     const vx_recover *rec, const char **err) {
  vx_events *ev = c->ev;
  if (!vx__channel_valid(name, n)) {
    *err = "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)";
    return VX_ECHANNEL;
  }
  if (vx__channel_kind(name, n) != VX_CH_PRESENCE) {
    int r = vx__hub_subscribe_rec(c, name, n, rec);
    if (r) {
      *err = limit_text(r);
      return r;
    }
    vx__node_sub_reply(c, name, n, NULL, NULL, 0);
    return 0;
  }
  if (!member || !mlen) {
    *err = "presence channels need a member (channel_data from the auth endpoint)";
    return VX_EINVAL;
  }
  if (mlen > ev->opts.max_member_size) {
    *err = "presence member (channel_data) is too large";
    return VX_ETOOBIG;
  }
  vx_member *m;
  int r = vx__member_parse(member, mlen, &m, err);
  if (r)
    return r;
  /* The backplane's join answers the connection, with its members (see members()). */
  return vx__hub_subscribe_presence(c, name, n, m, rec, err);
}

/* The members answer of a presence join: the joining connection, if it is still here and
 * still subscribed, gets subscription_succeeded with the members (NULL: those known
 * here). */
static void members(vx_events *ev, const char *socket_id, const char *channel, size_t n,
                    const char *list, size_t mlen) {
  char *own = NULL;
  if (!list) {
    own = vx__hub_members_json(ev, channel, n, &mlen);
    list = own;
  }
  vx_conn *c = vx__map_get(&ev->sockets, socket_id, VX_SOCKET_ID_LEN);
  if (c && !vx_has(c, VXC_F_CLOSED) && vx__hub_is_subscribed(c, channel, n))
    vx__node_sub_reply(c, channel, n, NULL, list ? list : "[]", list ? mlen : 2);
  free(own);
}

static int deliver(vx_events *ev, const char *channel, size_t n, const char *event, size_t elen,
                   const char *data, size_t dlen, const char *extra, size_t xlen,
                   const char *except, uint64_t offset, uint64_t seq, bool quiet) {
  if (offset)
    return vx__hub_deliver_at(ev, channel, n, offset, seq, event, elen, data, dlen, extra, xlen,
                              except, !quiet);
  const char *names[1] = {channel};
  size_t lens[1] = {n};
  return vx__hub_deliver(ev, names, lens, 1, event, elen, data, dlen, extra, xlen, except);
}

static void set_cluster_epoch(vx_events *ev, const char *e) {
  size_t el = e ? strlen(e) : 0;
  if (el && el <= VX_EPOCH_MAX && strcmp(ev->sse_tag, e) != 0)
    memcpy(ev->sse_tag, e, el + 1);
}

/* The backplane's stream position for `channel`: what it holds before `offset` is not here
 * (lost, for recovery purposes, unless the backplane's history supplies it). */
static void position(vx_events *ev, const char *channel, size_t n, const char *epoch,
                     uint64_t offset, uint64_t last_seq, const char *cluster_epoch) {
  set_cluster_epoch(ev, cluster_epoch);
  if (!channel)
    return; /* the cluster's epoch alone */
  vx_channel *ch = vx__hub_channel(ev, channel, n);
  vx_stream *st = ch ? ch->st : vx__stream_get(ev, channel, n, false);
  if (!st)
    return;
  vx__stream_reset(ev, st, epoch, offset);
  if (last_seq > st->lost_seq)
    st->lost_seq = last_seq;
}

const vx_backplane_handler vx__node_backplane_handler = {
    .deliver = deliver,
    .position = position,
    .channel_ready = channel_ready,
    .members = members,
    .each_member = vx__hub_each_member,
};

void vx__node_subscribe_reply(vx_conn *c, const char *name, size_t n, const char *member,
                              size_t mlen) {
  const char *err = NULL;
  if (vx__node_subscribe(c, name, n, member, mlen, &err) != 0)
    vx__node_sub_reply(c, name, n, err, NULL, 0);
}

void vx__node_left(vx_conn *c) {
  vx_events *ev = c->ev;
  vx__hub_unsubscribe_all(c);
  free(c->resume);
  c->resume = NULL;
  if (vx_has(c, VXC_F_ANNOUNCED)) {
    vx_clr(c, VXC_F_ANNOUNCED);
    vx__map_del(&ev->sockets, c->id, VX_SOCKET_ID_LEN);
    ev->nws--;
    if (ev->opts.on_disconnect)
      ev->opts.on_disconnect(c->id, ev->opts.hook_data);
  }
}

void vx__node_unsubscribe(vx_conn *c, const char *name, size_t n) {
  vx__hub_unsubscribe(c, name, n);
}

/* ---- publishing ---- */

/* The mark that carries a client event's sender through Redis: ,"c":{["u":<id>]} (what the
 * envelope gets is vx__client_extra). */
static size_t client_mark(char *out, const char *uid, size_t uidlen) {
  size_t n = 6;
  memcpy(out, ",\"c\":{", 6);
  if (uid) {
    memcpy(out + n, "\"u\":", 4);
    memcpy(out + n + 4, uid, uidlen);
    n += 4 + uidlen;
  }
  out[n++] = '}';
  return n;
}

/* The backplane first: a broadcast it refuses (VX_EBACKLOG) is delivered nowhere, not even
 * here, so a publisher that retries the refusal does not duplicate it for local
 * subscribers. */
static int publish(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                   const char *event, size_t elen, const char *data, size_t dlen, bool client,
                   const char *uid, size_t uidlen, const char *except, size_t reserved,
                   const vx_published *done) {
  char extra[32 + 256], mark[16 + 256];
  size_t xlen = client ? vx__client_extra(extra, uid, uidlen) : 0;
  size_t mlen = client ? client_mark(mark, uid, uidlen) : 0;
  int rc = ev->bp.ops->publish(ev, channels, lens, n, event, elen, data, dlen, mark, mlen, except,
                               reserved, ev->bp.ops->assigns_offsets ? done : NULL);
  if (rc < 0)
    return rc;
  if (rc == VX_BP_LOCAL_NOW) {
    /* Redis is unreachable: local delivery goes on (DESIGN §7), without offsets, since only
     * Redis assigns them; the stream records them when Redis has them. */
    for (size_t k = 0; k < n; k++) {
      int r = vx__hub_deliver_at(ev, channels[k], lens[k], 0, 0, event, elen, data, dlen, extra,
                                 xlen, except, true);
      if (r)
        return r;
    }
    return 0;
  }
  if (ev->bp.ops->assigns_offsets)
    return 0; /* that backplane delivers it here too, with its offset, in the channel's order */
  int r = vx__hub_deliver(ev, channels, lens, n, event, elen, data, dlen, extra, xlen, except);
  if (!r && done && done->cb) {
    vx_stream *st = vx__stream_get(ev, channels[0], lens[0], false);
    done->cb(0, st ? st->offset : 0, st ? st->epoch : "", done->data);
  }
  return r;
}

void vx__node_publish_cmd(vx_events *ev, vx_cmd *c) {
  const char *chs[1] = {c->u.publish.channel};
  size_t lens[1] = {strlen(chs[0])};
  const char *data = c->u.publish.data;
  vx_published done = {c->u.publish.cb, c->u.publish.cb_data};
  int r = publish(ev, chs, lens, 1, c->u.publish.event, strlen(c->u.publish.event),
                  data ? data : "null", data ? c->u.publish.data_len : 4, false, NULL, 0,
                  c->u.publish.except, c->u.publish.reserved, &done);
  if (r && done.cb)
    done.cb(r, 0, "", done.data);
}

int vx__node_broadcast(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                       const char *event, size_t elen, const char *data, size_t dlen,
                       const char *except) {
  return publish(ev, channels, lens, n, event, elen, data, dlen, false, NULL, 0, except, 0, NULL);
}

int vx__node_broadcast_reserved(vx_events *ev, const char *const *channels, const size_t *lens,
                                size_t n, const char *event, size_t elen, const char *data,
                                size_t dlen, const char *except, size_t reserved) {
  return publish(ev, channels, lens, n, event, elen, data, dlen, false, NULL, 0, except, reserved,
                 NULL);
}

int vx__node_client_event(vx_conn *c, const char *name, size_t n, const char *event, size_t elen,
                          const char *data, size_t dlen) {
  vx_sub *s = vx__hub_sub_of(c, name, n);
  const char *uid = s && s->member ? s->member->id : NULL; /* <= 256 bytes (member_parse) */
  size_t uidlen = uid ? s->member->id_len : 0;
  const char *names[1] = {name};
  size_t lens[1] = {n};
  return publish(c->ev, names, lens, 1, event, elen, data, dlen, true, uid, uidlen, c->id, 0, NULL);
}

bool vx__event_reserved(const char *e, size_t n) {
  static const char *const exact[] = {"connected", "member_added", "member_removed", "resumed"};
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (n == strlen(exact[i]) && memcmp(e, exact[i], n) == 0)
      return true;
  return (n >= 13 && memcmp(e, "subscription_", 13) == 0) || (n >= 3 && memcmp(e, "vx:", 3) == 0);
}
