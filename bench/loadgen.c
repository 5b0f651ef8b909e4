/* loadgen — WebSocket fan-out load generator for vxevents-server (and its Node peer).
 *
 * One libuv loop, one thread. It opens N WebSocket connections (a minimal RFC 6455 client written
 * here: random Sec-WebSocket-Key with the Accept checked, masked client frames, unmasked server
 * frames with 7/16/64-bit lengths, several frames per read, fragments, ping -> pong), waits for
 * every `connected`, subscribes every connection to one channel, waits for every
 * `subscription_succeeded`, and then drives broadcasts through the server's own HTTP API over one
 * keep-alive connection. Every event's data carries the CLOCK_MONOTONIC send time in nanoseconds
 * and a sequence number, padded so the delivered JSON envelope is --envelope-bytes long.
 *
 * What it measures, inside a window that starts after --warmup and lasts --duration:
 *   - deliveries (event messages received by subscribers) and deliveries per second;
 *   - with --server-pid, the server's CPU seconds (utime+stime from /proc/PID/stat) and so
 *     deliveries per server-CPU-second, the figure that does not depend on how fast this
 *     generator is;
 *   - latency from the embedded timestamp to the read that delivered it (p50/p90/p99/max);
 *   - per connection, lost and duplicate sequence numbers. The server delivers one channel's
 *     events in order on each connection, so a gap is a loss and a step back is a duplicate
 *     (a reordering would show as one of each).
 * `--idle` instead holds the N subscribed connections and reports the server's VmRSS growth per
 * connection.
 *
 * Exit status: 0 ok, 1 bad usage, 2 setup failed (connect, handshake, subscribe, API error, a
 * connection closed by the server, a stalled closed loop), 3 finished but saw losses/duplicates.
 *
 * Cost notes: reads land in one shared 256 KiB buffer and are parsed in place; only the tail of a
 * frame cut by the end of a read is copied into the connection. Receive time is taken once per
 * read callback (every frame in one read arrived together). Event JSON is not fully parsed: the
 * generator finds "type", "event" and the two numbers it put into data by key.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define READ_BUF_SIZE (256 * 1024)
#define MAX_FRAME_PAYLOAD (16u * 1024 * 1024)
#define MAX_HANDSHAKE_BYTES 8192
#define RING_BITS 16
#define RING_SIZE (1u << RING_BITS)
#define RING_MASK (RING_SIZE - 1)
#define MAX_BATCH 100
#define SRC_SPREAD_THRESHOLD 5000

/* ------------------------------------------------------------------------------------------ */
/* options                                                                                     */

enum { MODE_CLOSED, MODE_PACED };

typedef struct {
  char host[64];
  int port;
  char path[256];
  char api_host[64];
  int api_port;
  const char *api_key;
  const char *channel;
  const char *event;
  const char *label;
  int nconns;
  int max_inflight;
  int mode;
  double rate;
  int batch;
  int window;
  double duration;
  double warmup;
  double drain;
  double setup_timeout;
  double stall_timeout;
  double hold;
  int idle;
  int server_pid;
  int envelope_bytes;
  int spread; /* -1 auto (N > 5000), 0 off, 1 on */
  int quiet;
} options_t;

static options_t opt = {
    .host = "127.0.0.1",
    .port = 3030,
    .path = "/ws",
    .api_host = "",
    .api_port = 0,
    .api_key = NULL,
    .channel = "bench",
    .event = "bench",
    .label = "",
    .nconns = 100,
    .max_inflight = 128,
    .mode = MODE_CLOSED,
    .rate = 0,
    .batch = 1,
    .window = 0,
    .duration = 10,
    .warmup = 2,
    .drain = 5,
    .setup_timeout = 60,
    .stall_timeout = 5,
    .hold = 3,
    .idle = 0,
    .server_pid = 0,
    .envelope_bytes = 120,
    .spread = -1,
    .quiet = 0,
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: loadgen --url ws://HOST:PORT/PATH [options]\n"
          "  --url URL             WebSocket endpoint (default ws://127.0.0.1:3030/ws)\n"
          "  --api-url URL         HTTP API base (default: http:// + host:port of --url)\n"
          "  --api-key KEY         bearer key of the server's publish API (required unless --idle)\n"
          "  --connections N       WebSocket connections, all subscribed to one channel (100)\n"
          "  --channel NAME        channel to subscribe and broadcast to (bench)\n"
          "  --event NAME          event name of the broadcasts (bench)\n"
          "  --mode closed|paced   closed: next request when the outstanding ones are delivered to\n"
          "                        every subscriber (see --window); paced: fixed rate (closed)\n"
          "  --rate R              paced mode: target deliveries/s (broadcasts/s = R / subscribers)\n"
          "  --batch B             broadcasts per request: 1 = POST /api/broadcast, >1 = POST\n"
          "                        /api/batch with B items, a burst (1, at most %d)\n"
          "  --window W            closed mode: broadcasts allowed outstanding (default = B)\n"
          "  --duration S          measured window in seconds (10)\n"
          "  --warmup S            unmeasured sending before the window (2)\n"
          "  --drain S             after the window, wait this long for outstanding deliveries (5)\n"
          "  --idle                only connect, subscribe and hold; report server RSS/connection\n"
          "  --hold S              --idle: seconds to hold the connections before measuring (3)\n"
          "  --server-pid PID      read the server's CPU time (and VmRSS for --idle) from /proc\n"
          "  --envelope-bytes N    size of the delivered JSON envelope (120)\n"
          "  --max-inflight N      connects in flight at once, until `connected` arrives (128)\n"
          "  --spread-src on|off   bind sources over 127.0.0.1..254 (default: on when N > %d)\n"
          "  --setup-timeout S     give up when not all connections are subscribed by then (60)\n"
          "  --stall-timeout S     closed mode: give up when nothing completes for this long (5)\n"
          "  --label TEXT          copied into the report\n"
          "  --quiet               only the JSON report on stdout\n"
          "Prints one human-readable line (stderr unless --quiet hides it) and one JSON line "
          "(stdout).\nExit: 0 ok, 1 usage, 2 setup/run failure, 3 losses or duplicates.\n",
          MAX_BATCH, SRC_SPREAD_THRESHOLD);
}

static int parse_hostport_url(const char *url, const char *scheme, char *host, size_t hostsz,
                              int *port, char *path, size_t pathsz) {
  size_t sl = strlen(scheme);
  if (strncmp(url, scheme, sl) != 0) return -1;
  const char *p = url + sl;
  const char *colon = strchr(p, ':');
  const char *slash = strchr(p, '/');
  if (!slash) slash = p + strlen(p);
  if (colon && colon < slash) {
    if ((size_t)(colon - p) >= hostsz || colon == p) return -1;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = 0;
    char *end;
    long v = strtol(colon + 1, &end, 10);
    if (end != slash || v <= 0 || v > 65535) return -1;
    *port = (int)v;
  } else {
    if ((size_t)(slash - p) >= hostsz || slash == p) return -1;
    memcpy(host, p, (size_t)(slash - p));
    host[slash - p] = 0;
    *port = 80;
  }
  if (path) {
    const char *pp = *slash ? slash : "/";
    if (strlen(pp) >= pathsz) return -1;
    strcpy(path, pp);
  }
  return 0;
}

static double arg_double(const char *flag, const char *v, double min, double max) {
  char *end;
  double d = strtod(v, &end);
  if (*v == 0 || *end != 0 || d < min || d > max) {
    fprintf(stderr, "loadgen: %s wants a number in [%g, %g], got '%s'\n", flag, min, max, v);
    exit(1);
  }
  return d;
}

static int arg_int(const char *flag, const char *v, long min, long max) {
  char *end;
  long d = strtol(v, &end, 10);
  if (*v == 0 || *end != 0 || d < min || d > max) {
    fprintf(stderr, "loadgen: %s wants an integer in [%ld, %ld], got '%s'\n", flag, min, max, v);
    exit(1);
  }
  return (int)d;
}

