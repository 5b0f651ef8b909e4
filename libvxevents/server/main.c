/* vxevents-server: the standalone WebSocket event server.
 * Settings come from flags, then environment variables, then defaults. */
#include "vxevents.h"

#include <semaphore.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The options of the core come from its options table (vx_option_table): the flags, the
 * environment variables, the checks and --help cannot drift from the library. Only the
 * listening address is the server's own. */
static const char INTRO[] =
    "Usage: vxevents-server [options]\n"
    "\n"
    "Real-time event server: WebSocket and Server-Sent Events clients subscribe to channels,\n"
    "backends publish through the HTTP API. Every option can also be set through the\n"
    "environment variable shown; a flag wins over the environment.\n"
    "\n";
static const char OUTRO[] =
    "  -h, --help                   show this help and exit\n"
    "  -V, --version                print the version and exit\n"
    "\n"
    "Endpoints: GET PATH (WebSocket upgrade), POST PATH/auth (public channels only: the\n"
    "standalone server has no authorizer; apps sign tokens with the shared secret),\n"
    "GET SSE_PATH[?channels=a,b] (event stream), POST SSE_PATH/subscribe and /unsubscribe\n"
    "{connectionId, channel} (public channels), GET /health, POST /api/broadcast\n"
    "  {\"channel\"|\"channels\", \"event\", \"data\", \"except\"?}, POST /api/batch {\"batch\": "
    "[...]}.\n"
    "When ready, prints 'vxevents-server listening on http://HOST:PORT (websocket path PATH)'.\n"
    "With --tls-cert and --tls-key the port serves TLS only (wss://, https://); SIGHUP loads\n"
    "the certificate files again (open connections keep theirs; bad files keep the old ones).\n"
    "SIGINT or SIGTERM closes every client with 1001 and exits 0.\n";

/* Defaults of the server that differ from the library's. */
#define SERVER_SSE_PATH "/events"
#define SERVER_LANDING_PAGE 1

static const char *levels[] = {"error", "warn", "info", "debug"};

/* Every line the server writes to standard error, its own and the core's, goes through
 * vx_log_format: --log-format json makes each one a JSON object. */
static int log_json;

static void log_record(const vx_log_record *rec, void *data) {
  (void)data;
  char line[2048];
  size_t n = vx_log_format(rec, log_json, log_json ? NULL : "vxevents-server", line, sizeof line);
  fwrite(line, 1, n, stderr);
}

static void say(int level, const char *msg) {
  vx_log_record rec = {level, msg, NULL, NULL};
  log_record(&rec, NULL);
}

static int die(const char *fmt, const char *arg) {
  fprintf(stderr, "vxevents-server: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'vxevents-server --help'.\n");
  return 2;
}

