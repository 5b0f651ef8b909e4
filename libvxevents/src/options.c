/* The options table: one X-macro row per vx_options field gives its type, default, bounds,
 * vxevents-server flag, environment variable, the Node and Python option names, and help.
 * vx_options_init, vx_options_set (the one parser used by the server's flags and the
 * bindings), vx_options_check (the one validator, called by vx_new) and vx_option_table
 * (the server's --help, the bindings' lists) all read it, so none of them can drift. */
#include "vx_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define GiB (1024ull * 1024 * 1024)
#define DAY_MS 86400000ull

/* XX(field, type, default number, default string, min, max, flag, env, node, python, help)
 * Numbers are bounds of the value; for strings min/max bound the length. */
#define VX_OPTIONS_MAP(XX)                                                                         \
  XX(path, VX_OPT_PATH, 0, "/ws", 1, 200, "path", "VX_PATH", "path", "path",                       \
     "WebSocket endpoint path; POST PATH/auth is served beside it")                                \
  XX(ping_interval_ms, VX_OPT_UINT, 30000, NULL, 0, DAY_MS, "ping-interval", "VX_PING_INTERVAL",   \
     "pingInterval", "ping_interval",                                                              \
     "keep-alive ping period in ms; a client that has not answered by the next ping is "           \
     "dropped; 0 disables")                                                                        \
  XX(max_payload, VX_OPT_SIZE, MiB, NULL, 64, GiB, "max-payload", "VX_MAX_PAYLOAD",                \
     "maxPayloadSize", "max_payload",                                                              \
     "largest client message or HTTP body in bytes; larger WebSocket messages close with 1009")    \
  XX(max_send_queue, VX_OPT_SIZE, MiB, NULL, KiB, 4 * GiB, "max-send-queue", "VX_MAX_SEND_QUEUE",  \
     "maxSendQueue", "max_send_queue",                                                             \
     "unsent bytes allowed per connection; over it the client is closed with 1008 'slow "          \
     "consumer'")                                                                                  \
  XX(max_connections, VX_OPT_UINT, 100000, NULL, 1, 10000000, "max-connections",                   \
     "VX_MAX_CONNECTIONS", "maxConnections", "max_connections",                                    \
     "WebSocket and SSE connections; more get HTTP 503")                                           \
  XX(max_channels_per_conn, VX_OPT_UINT, 100, NULL, 1, 100000, "max-channels-per-connection",      \
     "VX_MAX_CHANNELS_PER_CONNECTION", "maxChannelsPerConnection", "max_channels_per_connection",  \
     "subscriptions per connection")                                                               \
  XX(api_key, VX_OPT_STRING, 0, NULL, 0, 4096, "api-key", "VX_API_KEY", NULL, "api_key",           \
     "enable POST /api/broadcast and /api/batch, guarded by 'Authorization: Bearer KEY'; "         \
     "empty = API off")                                                                            \
  XX(auth_secret, VX_OPT_SECRET, 0, NULL, 32, 4096, "auth-secret", "VX_AUTH_SECRET", "authSecret", \
     "auth_secret",                                                                                \
     "HMAC-SHA256 key (at least 32 characters) that signs and verifies private-/presence- "        \
     "subscriptions; without it they are refused")                                                 \
  XX(client_events_per_sec, VX_OPT_UINT, 10, NULL, 0, 100000, "client-events-per-sec",             \
     "VX_CLIENT_EVENTS_PER_SEC", "clientEventsPerSecond", "client_events_per_sec",                 \
     "client events allowed per connection per second on private/presence channels; 0 "            \
     "disables them")                                                                              \
  XX(max_member_size, VX_OPT_SIZE, 2048, NULL, 16, GiB, "max-member-size", "VX_MAX_MEMBER_SIZE",   \
     "maxMemberSize", "max_member_size", "bytes of a presence member's channel_data")              \
  XX(max_presence_members, VX_OPT_UINT, 10000, NULL, 1, UINT32_MAX, "max-presence-members",        \
     "VX_MAX_PRESENCE_MEMBERS", "maxPresenceMembers", "max_presence_members",                      \
     "members per presence channel")                                                               \
  XX(sse_path, VX_OPT_PATH, 0, NULL, 1, 200, "sse-path", "VX_SSE_PATH", NULL, "sse_path",          \
     "Server-Sent Events endpoint (with PATH/subscribe and /unsubscribe); empty = off")            \
  XX(heartbeat_interval_ms, VX_OPT_UINT, 15000, NULL, 0, DAY_MS, "heartbeat-interval",             \
     "VX_HEARTBEAT_INTERVAL", "heartbeatInterval", "heartbeat_interval",                           \
     "SSE comment heartbeat period in ms; 0 disables")                                             \
  XX(retry_interval_ms, VX_OPT_UINT, 3000, NULL, 0, DAY_MS, "retry-interval", "VX_RETRY_INTERVAL", \
     "retryInterval", "retry_interval", "reconnect delay in ms told to SSE clients")               \
  XX(permessage_deflate, VX_OPT_BOOL, 1, NULL, 0, 1, "compression", "VX_COMPRESSION",              \
     "compression", "compression",                                                                 \
     "accept permessage-deflate from WebSocket clients; a broadcast is compressed once for "       \
     "all of them (1 or 0)")                                                                       \
  XX(history_size, VX_OPT_UINT, 100, NULL, 0, 1000000, "history-size", "VX_HISTORY_SIZE",       \
     "historySize", "history_size",                                                                \
     "broadcasts kept per channel so a client that reconnects gets what it missed (WebSocket "     \
     "recover, SSE Last-Event-ID; replaces --sse-history); 0 = none")                              \
  XX(history_ttl_ms, VX_OPT_UINT, 300000, NULL, 1000, 7 * DAY_MS, "history-ttl",                   \
     "VX_HISTORY_TTL", "historyTtl", "history_ttl",                                                \
     "ms a broadcast stays in its channel's history; with Redis also when an idle channel's "      \
     "stream expires")                                                                             \
  XX(history_max_bytes, VX_OPT_SIZE, 4 * MiB, NULL, 0, 64 * GiB, "history-max-bytes",             \
     "VX_HISTORY_MAX_BYTES", "historyMaxBytes", "history_max_bytes",                               \
     "bytes of history kept in memory for all channels together; over it the channels quiet "      \
     "the longest lose theirs first")                                                              \
  XX(redis_url, VX_OPT_REDIS, 0, NULL, 0, 4096, "redis", "VX_REDIS_URL", "redis", "redis",         \
     "redis://[[user]:password@]host[:port][/db]: share broadcasts with every instance on the "    \
     "same Redis (also REDIS_URL); empty = single instance, all in memory")                        \
  XX(redis_prefix, VX_OPT_STRING, 0, "vx", 1, 60, "redis-prefix", "VX_REDIS_PREFIX",               \
     "redisPrefix", "redis_prefix", "Redis key and channel prefix")                                \
  XX(redis_backlog_max, VX_OPT_SIZE, 16 * MiB, NULL, 1, 1024 * GiB, "redis-backlog-max",           \
     "VX_REDIS_BACKLOG_MAX", "redisBacklogMax", "redis_backlog_max",                               \
     "bytes of broadcasts kept while Redis is unreachable; past it a broadcast fails with "        \
     "EBACKLOG (HTTP 503)")                                                                        \
  XX(redis_connect_timeout_ms, VX_OPT_UINT, 5000, NULL, 1, 3600000, "redis-connect-timeout",       \
     "VX_REDIS_CONNECT_TIMEOUT", "redisConnectTimeout", "redis_connect_timeout",                   \
     "ms a cluster-wide query (and close) waits for the Redis connection before failing with "     \
     "EUNAVAILABLE")                                                                               \
  XX(flow_high_water, VX_OPT_SIZE, 16 * MiB, NULL, 64 * KiB, 1024 * GiB, "flow-high-water",        \
     "VX_FLOW_HIGH_WATER", "flowHighWater", "flow_high_water",                                     \
     "unsent bytes of the connections past which broadcasts wait (flow control)")                  \
  XX(flow_low_water, VX_OPT_SIZE, 0, NULL, 0, 1024 * GiB, "flow-low-water", "VX_FLOW_LOW_WATER",    \
     "flowLowWater", "flow_low_water",                                                             \
     "waiting broadcasts go on once the unsent bytes drained to this (below flow-high-water); "    \
     "0 (or not below flow-high-water) = half of flow-high-water")                                 \
  XX(max_command_queue, VX_OPT_SIZE, 1 * MiB, NULL, 64 * KiB, 1024 * GiB, "max-command-queue",     \
     "VX_MAX_COMMAND_QUEUE", "maxCommandQueue", "max_command_queue",                               \
     "bytes of broadcasts accepted and not yet sent out; past it a broadcast waits for room")       \
  XX(socket_send_buffer, VX_OPT_SIZE, 256 * KiB, NULL, 0, 64 * MiB, "socket-send-buffer",          \
     "VX_SOCKET_SEND_BUFFER", "socketSendBuffer", "socket_send_buffer",                            \
     "kernel send buffer per connection (SO_SNDBUF); 0 = the kernel's own, autotuned (up to "      \
     "several MiB per connection, unseen by flow control)")                                        \
  XX(slow_consumer_ms, VX_OPT_UINT, 10000, NULL, 10, 600000, "slow-consumer-ms",                     \
     "VX_SLOW_CONSUMER_MS", "slowConsumerMs", "slow_consumer_ms",                                  \
     "ms in total a connection may hold broadcasts back before it stops pacing them (it is then "  \
     "closed with 1008 at max-send-queue unless it catches up)")                                   \
  XX(publish_wait_ms, VX_OPT_UINT, 5000, NULL, 0, 600000, "publish-wait", "VX_PUBLISH_WAIT", NULL, \
     "publish_wait",                                                                               \
     "ms a publish API request waits for capacity before 503 with Retry-After")                    \
  XX(log_level, VX_OPT_LEVEL, VX_LOG_WARN, NULL, 0, 3, "log-level", "VX_LOG_LEVEL", NULL,          \
     "log_level", "error, warn, info or debug")                                                    \
  /* operations: the Origin policy, metrics, the landing page (origin.c, metrics.c, http.c) */    \
  XX(allowed_origins, VX_OPT_STRING, 0, NULL, 0, 65536, "allowed-origins", "VX_ALLOWED_ORIGINS",   \
     "allowedOrigins", "allowed_origins",                                                          \
     "comma list of origins (https://app.example.com, http://localhost:5173) and patterns "        \
     "(*.example.com) whose pages may connect; others get 403; requests without Origin are "       \
     "allowed; empty = every origin")                                                              \
  XX(metrics, VX_OPT_BOOL, 1, NULL, 0, 1, "metrics", "VX_METRICS", NULL, "metrics",                \
     "serve GET /metrics (Prometheus text) to 'Authorization: Bearer' the metrics token, or the "  \
     "API key when there is none; without either it answers 404 (1 or 0)")                        \
  XX(metrics_token, VX_OPT_STRING, 0, NULL, 0, 4096, "metrics-token", "VX_METRICS_TOKEN", NULL,    \
     "metrics_token", "bearer token of GET /metrics; empty = the API key")                         \
  XX(landing_page, VX_OPT_BOOL, 0, NULL, 0, 1, "landing-page", "VX_LANDING_PAGE", NULL, NULL,      \
     "serve a demo page at GET / (connection state, subscribe, event log, publish) (1 or 0)")      \
  /* TLS (tls.c). The listener's files are given in Node as listen.tls, in Python as tls=. */      \
  XX(tls_cert, VX_OPT_STRING, 0, NULL, 1, MiB, "tls-cert", "VX_TLS_CERT", NULL, NULL,              \
     "PEM certificate chain (leaf first) for TLS on the listener: wss:// and https:// only, on "   \
     "the same port; reloaded on SIGHUP; with --tls-key")                                          \
  XX(tls_key, VX_OPT_STRING, 0, NULL, 1, MiB, "tls-key", "VX_TLS_KEY", NULL, NULL,                 \
     "PEM private key of --tls-cert (no passphrase)")                                              \
  XX(tls_ca, VX_OPT_STRING, 0, NULL, 1, MiB, "tls-ca", "VX_TLS_CA", NULL, NULL,                    \
     "PEM CA certificates: clients must present a certificate they signed; empty = none asked")   \
  XX(redis_tls_ca, VX_OPT_STRING, 0, NULL, 1, MiB, "redis-tls-ca", "VX_REDIS_TLS_CA", "redisTlsCa", \
     "redis_tls_ca", "rediss://: PEM CA certificates Redis's certificate is checked against; "     \
     "empty = the system's")                                                                       \
  XX(redis_tls_cert, VX_OPT_STRING, 0, NULL, 1, MiB, "redis-tls-cert", "VX_REDIS_TLS_CERT",        \
     "redisTlsCert", "redis_tls_cert",                                                             \
     "rediss://: PEM client certificate for Redis (its tls-auth-clients); with --redis-tls-key")   \
  XX(redis_tls_key, VX_OPT_STRING, 0, NULL, 1, MiB, "redis-tls-key", "VX_REDIS_TLS_KEY",           \
     "redisTlsKey", "redis_tls_key", "rediss://: PEM private key of --redis-tls-cert")             \
  XX(redis_tls_verify, VX_OPT_BOOL, 1, NULL, 0, 1, "redis-tls-verify", "VX_REDIS_TLS_VERIFY",      \
     "redisTlsVerify", "redis_tls_verify",                                                         \
     "rediss://: check Redis's certificate and host name (1 or 0; 0 only for tests)")

