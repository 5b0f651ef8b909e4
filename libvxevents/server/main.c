/* vxevents-server: the standalone WebSocket event server.
 * Settings come from flags, then environment variables, then defaults. */
#include "vxevents.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char USAGE[] =
    "Usage: vxevents-server [options]\n"
    "\n"
    "Real-time event server: WebSocket clients subscribe to channels, backends publish\n"
    "through the HTTP API. Every option can also be set through the environment variable\n"
    "shown; a flag wins over the environment.\n"
    "\n"
    "  --host HOST                  address to listen on (VX_HOST; default 0.0.0.0)\n"
    "  --port PORT                  TCP port, 0 = any free port (VX_PORT or PORT; default 3030)\n"
    "  --path PATH                  WebSocket endpoint path (VX_PATH; default /ws)\n"
    "  --api-key KEY                enable POST /api/broadcast and /api/batch, guarded by\n"
    "                               'Authorization: Bearer KEY' (VX_API_KEY; default: API off)\n"
    "  --ping-interval MS           keep-alive ping period; a client that has not answered by\n"
    "                               the next ping is dropped; 0 disables (VX_PING_INTERVAL; 30000)\n"
    "  --max-payload BYTES          largest client message or HTTP body; larger WebSocket\n"
    "                               messages close with 1009 (VX_MAX_PAYLOAD; 1048576)\n"
    "  --max-send-queue BYTES       unsent bytes allowed per connection; over it the client\n"
    "                               is closed with 1008 'slow consumer' (VX_MAX_SEND_QUEUE; 1048576)\n"
    "  --max-connections N          WebSocket connections; more get HTTP 503\n"
    "                               (VX_MAX_CONNECTIONS; 100000)\n"
    "  --max-channels-per-connection N\n"
    "                               subscriptions per connection (VX_MAX_CHANNELS_PER_CONNECTION; 100)\n"
    "  --auth-secret SECRET         HMAC-SHA256 key (at least 32 characters) that signs and\n"
    "                               verifies private-/presence- subscriptions; without it they\n"
    "                               are refused (VX_AUTH_SECRET)\n"
    "  --client-events-per-sec N    client events allowed per connection per second on\n"
    "                               private/presence channels; 0 disables (VX_CLIENT_EVENTS_PER_SEC; 10)\n"
    "  --sse-path PATH              Server-Sent Events endpoint; '' disables (VX_SSE_PATH; /events)\n"
    "  --heartbeat-interval MS      SSE comment heartbeat period (VX_HEARTBEAT_INTERVAL; 15000)\n"
    "  --retry-interval MS          reconnect delay told to SSE clients (VX_RETRY_INTERVAL; 3000)\n"
    "  --compression 0|1            accept permessage-deflate from WebSocket clients; a broadcast\n"
    "                               is compressed once for all of them (VX_COMPRESSION; 1)\n"
    "  --sse-history N              recent broadcasts kept (at most 4 MiB) for SSE streams that\n"
    "                               reconnect with Last-Event-ID; 0 = off (VX_SSE_HISTORY; 1000)\n"
    "  --redis URL                  redis://[[user]:password@]host[:port][/db]: share broadcasts\n"
    "                               with every instance on the same Redis (VX_REDIS_URL or\n"
    "                               REDIS_URL; default: single instance, all in memory)\n"
    "  --redis-prefix P             Redis key/channel prefix (VX_REDIS_PREFIX; vx)\n"
    "  --log-level LEVEL            error, warn, info or debug (VX_LOG_LEVEL; warn)\n"
    "  -h, --help                   show this help and exit\n"
    "  -V, --version                print the version and exit\n"
    "\n"
    "Endpoints: GET PATH (WebSocket upgrade), POST PATH/auth (public channels only: the\n"
    "standalone server has no authorizer; apps sign tokens with the shared secret),\n"
    "GET SSE_PATH[?channels=a,b] (event stream), POST SSE_PATH/subscribe and /unsubscribe\n"
    "{connectionId, channel} (public channels), GET /health, POST /api/broadcast\n"
    "  {\"channel\"|\"channels\", \"event\", \"data\", \"except\"?}, POST /api/batch {\"batch\": [...]}.\n"
    "When ready, prints 'vxevents-server listening on http://HOST:PORT (websocket path PATH)'.\n"
    "SIGINT or SIGTERM closes every client with 1001 and exits 0.\n";

static const char *levels[] = {"error", "warn", "info", "debug"};

static void log_cb(int level, const char *msg, void *data) {
  (void)data;
  fprintf(stderr, "vxevents-server: %s: %s\n", levels[level & 3], msg);
}

static int die(const char *fmt, const char *arg) {
  fprintf(stderr, "vxevents-server: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'vxevents-server --help'.\n");
  return 2;
}

