/* Messages from WebSocket clients: subscribe, unsubscribe, ping, client events.
 * Every refusal is answered with a protocol message; the connection stays open. */
#include "vx_int.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vx__client_send_json(vx_conn *c, const char *json, size_t n) {
  if (!VX_OPEN_AS(c, VXK_WS) || vx_has(c, VXC_F_CLOSED))
    return;
  vx_buf *b = vx__frame_text(json, n);
  if (!b) {
    vx__conn_oom(c);
    return;
  }
  vx__conn_send_owned(c, b);
}

static void send_error(vx_conn *c, const char *msg) {
  vx_str s = {0};
  vx__str_addz(&s, "{\"type\":\"error\",\"error\":");
  vx__str_add_json_string(&s, msg, strlen(msg));
  vx__str_addz(&s, "}");
  if (!s.oom)
    vx__client_send_json(c, s.p, s.len);
  vx__str_free(&s);
}

/* Private and presence subscriptions: the token must be this connection's signature of
 * this channel (and, for presence, of this exact channel_data). Returns NULL when it is,
 * or the reason for the subscription_error. */
static const char *check_token(vx_conn *c, const cJSON *msg, const char *name, size_t n,
                               bool presence, const cJSON **cd, int *why) {
  vx_events *ev = c->ev;
/* The reason's metric (VX_AUTH_REFUSAL_MAP) and its text. */
#define REFUSE(r, text) return (*why = VX_AR_##r, text)
  if (!ev->auth_secret)
    REFUSE(NO_SECRET, "private and presence channels are disabled: the server has no authSecret");
  const cJSON *auth = cJSON_GetObjectItemCaseSensitive(msg, "auth");
  if (!cJSON_IsString(auth) || !*auth->valuestring)
    REFUSE(NO_TOKEN, "auth token required (from the auth endpoint)");
  const char *tok = auth->valuestring;
  const char *colon = strchr(tok, ':');
  if (!colon || (size_t)(colon - tok) != VX_SOCKET_ID_LEN ||
      memcmp(tok, c->id, VX_SOCKET_ID_LEN) != 0) {
    if (colon)
      REFUSE(OTHER_SOCKET, "auth token was issued for another connection");
    REFUSE(MALFORMED, "malformed auth token");
  }
  *cd = NULL;
  if (presence) {
    *cd = cJSON_GetObjectItemCaseSensitive(msg, "channel_data");
    if (!*cd)
      *cd = cJSON_GetObjectItemCaseSensitive(msg, "channelData");
    if (!cJSON_IsString(*cd))
      REFUSE(NO_CHANNEL_DATA,
             "presence channels need channel_data (a JSON string from the auth endpoint)");
    if (strlen((*cd)->valuestring) > ev->opts.max_member_size)
      REFUSE(MEMBER_TOO_LARGE, "presence member (channel_data) is too large");
  }
  const char *cds = *cd ? (*cd)->valuestring : NULL;
  if (!vx__auth_verify(ev, c->id, name, n, cds, cds ? strlen(cds) : 0, tok, strlen(tok)))
    REFUSE(BAD_SIGNATURE, presence ? "invalid auth token for this channel and channel_data"
                                   : "invalid auth token for this channel");
#undef REFUSE
  return NULL;
}

int vx__recover_parse(const cJSON *msg, vx_recover *rec, const char **err);

static void on_subscribe(vx_conn *c, const cJSON *msg) {
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
  if (!cJSON_IsString(ch)) {
    vx__node_sub_reply(c, "", 0, "channel is required and must be a string", NULL, 0);
    return;
  }
  const char *name = ch->valuestring;
  size_t n = strlen(name);
  if (!vx__channel_valid(name, n)) {
    vx__node_sub_reply(c, name, n, "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)",
                       NULL, 0);
    return;
  }
  vx_chkind kind = vx__channel_kind(name, n);
  const cJSON *cd = NULL;
  if (kind != VX_CH_PUBLIC) {
    int why = 0;
    const char *refused = check_token(c, msg, name, n, kind == VX_CH_PRESENCE, &cd, &why);
    if (refused) {
      c->ev->m.auth_refusals[why]++;
      vx__log_at(c->ev, VX_LOG_INFO, c->id, name, "subscription refused: %s", refused);
      vx__node_sub_reply(c, name, n, refused, NULL, 0);
      return;
    }
  }
  vx_recover rec;
  const char *bad = NULL;
  int has_rec = vx__recover_parse(msg, &rec, &bad);
  if (has_rec < 0) {
    vx__node_sub_reply(c, name, n, bad, NULL, 0);
    return;
  }
  const char *member = cd ? cd->valuestring : NULL;
  const char *err = NULL;
  if (vx__node_subscribe_rec(c, name, n, member, member ? strlen(member) : 0,
                             has_rec ? &rec : NULL, &err) != 0)
    vx__node_sub_reply(c, name, n, err, NULL, 0);
}

/* The "recover" member of a subscribe (DESIGN §12): 1 with *rec filled, 0 when absent,
 * -1 with *err the reason when malformed. */
