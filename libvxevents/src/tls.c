/* TLS with OpenSSL: the listener's certificate (load, reload), the per-connection layer
 * driven from conn.c's read and flush, and the rediss:// client. See tls.h. */
#include "tls.h"
#include "vx_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Plaintext gathered into one record when several small frames are queued (one AEAD
 * operation and 22 bytes of overhead per record, not per frame). */
#define TLS_STAGE 16384
/* Ciphertext encrypted ahead of what the kernel took; the rest stays in the send queue
 * (plaintext, shared, counted against max_send_queue like any other queued frame). */
#define TLS_AHEAD 65536

struct vx_tls {
  uv_mutex_t mu; /* ctx, cert, key, ca: vx_tls_configure / vx_tls_reload run on any thread */
  SSL_CTX *ctx;  /* the listener's; NULL = plain TCP */
  atomic_bool ctx_set;
  char *cert, *key, *ca;
  SSL_CTX *redis_ctx; /* rediss:// */
  BIO_METHOD *meth;
  unsigned char plain[VX_READ_BUF]; /* decrypted input, consumed synchronously */
  unsigned char stage[TLS_STAGE];
};

/* ---- the BIO: no socket, no buffer of its own ---- */
typedef struct tls_io {
  SSL *ssl;
  const unsigned char *in; /* ciphertext OpenSSL may read (during a read callback only) */
  size_t in_len;
  char *out; /* ciphertext OpenSSL wrote, not yet written */
  size_t out_len, out_cap;
  bool oom;
} tls_io;

static int bio_write(BIO *b, const char *data, int len) {
  tls_io *io = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  size_t need = io->out_len + (size_t)len;
  if (need > io->out_cap) {
    size_t cap = io->out_cap ? io->out_cap : 4096;
    while (cap < need)
      cap *= 2;
    char *n = realloc(io->out, cap);
    if (!n) {
      io->oom = true;
      return -1;
    }
    io->out = n;
    io->out_cap = cap;
  }
  memcpy(io->out + io->out_len, data, (size_t)len);
  io->out_len = need;
  return len;
}

static int bio_read(BIO *b, char *buf, int len) {
  tls_io *io = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (!io->in_len) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = io->in_len < (size_t)len ? io->in_len : (size_t)len;
  memcpy(buf, io->in, n);
  io->in += n;
  io->in_len -= n;
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *bio_method(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "vxevents");
  if (m && (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
            !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))) {
    BIO_meth_free(m);
    m = NULL;
  }
  return m;
}

static int io_init(tls_io *io, SSL_CTX *ctx, BIO_METHOD *meth) {
  io->ssl = SSL_new(ctx);
  BIO *b = io->ssl ? BIO_new(meth) : NULL;
  if (!b) {
    SSL_free(io->ssl);
    io->ssl = NULL;
    return VX_ENOMEM;
  }
  BIO_set_data(b, io);
  SSL_set_bio(io->ssl, b, b);
  return 0;
}

/* The reason of the last OpenSSL error (the queue is emptied). */
static const char *ssl_reason(char *buf, size_t n) {
  unsigned long e = ERR_peek_last_error();
  if (!e) {
    snprintf(buf, n, "unknown error");
  } else {
    const char *r = ERR_reason_error_string(e);
    if (ERR_GET_LIB(e) == ERR_LIB_SYS)
      snprintf(buf, n, "%s", strerror(ERR_GET_REASON(e)));
    else
      snprintf(buf, n, "%s", r ? r : "unknown error");
  }
  ERR_clear_error();
  return buf;
}

/* ---- certificates: a value is a PEM file's path, or PEM text itself ---- */

static bool is_pem_text(const char *v) { return strncmp(v, "-----BEGIN ", 11) == 0; }

static BIO *open_pem(const char *v) {
  return is_pem_text(v) ? BIO_new_mem_buf(v, -1) : BIO_new_file(v, "r");
}

static const char *shown(const char *v) { return is_pem_text(v) ? "(PEM text)" : v; }

