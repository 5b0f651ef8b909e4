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
#include "vx_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void send_ack(vx_conn *c, const char *json, size_t len) {
  c->tp->send_json(c, "subscription_succeeded", json, len);
}

/* The answer to a subscribe, for either transport. Without `error` it is
 * subscription_succeeded (with {"members": ...} when `members` is given, presence channels),
 * sent when the channel is ready; otherwise subscription_error, sent at once. `channel` may
 * be any client-supplied bytes: it is escaped, and a long one is echoed as a prefix cut on a
 * character boundary. */
void vx__node_sub_reply(vx_conn *c, const char *channel, size_t clen, const char *error,
                        const char *members, size_t mlen) {
  if (clen > 256) {
    clen = 256;
    while (clen > 0 && ((uint8_t)channel[clen] & 0xC0) == 0x80)
      clen--;
  }
  vx_str s = {0};
  vx__str_addz(&s, error ? "{\"type\":\"subscription_error\",\"channel\":"
                         : "{\"type\":\"subscription_succeeded\",\"channel\":");
  vx__str_add_json_string(&s, channel, clen);
  if (error) {
    vx__str_addz(&s, ",\"error\":");
    vx__str_add_json_string(&s, error, strlen(error));
  }
  if (members) {
    vx__str_addz(&s, ",\"data\":{\"members\":");
    vx__str_add(&s, members, mlen);
    vx__str_addz(&s, "}");
  }
  vx__str_addz(&s, "}");
  if (!s.oom) {
    if (!error)
      vx__node_ack(c, channel, clen, s.p, s.len);
    else
      c->tp->send_json(c, "subscription_error", s.p, s.len);
  }
  vx__str_free(&s);
}

/* subscription_succeeded goes out now, or, while the backplane has not confirmed the
 * channel yet (a Redis SUBSCRIBE on its way), when it has (so that nothing published after
 * the ack is missed). */
void vx__node_ack(vx_conn *c, const char *name, size_t n, const char *json, size_t len) {
  vx_sub *s = vx__hub_sub_of(c, name, n);
  vx_events *ev = c->ev;
  if (s && !ev->bp.ops->channel_ready(ev, s->ch->name, s->ch->name_len)) {
    char *copy = malloc(len + 1);
    if (copy) {
      memcpy(copy, json, len);
      copy[len] = '\0';
      free(s->deferred_ack);
      s->deferred_ack = copy;
      return;
    }
  }
  send_ack(c, json, len);
}

static void channel_ready(vx_events *ev, const char *name, size_t n) {
  vx_channel *ch = vx__hub_channel(ev, name, n);
  if (!ch)
    return;
  for (uint32_t i = 0; i < ch->nsubs; i++) {
    vx_sub *s = ch->subs[i];
    if (s->deferred_ack) {
      char *a = s->deferred_ack;
      s->deferred_ack = NULL;
      send_ack(s->conn, a, strlen(a));
      free(a);
    }
  }
}

static const char *limit_text(int r) {
  return r == VX_EINVAL ? "too many channels on this connection" : "server out of memory";
}

int vx__node_subscribe(vx_conn *c, const char *name, size_t n, const char *member, size_t mlen,
                       const char **err) {
  vx_events *ev = c->ev;
  if (!vx__channel_valid(name, n)) {
    *err = "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)";
    return VX_ECHANNEL;
  }
  if (vx__channel_kind(name, n) != VX_CH_PRESENCE) {
    int r = vx__hub_subscribe(c, name, n);
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
  return vx__hub_subscribe_presence(c, name, n, m, err);
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
                   const char *except) {
  const char *names[1] = {channel};
  size_t lens[1] = {n};
  return vx__hub_deliver(ev, names, lens, 1, event, elen, data, dlen, extra, xlen, except);
}

const vx_backplane_handler vx__node_backplane_handler = {
    .deliver = deliver,
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
                   const char *uid, size_t uidlen, const char *except, size_t reserved) {
  char extra[32 + 256], mark[16 + 256];
  size_t xlen = client ? vx__client_extra(extra, uid, uidlen) : 0;
  size_t mlen = client ? client_mark(mark, uid, uidlen) : 0;
  int rc = ev->bp.ops->publish(ev, channels, lens, n, event, elen, data, dlen, mark, mlen, except,
                               reserved);
  if (rc)
    return rc;
  return vx__hub_deliver(ev, channels, lens, n, event, elen, data, dlen, extra, xlen, except);
}

int vx__node_broadcast(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                       const char *event, size_t elen, const char *data, size_t dlen,
                       const char *except) {
  return publish(ev, channels, lens, n, event, elen, data, dlen, false, NULL, 0, except, 0);
}

int vx__node_broadcast_reserved(vx_events *ev, const char *const *channels, const size_t *lens,
                                size_t n, const char *event, size_t elen, const char *data,
                                size_t dlen, const char *except, size_t reserved) {
  return publish(ev, channels, lens, n, event, elen, data, dlen, false, NULL, 0, except, reserved);
}

int vx__node_client_event(vx_conn *c, const char *name, size_t n, const char *event, size_t elen,
                          const char *data, size_t dlen) {
  vx_sub *s = vx__hub_sub_of(c, name, n);
  const char *uid = s && s->member ? s->member->id : NULL; /* <= 256 bytes (member_parse) */
  size_t uidlen = uid ? s->member->id_len : 0;
  const char *names[1] = {name};
  size_t lens[1] = {n};
  return publish(c->ev, names, lens, 1, event, elen, data, dlen, true, uid, uidlen, c->id, 0);
}

bool vx__event_reserved(const char *e, size_t n) {
  static const char *const exact[] = {"connected", "member_added", "member_removed", "resumed"};
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (n == strlen(exact[i]) && memcmp(e, exact[i], n) == 0)
      return true;
  return (n >= 13 && memcmp(e, "subscription_", 13) == 0) || (n >= 3 && memcmp(e, "vx:", 3) == 0);
}
