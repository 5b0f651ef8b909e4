/* TLS through the C API over real loopback sockets: the option checks and their messages,
 * a TLS listener answering an OpenSSL client, vx_tls_configure before vx_listen, reloads
 * (good and bad files), and tls_errors counting plaintext and garbage on the TLS port.
 * Certificates are made with the openssl CLI in a fresh directory for each run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "vxevents.h"

static char dir[256];
static char ca[300], cert[300], key[300], cert2[300], key2[300], enc_key[300];

static void sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  assert_int_equal(system(cmd), 0);
}

static void make_leaf(const char *name) {
  sh("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key "
     "-out %s.csr -subj /CN=localhost 2>/dev/null && printf 'subjectAltName=DNS:localhost,"
     "IP:127.0.0.1\\n' > %s.ext && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key "
     "-CAcreateserial -out %s.pem -days 2 -extfile %s.ext 2>/dev/null",
     dir, name, name, name, name, name, name);
}

static int setup(void **st) {
  (void)st;
  snprintf(dir, sizeof dir, "/tmp/vx-tls-c-XXXXXX");
  assert_non_null(mkdtemp(dir));
  sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
     "ca.key -out ca.pem -days 2 -subj /CN=ca 2>/dev/null",
     dir);
  make_leaf("a");
  make_leaf("b");
  sh("cd %s && openssl pkey -in a.key -aes128 -passout pass:secret -out enc.key", dir);
  snprintf(ca, sizeof ca, "%s/ca.pem", dir);
  snprintf(cert, sizeof cert, "%s/a.pem", dir);
  snprintf(key, sizeof key, "%s/a.key", dir);
  snprintf(cert2, sizeof cert2, "%s/b.pem", dir);
  snprintf(key2, sizeof key2, "%s/b.key", dir);
  snprintf(enc_key, sizeof enc_key, "%s/enc.key", dir);
  return 0;
}

static int teardown(void **st) {
  (void)st;
  sh("rm -rf %s", dir);
  return 0;
}

typedef struct {
  uv_sem_t sem;
  vx_stats stats;
} ctx;

static void stats_cb(int status, const vx_stats *s, void *data) {
  ctx *c = data;
  assert_int_equal(status, 0);
  c->stats = *s;
  uv_sem_post(&c->sem);
}

static vx_stats stats_of(vx_events *ev, ctx *c) {
  assert_int_equal(vx_stats_get(ev, stats_cb, c), 0);
  uv_sem_wait(&c->sem);
  return c->stats;
}

static int tcp_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

/* GET /health over TLS, verifying against the test CA: the HTTP status (0: handshake
 * failed); `serial` gets 8 bytes of the server certificate's SHA-256 fingerprint. */
static int https_health(int port, uint64_t *serial) {
  SSL_CTX *cx = SSL_CTX_new(TLS_client_method());
  assert_int_equal(SSL_CTX_load_verify_locations(cx, ca, NULL), 1);
  SSL_CTX_set_verify(cx, SSL_VERIFY_PEER, NULL);
  SSL *s = SSL_new(cx);
  int fd = tcp_to(port);
  SSL_set_fd(s, fd);
  SSL_set_tlsext_host_name(s, "localhost");
  SSL_set1_host(s, "localhost");
  int status = 0;
  if (SSL_connect(s) == 1) {
    X509 *x = SSL_get1_peer_certificate(s);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (serial && X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
      memcpy(serial, md, sizeof *serial);
    X509_free(x);
    const char *req = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_int_equal(SSL_write(s, req, (int)strlen(req)), (int)strlen(req));
    char buf[1024] = {0};
    int n = SSL_read(s, buf, sizeof buf - 1);
    if (n > 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0)
      status = atoi(buf + 9);
  }
  ERR_clear_error();
  SSL_free(s);
  SSL_CTX_free(cx);
  close(fd);
  return status;
}

/* Sends `bytes` and waits for the server to close: true when it did (EOF or reset). */
static bool closed_after(int port, const void *bytes, size_t n) {
  int fd = tcp_to(port);
  assert_int_equal(write(fd, bytes, n), (ssize_t)n);
  char buf[4096];
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0)
    ;
  close(fd);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

static void option_checks_name_the_file_and_the_reason(void **st) {
  (void)st;
  vx_options o;
  char err[512];
  vx_options_init(&o);
  o.tls_cert = cert;
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "tls_cert and tls_key go together"));
  o.tls_key = "/nonexistent/key.pem";
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "tls_key: cannot read /nonexistent/key.pem"));
  o.tls_key = enc_key; /* a passphrase is refused, never asked for on the terminal */
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "without passphrase"));
  o.tls_key = key2;
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "does not match the certificate"));
  o.tls_key = key;
  assert_int_equal(vx_options_check(&o, err, sizeof err), 0);
  o.tls_ca = key;
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "tls_ca: no usable PEM certificate"));
  o.tls_ca = NULL;
  o.redis_url = "rediss://localhost:6380";
  o.redis_tls_ca = "/nonexistent/ca.pem";
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "redis_tls_ca: cannot read"));
  vx_events *ev = NULL;
  assert_int_equal(vx_new(&ev, &o), VX_ETLS);
  assert_null(ev);
}