/* A key with a passphrase is refused, never prompted for on the terminal. */
static int no_passphrase(char *buf, int size, int rw, void *u) {
  (void)buf, (void)size, (void)rw, (void)u;
  return -1;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  ERR_clear_error();
  return VX_ETLS;
}

/* The certificate chain (leaf first, then intermediates) and the key into `ctx`. */
static int load_pair(SSL_CTX *ctx, const char *what, const char *cert, const char *key, char *err,
                     size_t errlen) {
  char why[256];
  BIO *b = open_pem(cert);
  if (!b)
    return fail(err, errlen, "%s_cert: cannot read %s: %s", what, shown(cert),
                ssl_reason(why, sizeof why));
  X509 *leaf = PEM_read_bio_X509_AUX(b, NULL, no_passphrase, NULL);
  if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    X509_free(leaf);
    BIO_free(b);
    return fail(err, errlen, "%s_cert: no usable PEM certificate in %s: %s", what, shown(cert),
                ssl_reason(why, sizeof why));
  }
  X509_free(leaf);
  SSL_CTX_clear_chain_certs(ctx);
  X509 *x;
  while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL))) {
    if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
      X509_free(x);
      BIO_free(b);
      return fail(err, errlen, "%s_cert: cannot use the chain in %s: %s", what, shown(cert),
                  ssl_reason(why, sizeof why));
    }
  }
  ERR_clear_error(); /* the end of the file */
  BIO_free(b);
  if (!(b = open_pem(key)))
    return fail(err, errlen, "%s_key: cannot read %s: %s", what, shown(key),
                ssl_reason(why, sizeof why));
  EVP_PKEY *pk = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
  BIO_free(b);
  if (!pk)
    return fail(err, errlen, "%s_key: no usable PEM private key (without passphrase) in %s: %s",
                what, shown(key), ssl_reason(why, sizeof why));
  int ok = SSL_CTX_use_PrivateKey(ctx, pk) == 1 && SSL_CTX_check_private_key(ctx) == 1;
  EVP_PKEY_free(pk);
  if (!ok)
    return fail(err, errlen, "%s_key: %s does not match the certificate: %s", what, shown(key),
                ssl_reason(why, sizeof why));
  return 0;
}

/* Trusted certificates into ctx's store (and, for a server, the names it asks clients for). */
static int load_ca(SSL_CTX *ctx, const char *opt, const char *ca, bool server, char *err,
                   size_t errlen) {
  char why[256];
  BIO *b = open_pem(ca);
  if (!b)
    return fail(err, errlen, "%s: cannot read %s: %s", opt, shown(ca), ssl_reason(why, sizeof why));
  X509_STORE *st = SSL_CTX_get_cert_store(ctx);
  STACK_OF(X509_NAME) *names = server ? sk_X509_NAME_new_null() : NULL;
  int n = 0;
  X509 *x;
  while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL))) {
    if (X509_STORE_add_cert(st, x) != 1) {
      X509_free(x);
      break;
    }
    X509_NAME *nm = names ? X509_NAME_dup(X509_get_subject_name(x)) : NULL;
    if (nm && !sk_X509_NAME_push(names, nm))
      X509_NAME_free(nm);
    X509_free(x);
    n++;
  }
  BIO_free(b);
  if (!n) {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    return fail(err, errlen, "%s: no usable PEM certificate in %s: %s", opt, shown(ca),
                ssl_reason(why, sizeof why));
  }
  ERR_clear_error();
  if (names)
    SSL_CTX_set_client_CA_list(ctx, names);
  return 0;
}