/* Word-wrapped help: "  --flag VALUE" then the sentence, default and variable. */
static void usage(const vx_option_info *t, size_t n) {
  fputs(INTRO, stdout);
  printf("  %-28s %s\n", "--host HOST", "address to listen on (VX_HOST; default 0.0.0.0)");
  printf("  %-28s %s\n", "--port PORT",
         "TCP port, 0 = any free port (VX_PORT or PORT; default 3030)");
  printf("  %-28s %s\n  %-28s %s\n", "--log-format text|json",
         "standard error lines as text, or one JSON object each", "",
         "{level, time, message, socket_id?, channel?} (VX_LOG_FORMAT; default text)");
  for (size_t i = 0; i < n; i++) {
    char head[64], tail[128], text[1024];
    const char *meta = t[i].type == VX_OPT_UINT || t[i].type == VX_OPT_SIZE ? "N"
                       : t[i].type == VX_OPT_BOOL                           ? "0|1"
                       : t[i].type == VX_OPT_LEVEL                          ? "LEVEL"
                                                                            : "VALUE";
    snprintf(head, sizeof head, "--%s %s", t[i].flag, meta);
    if (strcmp(t[i].name, "sse_path") == 0)
      snprintf(tail, sizeof tail, "%s; default %s", t[i].env, SERVER_SSE_PATH);
    else if (strcmp(t[i].name, "landing_page") == 0)
      snprintf(tail, sizeof tail, "%s; default %d", t[i].env, SERVER_LANDING_PAGE);
    else if (t[i].type == VX_OPT_LEVEL)
      snprintf(tail, sizeof tail, "%s; default %s", t[i].env, levels[t[i].default_number & 3]);
    else if (t[i].default_string)
      snprintf(tail, sizeof tail, "%s; default %s", t[i].env, t[i].default_string);
    else if (t[i].type == VX_OPT_UINT || t[i].type == VX_OPT_SIZE || t[i].type == VX_OPT_BOOL)
      snprintf(tail, sizeof tail, "%s; default %llu", t[i].env,
               (unsigned long long)t[i].default_number);
    else
      snprintf(tail, sizeof tail, "%s", t[i].env);
    snprintf(text, sizeof text, "%s (%s)", t[i].help, tail);
    /* the help column starts at 31; wrap at 96 */
    const char *p = text;
    bool first = true;
    while (*p) {
      size_t room = 65, len = strlen(p);
      size_t cut = len;
      if (len > room) {
        cut = room;
        while (cut > 0 && p[cut] != ' ')
          cut--;
        if (cut == 0)
          cut = room;
      }
      if (first && strlen(head) > 28)
        printf("  %s\n  %-28s %.*s\n", head, "", (int)cut, p);
      else
        printf("  %-28s %.*s\n", first ? head : "", (int)cut, p);
      first = false;
      p += cut;
      while (*p == ' ')
        p++;
    }
  }
  fputs(OUTRO, stdout);
}

typedef struct {
  uint64_t unpublished;
  int status;
  sem_t done;
} shutdown_report;

static void on_shutdown(int status, uint64_t unpublished, void *data) {
  shutdown_report *r = data;
  r->status = status;
  r->unpublished = unpublished;
  sem_post(&r->done);
}