static void tls_listener_serves_reloads_and_counts_bad_peers(void **st) {
  (void)st;
  ctx c;
  uv_sem_init(&c.sem, 0);
  vx_options o;
  vx_options_init(&o);
  o.tls_cert = cert;
  o.tls_key = key;
  vx_events *ev;
  assert_int_equal(vx_new(&ev, &o), 0);
  int port = 0;
  assert_int_equal(vx_listen(ev, "127.0.0.1", 0, &port), 0);
  uint64_t s1 = 0, s2 = 0;
  assert_int_equal(https_health(port, &s1), 200);

  assert_true(closed_after(port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 33));
  static const unsigned char junk[64] = {0x16, 0x03, 0x01, 0xff, 0xff};
  assert_true(closed_after(port, junk, sizeof junk));
  assert_int_equal(stats_of(ev, &c).tls_errors, 2);

  /* Reload: bad files keep the old certificate and say why; good ones replace it. */
  char err[512];
  sh("cp %s %s/live.pem && cp %s %s/live.key", cert, dir, key, dir);
  vx_events *ev2;
  vx_options_init(&o);
  assert_int_equal(vx_new(&ev2, &o), 0);
  char err2[256];
  assert_int_equal(vx_tls_reload(ev2, err2, sizeof err2), VX_EINVAL); /* none configured */
  assert_non_null(strstr(err2, "no certificate"));
  char lc[300], lk[300];
  snprintf(lc, sizeof lc, "%s/live.pem", dir);
  snprintf(lk, sizeof lk, "%s/live.key", dir);
  assert_int_equal(vx_tls_configure(ev2, lc, NULL, NULL, err, sizeof err), VX_EINVAL);
  assert_int_equal(vx_tls_configure(ev2, lc, lk, NULL, err, sizeof err), 0);
  int port2 = 0;
  assert_int_equal(vx_listen(ev2, "127.0.0.1", 0, &port2), 0);
  assert_int_equal(https_health(port2, &s1), 200);
  sh("echo garbage > %s/live.pem", dir);
  assert_int_equal(vx_tls_reload(ev2, err, sizeof err), VX_ETLS);
  assert_non_null(strstr(err, "live.pem"));
  assert_int_equal(https_health(port2, &s2), 200);
  assert_int_equal(s2, s1);
  sh("cp %s %s/live.pem && cp %s %s/live.key", cert2, dir, key2, dir);
  assert_int_equal(vx_tls_reload(ev2, err, sizeof err), 0);
  assert_int_equal(https_health(port2, &s2), 200);
  assert_int_not_equal(s2, s1);
  /* PEM text instead of a path. */
  FILE *f = fopen(cert, "r");
  char pemc[8192] = {0}, pemk[8192] = {0};
  assert_true(fread(pemc, 1, sizeof pemc - 1, f) > 0);
  fclose(f);
  f = fopen(key, "r");
  assert_true(fread(pemk, 1, sizeof pemk - 1, f) > 0);
  fclose(f);
  assert_int_equal(vx_tls_configure(ev2, pemc, pemk, NULL, err, sizeof err), 0);
  assert_int_equal(https_health(port2, &s2), 200);
  assert_int_equal(s2, s1);
  vx_free(ev2);
  vx_free(ev);
  uv_sem_destroy(&c.sem);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(option_checks_name_the_file_and_the_reason),
      cmocka_unit_test(tls_listener_serves_reloads_and_counts_bad_peers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
