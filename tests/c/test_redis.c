/* Redis through the C API against a real redis-server started by the test: a
 * publisher-only instance (no listener, what background jobs use) reaching the clients of
 * a listening instance, the job pattern (vx_new, vx_broadcast, vx_shutdown) a hundred times,
 * queries that wait for the connection or fail with VX_EUNAVAILABLE, what close reports,
 * the outage backlog bound, and reaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/wait.h>
#include <uv.h>

#include "vxevents.h"
#include "wsclient.h"

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  bind(fd, (struct sockaddr *)&a, sizeof a);
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  return ntohs(a.sin_port);
}

static pid_t start_redis(int port) {
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", 1);
    dup2(devnull, 1);
    const char *bin = getenv("REDIS_SERVER") ? getenv("REDIS_SERVER") : "redis-server";
    execlp(bin, bin, "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 100; i++) {
    int fd = tcp_connect(port);
    if (fd >= 0) {
      close(fd);
      return pid;
    }
    usleep(50000);
  }
  fail_msg("redis-server did not start on port %d", port);
  return -1;
}

static void stop_redis(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

static void publisher_only_instance_reaches_clients_of_a_listening_instance(void **st) {
  (void)st;
  int rport = free_port();
  pid_t redis = start_redis(rport);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  o.redis_prefix = "ctest";
  vx_events *server, *publisher;
  assert_int_equal(vx_new(&server, &o), 0);
  assert_int_equal(vx_new(&publisher, &o), 0);
  int port;
  assert_int_equal(vx_listen(server, "127.0.0.1", 0, &port), 0);
  tws *w = tws_open(port, "/ws");
  assert_non_null(w);
  free(tws_text(w, 3000));
  assert_int_equal(tws_send_text(w, "{\"type\":\"subscribe\",\"channel\":\"jobs\"}"), 0);
  char *m = tws_text(w, 5000); /* only once Redis confirmed the SUBSCRIBE */
  /* With the channel stream's position, read from Redis (DESIGN §12). */
  assert_int_equal(strncmp(m, "{\"type\":\"subscription_succeeded\",\"channel\":\"jobs\",\"data\":"
                              "{\"offset\":0,\"epoch\":\"",
                           72),
                   0);
  free(m);
  /* The publisher may still be connecting: its broadcast waits in the backlog. */
  assert_int_equal(
      vx_broadcast(publisher, "jobs", "job.completed", "{\"jobId\":\"123\"}", 15, NULL), 0);
  m = tws_text(w, 8000);
  assert_non_null(m);
  assert_string_equal(m, "{\"type\":\"event\",\"channel\":\"jobs\",\"event\":\"job.completed\","
                         "\"data\":{\"jobId\":\"123\"},\"offset\":1}");
  free(m);
  char *extra = NULL;
  assert_int_equal(tws_next(w, &extra, NULL, 300), -1); /* exactly once */
  free(extra);
  tws_free(w);
  vx_free(publisher);
  vx_free(server);
  stop_redis(redis);
}

typedef struct {
  uv_sem_t sem;
  int status;
  uint64_t unpublished;
} closed_t;

static void on_shutdown(int status, uint64_t unpublished, void *data) {
  closed_t *c = data;
  c->status = status;
  c->unpublished = unpublished;
  uv_sem_post(&c->sem);
}

/* vx_shutdown, wait for its report, vx_free. */
static void shutdown_and_free(vx_events *ev, uint32_t grace, int *status, uint64_t *unpublished) {
  closed_t c;
  uv_sem_init(&c.sem, 0);
  assert_int_equal(vx_shutdown(ev, grace, on_shutdown, &c), 0);
  uv_sem_wait(&c.sem);
  uv_sem_destroy(&c.sem);
  vx_free(ev);
  *status = c.status;
  *unpublished = c.unpublished;
}

static void broadcasts_fail_with_ebacklog_once_an_outage_fills_the_backlog(void **st) {
  (void)st;
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port()); /* nobody there */
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  o.redis_backlog_max = 8192;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  char data[1002];
  data[0] = '"';
  memset(data + 1, 'x', 1000);
  data[1001] = '"';
  int r = 0, sent = 0;
  for (int i = 0; i < 200 && r == 0; i++) {
    r = vx_broadcast(ev, "c", "e", data, sizeof data, NULL);
    if (r == 0)
      sent++;
    usleep(2000); /* let the loop queue it */
  }
  assert_int_equal(r, VX_EBACKLOG);
  assert_true(sent >= 4 && sent <= 8);
  assert_non_null(strstr(vx_strerror(r), "Redis"));
  /* Prompt (the grace given), although Redis never answered; every accepted broadcast is
   * reported, none of the refused ones. */
  uint64_t t0 = uv_hrtime(), lost = 0;
  shutdown_and_free(ev, 300, &r, &lost);
  assert_true(uv_hrtime() - t0 < 3000000000ull);
  assert_int_equal(r, VX_EUNPUBLISHED);
  assert_int_equal(lost, (uint64_t)sent);
}

