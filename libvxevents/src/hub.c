/* The hub: channels, subscriptions and broadcast.
 *
 * A channel holds an array of subscription pointers; a subscription knows its index, so
 * joining and leaving are O(1) (swap-remove). A broadcast builds its frame once and
 * queues a reference on every recipient: no allocation per recipient once each
 * connection's queue ring has grown to its working size. */
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
  return ch;
}

static void channel_drop_if_empty(vx_events *ev, vx_channel *ch) {
  if (ch->nsubs)
    return;
  vx__map_del(&ev->channels, ch->name, ch->name_len);
  free(ch->subs);
  free(ch);
}

bool vx__hub_is_subscribed(vx_conn *c, const char *name, size_t n) {
  for (uint32_t i = 0; i < c->nsubs; i++)
    if (c->subs[i]->ch->name_len == n && memcmp(c->subs[i]->ch->name, name, n) == 0)
      return true;
  return false;
}

int vx__hub_subscribe(vx_conn *c, const char *name, size_t n) {
  vx_events *ev = c->ev;
  if (vx__hub_is_subscribed(c, name, n))
    return 0;
  if (c->nsubs >= ev->opts.max_channels_per_conn)
    return VX_EINVAL;
  if (c->nsubs == c->subcap) {
    uint32_t ncap = c->subcap ? c->subcap * 2 : 2;
    vx_sub **ns = realloc(c->subs, ncap * sizeof *ns);
    if (!ns)
      return VX_ENOMEM;
    c->subs = ns;
    c->subcap = ncap;
  }
  vx_channel *ch = channel_get(ev, name, n, true);
  if (!ch)
    return VX_ENOMEM;
  if (ch->nsubs == ch->cap) {
    uint32_t ncap = ch->cap ? ch->cap * 2 : 4;
    vx_sub **ns = realloc(ch->subs, ncap * sizeof *ns);
    if (!ns) {
      channel_drop_if_empty(ev, ch);
      return VX_ENOMEM;
    }
    ch->subs = ns;
    ch->cap = ncap;
  }
  vx_sub *s = malloc(sizeof *s);
  if (!s) {
    channel_drop_if_empty(ev, ch);
    return VX_ENOMEM;
  }
  s->conn = c;
  s->ch = ch;
  s->idx = ch->nsubs;
  ch->subs[ch->nsubs++] = s;
  c->subs[c->nsubs++] = s;
  return 0;
}

static void sub_remove(vx_events *ev, vx_sub *s) {
  vx_channel *ch = s->ch;
  vx_sub *last = ch->subs[--ch->nsubs];
  ch->subs[s->idx] = last;
  last->idx = s->idx;
  free(s);
  channel_drop_if_empty(ev, ch);
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

int vx__hub_broadcast(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                      const char *event, size_t elen, const char *data, size_t dlen,
                      const char *except) {
  vx_conn *skip = NULL;
  if (except && strlen(except) == VX_SOCKET_ID_LEN)
    skip = vx__map_get(&ev->sockets, except, VX_SOCKET_ID_LEN);
  for (size_t k = 0; k < n; k++) {
    vx_channel *ch = channel_get(ev, channels[k], lens[k], false);
    if (!ch)
      continue;
    vx_buf *b = vx__envelope_frame(ch->name, ch->name_len, event, elen, data, dlen);
    if (!b)
      return VX_ENOMEM;
    for (uint32_t i = 0; i < ch->nsubs; i++) {
      vx_conn *c = ch->subs[i]->conn;
      if (c != skip)
        vx__conn_send(c, b);
    }
    vx__buf_unref(b);
    /* Slow consumers found in this walk are closed now, before any other walk. */
    vx__conn_process_doomed(ev);
  }
  return 0;
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
      for (uint32_t j = 0; j < ch->nsubs; j++)
        free(ch->subs[j]);
      free(ch->subs);
      free(ch);
    }
  }
  vx__map_free(&ev->channels);
  vx__map_free(&ev->sockets);
}