/* ALPN: the one protocol spoken is http/1.1 (WebSocket upgrades, SSE and the API all are).
 * A client offering only others gets no ALPN answer and may go on or give up. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  static const unsigned char ours[] = "\x08http/1.1";
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx(const char *cert, const char *key, const char *ca, char *err,
                           size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    fail(err, errlen, "tls: out of memory");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"vxevents", 8);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  if (load_pair(ctx, "tls", cert, key, err, errlen) != 0 ||
      (ca && load_ca(ctx, "tls_ca", ca, true, err, errlen) != 0)) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (ca)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  return ctx;
}

static SSL_CTX *redis_ctx(const vx_options *o, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    fail(err, errlen, "tls: out of memory");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  int bad = 0;
  if (o->redis_tls_ca)
    bad = load_ca(ctx, "redis_tls_ca", o->redis_tls_ca, false, err, errlen);
  else if (SSL_CTX_set_default_verify_paths(ctx) != 1)
    bad = fail(err, errlen, "redis: cannot load the system's trusted certificates");
  if (!bad && o->redis_tls_cert)
    bad = load_pair(ctx, "redis_tls", o->redis_tls_cert, o->redis_tls_key, err, errlen);
  if (bad) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, o->redis_tls_verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  return ctx;
}

static bool redis_tls(const vx_options *o) {
  return o->redis_url && strncmp(o->redis_url, "rediss://", 9) == 0;
}

int vx__tls_check(const vx_options *o, char *err, size_t errlen) {
  if (!o->tls_cert != !o->tls_key)
    return fail(err, errlen, "tls_cert and tls_key go together (%s is missing)",
                o->tls_cert ? "tls_key" : "tls_cert");
  if (o->tls_ca && !o->tls_cert)
    return fail(err, errlen, "tls_ca needs tls_cert and tls_key");
  /* The redis_tls_* options matter only with a rediss:// URL. */
  if (redis_tls(o) && !o->redis_tls_cert != !o->redis_tls_key)
    return fail(err, errlen, "redis_tls_cert and redis_tls_key go together (%s is missing)",
                o->redis_tls_cert ? "redis_tls_key" : "redis_tls_cert");
  if (o->tls_cert) {
    SSL_CTX *c = server_ctx(o->tls_cert, o->tls_key, o->tls_ca, err, errlen);
    if (!c)
      return VX_ETLS;
    SSL_CTX_free(c);
  }
  if (redis_tls(o)) {
    SSL_CTX *c = redis_ctx(o, err, errlen);
    if (!c)
      return VX_ETLS;
    SSL_CTX_free(c);
  }
  return 0;
}

/* Install a new listener certificate: built on the calling thread, swapped under the
 * mutex. Connections already open keep the context they were made with (each SSL holds a
 * reference to it); new ones get this one. */
static int install(vx_tls *t, const char *cert, const char *key, const char *ca, char *err,
                   size_t errlen) {
  SSL_CTX *ctx = server_ctx(cert, key, ca, err, errlen);
  if (!ctx)
    return VX_ETLS;
  char *c2 = vx__dupz(cert), *k2 = vx__dupz(key), *a2 = ca ? vx__dupz(ca) : NULL;
  if (!c2 || !k2 || (ca && !a2)) {
    free(c2), free(k2), free(a2);
    SSL_CTX_free(ctx);
    return VX_ENOMEM;
  }
  uv_mutex_lock(&t->mu);
  SSL_CTX *old = t->ctx;
  char *oc = t->cert, *ok = t->key, *oa = t->ca;
  t->ctx = ctx;
  t->cert = c2, t->key = k2, t->ca = a2;
  atomic_store(&t->ctx_set, true);
  uv_mutex_unlock(&t->mu);
  SSL_CTX_free(old);
  free(oc), free(oa);
  if (ok) {
    OPENSSL_cleanse(ok, strlen(ok)); /* PEM text of a key */
    free(ok);
  }
  return 0;
}

int vx__tls_new(vx_events *ev) {
  vx_tls *t = calloc(1, sizeof *t);
  if (!t || !(t->meth = bio_method())) {
    free(t);
    return VX_ENOMEM;
  }
  uv_mutex_init(&t->mu);
  ev->tls = t;
  char err[512];
  if (ev->opts.tls_cert &&
      install(t, ev->opts.tls_cert, ev->opts.tls_key, ev->opts.tls_ca, err, sizeof err) != 0) {
    vx__log(ev, VX_LOG_ERROR, "%s", err);
    return VX_ETLS;
  }
  if (redis_tls(&ev->opts) && !(t->redis_ctx = redis_ctx(&ev->opts, err, sizeof err))) {
    vx__log(ev, VX_LOG_ERROR, "%s", err);
    return VX_ETLS;
  }
  return 0;
}

