/* Server-Sent Events: the encoding on its own, and streams over real sockets handed to the
 * core with vx_adopt (the test reads the bytes): the event: field is the message's type,
 * ids carry the instance tag, and a stream reconnecting with Last-Event-ID gets what it
 * missed, then a resumed message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vx_int.h"

static void encoding_names_the_type_and_splits_lines(void **state) {
  (void)state;
  const char json[] = "{\"a\":1,\r\n\"b\":[\n2]}";
  vx_buf *b = vx__encode_sse("event", json, sizeof json - 1, 7, "0badc0de");
  assert_non_null(b);
  const char want[] =
      "id: 0badc0de-7\nevent: event\ndata: {\"a\":1, \ndata: \"b\":[\ndata: 2]}\n\n";
  assert_int_equal(b->len, sizeof want - 1);
  assert_memory_equal(b->data, want, sizeof want - 1);
  vx__buf_unref(b);
  b = vx__encode_sse("subscription_succeeded", "{}", 2, 0, "");
  assert_int_equal(b->len, strlen("event: subscription_succeeded\ndata: {}\n\n"));
  assert_memory_equal(b->data, "event: subscription_succeeded\ndata: {}\n\n", b->len);
  vx__buf_unref(b);
}

/* ---- streams through vx_adopt ---- */

typedef struct {
  int fd;
  char buf[65536];
  size_t len;
} stream;

static stream *open_stream(vx_events *ev, const char *target, const char *extra_headers) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal(vx_adopt(ev, sv[1], NULL, 0), 0);
  stream *s = calloc(1, sizeof *s);
  s->fd = sv[0];
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", target, extra_headers);
  assert_int_equal(write(s->fd, req, (size_t)n), n);
  return s;
}

/* Read until `needle` has arrived (3 s at most). */
static bool wait_for(stream *s, const char *needle) {
  for (int i = 0; i < 300; i++) {
    s->buf[s->len] = 0;
    if (strstr(s->buf, needle))
      return true;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, 10) > 0) {
      ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len - 1);
      if (r <= 0)
        return false;
      s->len += (size_t)r;
    }
  }
  return false;
}

static void close_stream(stream *s) {
  close(s->fd);
  free(s);
}

static void streams_resume_with_last_event_id(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  o.sse_path = "/events";
  o.heartbeat_interval_ms = 0;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  stream *s = open_stream(ev, "/events?channels=news", "");
  assert_true(wait_for(s, "event: subscription_succeeded\ndata: "
                          "{\"type\":\"subscription_succeeded\",\"channel\":\"news\",\"data\":"
                          "{\"offset\":0,\"epoch\":\""));
  assert_non_null(
      strstr(s->buf, "event: event\ndata: {\"type\":\"event\",\"event\":\"connected\""));
  assert_int_equal(vx_broadcast(ev, "news", "n", "1", 1, NULL), 0);
  assert_true(wait_for(s, "\"event\":\"n\",\"data\":1,\"offset\":1}"));
  /* The id of that event: "id: <8 hex>-<seq>" right before its event: line. */
  char *ev_line = strstr(s->buf, "\"event\":\"n\"");
  char *id = ev_line;
  while (id > s->buf && strncmp(id, "id: ", 4) != 0)
    id--;
  assert_int_equal(strncmp(id, "id: ", 4), 0);
  char last[64];
  assert_int_equal(sscanf(id + 4, "%63[^\n]", last), 1);
  assert_int_equal(strlen(last) > 9 && last[8] == '-', 1);
  close_stream(s);
  /* Missed while away: two on the channel and one elsewhere. */
  assert_int_equal(vx_broadcast(ev, "news", "n", "2", 1, NULL), 0);
  assert_int_equal(vx_broadcast(ev, "other", "n", "9", 1, NULL), 0);
  assert_int_equal(vx_broadcast(ev, "news", "n", "3", 1, NULL), 0);
  char hdr[128];
  snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", last);
  s = open_stream(ev, "/events?channels=news", hdr);
  assert_true(wait_for(
      s, "event: resumed\ndata: {\"type\":\"resumed\",\"recovered\":true,\"replayed\":2}"));
  char *two = strstr(s->buf, "\"data\":2,\"offset\":2}"), *three = strstr(s->buf, "\"data\":3,\"offset\":3}");
  assert_non_null(two);
  assert_non_null(three);
  assert_true(two < three);
  assert_null(strstr(s->buf, "\"data\":9,"));
  close_stream(s);
  /* An id from another instance resumes nothing and says so. */
  s = open_stream(ev, "/events?channels=news&lastEventId=deadbeef-1", "");
  assert_true(wait_for(s, "{\"type\":\"resumed\",\"recovered\":false,\"replayed\":0}"));
  close_stream(s);
  vx_free(ev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(encoding_names_the_type_and_splits_lines),
      cmocka_unit_test(streams_resume_with_last_event_id),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
