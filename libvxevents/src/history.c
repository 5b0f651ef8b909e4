/* The channel streams of DESIGN §12: per channel, the last offset (+1 per broadcast), an
 * epoch (a short random string, new whenever a stream starts without its history: a fresh
 * in-memory stream, or, with Redis, the cluster's stream was lost), and a ring of the
 * recent broadcasts.
 *
 * An entry is a reference to the WebSocket frame the broadcast was built as — the frame
 * every recipient shares, which already carries the offset — plus its offset, its SSE seq
 * and the time: appending costs a reference and no allocation once the ring has grown
 * (doubling, up to history_size). Other encodings (SSE, deflate) are built only when a
 * replay needs them.
 *
 * Bounds: history_size entries per stream, history_ttl_ms of age (entries are dropped
 * lazily from the front when the stream is appended to or read, and whole streams whose
 * newest entry is too old by the sweep), and history_max_bytes for all streams together
 * (the streams touched least recently lose their history first: they are in
 * ev->lru_head.. order). A stream lives while its channel has subscribers, while it keeps
 * history, and for the age bound after its last subscriber left (so that a client that
 * reconnects soon finds its epoch); an idle channel without history costs nothing once the
 * age bound has passed (and nothing at all with history_size 0). What a stream drops
 * is remembered as `lost` (offsets) and `lost_seq` (SSE ids), so a recovery that would need
 * it is answered recovered:false instead of replaying with a gap.
 *
 * Calls: the hub appends and owns the channel -> stream link; the node reads (acks,
 * replays); loop.c sweeps. Nothing here sends anything. */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_COST(frame) (sizeof(vx_hentry) + (frame)->len)
#define STREAM_COST(st) (sizeof(vx_stream) + (st)->n + 1)

bool vx__history_on(const vx_events *ev) { return ev->opts.history_size > 0; }

static void update_stats(vx_events *ev) {
  ev->stats.history_bytes = ev->hist_bytes;
  ev->stats.history_streams = ev->streams.len;
}

vx_stream *vx__stream_get(vx_events *ev, const char *name, size_t n, bool create) {
  vx_stream *st = vx__map_get(&ev->streams, name, n);
  if (st || !create)
    return st;
  st = calloc(1, sizeof *st + n + 1);
  if (!st)
    return NULL;
  memcpy(st->name, name, n);
  st->n = n;
  st->known = true;
  /* Events of this channel an earlier stream held were dropped with it: a resume from
   * before them cannot be complete. */
  st->lost_seq = ev->lost_seq;
  char id[VX_SOCKET_ID_LEN + 1];
  vx__random_id(ev, id);
  memcpy(st->epoch, id, 8);
  st->epoch[8] = '\0';
  if (vx__map_put(&ev->streams, st->name, n, st) != 0) {
    free(st);
    return NULL;
  }
  update_stats(ev);
  return st;
}

static void lru_unlink(vx_events *ev, vx_stream *st) {
  if (st->prev)
    st->prev->next = st->next;
  else
    ev->lru_head = st->next;
  if (st->next)
    st->next->prev = st->prev;
  else
    ev->lru_tail = st->prev;
  st->prev = st->next = NULL;
}

/* `st` is held for history's sake (it keeps entries, or its channel went within the age
 * bound): it costs against history_max_bytes and is the last to be evicted. */
static void retain(vx_events *ev, vx_stream *st, uint64_t now) {
  if (st->lru) {
    lru_unlink(ev, st);
  } else {
    st->lru = true;
    ev->hist_bytes += STREAM_COST(st);
  }
  st->prev = ev->lru_tail;
  st->next = NULL;
  if (ev->lru_tail)
    ev->lru_tail->next = st;
  else
    ev->lru_head = st;
  ev->lru_tail = st;
  st->touched = now;
}

static void unretain(vx_events *ev, vx_stream *st) {
  if (!st->lru)
    return;
  lru_unlink(ev, st);
  st->lru = false;
  ev->hist_bytes -= STREAM_COST(st);
}

static void stream_free(vx_events *ev, vx_stream *st) {
  unretain(ev, st);
  if (st->lost_seq > ev->lost_seq)
    ev->lost_seq = st->lost_seq;
  vx__map_del(&ev->streams, st->name, st->n);
  free(st->ring);
  free(st);
  update_stats(ev);
}

/* Drop the oldest entry. A stream left empty gives its ring back; with its channel it is
 * no longer history's to hold, without one it stays (its position matters to a client
 * that reconnects) until the sweep or the total bound evicts it. */
static void drop_oldest(vx_events *ev, vx_stream *st) {
  vx_hentry *e = &st->ring[st->head];
  st->lost = e->offset;
  if (e->seq > st->lost_seq)
    st->lost_seq = e->seq;
  ev->hist_bytes -= ENTRY_COST(e->frame);
  vx__buf_unref(e->frame);
  st->head = (st->head + 1) % st->cap;
  if (--st->len)
    return;
  free(st->ring);
  st->ring = NULL;
  st->cap = st->head = 0;
  if (st->ch)
    unretain(ev, st);
}

