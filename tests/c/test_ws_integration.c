/* The core over real loopback sockets, driven through the C API: listening and adopted
 * connections, subscribe, broadcast (plain, many, except), the send-queue bound, the
 * keep-alive, queries and shutdown with 1001. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <uv.h>

#include "vxevents.h"
#include "wsclient.h"

typedef struct {
  uv_sem_t sem;
  uint64_t count;
  int status;
  vx_stats stats;
  char ids[8][40];
  int nconnect, ndisconnect;
} ctx;

static char members_seen[512];
static void members_cb(int status, const char *json, size_t len, void *data) {
  ctx *c = data;
  c->status = status;
  snprintf(members_seen, sizeof members_seen, "%.*s", (int)len, json ? json : "");
  uv_sem_post(&c->sem);
}

static void count_cb(int status, uint64_t count, void *data) {
  ctx *c = data;
  c->status = status;
  c->count = count;
  uv_sem_post(&c->sem);
}

static void stats_cb(int status, const vx_stats *s, void *data) {
  ctx *c = data;
  c->status = status;
  if (s)
    c->stats = *s;
  uv_sem_post(&c->sem);
}

static void on_connect(const char *id, void *data) {
  ctx *c = data;
  if (c->nconnect < 8)
    snprintf(c->ids[c->nconnect], sizeof c->ids[0], "%s", id);
  c->nconnect++;
}

static void on_disconnect(const char *id, void *data) {
  (void)id;
  ((ctx *)data)->ndisconnect++;
}

static uint64_t count_of(vx_events *ev, ctx *c, const char *channel) {
  assert_int_equal(vx_subscriber_count(ev, channel, count_cb, c), 0);
  uv_sem_wait(&c->sem);
  assert_int_equal(c->status, 0);
  return c->count;
}

static vx_stats stats_of(vx_events *ev, ctx *c) {
  assert_int_equal(vx_stats_get(ev, stats_cb, c), 0);
  uv_sem_wait(&c->sem);
  return c->stats;
}

static void log_cb(int level, const char *msg, void *data) {
  (void)data;
  fprintf(stderr, "[core %d] %s\n", level, msg);
}

static vx_events *start(ctx *c, int *port, size_t max_send_queue, uint32_t ping_ms) {
  memset(c, 0, sizeof *c);
  uv_sem_init(&c->sem, 0);
  vx_options o;
  vx_options_init(&o);
  o.on_connect = on_connect;
  o.on_disconnect = on_disconnect;
  o.hook_data = c;
  if (max_send_queue)
    o.max_send_queue = max_send_queue;
  o.ping_interval_ms = ping_ms;
  o.slow_consumer_ms = 200; /* a never-reading client holds the others back this long */
  o.on_log = log_cb;
  o.log_level = getenv("VX_TEST_DEBUG") ? VX_LOG_DEBUG : VX_LOG_WARN;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, port), 0);
  return ev;
}

/* Open a client, read `connected`, return the socket id in `id`. */
static tws *client(int port, char id[64]) {
  tws *w = tws_open(port, "/ws");
  assert_non_null(w);
  char *m = tws_text(w, 3000);
  assert_non_null(m);
  const char *p = strstr(m, "\"socketId\":\"");
  assert_non_null(p);
  assert_non_null(strstr(m, "{\"type\":\"event\",\"event\":\"connected\""));
  p += 12;
  size_t n = strcspn(p, "\"");
  assert_int_equal(n, 32);
  memcpy(id, p, n);
  id[n] = 0;
  free(m);
  return w;
}

/* subscription_succeeded for `channel`, with the stream's position (DESIGN §12): its last
 * offset and an epoch of 8 hex digits. */
