/* Server-Sent Events: GET {sse_path} streams the same JSON messages as the WebSocket
 * transport, each as "event: <type>\ndata: <json>\n\n" where <type> is the message's own
 * "type" (event, subscription_succeeded, ...), never the application's event name: a client
 * listens for 'event' and switches on message.event as it would on WebSocket, and can see
 * every channel event without knowing their names. Channel events carry an "id:" line too.
 * Subscriptions arrive over separate POST requests naming the stream's connectionId. A
 * broadcast's SSE bytes are built once, on its first SSE recipient (encode.c). */
#include "flow.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stream reconnecting with Last-Event-ID "<epoch>-<seq>": every channel it subscribes to
 * (its ?channels= now, POST subscribe later) recovers from there on the channel streams
 * (node.c), each subscription_succeeded saying "recovered", and once its ?channels= are
 * acknowledged "resumed" tells the outcome for all of them. An id of another epoch (another
 * single instance, a Redis whose history was lost) or a malformed one recovers nothing. */
static void resume_begin(vx_conn *c, const char *last_id) {
  vx_resume *rs = calloc(1, sizeof *rs);
  if (!rs) {
    vx__conn_oom(c);
    return;
  }
  rs->ok = true;
  rs->rec.kind = VX_REC_SEQ;
  const char *dash = strrchr(last_id, '-');
  size_t tl = dash ? (size_t)(dash - last_id) : 0;
  char *end = NULL;
  unsigned long long seq = dash && dash[1] >= '0' && dash[1] <= '9' ? strtoull(dash + 1, &end, 10) : 0;
  if (tl && tl <= VX_EPOCH_MAX && end && !*end) {
    memcpy(rs->rec.epoch, last_id, tl);
    rs->rec.epoch[tl] = '\0';
    rs->rec.offset = seq;
  } else {
    memcpy(rs->rec.epoch, "?", 2); /* no stream has this epoch: recovered:false */
  }
  c->resume = rs;
}

void vx__sse_send_json(vx_conn *c, const char *type, const char *json, size_t n) {
  if (vx_has(c, VXC_F_CLOSED) || !VX_OPEN_AS(c, VXK_SSE))
    return;
  vx_buf *b = vx__encode_sse(type, json, n, 0, "");
  if (b)
    vx__conn_send_owned(c, b);
  else
    vx__conn_oom(c);
}

void vx__sse_heartbeat_all(vx_events *ev) {
  for (vx_conn *c = ev->conns; c; c = c->next)
    if (VX_OPEN_AS(c, VXK_SSE))
      vx__conn_send(c, ev->heartbeat);
}

static int unhex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decode in place; false on a bad escape or a decoded NUL. */
static bool pct_decode(char *s, size_t *n) {
  size_t o = 0;
  for (size_t i = 0; i < *n; i++) {
    if (s[i] == '%') {
      if (i + 2 >= *n)
        return false;
      int a = unhex(s[i + 1]), b = unhex(s[i + 2]);
      if (a < 0 || b < 0 || (a == 0 && b == 0))
        return false;
      s[o++] = (char)(a * 16 + b);
      i += 2;
    } else {
      s[o++] = s[i] == '+' ? ' ' : s[i];
    }
  }
  *n = o;
  return true;
}

static void find_last_id(const char *query, char *last, size_t last_size) {
  for (const char *p = query; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t kl = amp ? (size_t)(amp - p) : strlen(p);
    if (kl > 12 && kl - 12 < last_size && strncmp(p, "lastEventId=", 12) == 0) {
      memcpy(last, p + 12, kl - 12);
      last[kl - 12] = 0;
      size_t n = kl - 12;
      if (!pct_decode(last, &n))
        n = 0;
      last[n] = 0;
    }
    p = amp ? amp + 1 : NULL;
  }
}