static void bad_redis_urls_are_refused(void **st) {
  (void)st;
  const char *bad[] = {"http://x",        "redis://",      "redis://:6379", "redis://h:0",
                       "redis://h:99999", "redis://h:1/x", "rediss://"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    vx_options o;
    vx_options_init(&o);
    o.redis_url = bad[i];
    vx_events *ev = NULL;
    if (vx_new(&ev, &o) != VX_EINVAL)
      fail_msg("accepted %s", bad[i]);
  }
  vx_options o;
  vx_options_init(&o);
  o.redis_url = "redis://127.0.0.1:6379";
  vx_events *refused = NULL;
  o.redis_connect_timeout_ms = 0;
  assert_int_equal(vx_new(&refused, &o), VX_EINVAL);
  o.redis_connect_timeout_ms = 3600001;
  assert_int_equal(vx_new(&refused, &o), VX_EINVAL);
  vx_options_init(&o);
  o.redis_url = "redis://user:p%40ss@localhost:6380/2";
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  vx_free(ev);
}

typedef struct {
  uv_sem_t sem;
  uint64_t count;
  size_t n;
  char first[64];
} q_t;

static void count_cb(int status, uint64_t count, void *data) {
  q_t *q = data;
  q->count = status ? 999 : count;
  uv_sem_post(&q->sem);
}

static void channels_cb(int status, const char *const *names, size_t n, void *data) {
  q_t *q = data;
  q->n = status ? 999 : n;
  snprintf(q->first, sizeof q->first, "%s", n ? names[0] : "");
  uv_sem_post(&q->sem);
}

static uint64_t cluster_count(vx_events *ev, q_t *q, const char *ch) {
  assert_int_equal(vx_subscriber_count(ev, ch, count_cb, q), 0);
  uv_sem_wait(&q->sem);
  return q->count;
}

/* Counts and channels answer for every instance; a killed instance's subscribers stop
 * counting within 5 s. */