static void assert_ack(const char *r, const char *channel) {
  char want[256];
  snprintf(want, sizeof want,
           "{\"type\":\"subscription_succeeded\",\"channel\":\"%s\",\"data\":{\"offset\":",
           channel);
  assert_int_equal(strncmp(r, want, strlen(want)), 0);
  const char *p = r + strlen(want);
  while (*p >= '0' && *p <= '9')
    p++;
  assert_int_equal(strncmp(p, ",\"epoch\":\"", 10), 0);
  assert_string_equal(p + 10 + 8, "\"}}");
}

static void subscribe(tws *w, const char *channel) {
  char msg[256];
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"channel\":\"%s\"}", channel);
  assert_int_equal(tws_send_text(w, msg), 0);
  char *r = tws_text(w, 3000);
  assert_non_null(r);
  assert_ack(r, channel);
  free(r);
}

static void expect_event(tws *w, const char *channel, const char *event, const char *data) {
  char want[512];
  snprintf(want, sizeof want,
           "{\"type\":\"event\",\"channel\":\"%s\",\"event\":\"%s\",\"data\":%s,\"offset\":",
           channel, event, data);
  char *m = tws_text(w, 3000);
  assert_non_null(m);
  assert_int_equal(strncmp(m, want, strlen(want)), 0); /* then the channel's offset */
  free(m);
}

static void expect_silence(tws *w, int ms) {
  char *m = NULL;
  int op = tws_next(w, &m, NULL, ms);
  if (op != -1)
    fail_msg("expected nothing, got opcode %d: %s", op, m ? m : "");
}

static void broadcast_reaches_subscribers_once_and_nobody_else(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 0);
  char ida[64], idb[64], idc[64];
  tws *a = client(port, ida), *b = client(port, idb), *o = client(port, idc);
  assert_string_not_equal(ida, idb);
  subscribe(a, "orders");
  subscribe(b, "orders");
  subscribe(o, "other");
  assert_int_equal(count_of(ev, &c, "orders"), 2);
  assert_int_equal(vx_broadcast(ev, "orders", "order.created", "{\"orderId\":1}", 13, NULL), 0);
  expect_event(a, "orders", "order.created", "{\"orderId\":1}");
  expect_event(b, "orders", "order.created", "{\"orderId\":1}");
  expect_silence(a, 100);
  expect_silence(o, 100);

  /* except skips exactly that socket */
  assert_int_equal(vx_broadcast(ev, "orders", "chat", "\"hi\"", 4, ida), 0);
  expect_event(b, "orders", "chat", "\"hi\"");
  expect_silence(a, 150);

  /* many: one message per subscribed channel, in order */
  const char *chs[] = {"orders", "other"};
  assert_int_equal(vx_broadcast_many(ev, chs, 2, "n", "[1]", 3, NULL), 0);
  expect_event(a, "orders", "n", "[1]");
  expect_event(b, "orders", "n", "[1]");
  expect_event(o, "other", "n", "[1]");

  /* unsubscribe stops delivery; resubscribe twice is idempotent */
  assert_int_equal(tws_send_text(a, "{\"type\":\"unsubscribe\",\"channel\":\"orders\"}"), 0);
  subscribe(b, "orders");
  assert_int_equal(count_of(ev, &c, "orders"), 1);
  assert_int_equal(vx_broadcast(ev, "orders", "x", NULL, 0, NULL), 0);
  expect_event(b, "orders", "x", "null");
  expect_silence(b, 100);
  expect_silence(a, 100);

  tws_free(a);
  tws_free(b);
  tws_free(o);
  vx_free(ev);
  assert_int_equal(c.nconnect, 3);
  assert_int_equal(c.ndisconnect, 3);
}