void vx__tls_free(vx_events *ev) {
  vx_tls *t = ev->tls;
  if (!t)
    return;
  SSL_CTX_free(t->ctx);
  SSL_CTX_free(t->redis_ctx);
  BIO_meth_free(t->meth);
  free(t->cert), free(t->ca);
  if (t->key) {
    OPENSSL_cleanse(t->key, strlen(t->key));
    free(t->key);
  }
  uv_mutex_destroy(&t->mu);
  free(t);
  ev->tls = NULL;
}

bool vx__tls_listener(vx_events *ev) { return atomic_load(&ev->tls->ctx_set); }

int vx_tls_configure(vx_events *ev, const char *cert, const char *key, const char *ca, char *err,
                     size_t errlen) {
  if (err && errlen)
    *err = 0;
  if (!ev || !cert || !key || !*cert || !*key) {
    fail(err, errlen, "tls: a certificate and a key are required");
    return VX_EINVAL;
  }
  int r = install(ev->tls, cert, key, ca && *ca ? ca : NULL, err, errlen);
  if (r == VX_ENOMEM)
    fail(err, errlen, "tls: out of memory");
  return r;
}

int vx_tls_reload(vx_events *ev, char *err, size_t errlen) {
  if (err && errlen)
    *err = 0;
  if (!ev)
    return VX_EINVAL;
  vx_tls *t = ev->tls;
  uv_mutex_lock(&t->mu);
  char *cert = vx__dupz(t->cert), *key = vx__dupz(t->key), *ca = t->ca ? vx__dupz(t->ca) : NULL;
  bool on = t->ctx != NULL;
  uv_mutex_unlock(&t->mu);
  int r;
  if (!on) {
    fail(err, errlen, "tls: no certificate is configured");
    r = VX_EINVAL;
  } else if (!cert || !key || (t->ca && !ca)) {
    fail(err, errlen, "tls: out of memory");
    r = VX_ENOMEM;
  } else {
    r = install(t, cert, key, ca, err, errlen);
  }
  free(cert), free(ca);
  if (key) {
    OPENSSL_cleanse(key, strlen(key));
    free(key);
  }
  return r;
}

/* ---- the listener's connections ---- */

struct vx_tls_conn {
  tls_io io;
  char *pend; /* ciphertext of the outstanding uv_write */
  uv_write_t wreq;
  bool up; /* handshake done */
};

int vx__tls_accept(vx_conn *c) {
  vx_tls *t = c->ev->tls;
  if (!t->ctx_set)
    return 1; /* a plain listener: no lock taken per connection */
  vx_tls_conn *tc = calloc(1, sizeof *tc);
  if (!tc)
    return VX_ENOMEM;
  uv_mutex_lock(&t->mu);
  int r = t->ctx ? io_init(&tc->io, t->ctx, t->meth) : 1;
  uv_mutex_unlock(&t->mu);
  if (r) {
    free(tc);
    return r;
  }
  SSL_set_accept_state(tc->io.ssl);
  tc->wreq.data = c;
  c->tls = tc;
  return 0;
}

void vx__tls_release(vx_conn *c) {
  vx_tls_conn *tc = c->tls;
  if (!tc)
    return;
  SSL_free(tc->io.ssl);
  free(tc->io.out);
  free(tc->pend);
  free(tc);
  c->tls = NULL;
}

static void write_out(vx_conn *c);

