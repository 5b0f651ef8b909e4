/* The hub and the node on their own: a fake transport (connections whose queued frames and
 * JSON messages the test reads back, no sockets, no loop thread) and the single-instance
 * backplane. Subscribe, broadcast (one shared frame per encoding), except, presence dedupe,
 * unsubscribe-all, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vx_int.h"

/* ---- the fake transport: JSON messages of the core's own are recorded here ---- */
#define MAX_MSGS 16
typedef struct {
  vx_conn c;
  char *msgs[MAX_MSGS];
  int nmsgs;
} fake;

static void fake_send_json(vx_conn *c, const char *type, const char *json, size_t n) {
  (void)type;
  fake *f = (fake *)c;
  assert_true(f->nmsgs < MAX_MSGS);
  f->msgs[f->nmsgs] = strndup(json, n);
  f->nmsgs++;
}
static void fake_close(vx_conn *c, uint16_t code, const char *reason) {
  (void)c, (void)code, (void)reason;
}
static void fake_read(vx_conn *c, const uint8_t *p, size_t n) { (void)c, (void)p, (void)n; }
static const vx_transport fake_tp = {"fake", fake_read, fake_send_json, fake_close, NULL, NULL};

static vx_events *hub_new(void) {
  vx_events *ev = calloc(1, sizeof *ev);
  vx_options_init(&ev->opts);
  ev->opts.max_channels_per_conn = 3;
  ev->rnd_pos = sizeof ev->rnd;
  memcpy(ev->sse_tag, "abcdef01", 9);
  ev->bp.ops = &vx__backplane_local; /* the single-instance backplane, answering from the hub */
  ev->bp.h = &vx__node_backplane_handler;
  return ev;
}

static fake *conn_new(vx_events *ev, int enc) {
  fake *f = calloc(1, sizeof *f);
  vx_conn *c = &f->c;
  c->ev = ev;
  c->tp = &fake_tp;
  c->kind = enc == VX_ENC_SSE ? VXK_SSE : VXK_WS;
  c->phase = VXP_OPEN;
  c->enc = (uint8_t)enc;
  vx__random_id(ev, c->id);
  assert_int_equal(vx__map_put(&ev->sockets, c->id, VX_SOCKET_ID_LEN, c), 0);
  return f;
}

static void conn_free(vx_events *ev, fake *f) {
  vx_conn *c = &f->c;
  vx__hub_unsubscribe_all(c);
  vx__map_del(&ev->sockets, c->id, VX_SOCKET_ID_LEN);
  while (c->qlen) {
    vx__buf_unref(c->q[c->qhead]);
    c->qhead = (c->qhead + 1) & (c->qcap - 1);
    c->qlen--;
  }
  free(c->q);
  free(c->subs);
  for (int i = 0; i < f->nmsgs; i++)
    free(f->msgs[i]);
  free(f);
}

static void hub_free(vx_events *ev) {
  vx__hub_free(ev);
  vx__history_free(ev); /* the channel streams (as vx_free does) */
  vx__deflate_free(ev);
  free(ev);
}

/* The i-th frame queued to `f` (borrowed) and its payload as text (owned). */
static vx_buf *queued(fake *f, uint32_t i) {
  assert_true(i < f->c.qlen);
  return f->c.q[(f->c.qhead + i) & (f->c.qcap - 1)];
}
static char *payload(const vx_buf *b) {
  size_t off = vx__frame_payload_offset(b);
  return strndup(b->data + off, b->len - off);
}

static void broadcast(vx_events *ev, const char *ch, const char *event, const char *data,
                      const char *except) {
  const char *names[1] = {ch};
  size_t lens[1] = {strlen(ch)};
  assert_int_equal(
      vx__node_broadcast(ev, names, lens, 1, event, strlen(event), data, strlen(data), except), 0);
}

static void subscribe(fake *f, const char *ch) {
  const char *err = NULL;
  assert_int_equal(vx__node_subscribe(&f->c, ch, strlen(ch), NULL, 0, &err), 0);
  char want[256];
  /* The channel stream's position comes with it (DESIGN §12): offset 0 before any broadcast. */
  snprintf(want, sizeof want,
           "{\"type\":\"subscription_succeeded\",\"channel\":\"%s\",\"data\":{\"offset\":0,"
           "\"epoch\":\"",
           ch);
  assert_true(f->nmsgs > 0);
  assert_int_equal(strncmp(f->msgs[f->nmsgs - 1], want, strlen(want)), 0);
}

