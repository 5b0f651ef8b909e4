/* WebSocket transport: the RFC 6455 accept key, and wslay for everything that arrives.
 *
 * wslay parses incoming frames (masking, fragmentation, control frames, the close
 * handshake, the message-size limit) and its replies (pong, close) come out through
 * send_cb into the connection's queue. Outgoing data frames do not go through wslay's
 * own queue, which would malloc and copy each message per connection: they are the
 * shared broadcast buffers of conn.c. Mixing is safe because send_cb always accepts a
 * whole frame, so wslay never holds a half-sent frame that ours could split. */
#include "vx_int.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int vx__ws_accept_key(const char *key, size_t klen, char out[29]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  char buf[128];
  if (klen > 64)
    return VX_EINVAL;
  memcpy(buf, key, klen);
  memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
  if (!EVP_Digest(buf, klen + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
    return VX_EIO;
  EVP_EncodeBlock((unsigned char *)out, md, 20);
  out[28] = '\0';
  return 0;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user) {
  (void)flags;
  vx_conn *c = user;
  if (c->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < c->in_len ? len : c->in_len;
  memcpy(buf, c->in, n);
  c->in += n;
  c->in_len -= n;
  return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user) {
  (void)flags;
  vx_conn *c = user;
  vx_buf *b = vx__buf_new(len);
  if (!b) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  memcpy(b->data, data, len);
  vx__conn_send_control(c, b);
  return (ssize_t)len;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user) {
  vx_conn *c = user;
  c->alive = true;
  if (c->state != VXC_WS)
    return;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME: {
    const char *msg = (const char *)arg->msg;
    size_t len = arg->msg_length;
    char *plain = NULL;
    if (wslay_get_rsv1(arg->rsv)) { /* compressed (only allowed once negotiated) */
      int r = vx__inflate_msg(c->ev, arg->msg, arg->msg_length, c->ev->opts.max_payload, &plain,
                              &len);
      if (r) {
        uint16_t code = r == VX_ETOOBIG ? WSLAY_CODE_MESSAGE_TOO_BIG
                                        : WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA;
        const char *why = r == VX_ETOOBIG ? "message too big" : "bad compressed data";
        wslay_event_queue_close(ctx, code, (const uint8_t *)why, strlen(why));
        wslay_event_shutdown_read(ctx);
        return;
      }
      msg = plain;
    }
    if (!vx__utf8_valid(msg, len)) {
      free(plain);
      wslay_event_queue_close(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA,
                              (const uint8_t *)"invalid UTF-8", 13);
      wslay_event_shutdown_read(ctx);
      return;
    }
    vx__client_message(c, msg, len);
    free(plain);
    break;
  }
  case WSLAY_BINARY_FRAME: {
    static const char msg[] = "{\"type\":\"error\",\"error\":\"binary messages are not supported\"}";
    vx__client_send_json(c, msg, sizeof msg - 1);
    break;
  }
  default:
    break; /* ping/pong/close are handled by wslay */
  }
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_msg_recv_callback = on_msg,
};

/* Advance the connection's state after wslay had its say. */
static void after_wslay(vx_conn *c) {
  if (c->closed)
    return;
  if (wslay_event_send(c->ws) != 0) {
    vx__conn_terminate(c);
    return;
  }
  bool sent = wslay_event_get_close_sent(c->ws);
  bool rcvd = wslay_event_get_close_received(c->ws);
  if (sent || rcvd) {
    if (c->state == VXC_WS) {
      vx__conn_leave_ws(c);
      c->deadline = uv_now(&c->ev->loop) + 2000;
    }
    /* Done when both closes have passed, or when wslay stopped reading after a protocol
     * error (it will not read the peer's answer, so there is nothing to wait for). */
    if ((sent && rcvd) || (sent && !wslay_event_want_read(c->ws))) {
      c->close_after_flush = true;
      vx__conn_mark_dirty(c);
    }
  }
}

/* wslay's context costs ~9 KB (two 4 KiB buffers), far more than everything else a
 * connection holds. An idle connection does not need one: it is created when bytes arrive
 * and freed once wslay has consumed them at a message boundary with nothing queued, so
 * only connections in the middle of a message (or closing) keep one. */
static int ws_ctx(vx_conn *c) {
  if (c->ws)
    return 0;
  if (wslay_event_context_server_init(&c->ws, &callbacks, c) != 0) {
    c->ws = NULL;
    return VX_ENOMEM;
  }
  wslay_event_config_set_max_recv_msg_length(c->ws, c->ev->opts.max_payload);
  if (c->deflate)
    wslay_event_config_set_allowed_rsv_bits(c->ws, WSLAY_RSV1_BIT);
  return 0;
}

/* Follow frame boundaries in the bytes given to wslay (it validates them; this only
 * tracks where frames and fragmented messages end). */
static void track_frames(vx_conn *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (c->fr.remain) {
      size_t k = n < c->fr.remain ? n : (size_t)c->fr.remain;
      c->fr.remain -= k;
      p += k;
      n -= k;
      if (!c->fr.remain)
        c->fr.hlen = 0;
      continue;
    }
    c->fr.hdr[c->fr.hlen++] = *p++;
    n--;
    if (c->fr.hlen < 2)
      continue;
    uint8_t len7 = c->fr.hdr[1] & 0x7F;
    size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((c->fr.hdr[1] & 0x80) ? 4 : 0);
    if (c->fr.hlen < need)
      continue;
    uint64_t len = len7;
    if (len7 == 126)
      len = ((uint64_t)c->fr.hdr[2] << 8) | c->fr.hdr[3];
    else if (len7 == 127)
      for (int i = 0; i < 8; i++)
        len = (len << 8) | c->fr.hdr[2 + i];
    uint8_t op = c->fr.hdr[0] & 0x0F;
    if (op < 8) /* data frames open or close a message; control frames do not */
      c->fr.in_msg = !(c->fr.hdr[0] & 0x80);
    c->fr.remain = len;
    if (!len)
      c->fr.hlen = 0;
  }
}

