/* Recent broadcasts, for streams that reconnect (today: SSE resume with Last-Event-ID; the
 * channel streams of DESIGN §12 grow from here). A ring of the last `sse_history` broadcasts
 * (bounded in bytes too), each holding a reference to its WebSocket frame: remembering costs
 * a reference and one small allocation per broadcast; other encodings are built only if a
 * replay needs them. The hub appends; readers (sse.c) walk it oldest first. */
#include "vx_int.h"

#include <stdlib.h>
#include <string.h>

#define HIST_MAX_BYTES (4u * 1024 * 1024)

bool vx__history_on(const vx_events *ev) { return ev->sse_path && ev->opts.sse_history; }

static void drop_oldest(vx_events *ev) {
  uint32_t cap = ev->opts.sse_history;
  vx_hist *h = &ev->hist[ev->hist_head];
  ev->hist_bytes -= h->frame->len + h->clen;
  vx__buf_unref(h->frame);
  free(h->channel);
  ev->hist_head = (ev->hist_head + 1) % cap;
  ev->hist_len--;
}

void vx__history_remember(vx_events *ev, const char *channel, size_t clen, vx_buf *frame,
                          uint64_t seq) {
  uint32_t cap = ev->opts.sse_history;
  if (!ev->hist && !(ev->hist = calloc(cap, sizeof *ev->hist)))
    return;
  char *name = malloc(clen + 1);
  if (!name)
    return;
  memcpy(name, channel, clen);
  name[clen] = 0;
  while (ev->hist_len &&
         (ev->hist_len == cap || ev->hist_bytes + frame->len + clen > HIST_MAX_BYTES))
    drop_oldest(ev);
  vx_hist *h = &ev->hist[(ev->hist_head + ev->hist_len) % cap];
  h->seq = seq;
  h->frame = vx__buf_ref(frame);
  h->channel = name;
  h->clen = clen;
  ev->hist_len++;
  ev->hist_bytes += frame->len + clen;
}

uint32_t vx__history_len(const vx_events *ev) { return ev->hist_len; }

const vx_hist *vx__history_at(const vx_events *ev, uint32_t i) {
  return &ev->hist[(ev->hist_head + i) % ev->opts.sse_history];
}

void vx__history_free(vx_events *ev) {
  while (ev->hist_len)
    drop_oldest(ev);
  free(ev->hist);
  ev->hist = NULL;
}