static void parse_args(int argc, char **argv) {
  const char *api_url = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      exit(0);
    }
    if (!strcmp(a, "--idle")) {
      opt.idle = 1;
      continue;
    }
    if (!strcmp(a, "--quiet")) {
      opt.quiet = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "loadgen: %s needs a value (or is unknown); see --help\n", a);
      exit(1);
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--url")) {
      if (parse_hostport_url(v, "ws://", opt.host, sizeof opt.host, &opt.port, opt.path,
                             sizeof opt.path)) {
        fprintf(stderr, "loadgen: --url must look like ws://127.0.0.1:3030/ws, got '%s'\n", v);
        exit(1);
      }
    } else if (!strcmp(a, "--api-url")) {
      api_url = v;
    } else if (!strcmp(a, "--api-key")) {
      opt.api_key = v;
    } else if (!strcmp(a, "--connections") || !strcmp(a, "-n")) {
      opt.nconns = arg_int(a, v, 1, 1000000);
    } else if (!strcmp(a, "--channel")) {
      opt.channel = v;
    } else if (!strcmp(a, "--event")) {
      opt.event = v;
    } else if (!strcmp(a, "--mode")) {
      if (!strcmp(v, "closed"))
        opt.mode = MODE_CLOSED;
      else if (!strcmp(v, "paced"))
        opt.mode = MODE_PACED;
      else {
        fprintf(stderr, "loadgen: --mode is closed or paced, got '%s'\n", v);
        exit(1);
      }
    } else if (!strcmp(a, "--rate")) {
      opt.rate = arg_double(a, v, 1, 1e9);
    } else if (!strcmp(a, "--batch")) {
      opt.batch = arg_int(a, v, 1, MAX_BATCH);
    } else if (!strcmp(a, "--window")) {
      opt.window = arg_int(a, v, 1, RING_SIZE / 4);
    } else if (!strcmp(a, "--duration")) {
      opt.duration = arg_double(a, v, 0.1, 3600);
    } else if (!strcmp(a, "--warmup")) {
      opt.warmup = arg_double(a, v, 0, 3600);
    } else if (!strcmp(a, "--drain")) {
      opt.drain = arg_double(a, v, 0.1, 600);
    } else if (!strcmp(a, "--hold")) {
      opt.hold = arg_double(a, v, 0, 3600);
    } else if (!strcmp(a, "--server-pid")) {
      opt.server_pid = arg_int(a, v, 1, INT_MAX);
    } else if (!strcmp(a, "--envelope-bytes")) {
      opt.envelope_bytes = arg_int(a, v, 0, 1 << 20);
    } else if (!strcmp(a, "--max-inflight")) {
      opt.max_inflight = arg_int(a, v, 1, 100000);
    } else if (!strcmp(a, "--spread-src")) {
      if (!strcmp(v, "on"))
        opt.spread = 1;
      else if (!strcmp(v, "off"))
        opt.spread = 0;
      else {
        fprintf(stderr, "loadgen: --spread-src is on or off\n");
        exit(1);
      }
    } else if (!strcmp(a, "--setup-timeout")) {
      opt.setup_timeout = arg_double(a, v, 0.1, 3600);
    } else if (!strcmp(a, "--stall-timeout")) {
      opt.stall_timeout = arg_double(a, v, 0.1, 3600);
    } else if (!strcmp(a, "--label")) {
      opt.label = v;
    } else {
      fprintf(stderr, "loadgen: unknown option %s; see --help\n", a);
      exit(1);
    }
  }
  if (api_url) {
    if (parse_hostport_url(api_url, "http://", opt.api_host, sizeof opt.api_host, &opt.api_port,
                           NULL, 0)) {
      fprintf(stderr, "loadgen: --api-url must look like http://127.0.0.1:3030, got '%s'\n",
              api_url);
      exit(1);
    }
  } else {
    strcpy(opt.api_host, opt.host);
    opt.api_port = opt.port;
  }
  if (!opt.idle && !opt.api_key) {
    fprintf(stderr, "loadgen: --api-key is required to drive broadcasts (or use --idle)\n");
    exit(1);
  }
  if (opt.mode == MODE_PACED && opt.rate <= 0 && !opt.idle) {
    fprintf(stderr, "loadgen: --mode paced needs --rate R (deliveries per second)\n");
    exit(1);
  }
  if (opt.window == 0) opt.window = opt.batch;
  if (opt.window < opt.batch) {
    fprintf(stderr, "loadgen: --window (%d) must be at least --batch (%d)\n", opt.window,
            opt.batch);
    exit(1);
  }
  if (opt.spread < 0) opt.spread = opt.nconns > SRC_SPREAD_THRESHOLD;
  for (const char *c = opt.channel; *c; c++) {
    if (!isalnum((unsigned char)*c) && !strchr("_-=@,.;:/", *c)) {
      fprintf(stderr, "loadgen: channel name '%s' has characters the protocol refuses\n",
              opt.channel);
      exit(1);
    }
  }
  for (const char *c = opt.event; *c; c++) {
    if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
      fprintf(stderr, "loadgen: event name must not need JSON escaping\n");
      exit(1);
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* utime+stime of a whole process (all its threads) in seconds, or -1. Fields 14 and 15 of
 * /proc/PID/stat, counted after the ')' that ends the command name (which may hold spaces). */
static double proc_cpu_s(int pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  p++;
  unsigned long long ut = 0, st = 0;
  /* after ')': state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9) minflt(10)
   * cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) */
  if (sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -1;
  long hz = sysconf(_SC_CLK_TCK);
  return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/* A "Key:   123 kB" line of /proc/PID/status in bytes, or -1. */
static long long proc_status_bytes(int pid, const char *key) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long long v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, key, kl) && line[kl] == ':') {
      v = strtoll(line + kl + 1, NULL, 10) * 1024;
      break;
    }
  }
  fclose(f);
  return v;
}

static void fill_random(void *p, size_t n) {
  uint8_t *b = p;
  while (n > 0) {
    ssize_t r = getrandom(b, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      perror("loadgen: getrandom");
      exit(2);
    }
    b += r;
    n -= (size_t)r;
  }
}

/* Masking keys only need to be unpredictable to the peer's intermediaries, not secret: a
 * xorshift generator seeded from getrandom() keeps the per-frame cost at a few instructions. */
static uint64_t prng_state;
static uint32_t prng32(void) {
  uint64_t x = prng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  prng_state = x;
  return (uint32_t)(x >> 16);
}

static const char *memmem_str(const char *hay, size_t n, const char *needle) {
  return memmem(hay, n, needle, strlen(needle));
}

static int ascii_ieq(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i])) return 0;
  return 1;
}

/* Finds `"key"` (pat, already quoted) followed by optional spaces and ':' and returns where its
 * value starts (spaces skipped), or NULL. Good enough for the flat, known messages of this
 * protocol; the JV() macro quotes a literal key at compile time. */
#define JV(s, n, key) json_value((s), (n), "\"" key "\"", sizeof(key) + 1)
static const char *json_value(const char *s, size_t n, const char *pat, size_t pl) {
  const char *end = s + n;
  const char *p = s;
  while (p < end) {
    const char *k = memmem(p, (size_t)(end - p), pat, pl);
    if (!k) return NULL;
    const char *q = k + pl;
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
    if (q < end && *q == ':') {
      q++;
      while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
      return q < end ? q : NULL;
    }
    p = k + 1;
  }
  return NULL;
}

/* The string value (no escapes expected) that starts at v, as pointer + length, or NULL. */
static const char *json_str_at(const char *v, const char *end, size_t *len) {
  if (!v || v >= end || *v != '"') return NULL;
  v++;
  const char *e = memchr(v, '"', (size_t)(end - v));
  if (!e) return NULL;
  *len = (size_t)(e - v);
  return v;
}
#define JSTR(s, n, key, lenp) json_str_at(JV(s, n, key), (s) + (n), (lenp))

/* The unsigned integer that starts at v, or -1. */
static int json_u64_at(const char *v, const char *end, uint64_t *out) {
  if (!v || v >= end || *v < '0' || *v > '9') return -1;
  uint64_t x = 0;
  while (v < end && *v >= '0' && *v <= '9') x = x * 10 + (uint64_t)(*v++ - '0');
  *out = x;
  return 0;
}