static const vx_option_info table[] = {
#define ROW(field, type, dnum, dstr, lo, hi, flag, env, node, py, help)                            \
  {                                                                                                \
      #field,                                                                                      \
      type,                                                                                        \
      (uint64_t)(dnum),                                                                            \
      dstr,                                                                                        \
      (uint64_t)(lo),                                                                              \
      (uint64_t)(hi),                                                                              \
      flag,                                                                                        \
      env,                                                                                         \
      node,                                                                                        \
      py,                                                                                          \
      help,                                                                                        \
      offsetof(vx_options, field)},
    VX_OPTIONS_MAP(ROW)
#undef ROW
};
#define NOPTS (sizeof table / sizeof table[0])

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const vx_option_info *vx_option_table(size_t *n) {
  if (n)
    *n = NOPTS;
  return table;
}

/* Every field in the table has one of these C types; a static check per row keeps the table's
 * types and the struct's in step. */
#define SIZE_OF_TYPE(t)                                                                            \
  ((t) == VX_OPT_UINT                          ? sizeof(uint32_t)                                  \
   : (t) == VX_OPT_SIZE                        ? sizeof(size_t)                                    \
   : (t) == VX_OPT_BOOL || (t) == VX_OPT_LEVEL ? sizeof(int)                                       \
                                               : sizeof(const char *))
