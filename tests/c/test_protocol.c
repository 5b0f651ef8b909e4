/* Codecs of the wire protocol: JSON validation, UTF-8, channel names, escaping, frames,
 * the event envelope and the handshake accept key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "vx_int.h"

static bool jv(const char *s) { return vx__json_valid(s, strlen(s)); }

static void json_validator_accepts_every_kind_of_value(void **st) {
  (void)st;
  const char *ok[] = {"{}",
                      "[]",
                      "\"x\"",
                      "0",
                      "-0.5e10",
                      "1E+2",
                      "true",
                      "false",
                      "null",
                      " {\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\\n\\\"\"} ",
                      "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
                      "[[[]]]",
                      "123456789012345678901234567890"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    if (!jv(ok[i]))
      fail_msg("rejected valid JSON: %s", ok[i]);
  }
}

static void json_validator_rejects_malformed_text(void **st) {
  (void)st;
  const char *bad[] = {"",
                       " ",
                       "{",
                       "}",
                       "{\"a\"}",
                       "{\"a\":}",
                       "[1,]",
                       "[,1]",
                       "01",
                       "1.",
                       ".5",
                       "-",
                       "+1",
                       "1e",
                       "'a'",
                       "nul",
                       "tru",
                       "{\"a\":1}x",
                       "{} {}",
                       "\"\x01\"",
                       "\"abc",
                       "\"\\x\"",
                       "\"\\u12g4\"",
                       "{a:1}",
                       "[1 2]",
                       "\"\xc0\x80\"",
                       "\"\xed\xa0\x80\"",
                       "\"\xf4\x90\x80\x80\"",
                       "NaN",
                       "{\"a\":1,}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (jv(bad[i]))
      fail_msg("accepted invalid JSON #%zu: %s", i, bad[i]);
  }
}

static void json_validator_bounds_nesting_depth(void **st) {
  (void)st;
  char deep[2 * (VX_JSON_DEPTH_MAX + 1) + 1];
  size_t n = 0;
  for (int i = 0; i < VX_JSON_DEPTH_MAX; i++)
    deep[n++] = '[';
  for (int i = 0; i < VX_JSON_DEPTH_MAX; i++)
    deep[n++] = ']';
  assert_true(vx__json_valid(deep, n));
  n = 0;
  for (int i = 0; i <= VX_JSON_DEPTH_MAX; i++)
    deep[n++] = '[';
  for (int i = 0; i <= VX_JSON_DEPTH_MAX; i++)
    deep[n++] = ']';
  assert_false(vx__json_valid(deep, n));
}

static void json_validator_never_reads_past_the_end(void **st) {
  (void)st;
  /* Each prefix of a valid document is checked from a heap copy of exactly that size, so
   * ASan catches any over-read. */
  const char *doc = "{\"k\":[1,-2.5e3,\"s\\u0041\",true,null,{\"x\":false}]}";
  size_t n = strlen(doc);
  for (size_t i = 0; i < n; i++) {
    char *p = malloc(i ? i : 1);
    memcpy(p, doc, i);
    assert_false(vx__json_valid(p, i));
    free(p);
  }
  assert_true(vx__json_valid(doc, n));
}