/* History gives `st` up: its entries go, and the stream too unless its channel is open. */
static void evict(vx_events *ev, vx_stream *st) {
  while (st->len)
    drop_oldest(ev, st);
  if (st->ch)
    unretain(ev, st);
  else
    stream_free(ev, st);
}

/* Entries older than the age bound leave from the front. */
static void expire(vx_events *ev, vx_stream *st, uint64_t now) {
  uint64_t ttl = ev->opts.history_ttl_ms;
  while (st->len && now - st->ring[st->head].ms > ttl)
    drop_oldest(ev, st);
}

static bool grow(vx_stream *st, uint32_t limit) {
  uint32_t ncap = st->cap ? st->cap * 2 : 4;
  if (ncap > limit)
    ncap = limit;
  vx_hentry *nr = malloc(ncap * sizeof *nr);
  if (!nr)
    return false;
  for (uint32_t i = 0; i < st->len; i++)
    nr[i] = st->ring[(st->head + i) % st->cap];
  free(st->ring);
  st->ring = nr;
  st->cap = ncap;
  st->head = 0;
  return true;
}

static void not_kept(vx_stream *st, uint64_t offset, uint64_t seq) {
  st->lost = offset;
  if (seq > st->lost_seq)
    st->lost_seq = seq;
}

void vx__stream_append(vx_events *ev, vx_stream *st, uint64_t offset, uint64_t seq,
                       vx_buf *frame) {
  if (offset <= st->offset)
    return; /* already kept (a backplane's resend) */
  if (offset != st->offset + 1) {
    /* Entries in between never reached this stream: what it holds cannot be followed on
     * without a gap. */
    while (st->len)
      drop_oldest(ev, st);
    st->lost = offset - 1;
  }
  st->offset = offset;
  uint32_t limit = ev->opts.history_size;
  if (!limit || frame->len > ev->opts.history_max_bytes) {
    not_kept(st, offset, seq);
    return;
  }
  uint64_t now = uv_now(&ev->loop);
  expire(ev, st, now);
  if (st->len == limit)
    drop_oldest(ev, st);
  if (st->len == st->cap && !grow(st, limit)) {
    not_kept(st, offset, seq); /* out of memory: not kept, and said so on recovery */
    return;
  }
  retain(ev, st, now);
  st->ring[(st->head + st->len) % st->cap] =
      (vx_hentry){.offset = offset, .seq = seq, .ms = now, .frame = vx__buf_ref(frame)};
  st->len++;
  ev->hist_bytes += ENTRY_COST(frame);
  /* The total bound: the streams quiet the longest give up their history first; this one
   * only its oldest entries. */
  while (ev->hist_bytes > ev->opts.history_max_bytes && ev->lru_head) {
    vx_stream *s = ev->lru_head;
    if (s != st)
      evict(ev, s);
    else if (st->len)
      drop_oldest(ev, st);
    else
      break;
  }
  update_stats(ev);
}

void vx__stream_reset(vx_events *ev, vx_stream *st, const char *epoch, uint64_t offset) {
  while (st->len)
    drop_oldest(ev, st);
  size_t el = strlen(epoch);
  if (el > VX_EPOCH_MAX)
    el = VX_EPOCH_MAX;
  memcpy(st->epoch, epoch, el);
  st->epoch[el] = '\0';
  st->offset = offset;
  st->lost = offset;
  st->known = true;
  update_stats(ev);
}

void vx__stream_attach(vx_events *ev, vx_stream *st, vx_channel *ch) {
  st->ch = ch;
  if (!st->len)
    unretain(ev, st);
}

void vx__stream_detach(vx_events *ev, vx_stream *st) {
  st->ch = NULL;
  /* Kept for the age bound even without history: a client that saw its position and
   * reconnects soon recovers (nothing missed) instead of meeting a new epoch. */
  if (ev->opts.history_size)
    retain(ev, st, uv_now(&ev->loop));
  else if (!st->len)
    stream_free(ev, st);
  update_stats(ev);
}

const vx_hentry *vx__stream_at(const vx_stream *st, uint32_t i) {
  return &st->ring[(st->head + i) % st->cap];
}

const vx_hentry *vx__stream_from(vx_events *ev, vx_stream *st, uint64_t offset, uint32_t *idx) {
  expire(ev, st, uv_now(&ev->loop));
  if (!st->len)
    return NULL;
  uint64_t first = st->ring[st->head].offset;
  uint64_t i = offset <= first ? 0 : offset - first;
  if (i >= st->len)
    return NULL;
  if (idx)
    *idx = (uint32_t)i;
  return vx__stream_at(st, (uint32_t)i);
}

