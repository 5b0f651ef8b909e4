/* TLS (tls.c): a per-connection byte-stream layer below the transports (DESIGN §11).
 *
 * The transports and the broadcast path never see it: a broadcast frame is still built once
 * per encoding and shared by reference in every recipient's send queue (the plaintext is
 * shared); only here, when a TLS connection's queue is flushed, is it encrypted, per
 * connection. Plain TCP connections never reach this file: conn.c tests c->tls at its two
 * hook points (a read, a flush) and keeps its corked writev path for everything else.
 *
 * OpenSSL does no I/O of its own: one BIO per connection reads the ciphertext straight out
 * of the libuv read buffer for the length of the read callback (nothing is copied or kept
 * between reads) and appends what OpenSSL writes to a buffer of the connection's that
 * conn.c's loop writes with uv_try_write / uv_write.
 *
 * Also here: the TLS client that carries a rediss:// backplane connection (hiredis speaks
 * plaintext over a socketpair, this file speaks TLS to Redis over the TCP socket). */
#ifndef VX_TLS_H
#define VX_TLS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct vx_conn vx_conn;
typedef struct vx_events vx_events;
typedef struct vx_options vx_options;
typedef struct vx_tls vx_tls;
typedef struct vx_tls_conn vx_tls_conn;

/* Builds ev->tls from the options (the listener's certificate when tls_cert is set, the
 * Redis client context when the URL is rediss://). Logs why and returns VX_ETLS when a file
 * cannot be used; VX_ENOMEM. */
int vx__tls_new(vx_events *ev);
void vx__tls_free(vx_events *ev);
/* Whether the listener serves TLS (a certificate is installed). Loop thread. */
bool vx__tls_listener(vx_events *ev);
/* Whether the options' TLS files can be loaded (vx_options_check): 0 or VX_ETLS with why. */
int vx__tls_check(const vx_options *o, char *err, size_t errlen);

/* ---- the listener's connections (loop thread) ---- */
/* A connection just accepted: on a TLS listener c->tls is set up for a server handshake
 * (0); 1 on a plain listener; VX_ENOMEM. */
int vx__tls_accept(vx_conn *c);
/* Ciphertext arrived: decrypted and handed to c->tp->read; handshake and alerts answered. */
void vx__tls_read(vx_conn *c, const unsigned char *p, size_t n);
/* Encrypt what the send queue holds and write it (conn.c's flush, not closed, not writing). */
void vx__tls_flush(vx_conn *c);
/* Before the write side is shut down: queue close_notify. Non-zero: the connection was cut. */
int vx__tls_close_notify(vx_conn *c);
/* The handle closed: free c->tls. */
void vx__tls_release(vx_conn *c);

/* ---- rediss:// (loop thread) ---- */
/* `fd` is the TCP socket hiredis is connecting to Redis with. It is moved under TLS: the
 * descriptor number becomes one end of a socketpair (hiredis goes on using it, in
 * plaintext), the TCP socket is driven by this file. `host` is checked against the server
 * certificate (and sent as SNI). Returns 0 or a VX_E* code (the descriptor is untouched). */
int vx__tls_redis_wrap(vx_events *ev, int fd, const char *host);

#endif