static void counts_are_cluster_wide_and_dead_instances_are_reaped(void **st) {
  (void)st;
  int rport = free_port();
  pid_t redis = start_redis(rport);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  o.redis_prefix = "reap";
  /* A child process runs one instance with two subscribers, then is killed with -9. */
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  pid_t child = fork();
  if (child == 0) {
    vx_events *ev;
    int port;
    if (vx_new(&ev, &o) || vx_listen(ev, "127.0.0.1", 0, &port))
      _exit(2);
    for (int i = 0; i < 2; i++) {
      tws *w = tws_open(port, "/ws");
      free(tws_text(w, 3000));
      tws_send_text(w, "{\"type\":\"subscribe\",\"channel\":\"room\"}");
      free(tws_text(w, 5000));
    }
    if (write(pfd[1], "k", 1) != 1)
      _exit(3);
    pause();
    _exit(0);
  }
  char k;
  assert_int_equal(read(pfd[0], &k, 1), 1);
  vx_events *here;
  int port;
  assert_int_equal(vx_new(&here, &o), 0);
  assert_int_equal(vx_listen(here, "127.0.0.1", 0, &port), 0);
  tws *w = tws_open(port, "/ws");
  free(tws_text(w, 3000));
  assert_int_equal(tws_send_text(w, "{\"type\":\"subscribe\",\"channel\":\"room\"}"), 0);
  free(tws_text(w, 5000));
  q_t q;
  memset(&q, 0, sizeof q);
  uv_sem_init(&q.sem, 0);
  uint64_t c = 0;
  for (int i = 0; i < 50 && (c = cluster_count(here, &q, "room")) != 3; i++)
    usleep(100000);
  assert_int_equal(c, 3);
  assert_int_equal(vx_channels(here, channels_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(q.n, 1);
  assert_string_equal(q.first, "room");
  uint64_t t0 = uv_hrtime();
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  for (int i = 0; i < 100 && (c = cluster_count(here, &q, "room")) != 1; i++)
    usleep(50000);
  uint64_t took = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(c, 1);
  print_message("reaped after %llu ms\n", (unsigned long long)took);
  assert_true(took <= 5100); /* bound 5 s: a 3.5 s window + a 1 s heartbeat (+ the polling) */
  tws_free(w);
  for (int i = 0; i < 50 && (c = cluster_count(here, &q, "room")) != 0; i++)
    usleep(100000);
  assert_int_equal(c, 0);
  uv_sem_destroy(&q.sem);
  vx_free(here);
  close(pfd[0]);
  close(pfd[1]);
  stop_redis(redis);
}

static void listen_and_subscribe(vx_events *server, const char *ch, int n, tws **out) {
  int port;
  assert_int_equal(vx_listen(server, "127.0.0.1", 0, &port), 0);
  char sub[128];
  snprintf(sub, sizeof sub, "{\"type\":\"subscribe\",\"channel\":\"%s\"}", ch);
  for (int i = 0; i < n; i++) {
    out[i] = tws_open(port, "/ws");
    assert_non_null(out[i]);
    free(tws_text(out[i], 3000));
    assert_int_equal(tws_send_text(out[i], sub), 0);
    char *m = tws_text(out[i], 5000); /* once Redis confirmed the SUBSCRIBE */
    assert_non_null(m);
    assert_non_null(strstr(m, "subscription_succeeded"));
    free(m);
  }
}

/* The seed's job pattern, a hundred times within milliseconds: every broadcast accepted
 * while the publisher's Redis connection was still starting is published before
 * vx_shutdown reports 0, and reaches the subscriber of another instance exactly once. */
static void job_pattern_100_times_each_broadcast_reaches_a_subscriber_exactly_once(void **st) {
  (void)st;
  int rport = free_port();
  pid_t redis = start_redis(rport);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  o.redis_prefix = "cjobs";
  vx_events *server;
  assert_int_equal(vx_new(&server, &o), 0);
  tws *w;
  listen_and_subscribe(server, "jobs", 1, &w);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i <= 100; i++) { /* the 101st is the sentinel */
    vx_events *job;
    assert_int_equal(vx_new(&job, &o), 0);
    char data[32];
    int dl = snprintf(data, sizeof data, "{\"i\":%d}", i);
    assert_int_equal(
        vx_broadcast(job, "jobs", i < 100 ? "job.completed" : "done", data, (size_t)dl, NULL), 0);
    int status;
    uint64_t lost;
    shutdown_and_free(job, 0, &status, &lost);
    assert_int_equal(status, 0);
    assert_int_equal(lost, 0);
  }
  print_message("100 job cycles in %llu ms\n", (unsigned long long)((uv_hrtime() - t0) / 1000000));
  /* The subscriber's Redis connection delivers in PUBLISH order and each close returned after
   * Redis acknowledged its PUBLISH: a duplicate would come before the sentinel. */
  for (int i = 0; i <= 100; i++) {
    char *m = tws_text(w, 5000);
    assert_non_null(m);
    char want[160];
    snprintf(want, sizeof want,
             "{\"type\":\"event\",\"channel\":\"jobs\",\"event\":\"%s\",\"data\":{\"i\":%d},"
             "\"offset\":%d}",
             i < 100 ? "job.completed" : "done", i, i + 1);
    assert_string_equal(m, want);
    free(m);
  }
  tws_free(w);
  vx_free(server);
  stop_redis(redis);
}

typedef struct {
  uv_sem_t sem;
  int status;
  uint64_t count;
  size_t n;
  char json[256];
} r_t;

static void rcount_cb(int status, uint64_t count, void *data) {
  r_t *q = data;
  q->status = status;
  q->count = count;
  uv_sem_post(&q->sem);
}

static void rchannels_cb(int status, const char *const *names, size_t n, void *data) {
  (void)names;
  r_t *q = data;
  q->status = status;
  q->n = n;
  uv_sem_post(&q->sem);
}

static void rjson_cb(int status, const char *json, size_t len, void *data) {
  r_t *q = data;
  q->status = status;
  snprintf(q->json, sizeof q->json, "%.*s", (int)len, json ? json : "");
  uv_sem_post(&q->sem);
}

/* Right after vx_new the connection is not up: the query waits for it and answers for the
 * cluster (3 subscribers on another instance), not with this instance's 0. */
static void query_right_after_vx_new_answers_for_the_cluster(void **st) {
  (void)st;
  int rport = free_port();
  pid_t redis = start_redis(rport);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  vx_events *server;
  assert_int_equal(vx_new(&server, &o), 0);
  tws *w[3];
  listen_and_subscribe(server, "jobs", 3, w);
  r_t q;
  memset(&q, 0, sizeof q);
  uv_sem_init(&q.sem, 0);
  for (int i = 0; i < 20; i++) {
    vx_events *job;
    assert_int_equal(vx_new(&job, &o), 0);
    assert_int_equal(vx_subscriber_count(job, "jobs", rcount_cb, &q), 0);
    uv_sem_wait(&q.sem);
    assert_int_equal(q.status, 0);
    assert_int_equal(q.count, 3);
    assert_int_equal(vx_has_subscribers(job, "jobs", rcount_cb, &q), 0);
    uv_sem_wait(&q.sem);
    assert_int_equal(q.count, 1);
    assert_int_equal(vx_channels(job, rchannels_cb, &q), 0);
    uv_sem_wait(&q.sem);
    assert_int_equal(q.status, 0);
    assert_int_equal(q.n, 1);
    vx_free(job);
  }
  uv_sem_destroy(&q.sem);
  for (int i = 0; i < 3; i++)
    tws_free(w[i]);
  vx_free(server);
  stop_redis(redis);
}

/* Redis unreachable: every cluster-wide query fails with VX_EUNAVAILABLE after the connect
 * timeout, never with a local answer; close reports each broadcast it could not publish. */
static void unreachable_redis_queries_fail_with_eunavailable_and_close_reports(void **st) {
  (void)st;
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port()); /* nobody there */
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  o.redis_connect_timeout_ms = 200;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  r_t q;
  memset(&q, 0, sizeof q);
  uv_sem_init(&q.sem, 0);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(vx_subscriber_count(ev, "a", rcount_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(q.status, VX_EUNAVAILABLE);
  uint64_t took = (uv_hrtime() - t0) / 1000000;
  assert_true(took >= 150 && took < 2000);
  assert_int_equal(vx_has_subscribers(ev, "a", rcount_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(q.status, VX_EUNAVAILABLE);
  assert_int_equal(vx_channels(ev, rchannels_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(q.status, VX_EUNAVAILABLE);
  assert_int_equal(vx_presence_members(ev, "presence-a", rjson_cb, &q), 0);
  uv_sem_wait(&q.sem);
  assert_int_equal(q.status, VX_EUNAVAILABLE);
  assert_string_equal(vx_err_name(VX_EUNAVAILABLE), "EUNAVAILABLE");
  assert_non_null(strstr(vx_strerror(VX_EUNAVAILABLE), "Redis"));
  uv_sem_destroy(&q.sem);
  const char *chs[2] = {"a", "b"};
  assert_int_equal(vx_broadcast(ev, "a", "e", "1", 1, NULL), 0);
  assert_int_equal(vx_broadcast_many(ev, chs, 2, "e", "2", 1, NULL), 0);
  int status;
  uint64_t lost;
  t0 = uv_hrtime();
  shutdown_and_free(ev, 0, &status, &lost); /* grace 0: the connect timeout */
  took = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(status, VX_EUNPUBLISHED);
  assert_int_equal(lost, 3);
  assert_true(took < 2000);
}

/* An instance with nothing to publish does not wait for an unreachable Redis at close. */
static void close_without_broadcasts_does_not_wait_for_redis(void **st) {
  (void)st;
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());
  vx_options o;
  vx_options_init(&o);
  o.redis_url = url;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  uint64_t t0 = uv_hrtime(), lost;
  int status;
  shutdown_and_free(ev, 0, &status, &lost);
  assert_int_equal(status, 0);
  assert_int_equal(lost, 0);
  assert_true(uv_hrtime() - t0 < 500000000ull);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(publisher_only_instance_reaches_clients_of_a_listening_instance),
      cmocka_unit_test(broadcasts_fail_with_ebacklog_once_an_outage_fills_the_backlog),
      cmocka_unit_test(bad_redis_urls_are_refused),
      cmocka_unit_test(job_pattern_100_times_each_broadcast_reaches_a_subscriber_exactly_once),
      cmocka_unit_test(query_right_after_vx_new_answers_for_the_cluster),
      cmocka_unit_test(unreachable_redis_queries_fail_with_eunavailable_and_close_reports),
      cmocka_unit_test(close_without_broadcasts_does_not_wait_for_redis),
      cmocka_unit_test(counts_are_cluster_wide_and_dead_instances_are_reaped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
