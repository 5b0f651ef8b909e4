/* The public C API without network clients: option validation, argument checks, error
 * names, listen errors, queries, and the close/free life cycle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <uv.h>

#include "vxevents.h"

typedef struct {
  uv_sem_t sem;
  int status;
  uint64_t count;
  size_t n;
  int calls;
} waiter;

static void count_cb(int status, uint64_t count, void *data) {
  waiter *w = data;
  w->status = status;
  w->count = count;
  w->calls++;
  uv_sem_post(&w->sem);
}

static void channels_cb(int status, const char *const *names, size_t n, void *data) {
  (void)names;
  waiter *w = data;
  w->status = status;
  w->n = n;
  w->calls++;
  uv_sem_post(&w->sem);
}

static void close_cb(void *data) {
  waiter *w = data;
  w->calls++;
}

static void errors_have_names_and_texts(void **st) {
  (void)st;
  assert_string_equal(vx_err_name(VX_EINVAL), "EINVAL");
  assert_string_equal(vx_err_name(VX_ESECRET), "ESECRET");
  assert_string_equal(vx_strerror(VX_ECLOSED), "instance is closed");
  assert_non_null(strstr(vx_strerror(VX_ESECRET), "32"));
  assert_string_equal(vx_strerror(0), "success");
  assert_string_equal(vx_strerror(-999), "unknown error");
  assert_string_equal(vx_err_name(-999), "UNKNOWN");
}

static void options_are_validated(void **st) {
  (void)st;
  vx_events *ev = (vx_events *)1;
  vx_options o;
  vx_options_init(&o);
  assert_string_equal(o.path, "/ws");
  assert_int_equal(o.ping_interval_ms, 30000);
  assert_int_equal(o.max_payload, 1048576);
  o.path = "ws";
  assert_int_equal(vx_new(&ev, &o), VX_EINVAL);
  assert_null(ev);
  vx_options_init(&o);
  o.path = "/ws?x";
  assert_int_equal(vx_new(&ev, &o), VX_EINVAL);
  vx_options_init(&o);
  o.max_send_queue = 0;
  assert_int_equal(vx_new(&ev, &o), VX_EINVAL);
  assert_int_equal(vx_new(NULL, NULL), VX_EINVAL);
  vx_free(NULL);
}

static void broadcast_arguments_are_checked_before_queueing(void **st) {
  (void)st;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, NULL), 0);
  assert_int_equal(vx_broadcast(ev, "ok", "e", "{}", 2, NULL), 0);
  assert_int_equal(vx_broadcast(ev, "ok", "e", NULL, 0, NULL), 0);
  assert_int_equal(vx_broadcast(ev, "bad name", "e", "{}", 2, NULL), VX_ECHANNEL);
  assert_int_equal(vx_broadcast(ev, "", "e", "{}", 2, NULL), VX_ECHANNEL);
  assert_int_equal(vx_broadcast(ev, NULL, "e", "{}", 2, NULL), VX_ECHANNEL);
  assert_int_equal(vx_broadcast(ev, "ok", "", "{}", 2, NULL), VX_EINVAL);
  assert_int_equal(vx_broadcast(ev, "ok", NULL, "{}", 2, NULL), VX_EINVAL);
  assert_int_equal(vx_broadcast(ev, "ok", "e", "{", 1, NULL), VX_EJSON);
  assert_int_equal(vx_broadcast(ev, "ok", "e", "{} x", 4, NULL), VX_EJSON);
  char big_event[202];
  memset(big_event, 'e', 201);
  big_event[201] = 0;
  assert_int_equal(vx_broadcast(ev, "ok", big_event, "1", 1, NULL), VX_EINVAL);
  const char *chs[] = {"a", "b c"};
  assert_int_equal(vx_broadcast_many(ev, chs, 2, "e", "1", 1, NULL), VX_ECHANNEL);
  assert_int_equal(vx_broadcast_many(ev, chs, 0, "e", "1", 1, NULL), VX_EINVAL);
  assert_int_equal(vx_broadcast_many(ev, chs, 1, "e", "1", 1, NULL), 0);
  assert_int_equal(vx_subscriber_count(ev, "no way", count_cb, NULL), VX_ECHANNEL);
  assert_int_equal(vx_channels(ev, NULL, NULL), VX_EINVAL);
  vx_free(ev);
}

static void queries_answer_through_callbacks_exactly_once(void **st) {
  (void)st;
  vx_events *ev;
  waiter w = {0};
  uv_sem_init(&w.sem, 0);
  assert_int_equal(vx_new(&ev, NULL), 0);
  assert_int_equal(vx_subscriber_count(ev, "orders", count_cb, &w), 0);
  uv_sem_wait(&w.sem);
  assert_int_equal(w.status, 0);
  assert_int_equal(w.count, 0);
  assert_int_equal(vx_has_subscribers(ev, "orders", count_cb, &w), 0);
  uv_sem_wait(&w.sem);
  assert_int_equal(w.count, 0);
  assert_int_equal(vx_channels(ev, channels_cb, &w), 0);
  uv_sem_wait(&w.sem);
  assert_int_equal(w.status, 0);
  assert_int_equal(w.n, 0);
  assert_int_equal(w.calls, 3);
  vx_free(ev);
  uv_sem_destroy(&w.sem);
}

static void listen_reports_address_in_use_and_bad_hosts(void **st) {
  (void)st;
  vx_events *a, *b;
  int port = 0, port2 = 0;
  assert_int_equal(vx_new(&a, NULL), 0);
  assert_int_equal(vx_new(&b, NULL), 0);
  assert_int_equal(vx_listen(a, "127.0.0.1", 0, &port), 0);
  assert_true(port > 0);
  assert_int_equal(vx_listen(a, "127.0.0.1", 0, NULL), VX_EBUSY);
  assert_int_equal(vx_listen(b, "127.0.0.1", port, &port2), VX_EADDRINUSE);
  assert_int_equal(vx_listen(b, "not-an-address", 0, NULL), VX_EINVAL);
  assert_int_equal(vx_listen(b, "127.0.0.1", 70000, NULL), VX_EINVAL);
  assert_int_equal(vx_listen(b, "::1", 0, &port2), 0);
  vx_free(a);
  vx_free(b);
}

static void close_runs_its_callback_once_and_refuses_later_calls(void **st) {
  (void)st;
  vx_events *ev;
  waiter w = {0};
  uv_sem_init(&w.sem, 0);
  assert_int_equal(vx_new(&ev, NULL), 0);
  assert_int_equal(vx_close(ev, 100, close_cb, &w), 0);
  assert_int_equal(vx_close(ev, 100, close_cb, &w), VX_ECLOSED);
  assert_int_equal(vx_broadcast(ev, "a", "e", "1", 1, NULL), VX_ECLOSED);
  assert_int_equal(vx_subscriber_count(ev, "a", count_cb, &w), VX_ECLOSED);
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, NULL), VX_ECLOSED);
  vx_free(ev);
  assert_int_equal(w.calls, 1);
  uv_sem_destroy(&w.sem);
}

static void sign_matches_independent_hmac_known_answers(void **st) {
  (void)st;
  vx_options o;
  vx_options_init(&o);
  o.auth_secret = "0123456789abcdef0123456789abcdef";
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  char out[400];
  /* Expected values computed with Python's hmac module. */
  int n = vx_sign(ev, "1234.5678", "private-user.1", NULL, out, sizeof out);
  assert_int_equal(n, 9 + 1 + 64);
  assert_string_equal(out,
                      "1234.5678:72b436ccb7798077dd7fe44ba64090b697f15f8ceacba476f3869ed4872d790f");
  n = vx_sign(ev, "1234.5678", "presence-room", "{\"id\":\"u1\",\"info\":{\"name\":\"A\"}}", out,
              sizeof out);
  assert_true(n > 0);
  assert_string_equal(out,
                      "1234.5678:89d869bc3f16c72c4e0fb257619f51e14a619253fbe34165b7e3b27499180e45");
  assert_int_equal(vx_sign(ev, "bad id", "private-x", NULL, out, sizeof out), VX_EINVAL);
  assert_int_equal(vx_sign(ev, "1.2", "bad channel", NULL, out, sizeof out), VX_EINVAL);
  assert_int_equal(vx_sign(ev, "1.2", "private-x", NULL, out, 10), VX_EINVAL);
  vx_free(ev);
  assert_int_equal(vx_new(&ev, NULL), 0);
  assert_int_equal(vx_sign(ev, "1.2", "private-x", NULL, out, sizeof out), VX_ESECRET);
  vx_free(ev);
  o.auth_secret = "only-31-characters-long-secret!";
  assert_int_equal(vx_new(&ev, &o), VX_ESECRET);
}

static void auth_reply_checks_member_json(void **st) {
  (void)st;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, NULL), 0);
  assert_int_equal(vx_auth_reply(ev, 1, 1, "{\"info\":1}", NULL), VX_EINVAL);
  assert_int_equal(vx_auth_reply(ev, 1, 1, "{\"id\":{}}", NULL), VX_EINVAL);
  assert_int_equal(vx_auth_reply(ev, 1, 1, "nope", NULL), VX_EINVAL);
  assert_int_equal(vx_auth_reply(ev, 1, 1, "{\"id\":\"u\"}", NULL), 0); /* unknown id: ignored */
  assert_int_equal(vx_auth_reply(ev, 1, 0, NULL, "no"), 0);
  vx_free(ev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(errors_have_names_and_texts),
      cmocka_unit_test(options_are_validated),
      cmocka_unit_test(broadcast_arguments_are_checked_before_queueing),
      cmocka_unit_test(queries_answer_through_callbacks_exactly_once),
      cmocka_unit_test(listen_reports_address_in_use_and_bad_hosts),
      cmocka_unit_test(close_runs_its_callback_once_and_refuses_later_calls),
      cmocka_unit_test(sign_matches_independent_hmac_known_answers),
      cmocka_unit_test(auth_reply_checks_member_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