static void on_write(uv_write_t *req, int status) {
  vx_conn *c = req->data;
  vx_tls_conn *tc = c->tls;
  free(tc->pend);
  tc->pend = NULL;
  vx_clr(c, VXC_F_WRITING);
  if (vx_has(c, VXC_F_CLOSED))
    return;
  if (status < 0) {
    vx__conn_terminate(c);
    return;
  }
  write_out(c); /* what OpenSSL wrote meanwhile (alerts, tickets) */
  if (!vx_has(c, VXC_F_CLOSED) && !vx_has(c, VXC_F_WRITING))
    vx__conn_mark_dirty(c); /* the queue goes on in this iteration's check phase */
}

/* Write the ciphertext OpenSSL produced: what the kernel takes now, the rest in one
 * uv_write (the connection is then WRITING, as on the plain path, until it completes). */
static void write_out(vx_conn *c) {
  vx_tls_conn *tc = c->tls;
  tls_io *io = &tc->io;
  if (io->oom) {
    vx__conn_terminate(c);
    return;
  }
  if (!io->out_len || vx_has(c, VXC_F_WRITING) || vx_has(c, VXC_F_CLOSED))
    return;
  if (vx_has(c, VXC_F_LINGERING)) { /* the write side is shut down: nothing more goes out */
    io->out_len = 0;
    return;
  }
  uv_buf_t b = uv_buf_init(io->out, (unsigned)io->out_len);
  int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (r == UV_EAGAIN)
    r = 0;
  if (r < 0) {
    vx__conn_terminate(c);
    return;
  }
  if ((size_t)r == io->out_len) { /* an idle connection keeps no buffer */
    free(io->out);
    io->out = NULL;
    io->out_len = io->out_cap = 0;
    return;
  }
  tc->pend = io->out;
  b = uv_buf_init(io->out + r, (unsigned)(io->out_len - (size_t)r));
  io->out = NULL;
  io->out_len = io->out_cap = 0;
  if (uv_write(&tc->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    vx__conn_terminate(c);
    return;
  }
  vx_set(c, VXC_F_WRITING);
}

/* A TLS failure: counted, the alert OpenSSL wrote goes out if the kernel takes it at once,
 * and the connection is cut. */
static void tls_fail(vx_conn *c, const char *when) {
  char why[256];
  vx_tls_conn *tc = c->tls;
  c->ev->stats.tls_errors++;
  vx__log(c->ev, VX_LOG_INFO, "TLS %s failed: %s", when, ssl_reason(why, sizeof why));
  if (tc->io.out_len && !vx_has(c, VXC_F_WRITING)) {
    uv_buf_t b = uv_buf_init(tc->io.out, (unsigned)tc->io.out_len);
    (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  }
  tc->io.out_len = 0;
  vx__conn_terminate(c);
}

void vx__tls_read(vx_conn *c, const unsigned char *p, size_t n) {
  vx_tls_conn *tc = c->tls;
  if (vx__conn_discard(c, n)) /* lingering: the peer's last bytes are not even decrypted */
    return;
  vx_tls *t = c->ev->tls;
  bool was_up = tc->up;
  ERR_clear_error();
  tc->io.in = p;
  tc->io.in_len = n;
  while (!vx_has(c, VXC_F_CLOSED)) {
    if (!tc->up) {
      int r = SSL_do_handshake(tc->io.ssl);
      if (r == 1) {
        tc->up = true;
        continue;
      }
      if (SSL_get_error(tc->io.ssl, r) == SSL_ERROR_WANT_READ && !tc->io.oom)
        break;
      tls_fail(c, "handshake");
      return;
    }
    int r = SSL_read(tc->io.ssl, t->plain, sizeof t->plain);
    if (r > 0) {
      c->tp->read(c, t->plain, (size_t)r);
      continue;
    }
    int e = SSL_get_error(tc->io.ssl, r);
    if (e == SSL_ERROR_WANT_READ && !tc->io.oom)
      break;
    if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the end of the stream */
      ERR_clear_error();
      vx__conn_terminate(c);
      return;
    }
    tls_fail(c, "read");
    return;
  }
  tc->io.in = NULL;
  tc->io.in_len = 0;
  if (vx_has(c, VXC_F_CLOSED))
    return;
  write_out(c);
  if (!was_up && tc->up && !vx_has(c, VXC_F_CLOSED))
    vx__conn_mark_dirty(c); /* anything queued meanwhile */
}

void vx__tls_flush(vx_conn *c) {
  vx_tls_conn *tc = c->tls;
  if (!tc->up)
    return; /* the queue waits for the handshake */
  unsigned char *stage = c->ev->tls->stage;
  ERR_clear_error();
  while (c->qlen && !vx_has(c, VXC_F_WRITING) && !vx_has(c, VXC_F_CLOSED)) {
    while (c->qlen && tc->io.out_len < TLS_AHEAD) {
      vx_buf *b = c->q[c->qhead];
      size_t len = b->len - c->qoff;
      const void *src = b->data + c->qoff;
      size_t n = len;
      if (len < TLS_STAGE && c->qlen > 1) { /* gather small frames into one record */
        n = 0;
        while (c->qlen) {
          b = c->q[c->qhead];
          len = b->len - c->qoff;
          if (n + len > TLS_STAGE)
            break;
          memcpy(stage + n, b->data + c->qoff, len);
          n += len;
          vx__conn_took_head(c);
        }
        src = stage;
      }
      if (n && SSL_write(tc->io.ssl, src, (int)n) != (int)n) {
        tls_fail(c, "write");
        return;
      }
      if (src != stage)
        vx__conn_took_head(c);
    }
    write_out(c);
  }
}

int vx__tls_close_notify(vx_conn *c) {
  vx_tls_conn *tc = c->tls;
  if (!tc->up)
    return 0;
  ERR_clear_error();
  (void)SSL_shutdown(tc->io.ssl);
  ERR_clear_error();
  write_out(c);
  return vx_has(c, VXC_F_CLOSED) ? -1 : 0;
}

/* ---- rediss://: a TLS client between hiredis (plaintext, a socketpair) and Redis ----
 *
 * hiredis 0.14 (Debian bookworm's libhiredis) has no TLS of its own (hiredis_ssl came with
 * 1.0) and reads and writes its descriptor itself. So the descriptor it connected is moved:
 * the TCP socket goes to this pump (a uv_tcp_t), and the same descriptor number becomes one
 * end of a socketpair whose other end is the pump's uv_pipe_t. Either side ending ends the
 * other: hiredis sees an EOF (and reconnects with its backoff) when TLS fails or Redis
 * goes; the pump ends when hiredis closes its descriptor. A side whose write is pending is
 * not read from the other side (backpressure both ways). */
typedef struct rpump {
  vx_events *ev;
  tls_io io;
  uv_tcp_t tcp;  /* ciphertext, to Redis */
  uv_pipe_t app; /* plaintext, to hiredis */
  uv_write_t tw, aw;
  char *tpend, *apend; /* buffers of the outstanding writes */
  int closing;         /* handles still to close */
  bool up, tcp_wr, app_wr, dead;
  char host[256];
} rpump;

static void pump_closed(uv_handle_t *h) {
  rpump *p = h->data;
  if (--p->closing)
    return;
  SSL_free(p->io.ssl);
  free(p->io.out);
  free(p->tpend);
  free(p->apend);
  free(p);
}

static void pump_end(rpump *p, const char *why) {
  if (p->dead)
    return;
  p->dead = true;
  if (why)
    vx__log(p->ev, VX_LOG_ERROR, "redis: TLS to %s: %s", p->host, why);
  p->closing = 2;
  uv_close((uv_handle_t *)&p->tcp, pump_closed);
  uv_close((uv_handle_t *)&p->app, pump_closed);
}

static void pump_fail(rpump *p, const char *when) {
  char why[256], msg[400];
  long v = SSL_get_verify_result(p->io.ssl);
  if (when[0] == 'h' && v != X509_V_OK)
    snprintf(msg, sizeof msg, "%s failed: certificate verification: %s", when,
             X509_verify_cert_error_string(v));
  else
    snprintf(msg, sizeof msg, "%s failed: %s", when, ssl_reason(why, sizeof why));
  ERR_clear_error();
  pump_end(p, msg);
}

static void pump_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  rpump *p = h->data;
  *b = uv_buf_init((char *)p->ev->rbuf, sizeof p->ev->rbuf);
}