static void bad_messages_get_errors_and_the_connection_stays_usable(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 0);
  char id[64];
  tws *a = client(port, id);
  const char *bad[] = {"{nope", "[]", "{\"type\":7}", "{\"type\":\"dance\"}",
                       "{\"type\":\"message\",\"channel\":\"a\",\"event\":\"e\"}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(tws_send_text(a, bad[i]), 0);
    char *m = tws_text(a, 3000);
    assert_non_null(m);
    if (strncmp(m, "{\"type\":\"error\",\"error\":\"", 25) != 0)
      fail_msg("for %s got %s", bad[i], m);
    free(m);
  }
  const char *refused[] = {"{\"type\":\"subscribe\"}",
                           "{\"type\":\"subscribe\",\"channel\":\"a b\"}",
                           "{\"type\":\"subscribe\",\"channel\":\"private-x\"}",
                           "{\"type\":\"subscribe\",\"channel\":\"presence-x\"}"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    assert_int_equal(tws_send_text(a, refused[i]), 0);
    char *m = tws_text(a, 3000);
    assert_non_null(m);
    if (!strstr(m, "\"type\":\"subscription_error\"") || !strstr(m, "\"error\":"))
      fail_msg("for %s got %s", refused[i], m);
    free(m);
  }
  assert_int_equal(tws_send_text(a, "{\"type\":\"ping\"}"), 0);
  char *m = tws_text(a, 3000);
  assert_string_equal(m, "{\"type\":\"pong\"}");
  free(m);
  subscribe(a, "still-works");
  tws_free(a);
  vx_free(ev);
}

static void adopted_socket_with_bytes_already_read_becomes_a_client(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 0);
  /* A listener of the test's own plays the host application's server. */
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(ls, 4), 0);
  getsockname(ls, (struct sockaddr *)&a, &al);
  int cfd = tcp_connect(ntohs(a.sin_port));
  assert_true(cfd >= 0);
  int sfd = accept(ls, NULL, NULL);
  assert_true(sfd >= 0);
  const char req[] =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(send_all(cfd, req, sizeof req - 1), 0);
  char got[1024];
  size_t have = 0;
  while (!memmem(got, have, "\r\n\r\n", 4)) {
    ssize_t r = recv(sfd, got + have, sizeof got - have, 0);
    assert_true(r > 0);
    have += (size_t)r;
  }
  assert_int_equal(vx_adopt(ev, sfd, got, have), 0);
  tws *w = calloc(1, sizeof *w);
  w->fd = cfd;
  assert_int_equal(tws_http_status(w, 3000), 101);
  char *m = tws_text(w, 3000);
  assert_non_null(strstr(m, "\"connected\""));
  free(m);
  subscribe(w, "adopted");
  assert_int_equal(vx_broadcast(ev, "adopted", "e", "true", 4, NULL), 0);
  expect_event(w, "adopted", "e", "true");
  assert_int_equal(vx_adopt(ev, -1, NULL, 0), VX_EINVAL);
  tws_free(w);
  close(ls);
  vx_free(ev);
}

static void slow_consumer_is_closed_with_1008_and_others_get_everything(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 64 * 1024, 0);
  char ids[2][64];
  tws *slow = client(port, ids[0]);
  tws *fast = client(port, ids[1]);
  subscribe(slow, "firehose");
  subscribe(fast, "firehose");
  size_t n = 8000;
  char *data = malloc(n + 3);
  data[0] = '"';
  memset(data + 1, 'z', n);
  data[n + 1] = '"';
  data[n + 2] = 0;
  /* Publish until the kernel buffers of the never-reading client are full and its queue
   * passes the bound (bounded: 6000 x 8 KB), while the fast client keeps up. */
  vx_stats s = {0};
  int sent = 0;
  for (; sent < 6000 && s.slow_consumer_closes == 0; sent++) {
    int r;
    while ((r = vx_broadcast(ev, "firehose", "big", data, n + 2, NULL)) == VX_EAGAIN)
      assert_int_equal(vx_wait_capacity(ev, 3000), 0); /* flow control: paced, briefly */
    assert_int_equal(r, 0);
    if (sent % 10 == 9) {
      for (int k = 0; k < 10; k++) {
        char *m = tws_text(fast, 3000);
        assert_non_null(m);
        free(m);
      }
      s = stats_of(ev, &c);
    }
  }
  free(data);
  assert_int_equal(s.slow_consumer_closes, 1);
  assert_int_equal(s.connections, 1);
  /* Now drain the slow one: whatever it got, it ends with close 1008. */
  assert_int_equal(tws_close_code(slow, 5000), 1008);
  tws_free(slow);
  tws_free(fast);
  vx_free(ev);
}