static int str_is(const char *p, size_t n, const char *lit) {
  return p && strlen(lit) == n && memcmp(p, lit, n) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* latency histogram: 1 us buckets below 10 ms, 1 ms buckets from 10 ms to 10 s, then overflow */

#define H_US 10000
#define H_MS 9990
#define H_N (H_US + H_MS + 1)
static uint64_t hist[H_N];
static uint64_t hist_count, hist_max_ns;

static void hist_add(uint64_t ns) {
  size_t i;
  if (ns < 10000000u)
    i = ns / 1000;
  else if (ns < 10000000000ull)
    i = H_US + (ns / 1000000u - 10);
  else
    i = H_N - 1;
  hist[i]++;
  hist_count++;
  if (ns > hist_max_ns) hist_max_ns = ns;
}

/* Percentile in milliseconds, as the middle of the bucket that holds it. */
static double hist_pct_ms(double pct) {
  if (hist_count == 0) return -1;
  uint64_t rank = (uint64_t)(pct / 100.0 * (double)hist_count);
  if (rank >= hist_count) rank = hist_count - 1;
  uint64_t acc = 0;
  for (size_t i = 0; i < H_N; i++) {
    acc += hist[i];
    if (acc > rank) {
      if (i < H_US) return (i + 0.5) / 1000.0;
      if (i < H_N - 1) return (double)(i - H_US + 10) + 0.5;
      return hist_max_ns / 1e6;
    }
  }
  return hist_max_ns / 1e6;
}

/* ------------------------------------------------------------------------------------------ */
/* state                                                                                       */

enum {
  C_IDLE,        /* not started */
  C_CONNECTING,  /* TCP connect in progress */
  C_HANDSHAKE,   /* upgrade request sent, waiting for 101 */
  C_OPEN,        /* 101 received, waiting for `connected` */
  C_SUBSCRIBING, /* subscribe sent */
  C_SUBSCRIBED,
  C_CLOSED
};

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uint32_t idx;
  uint8_t state;
  uint8_t frag_op;
  char accept[32];   /* the Sec-WebSocket-Accept we expect */
  uint8_t *pend;     /* handshake bytes, or the head of a frame cut by the end of a read */
  uint32_t pend_len, pend_cap;
  uint8_t *frag;     /* payload of a fragmented message being reassembled */
  uint32_t frag_len, frag_cap;
  uint64_t next_seq; /* next sequence number expected */
  uint64_t lost, dup;
} conn_t;

enum { P_SETUP, P_HOLD, P_WARMUP, P_MEASURE, P_DRAIN, P_DONE };

static uv_loop_t *loop;
static conn_t *conns;
static struct sockaddr_in ws_addr, api_addr;
static int phase = P_SETUP;
static int n_started, n_inflight, n_connected, n_waiting_sub, n_subscribed, n_failed;
static size_t event_len;
static char first_error[512];
static int fatal_rc;         /* 0, or the exit code a failure asks for */
static uint64_t t_start, t_subscribed, t0, t1;
static double cpu0 = -1, cpu1 = -1, self_cpu0, self_cpu1;
static long long rss_before = -1, rss_after = -1, anon_before = -1, anon_after = -1;
static uint32_t ring[RING_SIZE];
static uint64_t seq_next;      /* next sequence number to send = broadcasts sent */
static uint64_t completed;     /* broadcasts received by every subscriber */
static uint64_t delivered_total, delivered_window, sent_at_t0, sent_at_t1;
static uint64_t total_lost, total_dup, n_other_msgs, n_error_msgs, n_pings;
static uint64_t last_progress_ns;
static uint64_t recv_now;      /* receive time of the read being parsed */
static int closes_by_code[4];  /* 1000/1001, 1008, 1009, other */
static uint64_t paced_next_ns, paced_interval_ns, paced_skipped;
static uv_timer_t phase_timer, tick_timer, deadline_timer;
static char read_buf[READ_BUF_SIZE];

static void set_error(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(int rc, const char *fmt, ...) {
  if (first_error[0] == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof first_error, fmt, ap);
    va_end(ap);
  }
  if (rc > fatal_rc) fatal_rc = rc;
}

static void finish(void);
static void start_phase_after_subscribe(void);
static void maybe_send(void);
static void connector(void);
static void setup_check(void);

/* ------------------------------------------------------------------------------------------ */
/* writes                                                                                      */

typedef struct {
  uv_write_t req;
  char data[];
} wbuf_t;

static void on_write_done(uv_write_t *req, int status) {
  (void)status; /* a failed write shows up as a read error / close on the same stream */
  free(req);
}

/* Writes now if the socket takes it (uv_try_write refuses while writes are queued, so order is
 * kept); queues a copy of whatever is left. Returns 0 or a libuv error. */
static int stream_write(uv_stream_t *s, const void *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_try_write(s, &b, 1);
  if (n == (int)len) return 0;
  if (n < 0 && n != UV_EAGAIN) return n;
  if (n < 0) n = 0;
  size_t rest = len - (size_t)n;
  wbuf_t *w = malloc(sizeof *w + rest);
  if (!w) return UV_ENOMEM;
  memcpy(w->data, (const char *)data + n, rest);
  uv_buf_t rb = uv_buf_init(w->data, (unsigned)rest);
  int r = uv_write(&w->req, s, &rb, 1, on_write_done);
  if (r) free(w);
  return r;
}