/* ?channels=a,b — public channels only (private ones need the POST route's authorizer). */
static void subscribe_query(vx_conn *c, const char *query) {
  const char *p = query;
  while (p && *p) {
    const char *amp = strchr(p, '&');
    size_t kl = amp ? (size_t)(amp - p) : strlen(p);
    if (kl > 9 && strncmp(p, "channels=", 9) == 0) {
      const char *v = p + 9, *end = p + kl;
      while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        size_t raw = comma ? (size_t)(comma - v) : (size_t)(end - v);
        size_t n = raw;
        char name[3 * VX_CHANNEL_MAX + 1];
        if (n && n < sizeof name) {
          memcpy(name, v, n);
          if (!pct_decode(name, &n) || !vx__channel_valid(name, n))
            vx__node_sub_reply(c, name, n, "invalid channel name", NULL, 0);
          else if (vx__channel_kind(name, n) != VX_CH_PUBLIC)
            vx__node_sub_reply(c, name, n, "private and presence channels need POST subscribe",
                               NULL, 0);
          else
            vx__node_subscribe_reply(c, name, n, NULL, 0);
        }
        v += raw + 1;
      }
    }
    p = amp ? amp + 1 : NULL;
  }
}

void vx__sse_start(vx_conn *c, const char *query, const char *last_event_id) {
  vx_events *ev = c->ev;
  if (ev->nws >= ev->opts.max_connections || ev->shutting_down) {
    if (ev->shutting_down)
      ev->m.rejected[VX_RJ_SHUTTING_DOWN]++;
    else
      ev->stats.rejected_connections++;
    vx__http_respond(c, 503, "Retry-After: 5\r\n",
                     ev->shutting_down ? "{\"error\":\"server shutting down\"}"
                                       : "{\"error\":\"too many connections\"}",
                     false);
    return;
  }
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                   "Cache-Control: no-cache\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n"
                   "\r\nretry: %u\n\n",
                   ev->opts.retry_interval_ms);
  vx_buf *b = vx__buf_new((size_t)n);
  if (!b) {
    vx__conn_oom(c);
    return;
  }
  memcpy(b->data, head, (size_t)n);
  vx__conn_send_owned(c, b);
  vx__random_id(ev, c->id);
  if (vx__map_put(&ev->sockets, c->id, VX_SOCKET_ID_LEN, c) != 0) {
    vx__conn_terminate(c);
    return;
  }
  c->kind = VXK_SSE;
  c->enc = VX_ENC_SSE;
  c->tp = &vx__transport_sse;
  vx_set(c, VXC_F_ANNOUNCED);
  c->deadline = 0;
  ev->nws++;
  vx__flow_join(c);
  char msg[160];
  n = snprintf(msg, sizeof msg,
               "{\"type\":\"event\",\"event\":\"connected\",\"data\":{\"connectionId\":\"%s\","
               "\"socketId\":\"%s\"}}",
               c->id, c->id);
  vx__sse_send_json(c, "event", msg, (size_t)n);
  if (ev->opts.on_connect)
    ev->opts.on_connect(c->id, ev->opts.hook_data);
  char qlast[64] = "";
  if (query)
    find_last_id(query, qlast, sizeof qlast);
  if (!last_event_id || !*last_event_id)
    last_event_id = qlast; /* ?lastEventId= for clients that cannot set the header */
  if (*last_event_id)
    resume_begin(c, last_event_id);
  if (query)
    subscribe_query(c, query);
  vx__node_resume_started(c);
}

/* ---- the SSE transport ---- */

static void sse_read(vx_conn *c, const uint8_t *p, size_t n) {
  (void)c; /* an event stream has nothing more to say after its request */
  (void)p;
  (void)n;
}

/* No close frame in SSE: finish what is queued, then end the stream. */
static void sse_close(vx_conn *c, uint16_t code, const char *reason) {
  (void)code;
  (void)reason;
  vx_set(c, VXC_F_CLOSE_AFTER_FLUSH);
  vx__conn_mark_dirty(c);
}

const vx_transport vx__transport_sse = {
    .name = "sse",
    .read = sse_read,
    .send_json = vx__sse_send_json,
    .close = sse_close,
};