void vx__history_sweep(vx_events *ev) {
  uint64_t now = uv_now(&ev->loop), ttl = ev->opts.history_ttl_ms;
  /* touched >= the newest entry's time: a stream untouched for the age bound holds
   * nothing young enough to keep. Every stream after it was touched more recently. */
  while (ev->lru_head && now - ev->lru_head->touched > ttl)
    evict(ev, ev->lru_head);
  update_stats(ev);
}

void vx__history_free(vx_events *ev) {
  for (uint32_t i = 0; i < ev->streams.cap; i++) {
    vx_stream *st = ev->streams.slots[i].key ? ev->streams.slots[i].val : NULL;
    if (!st)
      continue;
    for (uint32_t k = 0; k < st->len; k++)
      vx__buf_unref(vx__stream_at(st, k)->frame);
    free(st->ring);
    free(st);
  }
  vx__map_free(&ev->streams);
  ev->lru_head = ev->lru_tail = NULL;
  ev->hist_bytes = 0;
}

/* ---- vx_history: a backend reads a channel's stream ---- */

typedef struct hq {
  vx_json_cb cb;
  void *data;
  uint64_t since;
  size_t n;
  char channel[VX_CHANNEL_MAX + 1];
} hq;

/* {"channel":..,"epoch":..,"offset":..,"complete":..,"events":[...]}: each event is the
 * payload of its WebSocket frame, the message exactly as clients get it. */
static void answer(const hq *q, const char *epoch, uint64_t last, bool complete,
                   vx_buf *const *frames, size_t n) {
  vx_str s = {0};
  char num[64];
  vx__str_addz(&s, "{\"channel\":");
  vx__str_add_json_string(&s, q->channel, q->n);
  vx__str_addz(&s, ",\"epoch\":");
  vx__str_add_json_string(&s, epoch, strlen(epoch));
  snprintf(num, sizeof num, ",\"offset\":%llu,\"complete\":%s,\"events\":[",
           (unsigned long long)last, complete ? "true" : "false");
  vx__str_addz(&s, num);
  for (size_t i = 0; i < n; i++) {
    size_t off = vx__frame_payload_offset(frames[i]);
    if (i)
      vx__str_addz(&s, ",");
    vx__str_add(&s, frames[i]->data + off, frames[i]->len - off);
  }
  vx__str_addz(&s, "]}");
  if (s.oom)
    q->cb(VX_ENOMEM, NULL, 0, q->data);
  else
    q->cb(0, s.p, s.len, q->data);
  vx__str_free(&s);
}

static void from_backplane(vx_events *ev, const vx_bp_history *h, void *ctx) {
  (void)ev;
  hq *q = ctx;
  if (h->status) {
    q->cb(h->status, NULL, 0, q->data);
  } else {
    bool complete = h->offset <= q->since || (h->n && h->offsets[0] <= q->since + 1);
    answer(q, h->epoch, h->offset, complete, h->frames, h->n);
  }
  free(q);
}

void vx__history_query(vx_events *ev, vx_cmd *c) {
  hq q0 = {c->u.history.cb, c->u.history.cb_data, c->u.history.since, 0, ""};
  const char *name = c->u.history.channel;
  q0.n = strlen(name);
  memcpy(q0.channel, name, q0.n + 1);
  uint32_t limit = c->u.history.limit ? c->u.history.limit : ev->opts.history_size;
  if (limit > 10000)
    limit = 10000;
  if (ev->bp.ops->history) { /* the cluster's stream */
    hq *q = malloc(sizeof *q);
    if (!q) {
      q0.cb(VX_ENOMEM, NULL, 0, q0.data);
      return;
    }
    *q = q0;
    ev->bp.ops->history(ev, name, q0.n, q0.since + 1, limit ? limit : 1, from_backplane, q);
    return;
  }
  vx_stream *st = vx__stream_get(ev, name, q0.n, false);
  if (!st) {
    answer(&q0, "", 0, q0.since == 0, NULL, 0);
    return;
  }
  uint32_t idx = 0;
  const vx_hentry *e = vx__stream_from(ev, st, q0.since + 1, &idx);
  size_t n = 0;
  vx_buf **frames = NULL;
  if (e && limit) {
    n = st->len - idx < limit ? st->len - idx : limit;
    frames = malloc(n * sizeof *frames);
    if (!frames) {
      q0.cb(VX_ENOMEM, NULL, 0, q0.data);
      return;
    }
    for (size_t i = 0; i < n; i++)
      frames[i] = vx__stream_at(st, idx + (uint32_t)i)->frame;
  }
  answer(&q0, st->epoch, st->offset, q0.since >= st->lost && q0.since <= st->offset, frames, n);
  free(frames);
}
