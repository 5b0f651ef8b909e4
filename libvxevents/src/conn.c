/* Connection lifecycle and the send path.
 *
 * Every frame for a connection goes into its send queue as a buffer reference; nothing
 * is written at that point. The connection is put on the instance's dirty list, and the
 * check handle flushes every dirty connection once at the end of the loop iteration: one
 * uv_try_write (a writev of all queued buffers) per connection per iteration however many
 * broadcasts arrived — that is the corking of DESIGN §4. What the kernel does not take goes
 * to one outstanding uv_write; the queue keeps the references until it completes. */
#include "flow.h"

#include <stdlib.h>
#include <string.h>

#define FLUSH_IOV 64 /* buffers per write; more wait for the next write */

/* Lingering close (see linger()): how long and how much a peer may still send after the
 * server's last byte before the socket is cut anyway. Discarding costs no memory; the byte
 * bound keeps it from costing CPU without end. */
#define LINGER_MS 2000
#define LINGER_BYTES (16u << 20)

static void on_close(uv_handle_t *h);

/* ---- reading: every read lands in the instance's one buffer and goes to the transport ---- */

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  vx_conn *c = h->data;
  *buf = uv_buf_init((char *)c->ev->rbuf, sizeof c->ev->rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  vx_conn *c = s->data;
  if (nread > 0)
    c->ev->m.bytes_in += (uint64_t)nread; /* metrics.c */
  if (nread > 0 && c->tls)
    vx__tls_read(c, (const uint8_t *)buf->base, (size_t)nread); /* decrypts into tp->read */
  else if (nread > 0)
    c->tp->read(c, (const uint8_t *)buf->base, (size_t)nread);
  else if (nread < 0)
    vx__conn_terminate(c);
}

