/* Redis through the C API against a real redis-server started by the test: a
 * publisher-only instance (no listener, what background jobs use) reaching the clients of
 * a listening instance, and the outage backlog bound. */
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
  assert_string_equal(m, "{\"type\":\"subscription_succeeded\",\"channel\":\"jobs\"}");
  free(m);
  /* The publisher may still be connecting: its broadcast waits in the backlog. */
  assert_int_equal(vx_broadcast(publisher, "jobs", "job.completed", "{\"jobId\":\"123\"}", 15, NULL), 0);
  m = tws_text(w, 8000);
  assert_non_null(m);
  assert_string_equal(m, "{\"type\":\"event\",\"channel\":\"jobs\",\"event\":\"job.completed\","
                         "\"data\":{\"jobId\":\"123\"}}");
  free(m);
  char *extra = NULL;
  assert_int_equal(tws_next(w, &extra, NULL, 300), -1); /* exactly once */
  free(extra);
  tws_free(w);
  vx_free(publisher);
  vx_free(server);
  stop_redis(redis);
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
  vx_free(ev); /* prompt, although Redis never answered */
}

static void bad_redis_urls_are_refused(void **st) {
  (void)st;
  const char *bad[] = {"http://x", "redis://", "redis://:6379", "redis://h:0", "redis://h:99999",
                       "redis://h:1/x", "rediss://h"};
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
 * counting within 3 x the liveness interval. */
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
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  for (int i = 0; i < 100 && (c = cluster_count(here, &q, "room")) != 1; i++)
    usleep(100000);
  assert_int_equal(c, 1); /* reaped within 10 s (bound: 3 x 2 s + one tick) */
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

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(publisher_only_instance_reaches_clients_of_a_listening_instance),
      cmocka_unit_test(broadcasts_fail_with_ebacklog_once_an_outage_fills_the_backlog),
      cmocka_unit_test(bad_redis_urls_are_refused),
      cmocka_unit_test(counts_are_cluster_wide_and_dead_instances_are_reaped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