static void one_frame_shared_by_every_recipient_but_the_excepted(void **state) {
  (void)state;
  vx_events *ev = hub_new();
  fake *a = conn_new(ev, VX_ENC_WS), *b = conn_new(ev, VX_ENC_WS), *x = conn_new(ev, VX_ENC_WS),
       *other = conn_new(ev, VX_ENC_WS);
  subscribe(a, "orders");
  subscribe(b, "orders");
  subscribe(x, "orders");
  subscribe(other, "elsewhere");
  assert_int_equal(vx__hub_count(ev, "orders", 6), 3);
  broadcast(ev, "orders", "order.created", "{\"id\":7}", x->c.id);
  assert_int_equal(a->c.qlen, 1);
  assert_int_equal(b->c.qlen, 1);
  assert_int_equal(x->c.qlen, 0);
  assert_int_equal(other->c.qlen, 0);
  assert_ptr_equal(queued(a, 0), queued(b, 0)); /* one frame, two references */
  char *p = payload(queued(a, 0));
  assert_string_equal(p, "{\"type\":\"event\",\"channel\":\"orders\",\"event\":\"order.created\","
                         "\"data\":{\"id\":7},\"offset\":1}");
  free(p);
  fake *all[] = {a, b, x, other};
  for (int i = 0; i < 4; i++)
    conn_free(ev, all[i]);
  assert_int_equal(ev->channels.len, 0);
  hub_free(ev);
}

static void each_encoding_is_built_once_and_shared(void **state) {
  (void)state;
  vx_events *ev = hub_new();
  fake *w = conn_new(ev, VX_ENC_WS), *z1 = conn_new(ev, VX_ENC_WS_DEFLATE),
       *z2 = conn_new(ev, VX_ENC_WS_DEFLATE), *s1 = conn_new(ev, VX_ENC_SSE),
       *s2 = conn_new(ev, VX_ENC_SSE);
  fake *all[] = {w, z1, z2, s1, s2};
  for (int i = 0; i < 5; i++)
    subscribe(all[i], "news");
  char data[600];
  memset(data, 'a', sizeof data);
  data[0] = '"';
  data[sizeof data - 2] = '"';
  data[sizeof data - 1] = 0;
  broadcast(ev, "news", "long", data, NULL);
  vx_buf *plain = queued(w, 0), *zf = queued(z1, 0), *sf = queued(s1, 0);
  assert_ptr_equal(zf, queued(z2, 0));
  assert_ptr_equal(sf, queued(s2, 0));
  assert_true(plain != zf && plain != sf);
  assert_true(((uint8_t)zf->data[0] & 0x40) != 0); /* RSV1: compressed */
  assert_true(zf->len < plain->len / 4);
  assert_int_equal(strncmp(sf->data, "id: abcdef01-", 13), 0);
  assert_non_null(memmem(sf->data, sf->len,
                         "\nevent: event\ndata: {\"type\":\"event\",\"channel\":\"news\"", 52));
  /* A small message is not worth compressing: the plain frame itself goes out. */
  broadcast(ev, "news", "short", "1", NULL);
  assert_ptr_equal(queued(w, 1), queued(z1, 1));
  for (int i = 0; i < 5; i++)
    conn_free(ev, all[i]);
  hub_free(ev);
}

static int count_events(fake *f, const char *needle) {
  int n = 0;
  for (uint32_t i = 0; i < f->c.qlen; i++) {
    char *p = payload(queued(f, i));
    n += strstr(p, needle) != NULL;
    free(p);
  }
  return n;
}