static void pump_tcp_out(rpump *p);
static void pump_app_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void pump_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void tcp_written(uv_write_t *w, int status) {
  rpump *p = w->data;
  free(p->tpend);
  p->tpend = NULL;
  p->tcp_wr = false;
  if (p->dead)
    return;
  if (status < 0) {
    pump_end(p, uv_strerror(status));
    return;
  }
  pump_tcp_out(p);
  if (!p->dead && !p->tcp_wr && p->up)
    uv_read_start((uv_stream_t *)&p->app, pump_alloc, pump_app_read);
}

/* Ciphertext to Redis; while it waits, plaintext from hiredis waits too. */
static void pump_tcp_out(rpump *p) {
  if (p->io.oom) {
    pump_end(p, "out of memory");
    return;
  }
  if (p->tcp_wr || !p->io.out_len || p->dead)
    return;
  p->tpend = p->io.out;
  uv_buf_t b = uv_buf_init(p->io.out, (unsigned)p->io.out_len);
  p->io.out = NULL;
  p->io.out_len = p->io.out_cap = 0;
  p->tw.data = p;
  if (uv_write(&p->tw, (uv_stream_t *)&p->tcp, &b, 1, tcp_written) != 0) {
    pump_end(p, "cannot write");
    return;
  }
  p->tcp_wr = true;
  uv_read_stop((uv_stream_t *)&p->app);
}