/* A masked client frame (RFC 6455 §5.3). */
static int ws_send(conn_t *c, int opcode, const void *payload, size_t len) {
  uint8_t stackbuf[512];
  uint8_t *f = len + 14 <= sizeof stackbuf ? stackbuf : malloc(len + 14);
  if (!f) return UV_ENOMEM;
  size_t h = 0;
  f[h++] = (uint8_t)(0x80 | opcode);
  if (len < 126) {
    f[h++] = (uint8_t)(0x80 | len);
  } else if (len <= 0xffff) {
    f[h++] = 0x80 | 126;
    f[h++] = (uint8_t)(len >> 8);
    f[h++] = (uint8_t)len;
  } else {
    f[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--) f[h++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  uint32_t m = prng32();
  uint8_t mask[4] = {(uint8_t)m, (uint8_t)(m >> 8), (uint8_t)(m >> 16), (uint8_t)(m >> 24)};
  memcpy(f + h, mask, 4);
  h += 4;
  const uint8_t *p = payload;
  for (size_t i = 0; i < len; i++) f[h + i] = p[i] ^ mask[i & 3];
  int r = stream_write((uv_stream_t *)&c->tcp, f, h + len);
  if (f != stackbuf) free(f);
  return r;
}

static int ws_send_text(conn_t *c, const char *s) { return ws_send(c, 1, s, strlen(s)); }

/* ------------------------------------------------------------------------------------------ */
/* connection life                                                                             */

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  free(c->pend);
  free(c->frag);
  c->pend = c->frag = NULL;
  c->pend_len = c->pend_cap = c->frag_len = c->frag_cap = 0;
}

/* Ends a connection. `why` is NULL for an orderly end chosen by the generator. */
static void conn_fail(conn_t *c, const char *why) {
  if (c->state == C_CLOSED) return;
  int was = c->state;
  c->state = C_CLOSED;
  if (was == C_CONNECTING || was == C_HANDSHAKE || was == C_OPEN) n_inflight--;
  if (was == C_SUBSCRIBING) n_waiting_sub--;
  if (was == C_SUBSCRIBED) n_subscribed--;
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  if (!why) return;
  if (phase == P_SETUP) {
    n_failed++;
    set_error(2, "connection %u: %s", c->idx, why);
    setup_check();
  } else if (phase != P_DONE) {
    set_error(2, "connection %u closed during the run: %s", c->idx, why);
    finish();
  }
}

static void on_message(conn_t *c, const char *m, size_t n) {
  size_t tl = 0, el = 0;
  const char *end = m + n;
  const char *type = JSTR(m, n, "type", &tl);
  if (str_is(type, tl, "event")) {
    const char *ev = JSTR(m, n, "event", &el);
    if (ev && el == event_len && !memcmp(ev, opt.event, el)) {
      const char *data = JV(m, n, "data");
      size_t dl = data ? (size_t)(end - data) : 0;
      uint64_t seq, ts;
      if (!data || json_u64_at(JV(data, dl, "bs"), end, &seq) ||
          json_u64_at(JV(data, dl, "bt"), end, &ts)) {
        n_other_msgs++;
        return;
      }
      if (seq >= seq_next) { /* never sent by this generator */
        n_other_msgs++;
        return;
      }
      if (seq < c->next_seq) {
        c->dup++;
        total_dup++;
        return;
      }
      if (seq > c->next_seq) {
        c->lost += seq - c->next_seq;
        total_lost += seq - c->next_seq;
      }
      c->next_seq = seq + 1;
      delivered_total++;
      if (phase == P_MEASURE) {
        delivered_window++;
        hist_add(recv_now > ts ? recv_now - ts : 0);
      }
      if (++ring[seq & RING_MASK] == (uint32_t)n_subscribed) {
        completed++;
        last_progress_ns = recv_now;
        if (phase == P_DRAIN && completed == seq_next) finish();
        else maybe_send();
      }
      return;
    }
    if (str_is(ev, el, "connected")) {
      if (c->state != C_OPEN) {
        conn_fail(c, "a second `connected` message");
        return;
      }
      size_t sl = 0;
      const char *data = JV(m, n, "data");
      if (!data || !JSTR(data, (size_t)(end - data), "socketId", &sl) || sl == 0) {
        conn_fail(c, "`connected` without data.socketId");
        return;
      }
      c->state = C_SUBSCRIBING;
      n_inflight--;
      n_connected++;
      n_waiting_sub++;
      char sub[300];
      snprintf(sub, sizeof sub, "{\"type\":\"subscribe\",\"channel\":\"%s\"}", opt.channel);
      int r = ws_send_text(c, sub);
      if (r) {
        conn_fail(c, uv_strerror(r));
        return;
      }
      setup_check();
      return;
    }
    n_other_msgs++;
    return;
  }
  if (str_is(type, tl, "subscription_succeeded")) {
    if (c->state != C_SUBSCRIBING) {
      conn_fail(c, "unexpected subscription_succeeded");
      return;
    }
    c->state = C_SUBSCRIBED;
    n_waiting_sub--;
    n_subscribed++;
    setup_check();
    return;
  }
  if (str_is(type, tl, "subscription_error")) {
    char why[300];
    snprintf(why, sizeof why, "subscription_error: %.*s", (int)(n > 200 ? 200 : n), m);
    conn_fail(c, why);
    return;
  }
  if (str_is(type, tl, "pong")) return;
  if (str_is(type, tl, "error")) {
    n_error_msgs++;
    set_error(2, "connection %u: server sent %.*s", c->idx, (int)(n > 200 ? 200 : n), m);
    return;
  }
  n_other_msgs++;
}

static int frag_append(conn_t *c, const uint8_t *p, size_t n) {
  if (c->frag_len + n > MAX_FRAME_PAYLOAD) {
    conn_fail(c, "fragmented message larger than 16 MiB");
    return -1;
  }
  if (c->frag_len + n > c->frag_cap) {
    uint32_t cap = c->frag_cap ? c->frag_cap : 1024;
    while (cap < c->frag_len + n) cap *= 2;
    uint8_t *nf = realloc(c->frag, cap);
    if (!nf) {
      conn_fail(c, "out of memory");
      return -1;
    }
    c->frag = nf;
    c->frag_cap = cap;
  }
  memcpy(c->frag + c->frag_len, p, n);
  c->frag_len += (uint32_t)n;
  return 0;
}

static void on_frame(conn_t *c, int fin, int op, const uint8_t *p, size_t n) {
  switch (op) {
  case 0: /* continuation */
    if (!c->frag_op) {
      conn_fail(c, "continuation frame without a started message");
      return;
    }
    if (frag_append(c, p, n)) return;
    if (fin) {
      c->frag_op = 0;
      on_message(c, (const char *)c->frag, c->frag_len);
      c->frag_len = 0;
    }
    return;
  case 1:
  case 2:
    if (c->frag_op) {
      conn_fail(c, "new data frame inside a fragmented message");
      return;
    }
    if (fin) {
      on_message(c, (const char *)p, n);
    } else {
      c->frag_op = (uint8_t)op;
      c->frag_len = 0;
      frag_append(c, p, n);
    }
    return;
  case 8: {
    uint16_t code = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
    int slot = code == 1000 || code == 1001 ? 0 : code == 1008 ? 1 : code == 1009 ? 2 : 3;
    closes_by_code[slot]++;
    ws_send(c, 8, p, n < 2 ? n : 2);
    char why[200];
    snprintf(why, sizeof why, "server closed the WebSocket with code %u (%.*s)", code,
             n > 2 ? (int)(n - 2 > 100 ? 100 : n - 2) : 0, n > 2 ? (const char *)p + 2 : "");
    conn_fail(c, why);
    return;
  }
  case 9:
    n_pings++;
    ws_send(c, 10, p, n);
    return;
  case 10:
    return;
  default:
    conn_fail(c, "server sent a frame with an unknown opcode");
  }
}

/* Bytes needed to hold the whole frame that starts at p, as far as the n bytes present tell:
 * the header size while the header is incomplete, then header + payload. 0 = bad frame. */
static uint64_t frame_need(const uint8_t *p, size_t n) {
  if (n < 2) return 2;
  uint64_t h = 2;
  unsigned l7 = p[1] & 0x7f;
  if (l7 == 126) h += 2;
  else if (l7 == 127) h += 8;
  if (p[1] & 0x80) h += 4;
  if (n < h) return h;
  uint64_t len = l7;
  if (l7 == 126) len = (uint64_t)p[2] << 8 | p[3];
  else if (l7 == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
  }
  if (len > MAX_FRAME_PAYLOAD) return 0;
  return h + len;
}

/* Parses one complete frame at p (frame_need(p) bytes). Returns 0 or -1 (connection ended). */
static int parse_frame(conn_t *c, const uint8_t *p, size_t total) {
  if (p[0] & 0x70) {
    conn_fail(c, "server frame with reserved bits set");
    return -1;
  }
  if (p[1] & 0x80) {
    conn_fail(c, "server frame is masked (RFC 6455 §5.1 forbids it)");
    return -1;
  }
  unsigned l7 = p[1] & 0x7f;
  size_t h = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
  int op = p[0] & 0x0f;
  int fin = p[0] >> 7;
  if (op >= 8 && (!fin || total - h > 125)) {
    conn_fail(c, "fragmented or oversized control frame");
    return -1;
  }
  on_frame(c, fin, op, p + h, total - h);
  return c->state == C_CLOSED ? -1 : 0;
}

static int pend_append(conn_t *c, const void *d, size_t n) {
  if (c->pend_len + n > c->pend_cap) {
    uint32_t cap = c->pend_cap ? c->pend_cap : 256;
    while (cap < c->pend_len + n) cap *= 2;
    uint8_t *np = realloc(c->pend, cap);
    if (!np) return -1;
    c->pend = np;
    c->pend_cap = cap;
  }
  memcpy(c->pend + c->pend_len, d, n);
  c->pend_len += (uint32_t)n;
  return 0;
}

static void process_frames(conn_t *c, const uint8_t *d, size_t n) {
  /* First complete a frame left over from the previous read, copying only what it lacks. */
  while (c->pend_len > 0 && n > 0) {
    uint64_t need = frame_need(c->pend, c->pend_len);
    if (need == 0) {
      conn_fail(c, "server frame larger than 16 MiB");
      return;
    }
    size_t take = need - c->pend_len < n ? (size_t)(need - c->pend_len) : n;
    if (pend_append(c, d, take)) {
      conn_fail(c, "out of memory");
      return;
    }
    d += take;
    n -= take;
    if (frame_need(c->pend, c->pend_len) == c->pend_len) {
      size_t whole = c->pend_len;
      c->pend_len = 0;
      if (parse_frame(c, c->pend, whole)) return;
    }
  }
  while (n > 0) {
    uint64_t need = frame_need(d, n);
    if (need == 0) {
      conn_fail(c, "server frame larger than 16 MiB");
      return;
    }
    if (need > n) {
      if (pend_append(c, d, n)) conn_fail(c, "out of memory");
      return;
    }
    if (parse_frame(c, d, (size_t)need)) return;
    d += need;
    n -= (size_t)need;
  }
}

static void process_handshake(conn_t *c, const uint8_t *d, size_t n) {
  size_t old = c->pend_len;
  if (pend_append(c, d, n)) {
    conn_fail(c, "out of memory");
    return;
  }
  const char *buf = (const char *)c->pend;
  /* search from a little before the new bytes, in case the terminator straddles reads */
  size_t from = old > 3 ? old - 3 : 0;
  const char *eoh = memmem(buf + from, c->pend_len - from, "\r\n\r\n", 4);
  if (!eoh) {
    if (c->pend_len > MAX_HANDSHAKE_BYTES) conn_fail(c, "handshake response headers too long");
    return;
  }
  size_t hlen = (size_t)(eoh - buf) + 4;
  if (hlen < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
    char why[160];
    const char *nl = memchr(buf, '\r', hlen);
    snprintf(why, sizeof why, "handshake refused: %.*s", (int)(nl ? nl - buf : 40), buf);
    conn_fail(c, why);
    return;
  }
  /* find Sec-WebSocket-Accept (header names are case-insensitive) */
  const char *accept = NULL;
  size_t alen = 0;
  for (const char *line = memchr(buf, '\n', hlen); line && line < buf + hlen;) {
    line++;
    const char *le = memmem(line, (size_t)(buf + hlen - line), "\r\n", 2);
    if (!le) break;
    static const char hn[] = "sec-websocket-accept:";
    if ((size_t)(le - line) > sizeof hn - 1 && ascii_ieq(line, hn, sizeof hn - 1)) {
      accept = line + sizeof hn - 1;
      while (accept < le && (*accept == ' ' || *accept == '\t')) accept++;
      alen = (size_t)(le - accept);
      while (alen > 0 && (accept[alen - 1] == ' ' || accept[alen - 1] == '\t')) alen--;
    }
    line = le + 1;
  }
  if (!accept || alen != strlen(c->accept) || memcmp(accept, c->accept, alen) != 0) {
    conn_fail(c, accept ? "wrong Sec-WebSocket-Accept" : "101 without Sec-WebSocket-Accept");
    return;
  }
  c->state = C_OPEN;
  size_t rest = c->pend_len - hlen;
  c->pend_len = 0;
  if (rest > 0) {
    /* the frames that came with the 101 (typically `connected`) */
    uint8_t tmp[MAX_HANDSHAKE_BYTES + 4096];
    if (rest > sizeof tmp) {
      conn_fail(c, "too much data after the handshake");
      return;
    }
    memcpy(tmp, buf + hlen, rest);
    process_frames(c, tmp, rest);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  (void)suggested;
  *b = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_ws_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    char why[160];
    snprintf(why, sizeof why, "%s (%s)",
             nread == UV_EOF ? "server closed the TCP connection" : "read error",
             uv_strerror((int)nread));
    conn_fail(c, why);
    return;
  }
  recv_now = now_ns();
  if (c->state == C_HANDSHAKE)
    process_handshake(c, (const uint8_t *)b->base, (size_t)nread);
  else if (c->state != C_CLOSED)
    process_frames(c, (const uint8_t *)b->base, (size_t)nread);
}

static void on_ws_connect(uv_connect_t *req, int status) {
  conn_t *c = req->handle->data;
  if (c->state == C_CLOSED) return;
  if (status) {
    char why[160];
    snprintf(why, sizeof why, "connect: %s", uv_strerror(status));
    conn_fail(c, why);
    return;
  }
  uint8_t key_raw[16];
  char key[32], cat[128];
  unsigned char sha[EVP_MAX_MD_SIZE];
  unsigned int shalen = 0;
  fill_random(key_raw, sizeof key_raw);
  EVP_EncodeBlock((unsigned char *)key, key_raw, sizeof key_raw);
  int cl = snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
  if (!EVP_Digest(cat, (size_t)cl, sha, &shalen, EVP_sha1(), NULL) || shalen != 20) {
    conn_fail(c, "SHA-1 unavailable in libcrypto");
    return;
  }
  EVP_EncodeBlock((unsigned char *)c->accept, sha, 20);
  char reqbuf[768];
  int rl = snprintf(reqbuf, sizeof reqbuf,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    "Sec-WebSocket-Version: 13\r\nUser-Agent: vxevents-loadgen\r\n\r\n",
                    opt.path, opt.host, opt.port, key);
  c->state = C_HANDSHAKE;
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_ws_read);
  if (!r) r = stream_write((uv_stream_t *)&c->tcp, reqbuf, (size_t)rl);
  if (r) {
    char why[160];
    snprintf(why, sizeof why, "sending the upgrade request: %s", uv_strerror(r));
    conn_fail(c, why);
  }
}

