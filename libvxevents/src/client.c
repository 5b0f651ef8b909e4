/* Messages from WebSocket clients: subscribe, unsubscribe, ping, client events.
 * Every refusal is answered with a protocol message; the connection stays open. */
#include "vx_int.h"

#include <cjson/cJSON.h>
#include <string.h>

void vx__client_send_json(vx_conn *c, const char *json, size_t n) {
  if (c->state != VXC_WS || c->closed)
    return;
  vx_buf *b = vx__frame_text(json, n);
  if (!b) {
    vx__conn_terminate(c);
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

/* `channel` may be any client-supplied bytes: it is escaped, never trusted. */
static void send_sub_reply(vx_conn *c, const char *type, const char *channel, size_t clen,
                           const char *error) {
  if (clen > 256) { /* echo a prefix, cut on a character boundary */
    clen = 256;
    while (clen > 0 && ((uint8_t)channel[clen] & 0xC0) == 0x80)
      clen--;
  }
  vx_str s = {0};
  vx__str_addz(&s, "{\"type\":\"");
  vx__str_addz(&s, type);
  vx__str_addz(&s, "\",\"channel\":");
  vx__str_add_json_string(&s, channel, clen);
  if (error) {
    vx__str_addz(&s, ",\"error\":");
    vx__str_add_json_string(&s, error, strlen(error));
  }
  vx__str_addz(&s, "}");
  if (!s.oom)
    vx__client_send_json(c, s.p, s.len);
  vx__str_free(&s);
}

static bool has_prefix(const char *s, size_t n, const char *pfx) {
  size_t pl = strlen(pfx);
  return n >= pl && memcmp(s, pfx, pl) == 0;
}

static void on_subscribe(vx_conn *c, const cJSON *msg) {
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
  if (!cJSON_IsString(ch)) {
    send_sub_reply(c, "subscription_error", "", 0, "channel is required and must be a string");
    return;
  }
  const char *name = ch->valuestring;
  size_t n = strlen(name);
  if (!vx__channel_valid(name, n)) {
    send_sub_reply(c, "subscription_error", name, n,
                   "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)");
    return;
  }
  if (has_prefix(name, n, "private-") || has_prefix(name, n, "presence-")) {
    send_sub_reply(c, "subscription_error", name, n,
                   "private and presence channels need channel authorization, which this "
                   "server does not offer yet");
    return;
  }
  int r = vx__hub_subscribe(c, name, n);
  if (r == VX_EINVAL) {
    send_sub_reply(c, "subscription_error", name, n, "too many channels on this connection");
    return;
  }
  if (r != 0) {
    send_sub_reply(c, "subscription_error", name, n, "server out of memory");
    return;
  }
  send_sub_reply(c, "subscription_succeeded", name, n, NULL);
}

static void on_unsubscribe(vx_conn *c, const cJSON *msg) {
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
  if (!cJSON_IsString(ch)) {
    send_error(c, "unsubscribe needs a channel string");
    return;
  }
  vx__hub_unsubscribe(c, ch->valuestring, strlen(ch->valuestring));
}

static void on_client_event(vx_conn *c, const cJSON *msg) {
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(msg, "channel");
  const cJSON *evn = cJSON_GetObjectItemCaseSensitive(msg, "event");
  if (!cJSON_IsString(ch) || !cJSON_IsString(evn)) {
    send_error(c, "message needs channel and event strings");
    return;
  }
  send_error(c, "client events are only allowed on private and presence channels the "
                "connection is subscribed to");
}

void vx__client_message(vx_conn *c, const char *p, size_t n) {
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
    send_sub_reply(c, "subscription_error", shown, strlen(shown),
                   "invalid channel name (NUL characters are not allowed)");
  } else if (nul) {
    send_error(c, "NUL characters (\\u0000) are not allowed in messages");
  } else if (strcmp(type->valuestring, "subscribe") == 0) {
    on_subscribe(c, msg);
  } else if (strcmp(type->valuestring, "unsubscribe") == 0) {
    on_unsubscribe(c, msg);
  } else if (strcmp(type->valuestring, "ping") == 0) {
    vx__conn_send(c, c->ev->pong_msg);
  } else if (strcmp(type->valuestring, "message") == 0) {
    on_client_event(c, msg);
  } else {
    send_error(c, "unknown message type");
  }
  cJSON_Delete(msg);
}
