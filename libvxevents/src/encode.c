/* Encodings of one broadcast: the WebSocket text frame it was built as, the same frame
 * compressed (permessage-deflate), and its SSE form. Each is built at most once per
 * broadcast, on its first recipient that needs it, and shared by reference with every other
 * recipient of that encoding; a recipient's frame is chosen by its encoding tag. */
#include "vx_int.h"

#include <stdio.h>
#include <string.h>

size_t vx__frame_payload_offset(const vx_buf *frame) {
  uint8_t l7 = (uint8_t)frame->data[1] & 0x7F;
  return l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
}

vx_buf *vx__encode_sse(const char *type, const char *json, size_t n, uint64_t seq,
                       const char *tag) {
  size_t tlen = strlen(type);
  size_t lines = 0;
  for (size_t i = 0; i < n; i++)
    lines += json[i] == '\n';
  char idl[32] = "";
  int il = seq ? snprintf(idl, sizeof idl, "id: %s-%llu\n", tag, (unsigned long long)seq) : 0;
  size_t total = (size_t)il + 7 + tlen + 1 + 6 + n + lines * 6 + 2;
  vx_buf *b = vx__buf_new(total);
  if (!b)
    return NULL;
  char *d = b->data;
  memcpy(d, idl, (size_t)il);
  d += il;
  memcpy(d, "event: ", 7);
  d += 7;
  memcpy(d, type, tlen);
  d += tlen;
  memcpy(d, "\ndata: ", 7);
  d += 7;
  for (size_t i = 0; i < n; i++) {
    /* Raw CR/LF can only be whitespace between JSON tokens: a LF starts another data:
     * line (the client joins them with LF again), a CR becomes a space. */
    if (json[i] == '\n') {
      memcpy(d, "\ndata: ", 7);
      d += 7;
    } else {
      *d++ = json[i] == '\r' ? ' ' : json[i];
    }
  }
  *d++ = '\n';
  *d++ = '\n';
  b->len = (uint32_t)(d - b->data);
  return b;
}

void vx__frames_init(vx_frames *f, vx_events *ev, vx_buf *ws_frame, uint64_t seq) {
  memset(f, 0, sizeof *f);
  f->ev = ev;
  f->enc[VX_ENC_WS] = vx__buf_ref(ws_frame);
  f->tried = 1u << VX_ENC_WS;
  f->seq = seq;
}

vx_buf *vx__frames_build(vx_frames *f, int enc) {
  vx_buf *ws = f->enc[VX_ENC_WS];
  size_t off = vx__frame_payload_offset(ws);
  vx_buf *b = NULL;
  if (enc == VX_ENC_SSE) {
    b = vx__encode_sse("event", ws->data + off, ws->len - off, f->seq, f->ev->sse_tag);
  } else if (enc == VX_ENC_WS_DEFLATE) {
    /* Small messages, and those that do not shrink, go out plain (a compressed
     * connection may always receive uncompressed frames). */
    if (ws->len >= VX_DEFLATE_MIN)
      b = vx__deflate_frame(f->ev, (const uint8_t *)ws->data + off, ws->len - off);
    if (!b)
      b = vx__buf_ref(ws);
  }
  f->enc[enc] = b;
  f->tried |= 1u << enc;
  return b;
}

void vx__frames_release(vx_frames *f) {
  for (int i = 0; i < VX_ENC_COUNT; i++)
    vx__buf_unref(f->enc[i]);
}