static void start_conn(conn_t *c) {
  c->state = C_CONNECTING;
  n_inflight++;
  n_started++;
  int r = uv_tcp_init_ex(loop, &c->tcp, AF_INET);
  c->tcp.data = c;
  if (r) {
    /* the handle was never initialised: nothing to close */
    c->state = C_CLOSED;
    n_inflight--;
    n_failed++;
    set_error(2, "connection %u: socket(): %s", c->idx, uv_strerror(r));
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (opt.spread) {
    /* 127.0.0.1..254 as the source: 254 times the ephemeral ports of one address. With
     * IP_BIND_ADDRESS_NO_PORT the port is chosen at connect() time for the full 4-tuple. */
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
      setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001u + c->idx % 254);
    r = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
    if (r) {
      char why[160];
      snprintf(why, sizeof why, "bind to 127.0.0.%u: %s", 1 + c->idx % 254, uv_strerror(r));
      conn_fail(c, why);
      return;
    }
  }
  r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&ws_addr, on_ws_connect);
  if (r) {
    char why[160];
    snprintf(why, sizeof why, "connect: %s", uv_strerror(r));
    conn_fail(c, why);
  }
}

/* Starts connections while fewer than --max-inflight are between connect() and `connected`.
 * Stops starting new ones after the first failure: the run is lost anyway, and the message of
 * the first failure is the useful one. */
static void connector(void) {
  while (phase == P_SETUP && n_started < opt.nconns && n_inflight < opt.max_inflight &&
         n_failed == 0)
    start_conn(&conns[n_started]);
}

/* Called whenever a connection moves during set-up: start more, or end set-up one way or the
 * other once nothing is pending. */
static void setup_check(void) {
  if (phase != P_SETUP) return;
  connector();
  if (n_inflight > 0 || n_waiting_sub > 0) return;
  if (n_failed > 0) {
    finish();
    return;
  }
  if (n_subscribed == opt.nconns) start_phase_after_subscribe();
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP API client (one keep-alive connection, one request at a time)                          */

enum { H_DOWN, H_CONNECTING, H_IDLE, H_BUSY };

static struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  int state;
  int closing;
  int writing; /* head/body buffers are in use by uv_write */
  char *body;
  size_t body_len, body_cap;
  char *rbuf;
  size_t rlen, rcap;
  uint64_t sent_ns;
  uint64_t requests, reconnects;
  uint64_t resp_ns_sum, resp_ns_max;
} api;

static void api_send(void);

static void api_closed(uv_handle_t *h) {
  (void)h;
  api.closing = 0;
  api.rlen = 0;
  maybe_send(); /* reconnects if a request is due */
}

/* The handle is unusable from here on (its fd is gone), so the state says "down" at once;
 * api_connect() waits for the close callback before it reuses the handle. */
static void api_close(void) {
  if (api.closing || api.state == H_DOWN) return;
  api.closing = 1;
  api.state = H_DOWN;
  api.writing = 0;
  uv_close((uv_handle_t *)&api.tcp, api_closed);
}

static void api_fail(const char *fmt, const char *arg) {
  char msg[400];
  snprintf(msg, sizeof msg, fmt, arg);
  set_error(2, "HTTP API: %s", msg);
  api_close();
  finish();
}

/* Returns the byte count of a complete response at the start of api.rbuf (0 = incomplete), and
 * its status code, body and Connection: close. -1 = malformed. */