static void presence_members_dedupe_and_events_fire_once(void **state) {
  (void)state;
  vx_events *ev = hub_new();
  fake *a1 = conn_new(ev, VX_ENC_WS), *a2 = conn_new(ev, VX_ENC_WS), *w = conn_new(ev, VX_ENC_WS);
  const char *err = NULL;
  const char *ann = "{\"id\":\"ann\",\"info\":{\"n\":1}}", *wat = "{\"id\":\"w\"}";
  assert_int_equal(vx__node_subscribe(&w->c, "presence-r", 10, wat, strlen(wat), &err), 0);
  assert_int_equal(vx__node_subscribe(&a1->c, "presence-r", 10, ann, strlen(ann), &err), 0);
  assert_non_null(strstr(a1->msgs[a1->nmsgs - 1], "\"members\":["));
  assert_non_null(strstr(a1->msgs[a1->nmsgs - 1], "{\"id\":\"ann\",\"info\":{\"n\":1}}"));
  assert_non_null(strstr(a1->msgs[a1->nmsgs - 1], "{\"id\":\"w\",\"info\":null}"));
  assert_int_equal(count_events(w, "\"member_added\""), 1);
  assert_int_equal(count_events(a1, "\"member_added\""), 0); /* not to the joiner */
  assert_int_equal(vx__node_subscribe(&a2->c, "presence-r", 10, ann, strlen(ann), &err), 0);
  assert_int_equal(count_events(w, "\"member_added\""), 1); /* the same user: no event */
  size_t ml = 0;
  char *members = vx__hub_members_json(ev, "presence-r", 10, &ml);
  assert_string_not_equal(members, "[]");
  const char *first = strstr(members, "\"ann\"");
  assert_non_null(first);
  assert_null(strstr(first + 1, "\"ann\"")); /* listed once */
  free(members);
  vx__node_unsubscribe(&a1->c, "presence-r", 10);
  assert_int_equal(count_events(w, "\"member_removed\""), 0); /* a2 is still there */
  vx__node_unsubscribe(&a2->c, "presence-r", 10);
  assert_int_equal(count_events(w, "\"member_removed\""), 1);
  /* Bad members are refused with a reason. */
  assert_int_not_equal(vx__node_subscribe(&a1->c, "presence-r", 10, "{\"info\":1}", 10, &err), 0);
  assert_non_null(strstr(err, "id"));
  assert_int_not_equal(vx__node_subscribe(&a1->c, "presence-r", 10, NULL, 0, &err), 0);
  assert_non_null(strstr(err, "member"));
  conn_free(ev, a1);
  conn_free(ev, a2);
  conn_free(ev, w);
  hub_free(ev);
}

static void unsubscribe_all_leaves_nothing_and_limits_are_reported(void **state) {
  (void)state;
  vx_events *ev = hub_new();
  fake *c = conn_new(ev, VX_ENC_WS);
  subscribe(c, "a");
  subscribe(c, "b");
  subscribe(c, "c");
  const char *err = NULL;
  assert_int_equal(vx__node_subscribe(&c->c, "d", 1, NULL, 0, &err), VX_EINVAL);
  assert_string_equal(err, "too many channels on this connection");
  assert_int_equal(vx__node_subscribe(&c->c, "bad name", 8, NULL, 0, &err), VX_ECHANNEL);
  subscribe(c, "a"); /* again: still one subscription, acknowledged */
  assert_int_equal(vx__hub_count(ev, "a", 1), 1);
  assert_int_equal(ev->channels.len, 3);
  vx__hub_unsubscribe_all(&c->c);
  assert_int_equal(ev->channels.len, 0);
  assert_int_equal(c->c.nsubs, 0);
  broadcast(ev, "a", "e", "1", NULL);
  assert_int_equal(c->c.qlen, 0);
  conn_free(ev, c);
  hub_free(ev);
}

static void client_events_are_marked_and_reserved_names_known(void **state) {
  (void)state;
  vx_events *ev = hub_new();
  fake *a = conn_new(ev, VX_ENC_WS), *b = conn_new(ev, VX_ENC_WS);
  const char *err = NULL;
  const char *ma = "{\"id\":42}", *mb = "{\"id\":\"b\"}";
  assert_int_equal(vx__node_subscribe(&a->c, "presence-x", 10, ma, strlen(ma), &err), 0);
  assert_int_equal(vx__node_subscribe(&b->c, "presence-x", 10, mb, strlen(mb), &err), 0);
  uint32_t before = b->c.qlen;
  assert_int_equal(vx__node_client_event(&a->c, "presence-x", 10, "typing", 6, "true", 4), 0);
  assert_int_equal(b->c.qlen, before + 1);
  char *p = payload(queued(b, before));
  assert_string_equal(p, "{\"type\":\"event\",\"channel\":\"presence-x\",\"event\":\"typing\","
                         "\"data\":true,\"client\":true,\"user_id\":42,\"offset\":1}");
  free(p);
  const char *reserved[] = {"connected", "member_added",           "member_removed",
                            "resumed",   "subscription_succeeded", "subscription_x",
                            "vx:offset"};
  for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
    assert_true(vx__event_reserved(reserved[i], strlen(reserved[i])));
  assert_false(vx__event_reserved("member_added2", 13));
  assert_false(vx__event_reserved("typing", 6));
  conn_free(ev, a);
  conn_free(ev, b);
  hub_free(ev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(one_frame_shared_by_every_recipient_but_the_excepted),
      cmocka_unit_test(each_encoding_is_built_once_and_shared),
      cmocka_unit_test(presence_members_dedupe_and_events_fire_once),
      cmocka_unit_test(unsubscribe_all_leaves_nothing_and_limits_are_reported),
      cmocka_unit_test(client_events_are_marked_and_reserved_names_known),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