static void utf8_validator_follows_rfc3629(void **st) {
  (void)st;
  assert_true(vx__utf8_valid("plain ascii text longer than eight", 34));
  assert_true(vx__utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
  assert_true(vx__utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
  assert_false(vx__utf8_valid("\xc0\xaf", 2));         /* overlong */
  assert_false(vx__utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
  assert_false(vx__utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
  assert_false(vx__utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
  assert_false(vx__utf8_valid("abc\xc3", 4));          /* truncated */
  assert_false(vx__utf8_valid("\x80", 1));             /* lone continuation */
  assert_false(vx__utf8_valid("\xff", 1));
  assert_false(vx__utf8_valid("aaaaaaaaaaaa\xfe", 13));
}

static void channel_names_follow_the_documented_alphabet(void **st) {
  (void)st;
  char name[202];
  memset(name, 'a', sizeof name);
  assert_true(vx__channel_valid("orders", 6));
  assert_true(vx__channel_valid("private-user.123", 16));
  assert_true(vx__channel_valid("a_b-c=d@e,f.g;h:i/j", 19));
  assert_true(vx__channel_valid(name, 200));
  assert_false(vx__channel_valid(name, 201));
  assert_false(vx__channel_valid("", 0));
  assert_false(vx__channel_valid("a b", 3));
  assert_false(vx__channel_valid("a\"b", 3));
  assert_false(vx__channel_valid("caf\xc3\xa9", 5));
  assert_false(vx__channel_valid("a\0b", 3));
  assert_false(vx__channel_valid("a*", 2));
}

static void escaping_produces_valid_json_strings(void **st) {
  (void)st;
  const char in[] = "q\"b\\n\n\t\x01\x1f\xc3\xa9";
  size_t n = sizeof in - 1;
  char out[128];
  out[0] = '"';
  char *e = vx__json_escape_into(out + 1, in, n);
  *e++ = '"';
  assert_int_equal((size_t)(e - out), vx__json_escaped_len(in, n) + 2);
  *e = 0;
  assert_string_equal(out, "\"q\\\"b\\\\n\\n\\t\\u0001\\u001f\xc3\xa9\"");
  assert_true(vx__json_valid(out, strlen(out)));
}

static void frame_header_uses_the_shortest_length_encoding(void **st) {
  (void)st;
  uint8_t h[10];
  assert_int_equal(vx__frame_header(h, 1, 0), 2);
  assert_int_equal(h[0], 0x81);
  assert_int_equal(h[1], 0);
  assert_int_equal(vx__frame_header(h, 1, 125), 2);
  assert_int_equal(h[1], 125);
  assert_int_equal(vx__frame_header(h, 1, 126), 4);
  assert_int_equal(h[1], 126);
  assert_int_equal(h[2], 0);
  assert_int_equal(h[3], 126);
  assert_int_equal(vx__frame_header(h, 1, 65535), 4);
  assert_int_equal(vx__frame_header(h, 2, 65536), 10);
  assert_int_equal(h[0], 0x82);
  assert_int_equal(h[1], 127);
  assert_int_equal(h[7], 1);
  assert_int_equal(h[8], 0);
  assert_int_equal(h[9], 0);
}

static void envelope_is_one_frame_with_the_documented_json(void **st) {
  (void)st;
  const char *data = "{\"orderId\":7}";
  vx_buf *b = vx__envelope_frame("orders", 6, "order\"created", 13, data, strlen(data), NULL, 0);
  assert_non_null(b);
  const char *want = "{\"type\":\"event\",\"channel\":\"orders\",\"event\":\"order\\\"created\","
                     "\"data\":{\"orderId\":7}}";
  size_t wl = strlen(want);
  assert_int_equal(b->len, wl + 2);
  assert_int_equal((uint8_t)b->data[0], 0x81);
  assert_int_equal((uint8_t)b->data[1], wl);
  assert_memory_equal(b->data + 2, want, wl);
  assert_true(vx__json_valid(b->data + 2, wl));
  assert_int_equal(b->refs, 1);
  vx__buf_ref(b);
  assert_int_equal(b->refs, 2);
  vx__buf_unref(b);
  vx__buf_unref(b);
}

static void envelope_frames_large_payloads_with_64bit_length(void **st) {
  (void)st;
  size_t n = 70000;
  char *data = malloc(n + 2);
  data[0] = '"';
  memset(data + 1, 'x', n);
  data[n + 1] = '"';
  vx_buf *b = vx__envelope_frame("c", 1, "e", 1, data, n + 2, NULL, 0);
  assert_non_null(b);
  assert_int_equal((uint8_t)b->data[1], 127);
  uint64_t len = 0;
  for (int i = 0; i < 8; i++)
    len = (len << 8) | (uint8_t)b->data[2 + i];
  assert_int_equal(len, b->len - 10);
  assert_true(vx__json_valid(b->data + 10, (size_t)len));
  vx__buf_unref(b);
  free(data);
}

static void accept_key_matches_rfc6455_example(void **st) {
  (void)st;
  char out[29];
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
  assert_int_equal(vx__ws_accept_key(key, strlen(key), out), 0);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void strings_grow_and_escape(void **st) {
  (void)st;
  vx_str s = {0};
  for (int i = 0; i < 100; i++)
    vx__str_addz(&s, "0123456789");
  assert_int_equal(s.len, 1000);
  vx__str_add_json_string(&s, "\"", 1);
  assert_int_equal(s.len, 1004);
  assert_string_equal(s.p + 1000, "\"\\\"\"");
  vx__str_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(json_validator_accepts_every_kind_of_value),
      cmocka_unit_test(json_validator_rejects_malformed_text),
      cmocka_unit_test(json_validator_bounds_nesting_depth),
      cmocka_unit_test(json_validator_never_reads_past_the_end),
      cmocka_unit_test(utf8_validator_follows_rfc3629),
      cmocka_unit_test(channel_names_follow_the_documented_alphabet),
      cmocka_unit_test(escaping_produces_valid_json_strings),
      cmocka_unit_test(frame_header_uses_the_shortest_length_encoding),
      cmocka_unit_test(envelope_is_one_frame_with_the_documented_json),
      cmocka_unit_test(envelope_frames_large_payloads_with_64bit_length),
      cmocka_unit_test(accept_key_matches_rfc6455_example),
      cmocka_unit_test(strings_grow_and_escape),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
