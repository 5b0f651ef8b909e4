/* Prometheus metrics: GET /metrics and vx_metrics, in text exposition format 0.0.4.
 *
 * One table (VX_METRICS_MAP) names every metric, its type, its help and where its value comes
 * from: a field of vx_stats (what vx_stats_get reports), of vx_metrics_state (the counters
 * only the metrics need, kept beside it in ev->m), or a family function for labelled series.
 * A new vx_stats counter is one V(...) row here.
 *
 * What it costs: the counters are plain increments on the loop thread; a broadcast's fan-out
 * time is two clock reads around its local delivery (none per recipient) and one bucket
 * search. The gauges that are not counted as they change (connections by transport,
 * subscriptions) are found by one walk of the connections when the text is rendered, which
 * only a scrape pays for. */
#include "http_int.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- what is counted where it happens ---- */

/* Upper bounds of the fan-out histogram's buckets, in ns (the labels are in seconds). */
static const uint64_t fanout_bounds[VX_FANOUT_BUCKETS] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 50000000};
static const char *const fanout_labels[VX_FANOUT_BUCKETS] = {
    "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025",
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.05"};

void vx__metrics_fanout(vx_events *ev, uint64_t ns) {
  vx_metrics_state *m = &ev->m;
  m->fanout_count++;
  m->fanout_ns += ns;
  for (int i = 0; i < VX_FANOUT_BUCKETS; i++)
    if (ns <= fanout_bounds[i]) {
      m->fanout[i]++;
      return;
    }
}

static const int api_codes[VX_API_CODES - 1] = {200, 400, 401, 403, 404, 405, 413, 500, 503, 504};

void vx__metrics_api_status(vx_events *ev, int status) {
  int i = 0;
  while (i < VX_API_CODES - 1 && api_codes[i] != status)
    i++;
  ev->m.api[i]++; /* VX_API_CODES - 1: any other status */
}

/* ---- the snapshot a rendering reads ---- */

typedef struct {
  vx_stats st;
  vx_metrics_state m;
  uint64_t by_enc[VX_ENC_COUNT]; /* open clients by encoding */
  uint64_t http;                 /* connections in their HTTP phase */
  uint64_t subs;
  bool redis;
  uint64_t redis_backlog;
} snap;

static void take(vx_events *ev, snap *s) {
  memset(s, 0, sizeof *s);
  vx__stats_fill(ev, &s->st);
  s->m = ev->m;
  for (vx_conn *c = ev->conns; c; c = c->next) {
    if (vx_has(c, VXC_F_CLOSED))
      continue;
    if (c->kind == VXK_HTTP)
      s->http++;
    else if (VX_IS_CLIENT(c) && c->enc < VX_ENC_COUNT)
      s->by_enc[c->enc]++;
    s->subs += c->nsubs;
  }
  s->redis = ev->redis_url != NULL;
  s->redis_backlog = atomic_load(&ev->redis_backlog);
}

/* ---- labelled families ---- */

static void sample(vx_str *o, const char *name, const char *labels, double v) {
  char line[320];
  int n;
  if (v >= 0 && v < 9007199254740992.0 && (double)(uint64_t)v == v)
    n = snprintf(line, sizeof line, "%s%s %llu\n", name, labels, (unsigned long long)v);
  else
    n = snprintf(line, sizeof line, "%s%s %.17g\n", name, labels, v);
  if (n > 0)
    vx__str_add(o, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void labelled(vx_str *o, const char *name, const char *label, const char *value,
                     double v) {
  char l[128];
  snprintf(l, sizeof l, "{%s=\"%s\"}", label, value);
  sample(o, name, l, v);
}

static void f_connections(const snap *s, vx_str *o, const char *name) {
  static const char *const names[VX_ENC_COUNT] = {"ws", "ws_deflate", "sse"};
  for (int i = 0; i < VX_ENC_COUNT; i++)
    labelled(o, name, "transport", names[i], (double)s->by_enc[i]);
}

static void f_rejected(const snap *s, vx_str *o, const char *name) {
  labelled(o, name, "reason", "max_connections", (double)s->st.rejected_connections);
  static const char *const names[VX_RJ_COUNT] = {
#define VX_RJ_LABEL(id, label) label,
      VX_REJECT_MAP(VX_RJ_LABEL)
#undef VX_RJ_LABEL
  };
  for (int i = 0; i < VX_RJ_COUNT; i++)
    labelled(o, name, "reason", names[i], (double)s->m.rejected[i]);
}

static void f_api(const snap *s, vx_str *o, const char *name) {
  for (int i = 0; i < VX_API_CODES; i++) {
    char code[16];
    if (i < VX_API_CODES - 1)
      snprintf(code, sizeof code, "%d", api_codes[i]);
    else
      snprintf(code, sizeof code, "other");
    labelled(o, name, "code", code, (double)s->m.api[i]);
  }
}

static void f_auth(const snap *s, vx_str *o, const char *name) {
  static const char *const names[VX_AR_COUNT] = {
#define VX_AR_LABEL(id, label) label,
      VX_AUTH_REFUSAL_MAP(VX_AR_LABEL)
#undef VX_AR_LABEL
  };
  for (int i = 0; i < VX_AR_COUNT; i++)
    labelled(o, name, "reason", names[i], (double)s->m.auth_refusals[i]);
}

static void f_redis_connected(const snap *s, vx_str *o, const char *name) {
  labelled(o, name, "connection", "commands", s->m.redis_ready[0]);
  labelled(o, name, "connection", "subscriber", s->m.redis_ready[1]);
}

static void f_fanout(const snap *s, vx_str *o, const char *name) {
  char n[96];
  snprintf(n, sizeof n, "%s_bucket", name);
  uint64_t cum = 0;
  for (int i = 0; i < VX_FANOUT_BUCKETS; i++) {
    cum += s->m.fanout[i];
    labelled(o, n, "le", fanout_labels[i], (double)cum);
  }
  labelled(o, n, "le", "+Inf", (double)s->m.fanout_count);
  snprintf(n, sizeof n, "%s_sum", name);
  sample(o, n, "", (double)s->m.fanout_ns / 1e9);
  snprintf(n, sizeof n, "%s_count", name);
  sample(o, n, "", (double)s->m.fanout_count);
}

/* ---- the table ----
 * V(name, type, help, value): one sample, `value` an expression of the snapshot `s`.
 * F(name, type, help, fn): labelled samples written by fn.
 * R*: the same, shown only when the instance has a Redis backplane.
 * Every name gets the prefix vxevents_. */
#define VX_METRICS_MAP(V, F, RV, RF)                                                               \
  F(connections, "gauge", "Open client connections by transport", f_connections)                   \
  V(http_connections, "gauge", "Connections still in their HTTP phase (requests, handshakes)",     \
    s->http)                                                                                       \
  V(subscriptions, "gauge", "Subscriptions (a connection on a channel) on this instance", s->subs) \
  V(channels, "gauge", "Channels with at least one subscriber on this instance", s->st.channels)   \
  V(messages_out_total, "counter",                                                                 \
    "Frames queued to connections: deliveries, replies and HTTP answers",                          \
    s->st.messages_delivered)                                                                      \
  V(bytes_out_total, "counter", "Bytes accepted by the kernel on client sockets",                  \
    s->st.bytes_written)                                                                           \
  V(messages_in_total, "counter", "WebSocket messages received from clients", s->m.messages_in)    \
  V(bytes_in_total, "counter", "Bytes read from client sockets", s->m.bytes_in)                    \
  V(slow_consumer_closes_total, "counter",                                                         \
    "Connections closed with 1008 for exceeding max_send_queue", s->st.slow_consumer_closes)       \
  V(ping_timeouts_total, "counter", "Connections dropped for not answering a ping in time",       \
    s->st.ping_timeouts)                                                                           \
  V(tls_errors_total, "counter", "TLS handshakes and records that failed (the connection was cut)", \
    s->st.tls_errors)                                                                              \
  F(rejected_connections_total, "counter", "Connections refused, by reason", f_rejected)           \
  F(api_requests_total, "counter", "HTTP publish API requests (/api/broadcast, /api/batch) by "    \
    "status code", f_api)                                                                          \
  F(auth_refusals_total, "counter", "Private and presence subscriptions and auth requests "        \
    "refused, by reason", f_auth)                                                                  \
  V(flow_paused_seconds_total, "counter",                                                          \
    "Time queued broadcasts waited for the send queues to drain (flow control)",                  \
    s->st.flow_paused_ms / 1e3)                                                                    \
  V(flow_wait_seconds_total, "counter", "Time producers waited for capacity", s->st.flow_wait_ms / 1e3) \
  V(flow_waits_total, "counter", "Broadcasts that found no capacity (EAGAIN)", s->st.flow_waits)  \
  V(flow_refused_total, "counter", "Publish API requests answered 503 after publish_wait",         \
    s->st.flow_refused)                                                                            \
  V(flow_lagging_total, "counter", "Connections that stopped pacing producers (slow_consumer_ms)", \
    s->st.flow_lagging)                                                                            \
  V(command_queue_bytes, "gauge", "Broadcast bytes accepted and not yet run", s->st.command_queue_bytes) \
  V(unsent_bytes, "gauge", "Unsent bytes of the connections that pace producers", s->st.unsent_bytes) \
  F(broadcast_fanout_seconds, "histogram",                                                         \
    "Time to hand one broadcast to every local recipient (framing and queueing, on the loop)",    \
    f_fanout)                                                                                      \
  RF(redis_connected, "gauge", "Redis connections up (1) or down (0)", f_redis_connected)          \
  RV(redis_reconnects_total, "counter", "Redis connections made again after being lost",          \
     s->m.redis_reconnects)                                                                        \
  RV(redis_backlog_bytes, "gauge",                                                                 \
     "Bytes of broadcasts Redis has not acknowledged yet (bounded by redis_backlog_max)",          \
     s->redis_backlog)

static void head(vx_str *o, const char *name, const char *type, const char *help) {
  vx__str_addz(o, "# HELP vxevents_");
  vx__str_addz(o, name);
  vx__str_addz(o, " ");
  vx__str_addz(o, help);
  vx__str_addz(o, "\n# TYPE vxevents_");
  vx__str_addz(o, name);
  vx__str_addz(o, " ");
  vx__str_addz(o, type);
  vx__str_addz(o, "\n");
}

void vx__metrics_render(vx_events *ev, vx_str *o) {
  snap sn, *s = &sn;
  take(ev, s);
  head(o, "info", "gauge", "Always 1; the version is a label");
  vx__str_addz(o, "vxevents_info{version=\"" VX_VERSION_STRING "\",backplane=\"");
  vx__str_addz(o, ev->bp.ops->name);
  vx__str_addz(o, "\"} 1\n");
#define EMIT_V(name, type, help, value)                                                            \
  head(o, #name, type, help);                                                                      \
  sample(o, "vxevents_" #name, "", (double)(value));
#define EMIT_F(name, type, help, fn)                                                               \
  head(o, #name, type, help);                                                                      \
  fn(s, o, "vxevents_" #name);
#define EMIT_RV(name, type, help, value)                                                           \
  if (s->redis) {                                                                                  \
    EMIT_V(name, type, help, value)                                                                \
  }
#define EMIT_RF(name, type, help, fn)                                                              \
  if (s->redis) {                                                                                  \
    EMIT_F(name, type, help, fn)                                                                   \
  }
  VX_METRICS_MAP(EMIT_V, EMIT_F, EMIT_RV, EMIT_RF)
#undef EMIT_V
#undef EMIT_F
#undef EMIT_RV
#undef EMIT_RF
}

/* ---- GET /metrics ---- */

void vx__metrics_route(vx_conn *c) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  bool ka = r->keep_alive && !ev->shutting_down;
  const char *token = ev->metrics_token ? ev->metrics_token : ev->api_key;
  if (!ev->opts.metrics || !token) {
    vx__http_error(c, 404,
                   ev->opts.metrics ? "metrics need a metrics token or an API key (Bearer)"
                                    : "Not found",
                   NULL, ka);
    return;
  }
  if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
    vx__http_error(c, 405, "Method not allowed", "Allow: GET\r\n", ka);
    return;
  }
  const hval *a = &r->h[H_AUTH];
  size_t kl = strlen(token);
  bool ok = a->seen && !a->overflow && !a->repeated && a->len == 7 + kl &&
            strncasecmp(a->v, "Bearer ", 7) == 0 && CRYPTO_memcmp(a->v + 7, token, kl) == 0;
  if (!ok) {
    vx__http_error(c, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n", ka);
    return;
  }
  vx_str s = {0};
  vx__metrics_render(ev, &s);
  if (s.oom)
    vx__http_error(c, 503, "out of memory", NULL, ka);
  else
    vx__http_respond_as(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, s.p, s.len,
                        r->method == HTTP_HEAD, ka);
  vx__str_free(&s);
}
