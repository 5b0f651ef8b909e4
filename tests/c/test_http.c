/* The HTTP ingress: the permessage-deflate negotiation on its own, and the route table over
 * a real socket handed to the core with vx_adopt (a socketpair: the test is the client). */
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

#include "http_int.h"

static void deflate_offers_are_accepted_or_declined_per_rfc7692(void **state) {
  (void)state;
  struct {
    const char *offer;
    bool accepted, echo;
  } cases[] = {
      {"permessage-deflate", true, false},
      {"permessage-deflate; client_max_window_bits", true, false},
      {"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true, false},
      {"permessage-deflate; server_max_window_bits=15", true, true},
      {"permessage-deflate; server_max_window_bits=\"15\"", true, true},
      {"permessage-deflate; server_max_window_bits=10", false, false},
      {"permessage-deflate; client_max_window_bits=7", false, false},
      {"permessage-deflate; client_max_window_bits=16", false, false},
      {"permessage-deflate; server_no_context_takeover=1", false, false},
      {"permessage-deflate; foo=bar", false, false},
      {"permessage-deflate; x-unknown", false, false},
      {"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false, false},
      {"permessage-deflate; foo, permessage-deflate", true, false},
      {"x-webkit-deflate-frame", false, false},
      {"x-other; a=1, permessage-deflate; server_max_window_bits=15", true, true},
      {"", false, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    bool echo = false;
    bool ok = vx__ws_deflate_negotiate(cases[i].offer, strlen(cases[i].offer), &echo);
    if (ok != cases[i].accepted || (ok && echo != cases[i].echo))
      fail_msg("offer '%s': accepted %d echo %d, want %d %d", cases[i].offer, ok, echo,
               cases[i].accepted, cases[i].echo);
  }
}

/* ---- the route table through vx_adopt ---- */

static int adopted(vx_events *ev) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal(vx_adopt(ev, sv[1], NULL, 0), 0);
  return sv[0];
}

/* Send `req`, read until `n` responses have come (Content-Length bodies) or EOF. */
static char *exchange(int fd, const char *req, int n) {
  assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
  size_t cap = 65536, len = 0;
  char *buf = calloc(1, cap);
  for (;;) {
    int got = 0;
    const char *p = buf;
    while ((p = strstr(p, "\r\n\r\n"))) {
      const char *cl = NULL;
      for (const char *h = p; h > buf && h[-1] != 0; h--)
        if (strncasecmp(h, "Content-Length:", 15) == 0 && (h == buf || h[-1] == '\n'))
          cl = h;
      size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
      if ((size_t)(p + 4 + body - buf) > len)
        break;
      got++;
      p += 4 + body;
    }
    if (got >= n)
      break;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 3000) <= 0)
      break;
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r <= 0)
      break;
    len += (size_t)r;
  }
  return buf;
}

static int status_of(const char *resp) {
  int st = 0;
  return sscanf(resp, "HTTP/1.1 %d", &st) == 1 ? st : -1;
}

static void routes_answer_with_the_right_status(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  o.sse_path = "/events";
  o.api_key = "test-key";
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  struct {
    const char *req;
    int status;
    const char *says;
  } cases[] = {
      {"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200, "\"status\":\"ok\""},
      {"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL},
      {"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "Allow: GET"},
      {"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, "Not found"},
      {"GET /health?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL},
      {"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426, "Upgrade: websocket"},
      {"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, NULL},
      {"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 404,
       NULL},
      {"GET /ws/auth HTTP/1.1\r\nHost: x\r\n\r\n", 405, "Allow: POST"},
      {"POST /ws/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400, "socketId"},
      {"POST /events/subscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400,
       "connectionId"},
      {"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 401,
       "WWW-Authenticate: Bearer"},
      {"POST /api/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\nContent-Length: "
       "2\r\n\r\n{}",
       400, "\"path\":\"batch\""},
      {"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
       "Content-Length: 33\r\n\r\n{\"channel\":\"c\",\"event\":\"e\",\"data\":1}",
       400, "\"path\":\"body\""}, /* the body cut short by its Content-Length is not JSON */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int fd = adopted(ev);
    char *resp = exchange(fd, cases[i].req, 1);
    if (status_of(resp) != cases[i].status || (cases[i].says && !strstr(resp, cases[i].says)))
      fail_msg("%s\n-> %s\nwant %d %s", cases[i].req, resp, cases[i].status,
               cases[i].says ? cases[i].says : "");
    free(resp);
    close(fd);
  }
  /* Pipelined requests are answered in order on one connection. */
  int fd = adopted(ev);
  char *resp =
      exchange(fd,
               "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
               3);
  char *a = strstr(resp, "HTTP/1.1 200"), *b = a ? strstr(a + 1, "HTTP/1.1 404") : NULL,
       *c = b ? strstr(b + 1, "HTTP/1.1 200") : NULL;
  if (!a || !b || !c)
    fail_msg("pipelined answers out of order: %s", resp);
  free(resp);
  close(fd);
  vx_free(ev);
}

static void sse_routes_are_off_without_an_sse_path(void **state) {
  (void)state;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, NULL), 0);
  int fd = adopted(ev);
  char *resp = exchange(fd, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n", 1);
  assert_int_equal(status_of(resp), 404);
  free(resp);
  close(fd);
  fd = adopted(ev);
  resp = exchange(fd, "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 1);
  assert_int_equal(status_of(resp), 404); /* no API key: no API */
  free(resp);
  close(fd);
  vx_free(ev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(deflate_offers_are_accepted_or_declined_per_rfc7692),
      cmocka_unit_test(routes_answer_with_the_right_status),
      cmocka_unit_test(sse_routes_are_off_without_an_sse_path),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