int vx__recover_parse(const cJSON *msg, vx_recover *rec, const char **err) {
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(msg, "recover");
  if (!r || cJSON_IsNull(r))
    return 0;
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(r, "offset");
  const cJSON *ep = cJSON_GetObjectItemCaseSensitive(r, "epoch");
  *err = "recover must be {\"offset\": <non-negative integer>, \"epoch\": \"<epoch from "
         "subscription_succeeded>\"}";
  if (!cJSON_IsObject(r) || !cJSON_IsNumber(off) || !cJSON_IsString(ep))
    return -1;
  double v = off->valuedouble;
  /* Integers up to 2^53 are exact in a double: larger offsets cannot be told apart. */
  if (!(v >= 0) || v > 9007199254740992.0 || v != (double)(uint64_t)v)
    return -1;
  size_t el = strlen(ep->valuestring);
  if (el == 0 || el > VX_EPOCH_MAX) {
    *err = "recover.epoch must be a string of 1 to 32 characters";
    return -1;
  }
  rec->kind = VX_REC_OFFSET;
  rec->offset = (uint64_t)v;
  memcpy(rec->epoch, ep->valuestring, el + 1);
  return 1;
}

static void on_unsubscribe(vx_conn *c, const cJSON *msg) {
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
  if (!cJSON_IsString(ch)) {
    send_error(c, "unsubscribe needs a channel string");
    return;
  }
  vx__node_unsubscribe(c, ch->valuestring, strlen(ch->valuestring));
}

/* Client events: only on private/presence channels the sender is subscribed to, rate
 * limited per connection (token bucket), rebroadcast to the channel except the sender
 * with the sender's data spliced verbatim. */
static void on_client_event(vx_conn *c, const cJSON *msg, const char *raw, size_t rawlen) {
  vx_events *ev = c->ev;
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
  const cJSON *evn = cJSON_GetObjectItemCaseSensitive(msg, "event");
  if (!cJSON_IsString(ch) || !cJSON_IsString(evn)) {
    send_error(c, "message needs channel and event strings");
    return;
  }
  const char *name = ch->valuestring;
  size_t n = strlen(name);
  size_t el = strlen(evn->valuestring);
  if (el == 0 || el > VX_EVENT_MAX) {
    send_error(c, "event must be a string of 1 to 200 bytes");
    return;
  }
  /* Presence identity and subscription state come only from the server: a client event
   * may not look like one of its messages. */
  if (vx__event_reserved(evn->valuestring, el)) {
    send_error(c, "client events may not use a reserved event name (connected, "
                  "member_added, member_removed, resumed, subscription_*, vx:*)");
    return;
  }
  if (vx__channel_kind(name, n) == VX_CH_PUBLIC || !vx__hub_is_subscribed(c, name, n)) {
    send_error(c, "client events are only allowed on private and presence channels the "
                  "connection is subscribed to");
    return;
  }
  if (ev->opts.client_events_per_sec == 0) {
    send_error(c, "client events are disabled on this server");
    return;
  }
  double rate = ev->opts.client_events_per_sec;
  uint64_t now = uv_now(&ev->loop);
  if (c->ce_last_ms == 0)
    c->ce_tokens = rate;
  else
    c->ce_tokens += (double)(now - c->ce_last_ms) * rate / 1000.0;
  if (c->ce_tokens > rate)
    c->ce_tokens = rate;
  c->ce_last_ms = now;
  if (c->ce_tokens < 1.0) {
    char m[96];
    snprintf(m, sizeof m, "client event rate limit exceeded (%u per second)",
             ev->opts.client_events_per_sec);
    send_error(c, m);
    return;
  }
  c->ce_tokens -= 1.0;
  const char *data = "null";
  size_t dl = 4;
  vx__json_field(raw, rawlen, "data", &data, &dl);
  int r = vx__node_client_event(c, name, n, evn->valuestring, el, data, dl);
  if (r) { /* e.g. the Redis backlog is full: delivered nowhere, and the sender hears it */
    char m[128];
    snprintf(m, sizeof m, "client event not sent: %s", vx_strerror(r));
    send_error(c, m);
    return;
  }
  if (ev->opts.on_client_event) {
    char *d = malloc(dl + 1);
    if (d) {
      memcpy(d, data, dl);
      d[dl] = '\0';
      ev->opts.on_client_event(c->id, name, evn->valuestring, d, dl, ev->opts.hook_data);
      free(d);
    }
  }
}

void vx__client_message(vx_conn *c, const char *p, size_t n) {
  c->ev->m.messages_in++;
  /* The core's own validator first: it rejects trailing text the parser would ignore. */
  cJSON *msg = vx__json_valid(p, n) ? cJSON_ParseWithLength(p, n) : NULL;
  if (!msg) {
    send_error(c, "malformed JSON");
    return;
  }
  /* The parser's C strings would stop at an escaped NUL: such a message is refused, never
   * acted on with a truncated name. */
  bool nul = vx__json_has_nul(p, n);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(msg, "type");
  if (!cJSON_IsObject(msg) || !cJSON_IsString(type)) {
    send_error(c, "message must be an object with a string \"type\"");
  } else if (nul && strcmp(type->valuestring, "subscribe") == 0) {
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
    const char *shown = cJSON_IsString(ch) ? ch->valuestring : "";
    vx__node_sub_reply(c, shown, strlen(shown),
                       "invalid channel name (NUL characters are not allowed)", NULL, 0);
  } else if (nul) {
    send_error(c, "NUL characters (\\u0000) are not allowed in messages");
  } else if (strcmp(type->valuestring, "subscribe") == 0) {
    on_subscribe(c, msg);
  } else if (strcmp(type->valuestring, "unsubscribe") == 0) {
    on_unsubscribe(c, msg);
  } else if (strcmp(type->valuestring, "ping") == 0) {
    vx__conn_send(c, c->ev->pong_msg);
  } else if (strcmp(type->valuestring, "message") == 0) {
    on_client_event(c, msg, p, n);
  } else {
    send_error(c, "unknown message type");
  }
  cJSON_Delete(msg);
}
