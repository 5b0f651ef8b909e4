/* permessage-deflate (RFC 7692) without context takeover in either direction, so that a
 * broadcast is compressed once and the same compressed frame is shared by every recipient
 * that negotiated the extension, exactly like the plain frame is. One deflate and one inflate
 * stream per instance (loop thread only), reset for every message: no per-connection zlib
 * state, which would cost ~300 KB per connection. */
#include "vx_int.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static z_stream *zdef(vx_events *ev) {
  if (!ev->zdef) {
    z_stream *z = calloc(1, sizeof *z);
    if (!z || deflateInit2(z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      free(z);
      return NULL;
    }
    ev->zdef = z;
  }
  return ev->zdef;
}

static z_stream *zinf(vx_events *ev) {
  if (!ev->zinf) {
    z_stream *z = calloc(1, sizeof *z);
    if (!z || inflateInit2(z, -15) != Z_OK) {
      free(z);
      return NULL;
    }
    ev->zinf = z;
  }
  return ev->zinf;
}

vx_buf *vx__deflate_frame(vx_events *ev, const uint8_t *in, size_t n) {
  z_stream *z = zdef(ev);
  if (!z || deflateReset(z) != Z_OK)
    return NULL;
  size_t cap = deflateBound(z, n) + 16;
  vx_buf *b = vx__buf_new(10 + cap);
  if (!b)
    return NULL;
  z->next_in = (Bytef *)in;
  z->avail_in = (uInt)n;
  z->next_out = (Bytef *)b->data + 10;
  z->avail_out = (uInt)cap;
  if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in != 0) {
    vx__buf_unref(b);
    return NULL;
  }
  size_t clen = cap - z->avail_out;
  /* The message ends with the empty stored block of the sync flush; RFC 7692 drops its
   * 00 00 ff ff tail. */
  if (clen < 4 || memcmp(b->data + 10 + clen - 4, "\x00\x00\xff\xff", 4) != 0) {
    vx__buf_unref(b);
    return NULL;
  }
  clen -= 4;
  if (clen + 4 >= n) { /* not worth it: the plain frame goes out */
    vx__buf_unref(b);
    return NULL;
  }
  uint8_t hdr[10];
  size_t h = vx__frame_header(hdr, 0x1, clen);
  hdr[0] |= 0x40; /* RSV1: compressed */
  memmove(b->data + h, b->data + 10, clen);
  memcpy(b->data, hdr, h);
  b->len = (uint32_t)(h + clen);
  return b;
}

int vx__inflate_msg(vx_events *ev, const uint8_t *in, size_t n, size_t max, char **out,
                    size_t *outlen) {
  z_stream *z = zinf(ev);
  if (!z || inflateReset(z) != Z_OK)
    return VX_ENOMEM;
  max += 1; /* room to notice a message one byte over the limit */
  size_t cap = n * 4 + 64 < max ? n * 4 + 64 : max;
  char *o = malloc(cap + 1);
  if (!o)
    return VX_ENOMEM;
  static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
  size_t have = 0;
  for (int part = 0; part < 2; part++) {
    z->next_in = (Bytef *)(part ? tail : in);
    z->avail_in = (uInt)(part ? 4 : n);
    while (z->avail_in > 0) {
      if (have == cap) {
        if (cap >= max) {
          free(o);
          return VX_ETOOBIG;
        }
        size_t ncap = cap * 2 < max ? cap * 2 : max;
        char *no = realloc(o, ncap + 1);
        if (!no) {
          free(o);
          return VX_ENOMEM;
        }
        o = no;
        cap = ncap;
      }
      z->next_out = (Bytef *)o + have;
      z->avail_out = (uInt)(cap - have);
      int r = inflate(z, Z_SYNC_FLUSH);
      have = cap - z->avail_out;
      if (r == Z_STREAM_END)
        break;
      if (r != Z_OK && r != Z_BUF_ERROR) {
        free(o);
        return VX_EINVAL;
      }
      if (r == Z_BUF_ERROR && z->avail_out > 0)
        break; /* needs input it will not get */
    }
  }
  if (have >= max) {
    free(o);
    return VX_ETOOBIG;
  }
  o[have] = 0;
  *out = o;
  *outlen = have;
  return 0;
}

void vx__deflate_free(vx_events *ev) {
  if (ev->zdef) {
    deflateEnd(ev->zdef);
    free(ev->zdef);
    ev->zdef = NULL;
  }
  if (ev->zinf) {
    inflateEnd(ev->zinf);
    free(ev->zinf);
    ev->zinf = NULL;
  }
}
