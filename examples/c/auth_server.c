/* A C program hosting vxevents with its own channel authorizer.
 *
 * The core serves WebSocket on /ws and the token endpoint POST /ws/auth. For every token
 * request the core calls authorize(); this program decides from a demo header
 * "X-User: <id>:<name>" (a real app would check its session cookie) and answers with
 * vx_auth_reply. Private channels "private-user.<id>" belong to that user only; presence
 * channels get the user as member.
 *
 *   ./build/vxevents-example-auth [port]      (default 3031; secret from VX_AUTH_SECRET) */
#include "vxevents.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static vx_events *ev;

/* Find "X-User: id:name" among the raw headers. */
static int user_from_headers(const char *h, size_t n, char *id, size_t idn, char *name,
                             size_t namen) {
  const char *end = h + n;
  for (const char *p = h; p < end;) {
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    if (!eol)
      eol = end;
    if ((size_t)(eol - p) > 8 && strncasecmp(p, "X-User: ", 8) == 0) {
      const char *v = p + 8, *colon = memchr(v, ':', (size_t)(eol - v));
      if (!colon || (size_t)(colon - v) >= idn || (size_t)(eol - colon - 1) >= namen)
        return 0;
      memcpy(id, v, (size_t)(colon - v));
      id[colon - v] = 0;
      memcpy(name, colon + 1, (size_t)(eol - colon - 1));
      name[eol - colon - 1] = 0;
      return 1;
    }
    p = eol + 2;
  }
  return 0;
}

static void authorize(const vx_auth_request *req, void *data) {
  (void)data;
  char id[64], name[64];
  if (strcmp(req->channel_type, "public") == 0) {
    vx_auth_reply(ev, req->id, 1, NULL, NULL);
    return;
  }
  if (!user_from_headers(req->headers, req->headers_len, id, sizeof id, name, sizeof name) ||
      strpbrk(id, "\"\\") || strpbrk(name, "\"\\")) {
    vx_auth_reply(ev, req->id, 0, NULL, "Authentication required");
    return;
  }
  if (strncmp(req->channel, "private-user.", 13) == 0 && strcmp(req->channel + 13, id) != 0) {
    vx_auth_reply(ev, req->id, 0, NULL, "Access denied");
    return;
  }
  if (strcmp(req->channel_type, "presence") == 0) {
    char member[200];
    snprintf(member, sizeof member, "{\"id\":\"%s\",\"info\":{\"name\":\"%s\"}}", id, name);
    vx_auth_reply(ev, req->id, 1, member, NULL);
    return;
  }
  vx_auth_reply(ev, req->id, 1, NULL, NULL);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 3031;
  const char *secret = getenv("VX_AUTH_SECRET");
  vx_options o;
  vx_options_init(&o);
  o.auth_secret = secret ? secret : "example-secret-change-me-0123456789abcdef";
  o.authorize = authorize;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  int r = vx_new(&ev, &o);
  if (r == 0)
    r = vx_listen(ev, "127.0.0.1", port, &port);
  if (r) {
    fprintf(stderr, "auth example: %s\n", vx_strerror(r));
    vx_free(ev);
    return 1;
  }
  printf("auth example listening on http://127.0.0.1:%d (websocket path /ws)\n", port);
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  vx_close(ev, 1000, NULL, NULL);
  vx_free(ev);
  return 0;
}
