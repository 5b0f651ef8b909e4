/* Error names, string copies and socket-id randomness (logging: log.c). */
#include "vx_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

char *vx__dupz(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

char *vx__dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    if (n)
      memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

const char *vx_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define VX_ERR_TEXT(name, code, text)                                                              \
  case code:                                                                                       \
    return text;
    VX_ERRNO_MAP(VX_ERR_TEXT)
#undef VX_ERR_TEXT
  }
  return "unknown error";
}

const char *vx_err_name(int err) {
  switch (err) {
  case 0:
    return "OK";
#define VX_ERR_NAME(name, code, text)                                                              \
  case code:                                                                                       \
    return #name;
    VX_ERRNO_MAP(VX_ERR_NAME)
#undef VX_ERR_NAME
  }
  return "UNKNOWN";
}

/* Socket ids must be unguessable: they are the subject of channel-auth signatures and of
 * `except`. Random bytes come from the kernel CSPRNG in blocks of 256 so a connection
 * costs no syscall of its own most of the time. */
void vx__random_id(vx_events *ev, char *out) {
  static const char hex[] = "0123456789abcdef";
  const size_t need = VX_SOCKET_ID_LEN / 2;
  if (ev->rnd_pos + need > sizeof ev->rnd) {
    size_t got = 0;
    while (got < sizeof ev->rnd) {
      ssize_t r = getrandom(ev->rnd + got, sizeof ev->rnd - got, 0);
      if (r > 0)
        got += (size_t)r;
    }
    ev->rnd_pos = 0;
  }
  for (size_t i = 0; i < need; i++) {
    uint8_t b = ev->rnd[ev->rnd_pos + i];
    out[2 * i] = hex[b >> 4];
    out[2 * i + 1] = hex[b & 15];
  }
  memset(ev->rnd + ev->rnd_pos, 0, need);
  ev->rnd_pos += need;
  out[VX_SOCKET_ID_LEN] = '\0';
}