static int parse_u64(const char *s, unsigned long long min, unsigned long long max,
                     unsigned long long *out) {
  if (!s || !*s)
    return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || s[0] == '-' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

enum {
  O_HOST = 1000, O_PORT, O_PATH, O_API_KEY, O_PING, O_MAX_PAYLOAD, O_MAX_SENDQ, O_MAX_CONN,
  O_MAX_CHAN, O_LOG, O_AUTH_SECRET, O_CLIENT_EVENTS, O_SSE_PATH, O_HEARTBEAT, O_RETRY, O_REDIS, O_REDIS_PREFIX, O_SSE_HISTORY, O_COMPRESSION
};

int main(int argc, char **argv) {
  const char *vals[O_COMPRESSION - O_HOST + 1] = {0};
  static const char *envs[] = {"VX_HOST",          "VX_PORT",          "VX_PATH",
                               "VX_API_KEY",       "VX_PING_INTERVAL", "VX_MAX_PAYLOAD",
                               "VX_MAX_SEND_QUEUE", "VX_MAX_CONNECTIONS",
                               "VX_MAX_CHANNELS_PER_CONNECTION", "VX_LOG_LEVEL",
                               "VX_AUTH_SECRET", "VX_CLIENT_EVENTS_PER_SEC", "VX_SSE_PATH",
                               "VX_HEARTBEAT_INTERVAL", "VX_RETRY_INTERVAL", "VX_REDIS_URL",
                               "VX_REDIS_PREFIX", "VX_SSE_HISTORY", "VX_COMPRESSION"};
  static const struct option longopts[] = {
      {"host", required_argument, 0, O_HOST},
      {"port", required_argument, 0, O_PORT},
      {"path", required_argument, 0, O_PATH},
      {"api-key", required_argument, 0, O_API_KEY},
      {"ping-interval", required_argument, 0, O_PING},
      {"max-payload", required_argument, 0, O_MAX_PAYLOAD},
      {"max-send-queue", required_argument, 0, O_MAX_SENDQ},
      {"max-connections", required_argument, 0, O_MAX_CONN},
      {"max-channels-per-connection", required_argument, 0, O_MAX_CHAN},
      {"log-level", required_argument, 0, O_LOG},
      {"auth-secret", required_argument, 0, O_AUTH_SECRET},
      {"client-events-per-sec", required_argument, 0, O_CLIENT_EVENTS},
      {"sse-path", required_argument, 0, O_SSE_PATH},
      {"heartbeat-interval", required_argument, 0, O_HEARTBEAT},
      {"retry-interval", required_argument, 0, O_RETRY},
      {"redis", required_argument, 0, O_REDIS},
      {"redis-prefix", required_argument, 0, O_REDIS_PREFIX},
      {"sse-history", required_argument, 0, O_SSE_HISTORY},
      {"compression", required_argument, 0, O_COMPRESSION},
      {"help", no_argument, 0, 'h'},
      {"version", no_argument, 0, 'V'},
      {0, 0, 0, 0}};
  for (int i = 0; i <= O_COMPRESSION - O_HOST; i++)
    vals[i] = getenv(envs[i]);
  if (!vals[O_REDIS - O_HOST])
    vals[O_REDIS - O_HOST] = getenv("REDIS_URL");
  if (!vals[O_PORT - O_HOST])
    vals[O_PORT - O_HOST] = getenv("PORT");
  int opt;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
    if (opt == 'h') {
      fputs(USAGE, stdout);
      return 0;
    }
    if (opt == 'V') {
      printf("vxevents-server %s\n", VX_VERSION_STRING);
      return 0;
    }
    if (opt == '?' || opt == ':')
      return die("unknown option or missing value: %s", argv[optind - 1]);
    vals[opt - O_HOST] = optarg;
  }
  if (optind < argc)
    return die("unexpected argument: %s", argv[optind]);

  vx_options o;
  vx_options_init(&o);
  o.on_log = log_cb;
  const char *host = vals[O_HOST - O_HOST] ? vals[O_HOST - O_HOST] : "0.0.0.0";
  unsigned long long v;
  int port = 3030;
  if (vals[O_PORT - O_HOST]) {
    if (parse_u64(vals[O_PORT - O_HOST], 0, 65535, &v))
      return die("--port must be a number from 0 to 65535, not '%s'", vals[O_PORT - O_HOST]);
    port = (int)v;
  }
  if (vals[O_PATH - O_HOST])
    o.path = vals[O_PATH - O_HOST];
  if (vals[O_API_KEY - O_HOST] && *vals[O_API_KEY - O_HOST])
    o.api_key = vals[O_API_KEY - O_HOST];
#define NUM(idx, field, min, max, what)                                                     \
  if (vals[idx - O_HOST]) {                                                                 \
    if (parse_u64(vals[idx - O_HOST], min, max, &v))                                \
      return die(what, vals[idx - O_HOST]);                                                 \
    o.field = v;                                                                            \
  }
  NUM(O_PING, ping_interval_ms, 0, 86400000, "--ping-interval must be milliseconds (0 to disable), not '%s'")
  NUM(O_MAX_PAYLOAD, max_payload, 64, 1ull << 30, "--max-payload must be 64 bytes to 1 GiB, not '%s'")
  NUM(O_MAX_SENDQ, max_send_queue, 1024, 1ull << 32, "--max-send-queue must be 1024 bytes to 4 GiB, not '%s'")
  NUM(O_MAX_CONN, max_connections, 1, 10000000, "--max-connections must be 1 to 10000000, not '%s'")
  NUM(O_HEARTBEAT, heartbeat_interval_ms, 0, 86400000, "--heartbeat-interval must be milliseconds (0 to disable), not '%s'")
  NUM(O_COMPRESSION, permessage_deflate, 0, 1, "--compression must be 1 (on) or 0 (off), not '%s'")
  NUM(O_SSE_HISTORY, sse_history, 0, 1000000, "--sse-history must be 0 to 1000000 events, not '%s'")
  NUM(O_RETRY, retry_interval_ms, 0, 86400000, "--retry-interval must be milliseconds, not '%s'")
  NUM(O_CLIENT_EVENTS, client_events_per_sec, 0, 100000, "--client-events-per-sec must be 0 to 100000, not '%s'")
  NUM(O_MAX_CHAN, max_channels_per_conn, 1, 100000, "--max-channels-per-connection must be 1 to 100000, not '%s'")
#undef NUM
  if (vals[O_LOG - O_HOST]) {
    int lv = -1;
    for (int i = 0; i < 4; i++)
      if (strcasecmp(vals[O_LOG - O_HOST], levels[i]) == 0)
        lv = i;
    if (lv < 0)
      return die("--log-level must be error, warn, info or debug, not '%s'", vals[O_LOG - O_HOST]);
    o.log_level = lv;
  }
  if (vals[O_AUTH_SECRET - O_HOST] && *vals[O_AUTH_SECRET - O_HOST]) {
    if (strlen(vals[O_AUTH_SECRET - O_HOST]) < 32) {
      fprintf(stderr, "vxevents-server: --auth-secret must be at least 32 characters (got %zu)\n",
              strlen(vals[O_AUTH_SECRET - O_HOST]));
      return 2;
    }
    o.auth_secret = vals[O_AUTH_SECRET - O_HOST];
  }
  if (vals[O_REDIS - O_HOST] && *vals[O_REDIS - O_HOST])
    o.redis_url = vals[O_REDIS - O_HOST];
  if (vals[O_REDIS_PREFIX - O_HOST] && *vals[O_REDIS_PREFIX - O_HOST])
    o.redis_prefix = vals[O_REDIS_PREFIX - O_HOST];
  o.sse_path = "/events";
  if (vals[O_SSE_PATH - O_HOST])
    o.sse_path = *vals[O_SSE_PATH - O_HOST] ? vals[O_SSE_PATH - O_HOST] : NULL;
  if (o.sse_path && (o.sse_path[0] != '/' || strpbrk(o.sse_path, "?# ") || strcmp(o.sse_path, o.path) == 0))
    return die("--sse-path must start with '/', contain no '?', '#' or spaces, and differ from --path: '%s'", o.sse_path);
  if (o.path[0] != '/' || strpbrk(o.path, "?# "))
    return die("--path must start with '/' and contain no '?', '#' or spaces: '%s'", o.path);

  /* The loop thread blocks every signal itself; here SIGINT/SIGTERM are blocked before it
   * starts and then waited for synchronously, and SIGPIPE is ignored. */
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  vx_events *ev;
  int r = vx_new(&ev, &o);
  if (r == VX_EINVAL && o.redis_url) {
    fprintf(stderr, "vxevents-server: --redis must look like redis://[[user]:password@]host[:port][/db] "
                    "(rediss:// is not supported yet): '%s'\n", o.redis_url);
    return 2;
  }
  if (r) {
    fprintf(stderr, "vxevents-server: cannot start: %s\n", vx_strerror(r));
    return 1;
  }
  int bound = 0;
  r = vx_listen(ev, host, port, &bound);
  if (r) {
    fprintf(stderr, "vxevents-server: cannot listen on %s:%d: %s\n", host, port, vx_strerror(r));
    vx_free(ev);
    return 1;
  }
  const char *shown = host;
  if (strchr(host, ':'))
    printf("vxevents-server listening on http://[%s]:%d (websocket path %s)\n", shown, bound, o.path);
  else
    printf("vxevents-server listening on http://%s:%d (websocket path %s)\n", shown, bound, o.path);
  fflush(stdout);

  int sig = 0;
  sigwait(&set, &sig);
  fprintf(stderr, "vxevents-server: %s received, closing connections\n",
          sig == SIGINT ? "SIGINT" : "SIGTERM");
  vx_close(ev, 2000, NULL, NULL);
  vx_free(ev);
  return 0;
}
