/* libFuzzer target: whatever a peer sends on a fresh connection — HTTP requests, WebSocket
 * handshakes and frames, SSE requests, API and auth bodies — through the real core. Each
 * input is handed to a running instance as the bytes already read from an adopted socket
 * whose other end is then closed; a stats query afterwards waits until it was processed. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vxevents.h"

static vx_events *ev;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int answered;

static void authorize(const vx_auth_request *req, void *data) {
  (void)data;
  vx_auth_reply(ev, req->id, req->channel[0] != 'x', "{\"id\":\"u\",\"info\":{}}", "no");
}

static void stats_cb(int status, const vx_stats *s, void *data) {
  (void)status;
  (void)s;
  (void)data;
  pthread_mutex_lock(&mu);
  answered = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  vx_options o;
  vx_options_init(&o);
  o.api_key = "k";
  o.auth_secret = "0123456789abcdef0123456789abcdef";
  o.sse_path = "/events";
  o.authorize = authorize;
  o.max_payload = 65536;
  if (vx_new(&ev, &o) != 0)
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    return 0;
  if (vx_adopt(ev, sv[0], (const char *)d, n) != 0) {
    close(sv[1]);
    return 0;
  }
  pthread_mutex_lock(&mu);
  answered = 0;
  pthread_mutex_unlock(&mu);
  vx_stats_get(ev, stats_cb, NULL);
  pthread_mutex_lock(&mu);
  while (!answered)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  close(sv[1]); /* the core sees EOF and closes its end */
  return 0;
}
