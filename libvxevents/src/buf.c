/* Reference-counted frame buffers. */
#include "vx_int.h"

#include <stdlib.h>

vx_buf *vx__buf_new(size_t len) {
  if (len > UINT32_MAX)
    return NULL;
  vx_buf *b = malloc(sizeof *b + len);
  if (!b)
    return NULL;
  b->refs = 1;
  b->len = (uint32_t)len;
  return b;
}

void vx__buf_unref(vx_buf *b) {
  if (b && --b->refs == 0)
    free(b);
}