static void silent_peer_is_dropped_after_a_missed_ping(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 200);
  char id[64];
  tws *w = client(port, id);
  /* Read nothing (so no pong) for a while: the server must cut the socket. */
  usleep(700 * 1000);
  struct pollfd p = {.fd = w->fd, .events = POLLIN};
  int closed = 0;
  for (int i = 0; i < 50 && !closed; i++) {
    if (poll(&p, 1, 100) > 0) {
      uint8_t tmp[256];
      ssize_t r = recv(w->fd, tmp, sizeof tmp, 0);
      closed = r <= 0;
    }
  }
  assert_true(closed);
  vx_stats s = stats_of(ev, &c);
  assert_int_equal(s.ping_timeouts, 1);
  assert_int_equal(s.connections, 0);
  tws_free(w);
  vx_free(ev);
}

static void answering_peer_survives_pings(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 100);
  char id[64];
  tws *w = client(port, id);
  subscribe(w, "alive");
  /* tws_next answers pings while waiting. */
  expect_silence(w, 600);
  assert_int_equal(vx_broadcast(ev, "alive", "e", "1", 1, NULL), 0);
  expect_event(w, "alive", "e", "1");
  tws_free(w);
  vx_free(ev);
}

static void oversized_and_invalid_utf8_messages_close_with_the_right_codes(void **st) {
  (void)st;
  ctx c;
  int port;
  memset(&c, 0, sizeof c);
  uv_sem_init(&c.sem, 0);
  vx_options o;
  vx_options_init(&o);
  o.max_payload = 1024;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  char id[64];
  tws *w = client(port, id);
  char big[2000];
  memset(big, 'a', sizeof big);
  assert_int_equal(tws_send_frame(w, 1, big, sizeof big), 0);
  assert_int_equal(tws_close_code(w, 3000), 1009);
  tws_free(w);
  w = client(port, id);
  assert_int_equal(tws_send_frame(w, 1, "{\"type\":\"\xff\"}", 12), 0);
  assert_int_equal(tws_close_code(w, 3000), 1007);
  tws_free(w);
  w = client(port, id);
  /* An unmasked client frame is a protocol violation. */
  uint8_t unmasked[] = {0x81, 0x02, '{', '}'};
  assert_int_equal(send_all(w->fd, unmasked, sizeof unmasked), 0);
  assert_int_equal(tws_close_code(w, 3000), 1002);
  tws_free(w);
  vx_free(ev);
}

static void fragmented_message_is_reassembled(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 0);
  char id[64];
  tws *w = client(port, id);
  const char *msg = "{\"type\":\"subscribe\",\"channel\":\"frag\"}";
  size_t n = strlen(msg);
  /* text frame without FIN, then a continuation with FIN, each masked by hand */
  uint8_t f1[64], f2[64];
  size_t h = 10;
  f1[0] = 0x01;
  f1[1] = (uint8_t)(0x80 | h);
  memset(f1 + 2, 0, 4);
  memcpy(f1 + 6, msg, h);
  f2[0] = 0x80;
  f2[1] = (uint8_t)(0x80 | (n - h));
  memset(f2 + 2, 0, 4);
  memcpy(f2 + 6, msg + h, n - h);
  assert_int_equal(send_all(w->fd, f1, 6 + h), 0);
  usleep(20000);
  assert_int_equal(send_all(w->fd, f2, 6 + n - h), 0);
  char *m = tws_text(w, 3000);
  assert_ack(m, "frag");
  free(m);
  tws_free(w);
  vx_free(ev);
}

