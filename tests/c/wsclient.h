/* A small blocking WebSocket client for the C integration tests: loopback TCP, the
 * RFC 6455 handshake, masked client frames, unmasked server frames. Every read has a
 * timeout so a missing message fails the test instead of hanging it. */
#ifndef VX_TEST_WSCLIENT_H
#define VX_TEST_WSCLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int fd;
  uint8_t buf[1 << 20];
  size_t len;
} tws;

__attribute__((unused)) static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

__attribute__((unused)) static int send_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w <= 0)
      return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Read more bytes into c->buf; 1 on data, 0 on EOF, -1 on timeout/error. */
__attribute__((unused)) static int tws_fill(tws *c, int timeout_ms) {
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) <= 0)
    return -1;
  ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (r < 0)
    return -1;
  if (r == 0)
    return 0;
  c->len += (size_t)r;
  return 1;
}

/* Read an HTTP response head; returns status code or -1. Leaves body/extra in buf. */
__attribute__((unused)) static int tws_http_status(tws *c, int timeout_ms) {
  for (;;) {
    uint8_t *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (e) {
      int st = -1;
      sscanf((const char *)c->buf, "HTTP/1.1 %d", &st);
      size_t used = (size_t)(e + 4 - c->buf);
      memmove(c->buf, c->buf + used, c->len - used);
      c->len -= used;
      return st;
    }
    if (tws_fill(c, timeout_ms) <= 0)
      return -1;
  }
}

__attribute__((unused)) static int tws_open_fd(tws *c, int fd, const char *path) {
  c->fd = fd;
  c->len = 0;
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   path);
  if (send_all(fd, req, (size_t)n) != 0)
    return -1;
  return tws_http_status(c, 3000) == 101 ? 0 : -1;
}

__attribute__((unused)) static tws *tws_open(int port, const char *path) {
  tws *c = calloc(1, sizeof *c);
  int fd = tcp_connect(port);
  if (fd < 0 || tws_open_fd(c, fd, path) != 0) {
    if (fd >= 0)
      close(fd);
    free(c);
    return NULL;
  }
  return c;
}

__attribute__((unused)) static int tws_send_frame(tws *c, uint8_t opcode, const void *p, size_t n) {
  uint8_t h[14];
  size_t hl = 2;
  h[0] = (uint8_t)(0x80 | opcode);
  if (n < 126) {
    h[1] = (uint8_t)(0x80 | n);
  } else if (n <= 0xFFFF) {
    h[1] = 0x80 | 126;
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
    hl = 4;
  } else {
    h[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++)
      h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    hl = 10;
  }
  uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
  memcpy(h + hl, mask, 4);
  hl += 4;
  uint8_t *f = malloc(hl + n);
  memcpy(f, h, hl);
  for (size_t i = 0; i < n; i++)
    f[hl + i] = ((const uint8_t *)p)[i] ^ mask[i & 3];
  int r = send_all(c->fd, f, hl + n);
  free(f);
  return r;
}

__attribute__((unused)) static int tws_send_text(tws *c, const char *s) {
  return tws_send_frame(c, 1, s, strlen(s));
}

/* Next frame: returns opcode (payload NUL-terminated in *out, caller frees), -1 on
 * timeout, -2 on EOF. Pings are answered and skipped. */
__attribute__((unused)) static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((unused)) static int tws_next(tws *c, char **out, size_t *outlen, int timeout_ms) {
  long long deadline = now_ms() + timeout_ms;
  for (;;) {
    if (c->len >= 2) {
      uint64_t n = c->buf[1] & 0x7F;
      size_t hl = 2;
      if (n == 126 && c->len >= 4) {
        n = ((uint64_t)c->buf[2] << 8) | c->buf[3];
        hl = 4;
      } else if (n == 127 && c->len >= 10) {
        n = 0;
        for (int i = 0; i < 8; i++)
          n = (n << 8) | c->buf[2 + i];
        hl = 10;
      } else if (n >= 126) {
        hl = 0;
      }
      if (hl && c->len >= hl + n) {
        int op = c->buf[0] & 0x0F;
        char *p = malloc(n + 1);
        memcpy(p, c->buf + hl, n);
        p[n] = 0;
        memmove(c->buf, c->buf + hl + n, c->len - hl - n);
        c->len -= hl + (size_t)n;
        if (op == 9) {
          tws_send_frame(c, 10, p, n);
          free(p);
          continue;
        }
        if (out)
          *out = p;
        else
          free(p);
        if (outlen)
          *outlen = (size_t)n;
        return op;
      }
    }
    long long left = deadline - now_ms();
    if (left <= 0)
      return -1;
    int r = tws_fill(c, (int)left);
    if (r < 0)
      return -1;
    if (r == 0)
      return -2;
  }
}

/* Next text message, or NULL. */
__attribute__((unused)) static char *tws_text(tws *c, int timeout_ms) {
  char *p = NULL;
  int op = tws_next(c, &p, NULL, timeout_ms);
  if (op == 1)
    return p;
  free(p);
  return NULL;
}

/* Wait for a close frame; returns its status code, or -1. */
__attribute__((unused)) static int tws_close_code(tws *c, int timeout_ms) {
  for (;;) {
    char *p = NULL;
    size_t n = 0;
    int op = tws_next(c, &p, &n, timeout_ms);
    if (op < 0) {
      fprintf(stderr, "tws_close_code: %s before a close frame\n", op == -2 ? "EOF" : "timeout");
      return -1;
    }
    if (op == 8) {
      int code = n >= 2 ? (((uint8_t)p[0] << 8) | (uint8_t)p[1]) : 1005;
      free(p);
      return code;
    }
    free(p);
  }
}

__attribute__((unused)) static void tws_free(tws *c) {
  if (c) {
    close(c->fd);
    free(c);
  }
}

#endif