static void app_written(uv_write_t *w, int status) {
  rpump *p = w->data;
  free(p->apend);
  p->apend = NULL;
  p->app_wr = false;
  if (p->dead)
    return;
  if (status < 0) {
    pump_end(p, NULL); /* hiredis went away */
    return;
  }
  uv_read_start((uv_stream_t *)&p->tcp, pump_alloc, pump_tcp_read);
}

static void pump_app_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  rpump *p = s->data;
  if (n < 0) {
    pump_end(p, NULL); /* hiredis closed its side */
    return;
  }
  ERR_clear_error();
  if (n > 0 && SSL_write(p->io.ssl, b->base, (int)n) != (int)n) {
    pump_fail(p, "write");
    return;
  }
  pump_tcp_out(p);
  if (!p->dead && p->tcp_wr) /* Redis is slow to take it: hiredis waits (its socket fills) */
    uv_read_stop((uv_stream_t *)&p->app);
}

static void pump_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  rpump *p = s->data;
  if (n < 0) {
    pump_end(p, p->up ? "the connection was closed" : "the connection was closed in the handshake");
    return;
  }
  ERR_clear_error();
  p->io.in = (const unsigned char *)b->base;
  p->io.in_len = (size_t)n;
  /* Decrypted replies go to hiredis in one write per read. */
  tls_io plain = {0};
  while (!p->dead) {
    if (!p->up) {
      int r = SSL_do_handshake(p->io.ssl);
      if (r == 1) {
        p->up = true;
        vx__log(p->ev, VX_LOG_INFO, "redis: TLS to %s established (%s)", p->host,
                SSL_get_version(p->io.ssl));
        uv_read_start((uv_stream_t *)&p->app, pump_alloc, pump_app_read);
        continue;
      }
      if (SSL_get_error(p->io.ssl, r) == SSL_ERROR_WANT_READ)
        break;
      pump_fail(p, "handshake");
      break;
    }
    unsigned char *buf = p->ev->tls->plain;
    int r = SSL_read(p->io.ssl, buf, sizeof p->ev->tls->plain);
    if (r > 0) {
      size_t need = plain.out_len + (size_t)r;
      if (need > plain.out_cap) {
        size_t cap = plain.out_cap ? plain.out_cap * 2 : 16384;
        while (cap < need)
          cap *= 2;
        char *nbuf = realloc(plain.out, cap);
        if (!nbuf) {
          pump_end(p, "out of memory");
          break;
        }
        plain.out = nbuf;
        plain.out_cap = cap;
      }
      memcpy(plain.out + plain.out_len, buf, (size_t)r);
      plain.out_len = need;
      continue;
    }
    int e = SSL_get_error(p->io.ssl, r);
    if (e == SSL_ERROR_WANT_READ)
      break;
    if (e == SSL_ERROR_ZERO_RETURN)
      pump_end(p, "Redis closed the TLS session");
    else
      pump_fail(p, "read");
    break;
  }
  p->io.in = NULL;
  p->io.in_len = 0;
  if (!p->dead)
    pump_tcp_out(p);
  if (p->dead || !plain.out_len) {
    free(plain.out);
    return;
  }
  p->apend = plain.out;
  uv_buf_t wb = uv_buf_init(plain.out, (unsigned)plain.out_len);
  p->aw.data = p;
  if (uv_write(&p->aw, (uv_stream_t *)&p->app, &wb, 1, app_written) != 0) {
    pump_end(p, NULL);
    return;
  }
  p->app_wr = true;
  uv_read_stop((uv_stream_t *)&p->tcp);
}