static void ws_ctx_release_if_idle(vx_conn *c) {
  if (c->ws && c->state == VXC_WS && !c->closed && c->fr.hlen == 0 && !c->fr.in_msg &&
      !wslay_event_get_close_sent(c->ws) && !wslay_event_get_close_received(c->ws) &&
      wslay_event_get_queued_msg_count(c->ws) == 0) {
    wslay_event_context_free(c->ws);
    c->ws = NULL;
  }
}

int vx__ws_start(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_events *ev = c->ev;
  vx__random_id(ev, c->id);
  if (vx__map_put(&ev->sockets, c->id, VX_SOCKET_ID_LEN, c) != 0)
    return VX_ENOMEM;
  c->state = VXC_WS;
  c->alive = true;
  c->announced = true;
  c->deadline = 0;
  ev->nws++;

  char msg[128];
  int n = snprintf(msg, sizeof msg,
                   "{\"type\":\"event\",\"event\":\"connected\",\"data\":{\"socketId\":\"%s\"}}",
                   c->id);
  vx__client_send_json(c, msg, (size_t)n);
  if (ev->opts.on_connect)
    ev->opts.on_connect(c->id, ev->opts.hook_data);
  if (extra_len)
    vx__ws_on_read(c, extra, extra_len);
  return 0;
}

void vx__ws_on_read(vx_conn *c, const uint8_t *p, size_t n) {
  if (c->closed || c->state == VXC_HTTP)
    return;
  if (ws_ctx(c) != 0) {
    vx__conn_terminate(c);
    return;
  }
  c->alive = true; /* any bytes from the peer, a pong among them, prove it is there */
  track_frames(c, p, n);
  c->in = p;
  c->in_len = n;
  int r = wslay_event_recv(c->ws);
  c->in = NULL;
  c->in_len = 0;
  if (r != 0) {
    vx__conn_terminate(c);
    return;
  }
  after_wslay(c);
  ws_ctx_release_if_idle(c);
}

void vx__ws_queue_close(vx_conn *c, uint16_t code, const char *reason) {
  if (c->closed || ws_ctx(c) != 0 || wslay_event_get_close_sent(c->ws))
    return;
  size_t rl = reason ? strlen(reason) : 0;
  if (rl > 123)
    rl = 123;
  wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rl);
  after_wslay(c);
}
