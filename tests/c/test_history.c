/* The channel streams through the public C API (DESIGN §12): vx_publish reports offsets,
 * vx_history reads a channel's stream, and history stays within its bounds — 10,000
 * channels at the default bounds stay under history_max_bytes, a channel keeps at most
 * history_size, and with history_size 0 idle channels cost nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "vxevents.h"

typedef struct {
  uv_sem_t sem;
  int status;
  uint64_t offset;
  char epoch[40];
  char *json;
  vx_stats stats;
} waiter;

static void published_cb(int status, uint64_t offset, const char *epoch, void *data) {
  waiter *w = data;
  w->status = status;
  w->offset = offset;
  snprintf(w->epoch, sizeof w->epoch, "%s", epoch ? epoch : "");
  uv_sem_post(&w->sem);
}

static void json_cb(int status, const char *json, size_t len, void *data) {
  waiter *w = data;
  w->status = status;
  free(w->json);
  w->json = json ? strndup(json, len) : NULL;
  uv_sem_post(&w->sem);
}

static void stats_cb(int status, const vx_stats *st, void *data) {
  waiter *w = data;
  w->status = status;
  if (st)
    w->stats = *st;
  uv_sem_post(&w->sem);
}

static vx_stats stats(vx_events *ev, waiter *w) {
  assert_int_equal(vx_stats_get(ev, stats_cb, w), 0);
  uv_sem_wait(&w->sem);
  assert_int_equal(w->status, 0);
  return w->stats;
}

static const char *history(vx_events *ev, waiter *w, const char *ch, uint64_t since,
                           uint32_t limit) {
  assert_int_equal(vx_history(ev, ch, since, limit, json_cb, w), 0);
  uv_sem_wait(&w->sem);
  assert_int_equal(w->status, 0);
  return w->json;
}

static int count(const char *s, const char *needle) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p++)
    n++;
  return n;
}

static void publish_reports_offsets_and_history_reads_the_stream(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  o.history_size = 3;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  waiter w = {0};
  uv_sem_init(&w.sem, 0);
  for (int i = 1; i <= 5; i++) {
    char d[16];
    int n = snprintf(d, sizeof d, "{\"i\":%d}", i);
    assert_int_equal(vx_publish(ev, "orders", "n", d, (size_t)n, NULL, published_cb, &w), 0);
    uv_sem_wait(&w.sem);
    assert_int_equal(w.status, 0);
    assert_int_equal(w.offset, (uint64_t)i);
    assert_int_equal(strlen(w.epoch), 8);
  }
  /* broadcast_many: each channel its own offset. */
  const char *two[2] = {"orders", "other"};
  assert_int_equal(vx_broadcast_many(ev, two, 2, "m", "1", 1, NULL), 0);
  const char *h = history(ev, &w, "orders", 0, 0);
  /* Offsets 1..3 are no longer kept (history_size 3): not complete, 4..6 there. */
  char want[128];
  snprintf(want, sizeof want, "{\"channel\":\"orders\",\"epoch\":\"%s\",\"offset\":6,\"complete\":false",
           w.epoch);
  assert_int_equal(strncmp(h, want, strlen(want)), 0);
  assert_int_equal(count(h, "\"type\":\"event\""), 3);
  assert_non_null(strstr(h, "{\"type\":\"event\",\"channel\":\"orders\",\"event\":\"n\",\"data\":{\"i\":4},"
                            "\"offset\":4}"));
  h = history(ev, &w, "orders", 4, 1);
  assert_non_null(strstr(h, "\"complete\":true,\"events\":[{\"type\":\"event\",\"channel\":\"orders\","
                            "\"event\":\"n\",\"data\":{\"i\":5},\"offset\":5}]}"));
  h = history(ev, &w, "other", 0, 0);
  assert_non_null(strstr(h, "\"offset\":1,\"complete\":true"));
  h = history(ev, &w, "never", 0, 0);
  assert_string_equal(h, "{\"channel\":\"never\",\"epoch\":\"\",\"offset\":0,\"complete\":true,\"events\":[]}");
  assert_int_equal(vx_history(ev, "bad name", 0, 0, json_cb, &w), VX_ECHANNEL);
  assert_int_equal(vx_publish(ev, "bad name", "n", "1", 1, NULL, published_cb, &w), VX_ECHANNEL);
  assert_int_equal(vx_publish(ev, "ok", "n", "{", 1, NULL, published_cb, &w), VX_EJSON);
  free(w.json);
  vx_free(ev);
  uv_sem_destroy(&w.sem);
}

static void ten_thousand_channels_stay_under_the_total_bound(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o); /* the default bounds */
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  waiter w = {0};
  uv_sem_init(&w.sem, 0);
  char data[128];
  memset(data, 'x', sizeof data);
  data[0] = '"';
  data[sizeof data - 1] = '"';
  char ch[32];
  for (int round = 0; round < 20; round++)
    for (int i = 0; i < 10000; i++) {
      snprintf(ch, sizeof ch, "room.%d", i);
      int r;
      while ((r = vx_broadcast(ev, ch, "n", data, sizeof data, NULL)) == VX_EAGAIN)
        uv_sleep(1); /* flow control: wait for the core to drain */
      assert_int_equal(r, 0);
    }
  vx_stats st = stats(ev, &w);
  print_message("history: %llu bytes in %llu streams (bound %zu)\n",
                (unsigned long long)st.history_bytes, (unsigned long long)st.history_streams,
                o.history_max_bytes);
  assert_true(st.history_bytes <= o.history_max_bytes);
  assert_true(st.history_bytes > o.history_max_bytes / 2); /* the bound was what held it */
  /* The channels quiet the longest gave up their history first (round-robin over 10,000
   * channels: the one broadcast to last still has its latest broadcast). */
  const char *h = history(ev, &w, "room.9999", 0, 0);
  assert_int_equal(count(h, "\"type\":\"event\""), 1);
  free(w.json);
  vx_free(ev);
  uv_sem_destroy(&w.sem);
}

static void per_channel_count_bound_and_idle_channels_cost_nothing(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  waiter w = {0};
  uv_sem_init(&w.sem, 0);
  for (int i = 0; i < 250; i++)
    assert_int_equal(vx_broadcast(ev, "busy", "n", "1", 1, NULL), 0);
  const char *h = history(ev, &w, "busy", 0, 1000);
  assert_int_equal(count(h, "\"type\":\"event\""), 100); /* history_size */
  assert_non_null(strstr(h, "\"offset\":250,\"complete\":false"));
  vx_free(ev);
  /* Without history, channels nobody listens to keep nothing at all. */
  o.history_size = 0;
  assert_int_equal(vx_new(&ev, &o), 0);
  char ch[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(ch, sizeof ch, "idle.%d", i);
    assert_int_equal(vx_broadcast(ev, ch, "n", "1", 1, NULL), 0);
  }
  vx_stats st = stats(ev, &w);
  assert_int_equal(st.history_bytes, 0);
  assert_int_equal(st.history_streams, 0);
  free(w.json);
  vx_free(ev);
  uv_sem_destroy(&w.sem);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(publish_reports_offsets_and_history_reads_the_stream),
      cmocka_unit_test(ten_thousand_channels_stay_under_the_total_bound),
      cmocka_unit_test(per_channel_count_bound_and_idle_channels_cost_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