static void close_sends_1001_to_every_client(void **st) {
  (void)st;
  ctx c;
  int port;
  vx_events *ev = start(&c, &port, 0, 0);
  char id[64];
  tws *ws[5];
  for (int i = 0; i < 5; i++)
    ws[i] = client(port, id);
  assert_int_equal(vx_close(ev, 2000, NULL, NULL), 0);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(tws_close_code(ws[i], 3000), 1001);
    /* answer the close so the server can finish early */
    tws_send_frame(ws[i], 8, "\x03\xe9", 2);
  }
  vx_free(ev);
  for (int i = 0; i < 5; i++)
    tws_free(ws[i]);
  assert_int_equal(c.ndisconnect, 5);
}

/* The core's own POST /ws/auth asks the host through the authorize hook; the host answers
 * with vx_auth_reply (here from the hook itself; any thread may). */
static void authorize_hook(const vx_auth_request *req, void *data) {
  vx_events **evp = data;
  if (strcmp(req->channel, "presence-room") == 0)
    vx_auth_reply(*evp, req->id, 1, "{\"id\":\"u1\",\"info\":{\"name\":\"Ann\"}}", NULL);
  else if (strcmp(req->channel, "private-mine") == 0 && strstr(req->headers, "Cookie: user=1"))
    vx_auth_reply(*evp, req->id, 1, NULL, NULL);
  else
    vx_auth_reply(*evp, req->id, 0, NULL, "Access denied");
}

static int http_post(int port, const char *path, const char *extra, const char *body, char *resp,
                     size_t resp_len) {
  int fd = tcp_connect(port);
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                   "Content-Length: %zu\r\n\r\n%s",
                   path, extra, strlen(body), body);
  send_all(fd, req, (size_t)n);
  size_t have = 0;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 3000) <= 0)
      break;
    ssize_t r = recv(fd, resp + have, resp_len - 1 - have, 0);
    if (r <= 0)
      break;
    have += (size_t)r;
  }
  resp[have] = 0;
  close(fd);
  int st = -1;
  sscanf(resp, "HTTP/1.1 %d", &st);
  return st;
}