static long api_parse_response(int *status, const char **body, size_t *blen, int *conn_close) {
  const char *b = api.rbuf;
  const char *eoh = memmem(b, api.rlen, "\r\n\r\n", 4);
  if (!eoh) return api.rlen > 65536 ? -1 : 0;
  size_t hl = (size_t)(eoh - b) + 4;
  if (hl < 12 || memcmp(b, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(b + 9);
  long long clen = -1;
  int chunked = 0;
  *conn_close = memcmp(b, "HTTP/1.0", 8) == 0;
  for (const char *line = memchr(b, '\n', hl); line && line < b + hl;) {
    line++;
    const char *le = memmem(line, (size_t)(b + hl - line), "\r\n", 2);
    if (!le || le == line) break;
    size_t ll = (size_t)(le - line);
    if (ll > 15 && ascii_ieq(line, "content-length:", 15)) clen = atoll(line + 15);
    else if (ll > 18 && ascii_ieq(line, "transfer-encoding:", 18) &&
             memmem_str(line, ll, "chunked"))
      chunked = 1;
    else if (ll > 11 && ascii_ieq(line, "connection:", 11)) {
      const char *v = line + 11;
      while (*v == ' ') v++;
      if ((size_t)(le - v) >= 5 && ascii_ieq(v, "close", 5)) *conn_close = 1;
      else if ((size_t)(le - v) >= 10 && ascii_ieq(v, "keep-alive", 10)) *conn_close = 0;
    }
    line = le + 1;
  }
  if (chunked) {
    /* chunks are only walked to find the end; the body shown on error is the raw chunked text */
    size_t pos = hl;
    for (;;) {
      const char *le = memmem(b + pos, api.rlen - pos, "\r\n", 2);
      if (!le) return 0;
      unsigned long sz = strtoul(b + pos, NULL, 16);
      pos = (size_t)(le - b) + 2;
      if (sz == 0) {
        const char *end = memmem(b + pos - 2, api.rlen - (pos - 2), "\r\n\r\n", 4);
        if (!end) return 0;
        *body = b + hl;
        *blen = (size_t)(end - (b + hl));
        return (long)(end - b) + 4;
      }
      if (pos + sz + 2 > api.rlen) return 0;
      pos += sz + 2;
    }
  }
  if (clen < 0) {
    if (*status == 204 || *status == 304) clen = 0;
    else return -1; /* close-delimited bodies are not used by keep-alive API servers */
  }
  if (api.rlen < hl + (size_t)clen) return 0;
  *body = b + hl;
  *blen = (size_t)clen;
  return (long)(hl + (size_t)clen);
}

static void api_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)s;
  if (nread == 0) return;
  if (nread < 0) {
    if (api.closing) return;
    if (api.state == H_BUSY)
      api_fail("the server closed the API connection before answering (%s)",
               uv_strerror((int)nread));
    else
      api_close(); /* keep-alive timeout between requests: reconnect on the next one */
    return;
  }
  if (api.rlen + (size_t)nread > api.rcap) {
    size_t cap = api.rcap ? api.rcap : 4096;
    while (cap < api.rlen + (size_t)nread) cap *= 2;
    char *nb = realloc(api.rbuf, cap);
    if (!nb) {
      api_fail("%s", "out of memory");
      return;
    }
    api.rbuf = nb;
    api.rcap = cap;
  }
  memcpy(api.rbuf + api.rlen, buf->base, (size_t)nread);
  api.rlen += (size_t)nread;
  int status = 0, conn_close = 0;
  const char *body = NULL;
  size_t blen = 0;
  long used = api_parse_response(&status, &body, &blen, &conn_close);
  if (used == 0) return;
  if (used < 0) {
    api_fail("%s", "malformed HTTP response");
    return;
  }
  if (api.state != H_BUSY) {
    api_fail("%s", "response without a request");
    return;
  }
  if (status != 200) {
    char msg[300];
    snprintf(msg, sizeof msg, "%d %.*s", status, (int)(blen > 200 ? 200 : blen), body);
    api_fail("request refused: %s", msg);
    return;
  }
  uint64_t dt = now_ns() - api.sent_ns;
  api.resp_ns_sum += dt;
  if (dt > api.resp_ns_max) api.resp_ns_max = dt;
  memmove(api.rbuf, api.rbuf + used, api.rlen - (size_t)used);
  api.rlen -= (size_t)used;
  api.state = H_IDLE;
  if (conn_close) api_close();
  else maybe_send();
}

static void api_on_connect(uv_connect_t *req, int status) {
  (void)req;
  if (api.closing) return; /* closed while connecting: only on the way out */
  if (status) {
    api_fail("connect: %s", uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&api.tcp, 1);
  int r = uv_read_start((uv_stream_t *)&api.tcp, on_alloc, api_on_read);
  if (r) {
    api_fail("read: %s", uv_strerror(r));
    return;
  }
  api.state = H_IDLE;
  maybe_send();
}

static void api_connect(void) {
  if (api.state != H_DOWN || api.closing) return;
  api.state = H_CONNECTING;
  int r = uv_tcp_init(loop, &api.tcp);
  if (!r) r = uv_tcp_connect(&api.creq, &api.tcp, (const struct sockaddr *)&api_addr,
                             api_on_connect);
  if (r) {
    api.state = H_DOWN;
    set_error(2, "HTTP API: connect: %s", uv_strerror(r));
    finish();
  }
  if (api.requests > 0) api.reconnects++;
}

static void body_reserve(size_t more) {
  if (api.body_len + more <= api.body_cap) return;
  size_t cap = api.body_cap ? api.body_cap : 16384;
  while (cap < api.body_len + more) cap *= 2;
  char *nb = realloc(api.body, cap);
  if (!nb) {
    fprintf(stderr, "loadgen: out of memory\n");
    exit(2);
  }
  api.body = nb;
  api.body_cap = cap;
}

/* Appends one broadcast object whose delivered envelope
 *   {"type":"event","channel":C,"event":E,"data":{"bt":T,"bs":S,"pad":"xxx"}}
 * is opt.envelope_bytes long (or as short as it can be). */
static void append_broadcast(uint64_t ts, uint64_t seq) {
  char data[96];
  int dl = snprintf(data, sizeof data, "{\"bt\":%" PRIu64 ",\"bs\":%" PRIu64 ",\"pad\":\"", ts, seq);
  size_t env = strlen("{\"type\":\"event\",\"channel\":\"\",\"event\":\"\",\"data\":}") +
               strlen(opt.channel) + strlen(opt.event) + (size_t)dl + 2 /* "} */;
  size_t pad = (size_t)opt.envelope_bytes > env ? (size_t)opt.envelope_bytes - env : 0;
  body_reserve(strlen(opt.channel) + strlen(opt.event) + (size_t)dl + pad + 64);
  api.body_len += (size_t)sprintf(api.body + api.body_len, "{\"channel\":\"%s\",\"event\":\"%s\",\"data\":%s",
                                  opt.channel, opt.event, data);
  memset(api.body + api.body_len, 'x', pad);
  api.body_len += pad;
  memcpy(api.body + api.body_len, "\"}}", 3);
  api.body_len += 3;
}

static void api_on_written(uv_write_t *req, int status) {
  (void)req;
  if (status == UV_ECANCELED) return; /* the connection was closed under the request */
  api.writing = 0;
  if (status) api_fail("write: %s", uv_strerror(status));
  else maybe_send();
}

/* Sends broadcasts seq_next .. seq_next+batch-1 in one request. */
static void api_send(void) {
  uint64_t ts = now_ns();
  api.body_len = 0;
  int b = opt.batch;
  if (b > 1) {
    body_reserve(16);
    api.body_len += (size_t)sprintf(api.body, "{\"batch\":[");
  }
  for (int i = 0; i < b; i++) {
    if (i) {
      body_reserve(1);
      api.body[api.body_len++] = ',';
    }
    ring[(seq_next + (uint64_t)i) & RING_MASK] = 0;
    append_broadcast(ts, seq_next + (uint64_t)i);
  }
  if (b > 1) {
    body_reserve(2);
    api.body[api.body_len++] = ']';
    api.body[api.body_len++] = '}';
  }
  static char head[1024];
  int hl = snprintf(head, sizeof head,
                    "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                    "Connection: keep-alive\r\n\r\n",
                    b > 1 ? "/api/batch" : "/api/broadcast", opt.api_host, opt.api_port,
                    opt.api_key, api.body_len);
  if (hl <= 0 || (size_t)hl >= sizeof head) {
    set_error(1, "API key too long");
    finish();
    return;
  }
  uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init(api.body, (unsigned)api.body_len)};
  if (seq_next == completed) last_progress_ns = ts; /* nothing was outstanding: not a stall */
  api.state = H_BUSY;
  api.writing = 1;
  api.sent_ns = ts;
  api.requests++;
  seq_next += (uint64_t)b;
  int r = uv_write(&api.wreq, (uv_stream_t *)&api.tcp, bufs, 2, api_on_written);
  if (r) api_fail("write: %s", uv_strerror(r));
}

/* ------------------------------------------------------------------------------------------ */
/* driving                                                                                     */

static void maybe_send(void) {
  if (phase != P_WARMUP && phase != P_MEASURE) return;
  if (api.state == H_DOWN) {
    api_connect();
    return;
  }
  if (api.state != H_IDLE || api.writing) return;
  uint64_t outstanding = seq_next - completed;
  if (opt.mode == MODE_CLOSED) {
    if (outstanding + (uint64_t)opt.batch > (uint64_t)opt.window) return;
  } else {
    uint64_t now = now_ns();
    if (now < paced_next_ns) return;
    /* Never let the counting ring wrap: far behind means the server cannot keep up anyway. */
    if (outstanding + (uint64_t)opt.batch > RING_SIZE / 2) {
      paced_skipped++;
      return;
    }
    paced_next_ns += paced_interval_ns;
  }
  api_send();
}

