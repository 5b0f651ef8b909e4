/* libFuzzer target: the core's JSON, UTF-8, name and member parsers, and the property that
 * whatever passes validation is spliced into envelopes that are themselves valid JSON. */
#include <stdlib.h>
#include <string.h>

#include "vx_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  const char *p = (const char *)d;
  bool valid = vx__json_valid(p, n);
  vx__utf8_valid(p, n);
  vx__json_has_nul(p, n);
  vx__channel_valid(p, n);
  const char *err = NULL;
  vx_member *m = NULL;
  if (vx__member_parse(p, n, &m, &err) == 0) {
    if (!vx__json_valid(m->json, m->json_len))
      abort(); /* a member we would send must be JSON */
    free(m);
  }
  if (valid) {
    const char *v;
    size_t vn;
    if (vx__json_field(p, n, "data", &v, &vn) && !vx__json_valid(v, vn))
      abort();
    const char *items[8];
    size_t lens[8];
    size_t k = vx__json_array_items(p, n, items, lens, 8);
    for (size_t i = 0; i < k && i < 8; i++)
      if (!vx__json_valid(items[i], lens[i]))
        abort();
    vx_buf *b = vx__envelope_frame("c", 1, "e", 1, p, n, NULL, 0);
    if (b) {
      size_t hl = vx__frame_payload_offset(b);
      if (!vx__json_valid(b->data + hl, b->len - hl))
        abort();
      vx_buf *s = vx__encode_sse("event", b->data + hl, b->len - hl, 1, "abcd0123");
      if (s && memchr(s->data, '\r', s->len))
        abort(); /* SSE lines are LF-only */
      vx__buf_unref(s);
      vx__buf_unref(b);
    }
  }
  /* Event names: any UTF-8 up to 200 bytes must escape into valid JSON. */
  size_t en = n < 200 ? n : 200;
  if (en && vx__utf8_valid(p, en)) {
    vx_buf *b = vx__envelope_frame("c", 1, p, en, "null", 4, NULL, 0);
    if (b) {
      size_t hl = vx__frame_payload_offset(b);
      if (!vx__json_valid(b->data + hl, b->len - hl))
        abort();
      vx__buf_unref(b);
    }
  }
  char url[300];
  size_t un = n < sizeof url - 1 ? n : sizeof url - 1;
  memcpy(url, p, un);
  url[un] = 0;
  vx__redis_url_valid(url);
  return 0;
}