int main(int argc, char **argv) {
  size_t nopts = 0;
  const vx_option_info *table = vx_option_table(&nopts);
  enum { O_HOST = 1000, O_PORT, O_LOG_FORMAT, O_FIRST };
  enum { MAX_OPTS = 64 };
  struct option longopts[MAX_OPTS + 6];
  const char *vals[MAX_OPTS + 3] = {0}; /* [0] host, [1] port, [2] log format, then the table */
  if (nopts > MAX_OPTS) {
    fprintf(stderr, "vxevents-server: the options table outgrew this program\n");
    return 1;
  }
  memset(longopts, 0, sizeof longopts);
  size_t k = 0;
  longopts[k++] = (struct option){"host", required_argument, 0, O_HOST};
  longopts[k++] = (struct option){"port", required_argument, 0, O_PORT};
  longopts[k++] = (struct option){"log-format", required_argument, 0, O_LOG_FORMAT};
  for (size_t i = 0; i < nopts; i++)
    longopts[k++] = (struct option){table[i].flag, required_argument, 0, O_FIRST + (int)i};
  longopts[k++] = (struct option){"help", no_argument, 0, 'h'};
  longopts[k++] = (struct option){"version", no_argument, 0, 'V'};

  vals[0] = getenv("VX_HOST");
  vals[1] = getenv("VX_PORT") ? getenv("VX_PORT") : getenv("PORT");
  vals[2] = getenv("VX_LOG_FORMAT");
  for (size_t i = 0; i < nopts; i++) {
    vals[3 + i] = getenv(table[i].env);
    if (!vals[3 + i] && strcmp(table[i].name, "redis_url") == 0)
      vals[3 + i] = getenv("REDIS_URL");
  }
  int opt;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
    if (opt == 'h') {
      usage(table, nopts);
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

  if (vals[2]) {
    if (strcmp(vals[2], "json") == 0)
      log_json = 1;
    else if (strcmp(vals[2], "text") != 0)
      return die("--log-format must be text or json, not '%s'", vals[2]);
  }
  vx_options o;
  vx_options_init(&o);
  o.on_log_record = log_record;
  o.sse_path = SERVER_SSE_PATH;
  o.landing_page = SERVER_LANDING_PAGE;
  const char *host = vals[0] ? vals[0] : "0.0.0.0";
  int port = 3030;
  if (vals[1]) {
    char *end;
    long v = strtol(vals[1], &end, 10);
    if (!*vals[1] || *end || v < 0 || v > 65535)
      return die("--port must be a number from 0 to 65535, not '%s'", vals[1]);
    port = (int)v;
  }
  char err[512];
  for (size_t i = 0; i < nopts; i++) {
    if (!vals[3 + i])
      continue;
    /* --sse-path '' turns SSE off here, where it is on by default. */
    if (strcmp(table[i].name, "sse_path") == 0 && !*vals[3 + i]) {
      o.sse_path = NULL;
      continue;
    }
    if (vx_options_set(&o, table[i].flag, vals[3 + i], err, sizeof err) != 0) {
      fprintf(stderr, "vxevents-server: --%s\nTry 'vxevents-server --help'.\n", err);
      return 2;
    }
  }
  if (vx_options_check(&o, err, sizeof err) != 0) {
    fprintf(stderr, "vxevents-server: %s\nTry 'vxevents-server --help'.\n", err);
    return 2;
  }

  /* The loop thread blocks every signal itself; here SIGINT/SIGTERM are blocked before it
   * starts and then waited for synchronously, and SIGPIPE is ignored. */
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  vx_events *ev;
  char msg[600];
  int r = vx_new(&ev, &o);
  if (r) {
    snprintf(msg, sizeof msg, "cannot start: %s", vx_strerror(r));
    say(VX_LOG_ERROR, msg);
    return 1;
  }
  int bound = 0;
  r = vx_listen(ev, host, port, &bound);
  if (r) {
    snprintf(msg, sizeof msg, "cannot listen on %s:%d: %s", host, port, vx_strerror(r));
    say(VX_LOG_ERROR, msg);
    vx_free(ev);
    return 1;
  }
  const char *shown = host;
  const char *scheme = o.tls_cert ? "https" : "http";
  if (strchr(host, ':'))
    printf("vxevents-server listening on %s://[%s]:%d (websocket path %s)\n", scheme, shown, bound,
           o.path);
  else
    printf("vxevents-server listening on %s://%s:%d (websocket path %s)\n", scheme, shown, bound,
           o.path);
  fflush(stdout);

  int sig = 0;
  for (;;) {
    sigwait(&set, &sig);
    if (sig != SIGHUP)
      break;
    if (!o.tls_cert) {
      say(VX_LOG_WARN, "SIGHUP received: no TLS files to reload");
      continue;
    }
    r = vx_tls_reload(ev, err, sizeof err);
    if (r) {
      snprintf(msg, sizeof msg, "SIGHUP: TLS files not reloaded, the old ones stay: %s", err);
      say(VX_LOG_ERROR, msg);
    } else {
      say(VX_LOG_INFO, "SIGHUP: TLS certificate reloaded");
    }
  }
  snprintf(msg, sizeof msg, "%s received, closing connections",
           sig == SIGINT ? "SIGINT" : "SIGTERM");
  say(VX_LOG_INFO, msg);
  /* Up to 2 s for clients to finish and for Redis to acknowledge what was accepted; what it
   * could not publish is reported, and the exit status says so (3). */
  shutdown_report rep;
  memset(&rep, 0, sizeof rep);
  sem_init(&rep.done, 0, 0);
  if (vx_shutdown(ev, 2000, on_shutdown, &rep) == 0)
    while (sem_wait(&rep.done) != 0 && errno == EINTR)
      ;
  sem_destroy(&rep.done);
  vx_free(ev);
  if (rep.unpublished) {
    snprintf(msg, sizeof msg, "%llu broadcast(s) could not be published to Redis",
             (unsigned long long)rep.unpublished);
    say(VX_LOG_ERROR, msg);
    return 3;
  }
  return 0;
}