static void on_tick(uv_timer_t *t) {
  (void)t;
  uint64_t now = now_ns();
  if (phase == P_SETUP) {
    if (now - t_start > (uint64_t)(opt.setup_timeout * 1e9)) {
      set_error(2,
                "setup timed out after %.1f s: %d started, %d connected, %d subscribed, %d "
                "failed of %d",
                opt.setup_timeout, n_started, n_connected, n_subscribed, n_failed, opt.nconns);
      finish();
    }
    return;
  }
  if (phase == P_WARMUP || phase == P_MEASURE || phase == P_DRAIN) {
    if (opt.mode == MODE_PACED) maybe_send();
    /* last_progress_ns may be later than `now` (maybe_send above just sent) */
    if (completed < seq_next && now > last_progress_ns + (uint64_t)(opt.stall_timeout * 1e9) &&
        phase != P_DRAIN) {
      set_error(2,
                "no broadcast completed for %.1f s (%" PRIu64 " sent, %" PRIu64
                " received by every subscriber, %" PRIu64 " lost so far)",
                opt.stall_timeout, seq_next, completed, total_lost);
      finish();
    }
  }
}

static void on_phase_timer(uv_timer_t *t) {
  (void)t;
  uint64_t now = now_ns();
  switch (phase) {
  case P_HOLD:
    if (opt.server_pid) {
      rss_after = proc_status_bytes(opt.server_pid, "VmRSS");
      anon_after = proc_status_bytes(opt.server_pid, "RssAnon");
    }
    finish();
    return;
  case P_WARMUP:
    phase = P_MEASURE;
    t0 = now;
    if (opt.server_pid) cpu0 = proc_cpu_s(opt.server_pid);
    self_cpu0 = self_cpu_s();
    sent_at_t0 = seq_next;
    uv_timer_start(&phase_timer, on_phase_timer, (uint64_t)(opt.duration * 1000), 0);
    return;
  case P_MEASURE:
    t1 = now;
    if (opt.server_pid) cpu1 = proc_cpu_s(opt.server_pid);
    self_cpu1 = self_cpu_s();
    sent_at_t1 = seq_next;
    phase = P_DRAIN;
    if (completed == seq_next && api.state != H_BUSY) {
      finish();
      return;
    }
    uv_timer_start(&phase_timer, on_phase_timer, (uint64_t)(opt.drain * 1000), 0);
    return;
  case P_DRAIN:
    finish();
    return;
  default:
    return;
  }
}

static void start_phase_after_subscribe(void) {
  t_subscribed = now_ns();
  if (opt.idle) {
    phase = P_HOLD;
    uv_timer_start(&phase_timer, on_phase_timer, (uint64_t)(opt.hold * 1000), 0);
    return;
  }
  last_progress_ns = t_subscribed;
  if (opt.mode == MODE_PACED) {
    double bps = opt.rate / (double)n_subscribed; /* broadcasts per second */
    paced_interval_ns = (uint64_t)(1e9 * opt.batch / bps);
    if (paced_interval_ns == 0) paced_interval_ns = 1;
    paced_next_ns = t_subscribed;
  }
  phase = P_WARMUP;
  if (opt.warmup > 0) {
    uv_timer_start(&phase_timer, on_phase_timer, (uint64_t)(opt.warmup * 1000), 0);
  } else {
    on_phase_timer(&phase_timer); /* straight into the measured window */
  }
  maybe_send();
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  set_error(2, "overall time limit reached in phase %d", phase);
  finish();
}

/* ------------------------------------------------------------------------------------------ */
/* report                                                                                      */