int vx__conn_read_start(vx_conn *c) {
  return uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

void vx__conn_accepted(vx_events *ev, vx_conn *c) {
  c->ev = ev;
  c->next = ev->conns;
  if (ev->conns)
    ev->conns->prev = c;
  ev->conns = c;
  ev->nconns++;
  c->deadline = uv_now(&ev->loop) + VX_HTTP_DEADLINE_MS;
}

void vx__conn_mark_dirty(vx_conn *c) {
  if (vx_has(c, VXC_F_DIRTY) || vx_has(c, VXC_F_CLOSED))
    return;
  vx_set(c, VXC_F_DIRTY);
  c->dirty_next = c->ev->dirty;
  c->ev->dirty = c;
}

static int q_reserve(vx_conn *c) {
  if (c->qlen < c->qcap)
    return 0;
  uint32_t ncap = c->qcap ? c->qcap * 2 : 4;
  vx_buf **nq = malloc(ncap * sizeof *nq);
  if (!nq)
    return VX_ENOMEM;
  for (uint32_t i = 0; i < c->qlen; i++)
    nq[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
  free(c->q);
  c->q = nq;
  c->qcap = ncap;
  c->qhead = 0;
  return 0;
}

static inline vx_buf *q_at(vx_conn *c, uint32_t i) { return c->q[(c->qhead + i) & (c->qcap - 1)]; }

static void q_pop(vx_conn *c) {
  vx_buf *b = c->q[c->qhead];
  c->qhead = (c->qhead + 1) & (c->qcap - 1);
  c->qlen--;
  vx__buf_unref(b);
}

static void doom(vx_conn *c) {
  if (vx_has(c, VXC_F_DOOMED))
    return;
  vx_set(c, VXC_F_DOOMED);
  c->doomed_next = c->ev->doomed;
  c->ev->doomed = c;
}

void vx__conn_oom(vx_conn *c) {
  if (vx_has(c, VXC_F_CLOSED) || vx_has(c, VXC_F_OOM))
    return;
  vx__log(c->ev, VX_LOG_ERROR, "out of memory: closing %s",
          c->kind == VXK_HTTP ? "an HTTP connection" : c->id);
  vx_set(c, VXC_F_OOM);
  doom(c);
}

/* Queue `b` (the caller's reference moves to the queue). Over the send-queue bound a
 * client is doomed: closed with 1008 right after the current broadcast, never left open
 * with a gap in its stream. The bound holds however the frames arrive (one loop iteration's
 * burst included): flow control (flow.c) keeps a connection that reads from ever reaching
 * it, by holding broadcasts back while any counted queue is past half the bound. */
static void enqueue(vx_conn *c, vx_buf *b, bool bounded) {
  vx_events *ev = c->ev;
  if (vx_has(c, VXC_F_CLOSED) || vx_has(c, VXC_F_DOOMED) || vx_has(c, VXC_F_LINGERING)) {
    vx__buf_unref(b);
    return;
  }
  /* A single frame larger than the bound still goes to an empty queue. */
  if (bounded && VX_IS_CLIENT(c) && c->qbytes && c->qbytes + b->len > ev->opts.max_send_queue) {
    vx__buf_unref(b);
    doom(c);
    return;
  }
  if (q_reserve(c) != 0) {
    vx__buf_unref(b);
    vx__conn_oom(c);
    return;
  }
  c->q[(c->qhead + c->qlen) & (c->qcap - 1)] = b;
  c->qlen++;
  vx__flow_add(c, b->len);
  ev->stats.messages_delivered++;
  vx__conn_mark_dirty(c);
  /* HTTP answers are the peer's own doing (pipelined requests): past the bound nothing
   * more is read from it until it has read half of them. What remains of the current
   * read is still answered, so the bound is exceeded by at most one read's answers. */
  if (c->kind == VXK_HTTP && !vx_has(c, VXC_F_READ_PAUSED) && c->qbytes > ev->opts.max_send_queue &&
      uv_read_stop((uv_stream_t *)&c->tcp) == 0)
    vx_set(c, VXC_F_READ_PAUSED);
}

/* Reading an HTTP connection again once half of what stopped it has been written. Runs in
 * the middle of a flush, so it never closes the connection: should the restart fail, the
 * next write tries again, and the HTTP deadline ends a connection that stays stuck. */
static void read_resume(vx_conn *c) {
  if (!vx_has(c, VXC_F_READ_PAUSED) || vx_has(c, VXC_F_CLOSED) || vx_has(c, VXC_F_PARKED) ||
      c->qbytes > c->ev->opts.max_send_queue / 2)
    return;
  if (vx__conn_read_start(c) != 0)
    return;
  vx_clr(c, VXC_F_READ_PAUSED);
  if (c->kind == VXK_HTTP && !vx_has(c, VXC_F_LINGERING))
    c->deadline = uv_now(&c->ev->loop) + VX_HTTP_DEADLINE_MS;
}

void vx__conn_send_owned(vx_conn *c, vx_buf *b) { enqueue(c, b, true); }

/* Control frames (pong, close) are exempt from the send-queue bound: a close frame must be
 * able to follow a full queue. */
void vx__conn_send_control(vx_conn *c, vx_buf *b) { enqueue(c, b, false); }

void vx__conn_send(vx_conn *c, vx_buf *b) { vx__conn_send_owned(c, vx__buf_ref(b)); }

/* Pongs answer the peer, so a peer that pings and never reads could make them pile up
 * without end (each ping costs it 6 bytes, its pong the server up to 127). Once the queue
 * is crowded (the kernel is full, or the queue holds half the bound), a new pong takes the
 * place of the one still waiting instead of queueing behind it (RFC 6455 §5.5.3 allows
 * answering only the latest ping): pongs never take more than half the bound plus one
 * frame, and never make a connection a slow consumer. A peer that reads gets every pong.
 * c->pong, the latest queued pong, is forgotten as soon as a write may take it (flush). */
void vx__conn_send_pong(vx_conn *c, vx_buf *b) {
  bool crowded = vx_has(c, VXC_F_WRITING) || c->qbytes + b->len > c->ev->opts.max_send_queue / 2;
  if (c->pong && crowded && !vx_has(c, VXC_F_CLOSED) && !vx_has(c, VXC_F_DOOMED)) {
    vx__flow_sub(c, c->pong->len, false);
    vx__flow_add(c, b->len);
    memcpy(c->pong->data, b->data, b->len);
    c->pong->len = b->len;
    vx__buf_unref(b);
    return;
  }
  uint32_t before = c->qlen;
  enqueue(c, b, false);
  if (c->qlen > before)
    c->pong = b;
}

static void flush(vx_conn *c);

/* Drop the bytes the kernel took: `n` bytes starting at the head (after qoff). */
static void q_consume(vx_conn *c, size_t n) {
  vx__flow_sub(c, n, true);
  c->ev->stats.bytes_written += n;
  while (n > 0) {
    vx_buf *b = q_at(c, 0);
    size_t left = b->len - c->qoff;
    if (n >= left) {
      n -= left;
      c->qoff = 0;
      q_pop(c);
    } else {
      c->qoff += n;
      n = 0;
    }
  }
  read_resume(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  vx_conn *c = req->data; /* still allocated: a cancelled shutdown reports before on_close */
  free(req);
  if (status < 0 && status != UV_ECANCELED && !vx_has(c, VXC_F_CLOSED))
    vx__conn_terminate(c);
}

/* Everything the server had to say is written. Closing the socket now would make the
 * kernel answer any input still unread, or still arriving (the rest of a message over
 * --max-payload, of an upload answered 413), with a reset, and a reset can destroy the
 * close frame or the HTTP answer before the peer has read it. So: shut down the write side
 * (the peer sees the end after our last byte), then read and discard until the peer closes
 * too, for at most LINGER_MS and LINGER_BYTES. */
static void linger(vx_conn *c) {
  if (vx_has(c, VXC_F_LINGERING) || (c->tls && vx__tls_close_notify(c) != 0))
    return;
  uv_shutdown_t *req = malloc(sizeof *req);
  if (!req) {
    vx__conn_terminate(c);
    return;
  }
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    vx__conn_terminate(c);
    return;
  }
  vx_set(c, VXC_F_LINGERING);
  c->linger_left = LINGER_BYTES;
  if (vx_has(c, VXC_F_READ_PAUSED)) { /* the rest must be read to be discarded */
    vx_clr(c, VXC_F_READ_PAUSED);
    if (vx__conn_read_start(c) != 0) {
      vx__conn_terminate(c);
      return;
    }
  }
  c->deadline = uv_now(&c->ev->loop) + LINGER_MS;
  if (c->ev->shutting_down && c->ev->shutdown_deadline < c->deadline)
    c->deadline = c->ev->shutdown_deadline;
}

void vx__conn_took_head(vx_conn *c) {
  size_t n = q_at(c, 0)->len - c->qoff;
  if (n)
    q_consume(c, n);
  else
    q_pop(c);
}

bool vx__conn_discard(vx_conn *c, size_t n) {
  if (!vx_has(c, VXC_F_LINGERING))
    return false;
  if (n >= c->linger_left)
    vx__conn_terminate(c);
  else
    c->linger_left -= (uint32_t)n;
  return true;
}

static void after_drain(vx_conn *c) {
  if (c->qlen == 0 && vx_has(c, VXC_F_CLOSE_AFTER_FLUSH) && !vx_has(c, VXC_F_CLOSED))
    linger(c);
}

static void on_write(uv_write_t *req, int status) {
  vx_conn *c = req->data;
  vx_clr(c, VXC_F_WRITING);
  if (vx_has(c, VXC_F_CLOSED))
    return; /* on_close releases the queue */
  size_t n = 0;
  uint32_t k = c->qinflight;
  c->qinflight = 0;
  if (status < 0) {
    vx__conn_terminate(c);
    return;
  }
  for (uint32_t i = 0; i < k; i++)
    n += q_at(c, i)->len - (i == 0 ? c->qoff : 0);
  q_consume(c, n);
  if (c->qlen)
    flush(c);
  else
    after_drain(c);
  vx__flow_check(c->ev);
}

static void flush(vx_conn *c) {
  if (vx_has(c, VXC_F_CLOSED) || vx_has(c, VXC_F_WRITING) || c->qlen == 0) {
    if (!vx_has(c, VXC_F_CLOSED) && !vx_has(c, VXC_F_WRITING))
      after_drain(c);
    return;
  }
  c->pong = NULL; /* from here on the kernel may have any queued buffer */
  if (c->tls) { /* encrypted per connection by tls.c, written from its own buffer */
    vx__tls_flush(c);
    if (!vx_has(c, VXC_F_CLOSED) && !vx_has(c, VXC_F_WRITING) && c->qlen == 0)
      after_drain(c);
    else if (vx_has(c, VXC_F_WRITING) && VX_IS_CLIENT(c) && c->qbytes > c->ev->opts.max_send_queue)
      doom(c);
    return;
  }
  uv_buf_t iov[FLUSH_IOV];
  for (;;) {
    uint32_t k = c->qlen < FLUSH_IOV ? c->qlen : FLUSH_IOV;
    size_t total = 0;
    for (uint32_t i = 0; i < k; i++) {
      vx_buf *b = q_at(c, i);
      size_t off = i == 0 ? c->qoff : 0;
      iov[i] = uv_buf_init(b->data + off, (unsigned)(b->len - off));
      total += b->len - off;
    }
    int r = uv_try_write((uv_stream_t *)&c->tcp, iov, k);
    if (r == UV_EAGAIN)
      r = 0;
    if (r < 0) {
      vx__conn_terminate(c);
      return;
    }
    q_consume(c, (size_t)r);
    if ((size_t)r == total) {
      if (c->qlen == 0) {
        after_drain(c);
        return;
      }
      continue; /* more than FLUSH_IOV buffers were queued */
    }
    break;
  }
  /* The kernel is full: hand the rest of this batch to libuv, which writes it when the
   * socket becomes writable. The buffers stay referenced by the queue until on_write. */
  uint32_t k = c->qlen < FLUSH_IOV ? c->qlen : FLUSH_IOV;
  for (uint32_t i = 0; i < k; i++) {
    vx_buf *b = q_at(c, i);
    size_t off = i == 0 ? c->qoff : 0;
    iov[i] = uv_buf_init(b->data + off, (unsigned)(b->len - off));
  }
  if (!c->wreq && !(c->wreq = malloc(sizeof *c->wreq))) {
    vx__conn_terminate(c);
    return;
  }
  c->wreq->data = c;
  if (uv_write(c->wreq, (uv_stream_t *)&c->tcp, iov, k, on_write) != 0) {
    vx__conn_terminate(c);
    return;
  }
  vx_set(c, VXC_F_WRITING);
  c->qinflight = k;
  if (VX_IS_CLIENT(c) && c->qbytes > c->ev->opts.max_send_queue)
    doom(c);
}

void vx__conn_flush_all(vx_events *ev) {
  do {
    vx__conn_process_doomed(ev);
    while (ev->dirty) {
      vx_conn *c = ev->dirty;
      ev->dirty = c->dirty_next;
      vx_clr(c, VXC_F_DIRTY);
      c->dirty_next = NULL;
      flush(c);
    }
  } while (ev->doomed); /* closing a slow consumer queues its close frame */
  vx__flow_check(ev);
}

/* Slow consumers found during a broadcast are closed only after it, so no channel's
 * subscriber array changes while it is being walked. Unsent whole frames are dropped
 * (the connection is going away), the close frame goes after what is already in flight. */
void vx__conn_process_doomed(vx_events *ev) {
  while (ev->doomed) {
    vx_conn *c = ev->doomed;
    ev->doomed = c->doomed_next;
    c->doomed_next = NULL;
    if (vx_has(c, VXC_F_CLOSED))
      continue;
    bool oom = vx_has(c, VXC_F_OOM);
    if (!oom) {
      ev->stats.slow_consumer_closes++;
      vx__log_at(ev, VX_LOG_INFO, c->id, NULL, "closing slow consumer %s (%zu bytes queued)", c->id,
                 c->qbytes);
    }
    uint32_t keep = vx_has(c, VXC_F_WRITING) ? c->qinflight : (c->qoff ? 1 : 0);
    c->pong = NULL;
    while (c->qlen > keep) {
      uint32_t last = (c->qhead + c->qlen - 1) & (c->qcap - 1);
      vx__flow_sub(c, c->q[last]->len, false);
      vx__buf_unref(c->q[last]);
      c->qlen--;
    }
    vx_clr(c, VXC_F_DOOMED);
    if (oom)
      vx__conn_close(c, 1011, "server out of memory");
    else
      vx__conn_close(c, 1008, "slow consumer");
    /* Its kernel buffer is full, so the close frame waits behind what is in flight: give
     * the peer longer than a normal handshake to read it (memory is already released). */
    if (!vx_has(c, VXC_F_CLOSED) && !c->ev->shutting_down)
      c->deadline = uv_now(&c->ev->loop) + 10000;
  }
}

/* Start closing an open client: the transport queues its close (a close frame after what
 * is queued, or the end of an event stream), the connection leaves every channel, and the
 * peer has a short while before the socket is cut. Anything else is cut at once. */
void vx__conn_close(vx_conn *c, uint16_t code, const char *reason) {
  if (vx_has(c, VXC_F_CLOSED))
    return;
  if (!VX_IS_CLIENT(c)) {
    vx__conn_terminate(c);
    return;
  }
  c->tp->close(c, code, reason);
  vx__conn_leave(c);
  c->deadline = uv_now(&c->ev->loop) + 2000;
  if (c->ev->shutting_down && c->ev->shutdown_deadline < c->deadline)
    c->deadline = c->ev->shutdown_deadline;
}

/* The connection stops being an open client: it leaves every channel, stops counting and
 * the host hears of it, once, whether the close was a handshake or a cut. */
void vx__conn_leave(vx_conn *c) {
  vx__flow_leave(c);
  c->ev->conn_up->left(c);
  if (VX_IS_CLIENT(c))
    c->phase = VXP_CLOSING;
}

void vx__conn_terminate(vx_conn *c) {
  if (vx_has(c, VXC_F_CLOSED))
    return;
  vx_events *ev = c->ev;
  vx_set(c, VXC_F_CLOSED);
  vx__conn_leave(c);
  if (c->prev)
    c->prev->next = c->next;
  else
    ev->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  ev->nconns--;
  uv_close((uv_handle_t *)&c->tcp, on_close);
  if (!ev->conns)
    ev->conn_up->none_left(ev);
}

static void on_close(uv_handle_t *h) {
  vx_conn *c = h->data;
  while (c->qlen)
    q_pop(c);
  free(c->q);
  free(c->wreq);
  free(c->subs);
  if (c->ctl)
    vx__buf_unref(c->ctl);
  if (c->tp && c->tp->release)
    c->tp->release(c);
  vx__tls_release(c);
  free(c);
}

/* Deadlines: an HTTP request must arrive whole in VX_HTTP_DEADLINE_MS (slow-loris guard);
 * a closing handshake and a lingering close get a couple of seconds. Runs once a second; the walk is over all
 * connections, a few nanoseconds each. */
void vx__conn_sweep(vx_events *ev) {
  uint64_t now = uv_now(&ev->loop);
  vx_conn *next;
  for (vx_conn *c = ev->conns; c; c = next) {
    next = c->next;
    if (!VX_IS_CLIENT(c) && c->deadline && now >= c->deadline) {
      vx__log(ev, VX_LOG_DEBUG, "deadline passed for %s (%s), %zu bytes unsent",
              vx_has(c, VXC_F_LINGERING) ? "lingering close"
              : c->kind == VXK_HTTP      ? "HTTP request"
                                         : "close handshake",
              c->kind == VXK_HTTP ? "-" : c->id, c->qbytes);
      vx__conn_terminate(c);
    }
  }
}

/* Keep-alive: every tick, a connection that has not shown life since the previous tick
 * is dropped; the others get a ping (one shared frame, no allocation). */
void vx__conn_ping_all(vx_events *ev) {
  vx_conn *next;
  for (vx_conn *c = ev->conns; c; c = next) {
    next = c->next;
    if (!VX_IS_CLIENT(c) || !c->tp->ping)
      continue;
    if (!vx_has(c, VXC_F_ALIVE)) {
      ev->stats.ping_timeouts++;
      vx__log_at(ev, VX_LOG_INFO, c->id, NULL, "dropping %s: no answer to ping", c->id);
      vx__conn_terminate(c);
      continue;
    }
    vx_clr(c, VXC_F_ALIVE);
    c->tp->ping(c);
  }
}