static void auth_endpoint_asks_the_host_and_signs_its_answer(void **st) {
  (void)st;
  vx_options o;
  vx_options_init(&o);
  o.auth_secret = "0123456789abcdef0123456789abcdef";
  o.authorize = authorize_hook;
  vx_events *ev;
  o.hook_data = &ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  int port;
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  char id[64];
  tws *w = client(port, id);
  char resp[4096], body[256];

  snprintf(body, sizeof body, "{\"socketId\":\"%s\",\"channel\":\"presence-room\"}", id);
  assert_int_equal(http_post(port, "/ws/auth", "", body, resp, sizeof resp), 200);
  char *auth = strstr(resp, "{\"auth\":\"");
  assert_non_null(auth);
  assert_non_null(strstr(resp, "\"channel_data\":\"{\\\"id\\\":\\\"u1\\\""));
  /* Subscribe with exactly what the endpoint returned. */
  char token[200];
  sscanf(auth + 9, "%199[^\"]", token);
  char sub[512];
  snprintf(sub, sizeof sub,
           "{\"type\":\"subscribe\",\"channel\":\"presence-room\",\"auth\":\"%s\","
           "\"channel_data\":\"{\\\"id\\\":\\\"u1\\\",\\\"info\\\":{\\\"name\\\":\\\"Ann\\\"}}\"}",
           token);
  assert_int_equal(tws_send_text(w, sub), 0);
  char *m = tws_text(w, 3000);
  assert_int_equal(strncmp(m, "{\"type\":\"subscription_succeeded\",\"channel\":\"presence-room\","
                              "\"data\":{\"offset\":0,\"epoch\":\"",
                         80),
                   0);
  assert_non_null(strstr(m, "\",\"members\":[{\"id\":\"u1\",\"info\":{\"name\":\"Ann\"}}]}}"));
  free(m);

  ctx q;
  memset(&q, 0, sizeof q);
  uv_sem_init(&q.sem, 0);
  assert_int_equal(vx_presence_members(ev, "presence-room", members_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(q.status, 0);
  assert_string_equal(members_seen, "[{\"id\":\"u1\",\"info\":{\"name\":\"Ann\"}}]");
  assert_int_equal(vx_presence_members(ev, "presence-empty", members_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_string_equal(members_seen, "[]");
  assert_int_equal(vx_presence_members(ev, "bad name", members_cb, &q), VX_ECHANNEL);
  uv_sem_destroy(&q.sem);

  snprintf(body, sizeof body, "{\"socketId\":\"%s\",\"channel\":\"private-mine\"}", id);
  assert_int_equal(http_post(port, "/ws/auth", "Cookie: user=1\r\n", body, resp, sizeof resp), 200);
  assert_int_equal(http_post(port, "/ws/auth", "", body, resp, sizeof resp), 403);
  assert_non_null(strstr(resp, "{\"error\":\"Access denied\"}"));
  assert_int_equal(http_post(port, "/ws/auth", "", "{\"socketId\":\"a\",\"channel\":\"pub\"}", resp,
                             sizeof resp),
                   403); /* the hook decides for public too */
  assert_int_equal(http_post(port, "/ws/auth", "", "{\"channel\":\"x\"}", resp, sizeof resp), 400);
  assert_int_equal(http_post(port, "/ws/auth", "", "[1]", resp, sizeof resp), 400);
  tws_free(w);
  vx_free(ev);
}

/* Open an event stream on /events, read its connected message, return it with the
 * connection id in `id` (33 bytes) and the read buffer emptied. */
static tws *open_sse(int port, char *id) {
  tws *s = calloc(1, sizeof *s);
  s->fd = tcp_connect(port);
  const char get[] = "GET /events HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(send_all(s->fd, get, sizeof get - 1), 0);
  assert_int_equal(tws_http_status(s, 3000), 200);
  while (!memmem(s->buf, s->len, "\"}}\n\n", 5))
    assert_true(tws_fill(s, 3000) > 0);
  s->buf[s->len] = 0;
  char *p = strstr((char *)s->buf, "\"connectionId\":\"");
  assert_non_null(p);
  memcpy(id, p + 16, 32);
  id[32] = 0;
  s->len = 0;
  return s;
}

static void sse_subscribe_asks_the_authorizer_and_takes_its_member(void **st) {
  (void)st;
  vx_options o;
  vx_options_init(&o);
  o.sse_path = "/events";
  o.authorize = authorize_hook;
  vx_events *ev;
  o.hook_data = &ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  int port;
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  char id[33];
  tws *s = open_sse(port, id);
  char resp[2048], body[256];
  snprintf(body, sizeof body,
           "{\"connectionId\":\"%s\",\"channel\":\"presence-room\","
           "\"member\":{\"id\":\"forged\"}}",
           id);
  assert_int_equal(http_post(port, "/events/subscribe", "", body, resp, sizeof resp), 200);
  snprintf(body, sizeof body, "{\"connectionId\":\"%s\",\"channel\":\"private-other\"}", id);
  assert_int_equal(http_post(port, "/events/subscribe", "", body, resp, sizeof resp), 403);
  assert_non_null(strstr(resp, "Access denied"));
  /* The stream got the member the authorizer chose, not the one in the body. */
  while (!memmem(s->buf, s->len, "subscription_succeeded", 22))
    assert_true(tws_fill(s, 3000) > 0);
  while (!memmem(s->buf, s->len, "]}}\n\n", 5))
    assert_true(tws_fill(s, 3000) > 0);
  s->buf[s->len] = 0;
  assert_non_null(strstr((char *)s->buf, "event: subscription_succeeded\ndata: "
                                         "{\"type\":\"subscription_succeeded\","
                                         "\"channel\":\"presence-room\",\"data\":{\"offset\":0,"));
  assert_non_null(strstr((char *)s->buf, "\"members\":[{\"id\":\"u1\","
                                         "\"info\":{\"name\":\"Ann\"}}]}}\n\n"));
  assert_null(strstr((char *)s->buf, "forged"));
  tws_free(s);
  vx_free(ev);
}

static int status_seen;
static char status_msg[128];
static void status_cb(int status, const char *message, void *data) {
  status_seen = status;
  snprintf(status_msg, sizeof status_msg, "%s", message ? message : "");
  uv_sem_post(&((ctx *)data)->sem);
}

static void host_subscribes_an_sse_stream_directly(void **st) {
  (void)st;
  ctx q;
  memset(&q, 0, sizeof q);
  uv_sem_init(&q.sem, 0);
  vx_options o;
  vx_options_init(&o);
  o.sse_path = "/events";
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  int port;
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  char id[33];
  tws *s = open_sse(port, id);

  assert_int_equal(vx_sse_subscribe(ev, id, "presence-x", "{\"id\":7,\"info\":{\"n\":\"seven\"}}",
                                    status_cb, &q),
                   0);
  uv_sem_wait(&q.sem);
  assert_int_equal(status_seen, 0);
  while (!memmem(s->buf, s->len, "]}}\n\n", 5))
    assert_true(tws_fill(s, 3000) > 0);
  s->buf[s->len] = 0;
  assert_non_null(strstr((char *)s->buf, "\"members\":[{\"id\":7,\"info\":{\"n\":\"seven\"}}]"));
  s->len = 0;

  assert_int_equal(
      vx_sse_subscribe(ev, "ffffffffffffffffffffffffffffffff", "a", NULL, status_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(status_seen, VX_ENOTFOUND);
  assert_int_equal(vx_sse_subscribe(ev, id, "presence-y", "{\"info\":1}", status_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(status_seen, VX_EINVAL);
  assert_true(strlen(status_msg) > 0);
  assert_int_equal(vx_sse_subscribe(ev, id, "bad name", NULL, status_cb, &q), VX_ECHANNEL);

  assert_int_equal(vx_broadcast(ev, "presence-x", "hello", "1", 1, NULL), 0);
  while (!memmem(s->buf, s->len, "\n\n", 2))
    assert_true(tws_fill(s, 3000) > 0);
  s->buf[s->len] = 0;
  assert_non_null(strstr(
      (char *)s->buf,
      "event: event\ndata: {\"type\":\"event\",\"channel\":\"presence-x\",\"event\":\"hello\""));
  assert_int_equal(vx_sse_unsubscribe(ev, id, "presence-x", status_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(status_seen, 0);
  tws_free(s);
  vx_free(ev);
  uv_sem_destroy(&q.sem);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(broadcast_reaches_subscribers_once_and_nobody_else),
      cmocka_unit_test(bad_messages_get_errors_and_the_connection_stays_usable),
      cmocka_unit_test(adopted_socket_with_bytes_already_read_becomes_a_client),
      cmocka_unit_test(slow_consumer_is_closed_with_1008_and_others_get_everything),
      cmocka_unit_test(silent_peer_is_dropped_after_a_missed_ping),
      cmocka_unit_test(answering_peer_survives_pings),
      cmocka_unit_test(oversized_and_invalid_utf8_messages_close_with_the_right_codes),
      cmocka_unit_test(fragmented_message_is_reassembled),
      cmocka_unit_test(close_sends_1001_to_every_client),
      cmocka_unit_test(auth_endpoint_asks_the_host_and_signs_its_answer),
      cmocka_unit_test(sse_subscribe_asks_the_authorizer_and_takes_its_member),
      cmocka_unit_test(host_subscribes_an_sse_stream_directly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