static void json_escape_print(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static void print_num_or_null(FILE *f, const char *key, double v, int ok, const char *fmt) {
  fprintf(f, ",\"%s\":", key);
  if (ok) fprintf(f, fmt, v);
  else fputs("null", f);
}

static void finish(void) {
  if (phase == P_DONE) return;
  int was = phase;
  phase = P_DONE;
  uint64_t now = now_ns();
  if (was == P_MEASURE) { /* aborted inside the window: report the part that ran */
    t1 = now;
    if (opt.server_pid) cpu1 = proc_cpu_s(opt.server_pid);
    self_cpu1 = self_cpu_s();
    sent_at_t1 = seq_next;
  }
  uv_timer_stop(&phase_timer);
  uv_timer_stop(&tick_timer);
  uv_timer_stop(&deadline_timer);

  /* Everything sent and not received by a connection that is still open is lost to it. */
  uint64_t conns_with_loss = 0, conns_with_dup = 0, max_lost = 0;
  if (was == P_DRAIN || was == P_MEASURE || was == P_WARMUP) {
    for (int i = 0; i < opt.nconns; i++) {
      conn_t *c = &conns[i];
      if (c->state != C_SUBSCRIBED) continue;
      if (c->next_seq < seq_next) {
        c->lost += seq_next - c->next_seq;
        total_lost += seq_next - c->next_seq;
        c->next_seq = seq_next;
      }
    }
  }
  for (int i = 0; i < opt.nconns; i++) {
    if (conns[i].lost) conns_with_loss++;
    if (conns[i].dup) conns_with_dup++;
    if (conns[i].lost > max_lost) max_lost = conns[i].lost;
  }
  int measured = t1 > t0 && t0 > 0;
  double win_s = measured ? (double)(t1 - t0) / 1e9 : 0;
  double dps = measured ? (double)delivered_window / win_s : 0;
  int have_cpu = measured && cpu0 >= 0 && cpu1 >= 0;
  double scpu = have_cpu ? cpu1 - cpu0 : 0;
  double gcpu = measured ? self_cpu1 - self_cpu0 : 0;
  double per_cpu = have_cpu && scpu > 0 ? (double)delivered_window / scpu : 0;
  double bps = measured ? (double)(sent_at_t1 - sent_at_t0) / win_s : 0;
  int have_rss = opt.idle && rss_before >= 0 && rss_after >= 0 && n_subscribed > 0;
  double rss_per = have_rss ? (double)(rss_after - rss_before) / n_subscribed : 0;
  double anon_per =
      have_rss && anon_before >= 0 && anon_after >= 0 ? (double)(anon_after - anon_before) / n_subscribed : 0;
  double p50 = hist_pct_ms(50), p90 = hist_pct_ms(90), p99 = hist_pct_ms(99);
  double mx = hist_count ? hist_max_ns / 1e6 : -1;
  double setup_s = t_subscribed ? (double)(t_subscribed - t_start) / 1e9 : (double)(now - t_start) / 1e9;

  int rc = fatal_rc;
  if (rc == 0 && (total_lost || total_dup)) rc = 3;
  if (rc == 0 && n_failed) rc = 2;

  if (!opt.quiet) {
    FILE *f = stderr;
    fprintf(f, "loadgen%s%s%s: ", *opt.label ? "[" : "", opt.label, *opt.label ? "]" : "");
    if (opt.idle) {
      fprintf(f, "idle: %d/%d connections subscribed in %.2f s", n_subscribed, opt.nconns,
              setup_s);
      if (have_rss)
        fprintf(f, "; server VmRSS %.1f -> %.1f MiB after %.1f s hold = %.0f bytes/connection",
                rss_before / 1048576.0, rss_after / 1048576.0, opt.hold, rss_per);
    } else {
      fprintf(f, "%s conns=%d batch=%d window=%d", opt.mode == MODE_CLOSED ? "closed" : "paced",
              opt.nconns, opt.batch, opt.window);
      if (opt.mode == MODE_PACED) fprintf(f, " target=%.0f/s", opt.rate);
      if (measured) {
        fprintf(f, ": %" PRIu64 " deliveries in %.2f s = %.0f/s", delivered_window, win_s, dps);
        if (have_cpu)
          fprintf(f, "; server cpu %.2f s -> %.0f deliveries/server-cpu-s", scpu, per_cpu);
        fprintf(f, "; loadgen cpu %.2f s", gcpu);
        if (hist_count)
          fprintf(f, "; latency ms p50 %.3f p90 %.3f p99 %.3f max %.3f", p50, p90, p99, mx);
      } else {
        fprintf(f, ": no measured window");
      }
    }
    fprintf(f, "; lost %" PRIu64 " dup %" PRIu64 " (%" PRIu64 "/%" PRIu64 " conns)", total_lost,
            total_dup, conns_with_loss, conns_with_dup);
    if (first_error[0]) fprintf(f, "; ERROR: %s", first_error);
    fputc('\n', f);
  }

  FILE *o = stdout;
  fputs("{\"label\":", o);
  json_escape_print(o, opt.label);
  fprintf(o, ",\"mode\":\"%s\"", opt.idle ? "idle" : opt.mode == MODE_CLOSED ? "closed" : "paced");
  fprintf(o, ",\"connections\":%d,\"subscribed\":%d,\"connect_failures\":%d", opt.nconns,
          n_subscribed, n_failed);
  fprintf(o, ",\"src_spread\":%s,\"setup_s\":%.3f", opt.spread ? "true" : "false", setup_s);
  fprintf(o, ",\"batch\":%d,\"window\":%d,\"envelope_bytes\":%d", opt.batch, opt.window,
          opt.envelope_bytes);
  print_num_or_null(o, "target_rate", opt.rate, opt.mode == MODE_PACED && !opt.idle, "%.0f");
  fprintf(o, ",\"duration_s\":%.3f", win_s);
  fprintf(o, ",\"broadcasts_sent\":%" PRIu64 ",\"broadcasts_completed\":%" PRIu64, seq_next,
          completed);
  fprintf(o, ",\"requests\":%" PRIu64 ",\"api_reconnects\":%" PRIu64, api.requests,
          api.reconnects);
  print_num_or_null(o, "api_resp_ms_avg",
                    api.requests ? (double)api.resp_ns_sum / (double)api.requests / 1e6 : 0,
                    api.requests > 0, "%.3f");
  print_num_or_null(o, "api_resp_ms_max", api.resp_ns_max / 1e6, api.requests > 0, "%.3f");
  fprintf(o, ",\"broadcasts_per_s\":%.1f", bps);
  fprintf(o, ",\"delivered\":%" PRIu64 ",\"delivered_total\":%" PRIu64, delivered_window,
          delivered_total);
  fprintf(o, ",\"deliveries_per_s\":%.1f", dps);
  print_num_or_null(o, "server_cpu_s", scpu, have_cpu, "%.3f");
  print_num_or_null(o, "deliveries_per_server_cpu_s", per_cpu, have_cpu && scpu > 0, "%.0f");
  fprintf(o, ",\"loadgen_cpu_s\":%.3f", gcpu);
  print_num_or_null(o, "lat_p50_ms", p50, hist_count > 0, "%.3f");
  print_num_or_null(o, "lat_p90_ms", p90, hist_count > 0, "%.3f");
  print_num_or_null(o, "lat_p99_ms", p99, hist_count > 0, "%.3f");
  print_num_or_null(o, "lat_max_ms", mx, hist_count > 0, "%.3f");
  fprintf(o, ",\"latency_samples\":%" PRIu64, hist_count);
  fprintf(o, ",\"lost\":%" PRIu64 ",\"dup\":%" PRIu64, total_lost, total_dup);
  fprintf(o, ",\"conns_with_loss\":%" PRIu64 ",\"conns_with_dup\":%" PRIu64
             ",\"max_lost_per_conn\":%" PRIu64,
          conns_with_loss, conns_with_dup, max_lost);
  fprintf(o, ",\"paced_skipped\":%" PRIu64, paced_skipped);
  fprintf(o, ",\"server_pings\":%" PRIu64 ",\"other_msgs\":%" PRIu64 ",\"error_msgs\":%" PRIu64,
          n_pings, n_other_msgs, n_error_msgs);
  fprintf(o, ",\"closes\":{\"1000_1001\":%d,\"1008\":%d,\"1009\":%d,\"other\":%d}",
          closes_by_code[0], closes_by_code[1], closes_by_code[2], closes_by_code[3]);
  print_num_or_null(o, "server_rss_before", (double)rss_before, opt.idle && rss_before >= 0, "%.0f");
  print_num_or_null(o, "server_rss_after", (double)rss_after, opt.idle && rss_after >= 0, "%.0f");
  print_num_or_null(o, "rss_bytes_per_conn", rss_per, have_rss, "%.1f");
  print_num_or_null(o, "rss_anon_bytes_per_conn", anon_per,
                    have_rss && anon_before >= 0 && anon_after >= 0, "%.1f");
  fputs(",\"error\":", o);
  if (first_error[0]) json_escape_print(o, first_error);
  else fputs("null", o);
  fprintf(o, ",\"exit\":%d}\n", rc);
  fflush(o);
  fflush(stderr);
  /* The kernel closes every socket; a graceful close of thousands of connections would only
   * add time and server work to a finished measurement. */
  _exit(rc);
}

/* ------------------------------------------------------------------------------------------ */

static void raise_nofile(void) {
  rlim_t need = (rlim_t)opt.nconns + 64;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl)) {
    perror("loadgen: getrlimit(RLIMIT_NOFILE)");
    exit(2);
  }
  if (rl.rlim_cur >= need) return;
  struct rlimit want = rl;
  want.rlim_cur = need;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) want.rlim_max = need;
  if (setrlimit(RLIMIT_NOFILE, &want) == 0) return;
  int e = errno;
  fprintf(stderr,
          "loadgen: %d connections need %llu file descriptors, but RLIMIT_NOFILE is %llu (hard "
          "%llu) and raising it failed: %s.\n"
          "loadgen: raise it first (e.g. `ulimit -Hn %llu; ulimit -n %llu` as root, or "
          "fs.nr_open / limits.conf) or use fewer --connections.\n",
          opt.nconns, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
          (unsigned long long)rl.rlim_max, strerror(e), (unsigned long long)need,
          (unsigned long long)need);
  exit(2);
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  fill_random(&prng_state, sizeof prng_state);
  if (!prng_state) prng_state = 0x9e3779b97f4a7c15ull;

  if (uv_ip4_addr(opt.host, opt.port, &ws_addr) ||
      uv_ip4_addr(opt.api_host, opt.api_port, &api_addr)) {
    fprintf(stderr, "loadgen: host must be an IPv4 address (e.g. 127.0.0.1), got '%s'\n",
            opt.host);
    return 1;
  }
  if ((ntohl(ws_addr.sin_addr.s_addr) >> 24) != 127 || (ntohl(api_addr.sin_addr.s_addr) >> 24) != 127) {
    fprintf(stderr, "loadgen: only loopback targets (127.0.0.0/8) are allowed\n");
    return 1;
  }

  conns = calloc((size_t)opt.nconns, sizeof *conns);
  if (!conns) {
    fprintf(stderr, "loadgen: out of memory for %d connections\n", opt.nconns);
    return 2;
  }
  for (int i = 0; i < opt.nconns; i++) conns[i].idx = (uint32_t)i;

  loop = uv_default_loop();
  uv_timer_init(loop, &phase_timer);
  uv_timer_init(loop, &tick_timer);
  uv_timer_init(loop, &deadline_timer);

  if (opt.idle && opt.server_pid) {
    rss_before = proc_status_bytes(opt.server_pid, "VmRSS");
    anon_before = proc_status_bytes(opt.server_pid, "RssAnon");
    if (rss_before < 0) {
      fprintf(stderr, "loadgen: cannot read /proc/%d/status\n", opt.server_pid);
      return 2;
    }
  }
  if (opt.server_pid && proc_cpu_s(opt.server_pid) < 0) {
    fprintf(stderr, "loadgen: cannot read /proc/%d/stat\n", opt.server_pid);
    return 2;
  }

  double limit = opt.setup_timeout + 10 +
                 (opt.idle ? opt.hold : opt.warmup + opt.duration + opt.drain + opt.stall_timeout);
  uv_timer_start(&deadline_timer, on_deadline, (uint64_t)(limit * 1000), 0);
  uv_timer_start(&tick_timer, on_tick, opt.mode == MODE_PACED ? 1 : 100,
                 opt.mode == MODE_PACED ? 1 : 100);
  t_start = now_ns();
  event_len = strlen(opt.event);
  if (!opt.idle) api_connect(); /* ready before the first broadcast is due */
  setup_check();
  uv_run(loop, UV_RUN_DEFAULT);
  /* Only reached if every handle went away without finish(): treat as a failure. */
  set_error(2, "event loop ended unexpectedly");
  finish();
  return 2;
}
