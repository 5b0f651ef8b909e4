/* Flow control through the public API: the command queue is bounded however long the loop
 * is busy (here: blocked in the host's on_connect hook, as a slow fan-out or a slow host
 * would block it), VX_EAGAIN is what a full queue answers, and vx_wait_capacity /
 * vx_on_capacity wake the producer when the loop drained it, or with VX_ECLOSED. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <string.h>
#include <uv.h>

#include "vxevents.h"
#include "wsclient.h"

typedef struct {
  atomic_int blocked;  /* the hook is holding the loop */
  atomic_int release;  /* the test lets it go */
  atomic_int loop_wait; /* vx_wait_capacity on the loop thread answered this */
  vx_events *ev;
} hold;

static void holding_hook(const char *socket_id, void *data) {
  (void)socket_id;
  hold *h = data;
  atomic_store(&h->loop_wait, vx_wait_capacity(h->ev, 10));
  atomic_store(&h->blocked, 1);
  for (int i = 0; i < 1000 && !atomic_load(&h->release); i++)
    uv_sleep(5);
}

/* 0 once `s` is posted, -1 after `ms` */
static int sem_wait_ms(uv_sem_t *s, int ms) {
  for (int i = 0; i < ms; i++) {
    if (uv_sem_trywait(s) == 0)
      return 0;
    uv_sleep(1);
  }
  return -1;
}

typedef struct {
  uv_sem_t sem;
  atomic_int status;
  atomic_int calls;
} cap;

static void capacity_cb(int status, void *data) {
  cap *c = data;
  atomic_store(&c->status, status);
  atomic_fetch_add(&c->calls, 1);
  uv_sem_post(&c->sem);
}

typedef struct {
  uv_sem_t sem;
  vx_stats st;
} stats_w;

static void stats_cb(int status, const vx_stats *s, void *data) {
  stats_w *w = data;
  assert_int_equal(status, 0);
  w->st = *s;
  uv_sem_post(&w->sem);
}

static vx_events *blocked_instance(hold *h, int *fd) {
  vx_options o;
  vx_options_init(&o);
  o.max_command_queue = 64 * 1024;
  o.on_connect = holding_hook;
  o.hook_data = h;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  h->ev = ev;
  int port = 0;
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  *fd = tcp_connect(port);
  assert_true(*fd >= 0);
  const char *req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(send_all(*fd, req, strlen(req)), 0);
  for (int i = 0; i < 400 && !atomic_load(&h->blocked); i++)
    uv_sleep(5);
  assert_true(atomic_load(&h->blocked));
  return ev;
}

/* Push 1 KiB broadcasts until the queue refuses; returns how many it took. */
static int fill(vx_events *ev) {
  static char data[1026];
  data[0] = '"';
  memset(data + 1, 'x', 1024);
  data[1025] = '"';
  for (int n = 0; n < 100000; n++) {
    int r = vx_broadcast(ev, "c", "e", data, sizeof data, NULL);
    if (r == VX_EAGAIN)
      return n;
    assert_int_equal(r, 0);
  }
  fail_msg("the command queue took 100000 broadcasts (100 MiB) while the loop was blocked");
  return -1;
}

static void command_queue_is_bounded_while_the_loop_is_blocked(void **st) {
  (void)st;
  hold h = {0};
  int fd;
  vx_events *ev = blocked_instance(&h, &fd);
  int n = fill(ev);
  /* 64 KiB of 1 KiB broadcasts (plus their bookkeeping): some dozens, never more. */
  assert_true(n >= 16);
  assert_true(n <= 64);
  assert_int_equal(fill(ev), 0); /* still full */
  assert_int_equal(vx_wait_capacity(ev, 0), VX_EAGAIN);
  long long t0 = now_ms();
  assert_int_equal(vx_wait_capacity(ev, 100), VX_EAGAIN); /* bounded wait */
  assert_true(now_ms() - t0 >= 90);
  cap c = {0};
  uv_sem_init(&c.sem, 0);
  assert_int_equal(vx_on_capacity(ev, capacity_cb, &c), 0);
  uv_sleep(50);
  assert_int_equal(atomic_load(&c.calls), 0); /* no room yet: not called */

  atomic_store(&h.release, 1); /* the loop goes on and drains the queue */
  assert_int_equal(vx_wait_capacity(ev, 5000), 0);
  assert_int_equal(sem_wait_ms(&c.sem, 5000), 0);
  assert_int_equal(atomic_load(&c.status), 0);
  assert_int_equal(atomic_load(&c.calls), 1);
  assert_int_equal(atomic_load(&h.loop_wait), VX_EINVAL); /* never on the loop thread */
  assert_int_equal(vx_broadcast(ev, "c", "e", "1", 1, NULL), 0);

  stats_w w;
  uv_sem_init(&w.sem, 0);
  assert_int_equal(vx_stats_get(ev, stats_cb, &w), 0);
  assert_int_equal(sem_wait_ms(&w.sem, 5000), 0);
  assert_true(w.st.flow_waits >= 2);   /* the two refused above */
  assert_true(w.st.flow_wait_ms >= 90); /* the bounded waits */
  assert_true(w.st.command_queue_bytes <= 64 * 1024);
  uv_sem_destroy(&w.sem);
  uv_sem_destroy(&c.sem);
  close(fd);
  vx_free(ev);
}

static void close_wakes_whoever_waits_for_capacity(void **st) {
  (void)st;
  hold h = {0};
  int fd;
  vx_events *ev = blocked_instance(&h, &fd);
  assert_true(fill(ev) > 0);
  cap c = {0};
  uv_sem_init(&c.sem, 0);
  assert_int_equal(vx_on_capacity(ev, capacity_cb, &c), 0);
  assert_int_equal(vx_close(ev, 0, NULL, NULL), 0);
  long long t0 = now_ms();
  assert_int_equal(vx_wait_capacity(ev, 5000), VX_ECLOSED);
  assert_true(now_ms() - t0 < 1000);
  assert_int_equal(vx_on_capacity(ev, capacity_cb, &c), VX_ECLOSED);
  assert_int_equal(vx_broadcast(ev, "c", "e", "1", 1, NULL), VX_ECLOSED);
  atomic_store(&h.release, 1);
  assert_int_equal(sem_wait_ms(&c.sem, 5000), 0);
  /* the broadcasts queued before the close ran; the callback heard of room or of close */
  int s = atomic_load(&c.status);
  assert_true(s == 0 || s == VX_ECLOSED);
  assert_int_equal(atomic_load(&c.calls), 1);
  close(fd);
  vx_free(ev);
  uv_sem_destroy(&c.sem);
}

static void water_marks_are_checked(void **st) {
  (void)st;
  vx_options o;
  vx_options_init(&o);
  assert_int_equal(o.flow_high_water, 16u << 20);
  assert_int_equal(o.flow_low_water, 0); /* half of flow_high_water */
  assert_int_equal(o.max_command_queue, 1u << 20);
  assert_int_equal(o.slow_consumer_ms, 10000);
  o.flow_high_water = 32; /* below its bound */
  char err[256];
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_EINVAL);
  assert_non_null(strstr(err, "flow_high_water"));
  assert_int_equal(vx_wait_capacity(NULL, 0), VX_EINVAL);
  assert_int_equal(vx_on_capacity(NULL, capacity_cb, NULL), VX_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(command_queue_is_bounded_while_the_loop_is_blocked),
      cmocka_unit_test(close_wakes_whoever_waits_for_capacity),
      cmocka_unit_test(water_marks_are_checked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
