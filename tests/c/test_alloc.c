/* The broadcast path allocates per broadcast, never per recipient: with 1,000 subscribers
 * warmed up, a broadcast costs the same few allocations as with 10. malloc is wrapped at
 * link time (-Wl,--wrap=malloc), which catches every call from the core's own objects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <uv.h>

#include "vxevents.h"
#include "wsclient.h"

void *__real_malloc(size_t n);
static atomic_ulong mallocs;
void *__wrap_malloc(size_t n) {
  atomic_fetch_add(&mallocs, 1);
  return __real_malloc(n);
}

static uv_sem_t sem;
static vx_stats last;
static void stats_cb(int status, const vx_stats *s, void *data) {
  (void)status;
  (void)data;
  if (s)
    last = *s;
  uv_sem_post(&sem);
}

static vx_stats stats_of(vx_events *ev) {
  assert_int_equal(vx_stats_get(ev, stats_cb, NULL), 0);
  uv_sem_wait(&sem);
  return last;
}

/* Allocations made by the loop for `rounds` broadcasts to every client of `ws`. */
static unsigned long measure(vx_events *ev, tws **ws, int n, int rounds) {
  vx_stats before = stats_of(ev);
  unsigned long m0 = atomic_load(&mallocs);
  for (int r = 0; r < rounds; r++) {
    assert_int_equal(vx_broadcast(ev, "fan", "e", "{\"k\":1}", 7, NULL), 0);
    for (int i = 0; i < n; i++) {
      char *m = tws_text(ws[i], 5000);
      assert_non_null(m);
      free(m); /* the test's own frees/mallocs happen in tws: subtract them below */
    }
  }
  vx_stats after = stats_of(ev);
  assert_int_equal(after.messages_delivered - before.messages_delivered, (uint64_t)n * rounds);
  return atomic_load(&mallocs) - m0;
}

static void broadcast_allocates_nothing_per_recipient(void **st) {
  (void)st;
  /* 1,000 clients and their 1,000 server ends need more than the usual 1,024 fds. */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
    rl.rlim_cur = 4096;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  /* Fewer subscribers if the limit cannot be raised; the claim is the same. */
  int N = rl.rlim_cur >= 2100 ? 1000 : (int)(rl.rlim_cur - 100) / 2;
  assert_true(N >= 200);
  uv_sem_init(&sem, 0);
  vx_options o;
  vx_options_init(&o);
  o.ping_interval_ms = 0;
  vx_events *ev;
  int port;
  assert_int_equal(vx_new(&ev, &o), 0);
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  enum { ROUNDS = 20 };
  static tws *ws[1000];
  for (int i = 0; i < N; i++) {
    ws[i] = tws_open(port, "/ws");
    assert_non_null(ws[i]);
    free(tws_text(ws[i], 3000));
    assert_int_equal(tws_send_text(ws[i], "{\"type\":\"subscribe\",\"channel\":\"fan\"}"), 0);
    free(tws_text(ws[i], 3000));
  }
  measure(ev, ws, N, 5); /* warm-up: queue rings reach their working size */
  unsigned long big = measure(ev, ws, N, ROUNDS);
  /* The test's own client does one malloc per received message (tws_next): N * ROUNDS.
   * Whatever remains is the core's, and must not grow with N. */
  unsigned long core = big - (unsigned long)N * ROUNDS;
  print_message("mallocs: %lu for %d broadcasts to %d subscribers (%lu by the core)\n", big, ROUNDS,
                N, core);
  assert_true(core <= (unsigned long)ROUNDS * 8);
  for (int i = 0; i < N; i++)
    tws_free(ws[i]);
  vx_free(ev);
  uv_sem_destroy(&sem);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(broadcast_allocates_nothing_per_recipient),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