#define CHECK_ROW(field, type, dnum, dstr, lo, hi, flag, env, node, py, help)                      \
  _Static_assert(sizeof(((vx_options *)0)->field) == SIZE_OF_TYPE(type),                           \
                 #field " has the wrong type");
VX_OPTIONS_MAP(CHECK_ROW)
#undef CHECK_ROW

static void put_num(vx_options *o, const vx_option_info *t, uint64_t v) {
  char *f = (char *)o + t->offset;
  switch (t->type) {
  case VX_OPT_UINT: {
    uint32_t x = (uint32_t)v;
    memcpy(f, &x, sizeof x);
    break;
  }
  case VX_OPT_SIZE: {
    size_t x = (size_t)v;
    memcpy(f, &x, sizeof x);
    break;
  }
  default: {
    int x = (int)v;
    memcpy(f, &x, sizeof x);
  }
  }
}

static uint64_t get_num(const vx_options *o, const vx_option_info *t) {
  const char *f = (const char *)o + t->offset;
  if (t->type == VX_OPT_UINT) {
    uint32_t x;
    memcpy(&x, f, sizeof x);
    return x;
  }
  if (t->type == VX_OPT_SIZE) {
    size_t x;
    memcpy(&x, f, sizeof x);
    return x;
  }
  int x;
  memcpy(&x, f, sizeof x);
  return x < 0 ? UINT64_MAX : (uint64_t)x;
}

static bool is_string(int type) {
  return type == VX_OPT_STRING || type == VX_OPT_PATH || type == VX_OPT_SECRET ||
         type == VX_OPT_REDIS;
}

void vx_options_init(vx_options *o) {
  memset(o, 0, sizeof *o);
  for (size_t i = 0; i < NOPTS; i++) {
    const vx_option_info *t = &table[i];
    if (is_string(t->type))
      memcpy((char *)o + t->offset, &t->default_string, sizeof t->default_string);
    else
      put_num(o, t, t->default_number);
  }
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static const vx_option_info *find(const char *name) {
  /* The SSE-only history of 0.1 became the channel streams' history_size. */
  if (strcmp(name, "sse_history") == 0 || strcmp(name, "sse-history") == 0 ||
      strcmp(name, "sseHistory") == 0)
    name = "history_size";
  for (size_t i = 0; i < NOPTS; i++) {
    const vx_option_info *t = &table[i];
    if (strcmp(name, t->name) == 0 || strcmp(name, t->flag) == 0 ||
        (t->node && strcmp(name, t->node) == 0) || (t->python && strcmp(name, t->python) == 0))
      return t;
  }
  return NULL;
}

/* The one check of a value against its row: the message names the option by `shown`. */
static int check_one(const vx_options *o, const vx_option_info *t, const char *shown, char *err,
                     size_t errlen) {
  if (is_string(t->type)) {
    const char *s;
    memcpy(&s, (const char *)o + t->offset, sizeof s);
    if (!s)
      return t->type == VX_OPT_PATH && t->default_string
                 ? fail(err, errlen, VX_EINVAL, "%s is required", shown)
                 : 0;
    size_t n = strlen(s);
    if (t->type == VX_OPT_SECRET && n < t->min)
      return fail(err, errlen, VX_ESECRET, "%s must be at least %llu characters (got %zu)", shown,
                  (unsigned long long)t->min, n);
    if (n < t->min || n > t->max)
      return fail(err, errlen, VX_EINVAL, "%s must be %llu to %llu characters (got %zu)", shown,
                  (unsigned long long)t->min, (unsigned long long)t->max, n);
    if (t->type == VX_OPT_PATH && (s[0] != '/' || strpbrk(s, "?# \r\n")))
      return fail(err, errlen, VX_EINVAL,
                  "%s must start with '/' and contain no '?', '#' or spaces: '%s'", shown, s);
    /* The URL is not echoed: it may hold a password. */
    if (t->type == VX_OPT_REDIS && vx__redis_url_valid(s) != 0)
      return fail(err, errlen, VX_EINVAL,
                  "%s must look like redis://[[user]:password@]host[:port][/db] (rediss:// for "
                  "TLS); the value given (not shown) does not",
                  shown);
    return 0;
  }
  uint64_t v = get_num(o, t);
  if (v < t->min || v > t->max)
    return fail(err, errlen, VX_EINVAL, "%s must be %llu to %llu (got %llu)", shown,
                (unsigned long long)t->min, (unsigned long long)t->max, (unsigned long long)v);
  return 0;
}

int vx_options_set(vx_options *o, const char *name, const char *value, char *err, size_t errlen) {
  if (!o || !name)
    return fail(err, errlen, VX_EINVAL, "no option given");
  const vx_option_info *t = find(name);
  if (!t)
    return fail(err, errlen, VX_EINVAL, "unknown option '%s'", name);
  if (!value)
    value = "";
  if (is_string(t->type)) {
    /* An empty value means the default: the API key, secret, SSE and Redis off; the path
     * and the prefix their default. */
    const char *s = *value ? value : t->default_string;
    memcpy((char *)o + t->offset, &s, sizeof s);
    return check_one(o, t, name, err, errlen);
  }
  uint64_t v = 0;
  if (t->type == VX_OPT_LEVEL || t->type == VX_OPT_BOOL) {
    static const char *const bools[] = {"0", "false", "off", "no", "1", "true", "on", "yes"};
    bool found = false;
    for (int i = 0; t->type == VX_OPT_LEVEL && i < 4; i++)
      if (strcasecmp(value, level_names[i]) == 0 || (value[0] == '0' + i && !value[1]))
        v = (uint64_t)i, found = true;
    for (int i = 0; t->type == VX_OPT_BOOL && i < 8; i++)
      if (strcasecmp(value, bools[i]) == 0)
        v = i >= 4, found = true;
    if (!found)
      return fail(err, errlen, VX_EINVAL,
                  t->type == VX_OPT_LEVEL ? "%s must be error, warn, info or debug, not '%s'"
                                          : "%s must be 1 (on) or 0 (off), not '%s'",
                  name, value);
  } else {
    char *end;
    errno = 0;
    v = strtoull(value, &end, 10);
    if (!*value || *end || value[0] == '-' || value[0] == '+' || errno)
      return fail(err, errlen, VX_EINVAL, "%s must be a whole number from %llu to %llu, not '%s'",
                  name, (unsigned long long)t->min, (unsigned long long)t->max, value);
    if (v < t->min || v > t->max)
      return fail(err, errlen, VX_EINVAL, "%s must be %llu to %llu, not '%s'", name,
                  (unsigned long long)t->min, (unsigned long long)t->max, value);
  }
  put_num(o, t, v);
  return 0;
}

int vx_options_check(const vx_options *o, char *err, size_t errlen) {
  if (!o)
    return fail(err, errlen, VX_EINVAL, "no options given");
  for (size_t i = 0; i < NOPTS; i++) {
    int r = check_one(o, &table[i], table[i].name, err, errlen);
    if (r)
      return r;
  }
  int ro = vx__origins_check(o->allowed_origins, err, errlen);
  if (ro)
    return ro;
  if (o->sse_path && strcmp(o->sse_path, o->path) == 0)
    return fail(err, errlen, VX_EINVAL, "sse_path must differ from path ('%s')", o->path);
  return vx__tls_check(o, err, errlen);
}

/* The public face of the socket-id rule (auth.c), for the bindings' routes. */
int vx_socket_id_valid(const char *id, size_t len) { return id && vx__socket_id_valid(id, len); }