int vx__tls_redis_wrap(vx_events *ev, int fd, const char *host) {
  vx_tls *t = ev->tls;
  if (!t || !t->redis_ctx)
    return VX_EINVAL;
  rpump *p = calloc(1, sizeof *p);
  if (!p)
    return VX_ENOMEM;
  p->ev = ev;
  snprintf(p->host, sizeof p->host, "%s", host);
  if (io_init(&p->io, t->redis_ctx, t->meth) != 0) {
    free(p);
    return VX_ENOMEM;
  }
  SSL *ssl = p->io.ssl;
  SSL_set_connect_state(ssl);
  /* SNI and the name checked: a host name, or an IP address (then no SNI). */
  unsigned char ipbuf[16];
  bool is_ip = inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1;
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  if ((!is_ip && (SSL_set_tlsext_host_name(ssl, host) != 1 ||
                  X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1)) ||
      (is_ip && X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1)) {
    SSL_free(ssl);
    free(p);
    ERR_clear_error();
    return VX_ENOMEM;
  }
  int sv[2] = {-1, -1};
  int tcpfd = -1;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0 ||
      (tcpfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0 || dup3(sv[0], fd, O_CLOEXEC) < 0) {
    int e = errno;
    if (tcpfd >= 0)
      close(tcpfd);
    if (sv[0] >= 0)
      close(sv[0]), close(sv[1]);
    SSL_free(ssl);
    free(p);
    vx__log(ev, VX_LOG_ERROR, "redis: cannot set up TLS: %s", strerror(e));
    return VX_EIO;
  }
  close(sv[0]); /* hiredis's descriptor number now is that end */
  uv_tcp_init(&ev->loop, &p->tcp);
  uv_pipe_init(&ev->loop, &p->app, 0);
  p->tcp.data = p->app.data = p;
  bool tcp_ok = uv_tcp_open(&p->tcp, tcpfd) == 0;
  bool app_ok = uv_pipe_open(&p->app, sv[1]) == 0;
  if (!tcp_ok || !app_ok) { /* a handle closes its descriptor only once it was opened */
    if (!tcp_ok)
      close(tcpfd);
    if (!app_ok)
      close(sv[1]);
    pump_end(p, "cannot open the sockets");
    return 0; /* hiredis's end is closed: it sees the EOF and retries */
  }
  /* The TCP connect is still in progress: the ClientHello is written once it completes
   * (libuv retries a write the socket is not ready for); a refused connect fails it. */
  ERR_clear_error();
  int r = SSL_do_handshake(ssl);
  if (r != 1 && SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ) {
    pump_fail(p, "handshake");
    return 0;
  }
  pump_tcp_out(p);
  uv_read_stop((uv_stream_t *)&p->app); /* plaintext flows once the handshake is done */
  if (!p->dead)
    uv_read_start((uv_stream_t *)&p->tcp, pump_alloc, pump_tcp_read);
  return 0;
}
