/* WebSocket transport: the RFC 6455 accept key, and wslay for everything that arrives.
 *
 * wslay parses incoming data frames (masking, fragmentation, the message-size limit)
 * behind a small gate of ours that takes ping and close frames and header violations (see
 * "the frame gate" below); wslay's close frames come out through send_cb into the
 * connection's queue, the gate's pongs go there directly. Outgoing data frames do not go through wslay's
 * own queue, which would malloc and copy each message per connection: they are the
 * shared broadcast buffers of conn.c. Mixing is safe because send_cb always accepts a
 * whole frame, so wslay never holds a half-sent frame that ours could split. */
#include "flow.h"

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
  vx_set(c, VXC_F_ALIVE);
  if (!VX_OPEN_AS(c, VXK_WS))
    return;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME: {
    const char *msg = (const char *)arg->msg;
    size_t len = arg->msg_length;
    char *plain = NULL;
    if (wslay_get_rsv1(arg->rsv)) { /* compressed (only allowed once negotiated) */
      int r =
          vx__inflate_msg(c->ev, arg->msg, arg->msg_length, c->ev->opts.max_payload, &plain, &len);
      if (r) {
        uint16_t code =
            r == VX_ETOOBIG ? WSLAY_CODE_MESSAGE_TOO_BIG : WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA;
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
    static const char msg[] =
        "{\"type\":\"error\",\"error\":\"binary messages are not supported\"}";
    vx__client_send_json(c, msg, sizeof msg - 1);
    break;
  }
  default:
    break; /* pongs need no answer; pings and closes never reach wslay (the gate) */
  }
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_msg_recv_callback = on_msg,
};

/* Advance the connection's state after wslay had its say. */
static void after_wslay(vx_conn *c) {
  if (vx_has(c, VXC_F_CLOSED))
    return;
  if (wslay_event_send(c->ws) != 0) {
    vx__conn_terminate(c);
    return;
  }
  bool sent = wslay_event_get_close_sent(c->ws);
  bool rcvd = vx_has(c, VXC_F_CLOSE_RCVD);
  if (sent || rcvd) {
    if (VX_OPEN_AS(c, VXK_WS)) {
      vx__conn_leave(c);
      c->deadline = uv_now(&c->ev->loop) + 2000;
    }
    /* Done when both closes have passed, or when reading stopped after a protocol error
     * (the peer's answer will not be read, so there is nothing to wait for). */
    if ((sent && rcvd) || (sent && !wslay_event_want_read(c->ws))) {
      vx_set(c, VXC_F_CLOSE_AFTER_FLUSH);
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
  if (c->enc == VX_ENC_WS_DEFLATE)
    wslay_event_config_set_allowed_rsv_bits(c->ws, WSLAY_RSV1_BIT);
  return 0;
}

/* ---- the frame gate ----
 *
 * Every byte from the peer passes here before wslay sees it. The gate follows frame
 * boundaries and takes the ping and close frames out of the stream itself; wslay gets the
 * data frames (and unsolicited pongs) and validates the rest. The reasons:
 *  - wslay cuts the connection without a close frame on the header violations its frame
 *    layer finds (a control frame over 125 bytes or fragmented, a 64-bit length with the
 *    top bit set, a length not in its shortest form); RFC 6455 §7.1.7 wants a close frame
 *    (1002) first. The gate sees them as soon as the header shows them and answers 1002,
 *    without giving wslay that header.
 *  - wslay drops every queued control frame once a close is queued, so the pong of a ping
 *    that came in the same read as a close was never sent (§5.5.2); and it queues one
 *    pong per ping in its own queue, outside any bound. The gate answers a ping itself, at
 *    once, into the connection's queue (vx__conn_send_pong bounds those a peer leaves
 *    unread).
 *  - wslay judges close codes by the 2011 list (1012-1014 came later) and answers a 1-byte
 *    close payload with an empty close. The gate checks the close frame and queues the
 *    echo through wslay, so the close state stays in one place.
 * A control frame is collected into c->ctl (at most 125 bytes of payload), which becomes
 * the pong when it was a ping. */

static bool close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* Answer a violation: close frame with `code`, nothing more read. */
static void protocol_close(vx_conn *c, uint16_t code, const char *why) {
  wslay_event_queue_close(c->ws, code, (const uint8_t *)why, strlen(why));
  wslay_event_shutdown_read(c->ws);
}

#define CTL_MAX 125

static void ctl_frame_done(vx_conn *c) {
  vx_buf *b = c->ctl;
  size_t len = c->fr.hdr[1] & 0x7F;
  uint8_t op = c->fr.hdr[0] & 0x0F;
  c->ctl = NULL;
  c->fr.in_ctl = false;
  c->fr.hlen = 0;
  c->fr.remain = 0;
  if (op == WSLAY_PING) {
    /* After our close frame nothing more may be sent, a pong included. */
    if (wslay_event_get_close_sent(c->ws)) {
      vx__buf_unref(b);
      return;
    }
    b->data[0] = (char)(0x80 | WSLAY_PONG);
    b->data[1] = (char)len;
    b->len = (uint32_t)(2 + len);
    vx__conn_send_pong(c, b);
    return;
  }
  const uint8_t *pl = (const uint8_t *)b->data + 2;
  unsigned code = len ? ((unsigned)pl[0] << 8) | pl[1] : 0;
  if (len && !close_code_valid(code)) {
    protocol_close(c, WSLAY_CODE_PROTOCOL_ERROR, "invalid close code");
  } else if (len > 2 && !vx__utf8_valid((const char *)pl + 2, len - 2)) {
    protocol_close(c, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "close reason is not UTF-8");
  } else {
    vx_set(c, VXC_F_CLOSE_RCVD);
    /* Echo the code (an empty close for an empty one). When our own close went out
     * first this is its answer and nothing more is queued. */
    wslay_event_queue_close(c->ws, (uint16_t)code, NULL, 0);
    wslay_event_shutdown_read(c->ws);
  }
  vx__buf_unref(b);
}

/* Take bytes of the ping or close frame being received; returns how many were used. */
static size_t ctl_frame_bytes(vx_conn *c, const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n && c->fr.in_ctl) {
    if (c->fr.hlen < 6) {
      c->fr.hdr[c->fr.hlen++] = p[i++];
      if (c->fr.hlen == 2) {
        uint8_t b0 = c->fr.hdr[0], b1 = c->fr.hdr[1];
        bool close = (b0 & 0x0F) == WSLAY_CONNECTION_CLOSE;
        const char *why = !(b0 & 0x80)                ? "fragmented control frame"
                          : (b0 & 0x70)               ? "reserved bits set on a control frame"
                          : !(b1 & 0x80)              ? "client frames must be masked"
                          : (b1 & 0x7F) > CTL_MAX     ? "control frame over 125 bytes"
                          : close && (b1 & 0x7F) == 1 ? "close frame with a 1-byte payload"
                                                      : NULL;
        if (why) {
          c->fr.in_ctl = false;
          protocol_close(c, WSLAY_CODE_PROTOCOL_ERROR, why);
          return n;
        }
      }
      if (c->fr.hlen == 6) {
        /* Room for the largest pong, so a waiting pong can take a later one's place. */
        if (!(c->ctl = vx__buf_new(2 + CTL_MAX))) {
          vx__conn_terminate(c);
          return n;
        }
        c->fr.remain = c->fr.hdr[1] & 0x7F;
        if (!c->fr.remain)
          ctl_frame_done(c);
      }
      continue;
    }
    size_t len = c->fr.hdr[1] & 0x7F;
    size_t k = n - i < c->fr.remain ? n - i : (size_t)c->fr.remain;
    for (size_t j = 0; j < k; j++) {
      size_t at = len - (size_t)c->fr.remain + j;
      c->ctl->data[2 + at] = (char)(p[i + j] ^ c->fr.hdr[2 + (at & 3)]);
    }
    i += k;
    c->fr.remain -= k;
    if (!c->fr.remain)
      ctl_frame_done(c);
  }
  return i;
}

/* How many of the next bytes may go to wslay now. Stops before a ping or close frame
 * (fr.in_ctl set), or before the header of a frame that breaks the protocol (*why set,
 * nothing of it given). */
static size_t gate_scan(vx_conn *c, const uint8_t *p, size_t n, const char **why) {
  size_t i = 0, hstart = 0; /* where the current header started in p (0: earlier) */
  while (i < n) {
    if (c->fr.remain) {
      size_t k = n - i < c->fr.remain ? n - i : (size_t)c->fr.remain;
      c->fr.remain -= k;
      i += k;
      if (!c->fr.remain)
        c->fr.hlen = 0;
      continue;
    }
    if (c->fr.hlen == 0) {
      hstart = i;
      uint8_t op = p[i] & 0x0F;
      if (op == WSLAY_CONNECTION_CLOSE || op == WSLAY_PING) {
        c->fr.in_ctl = true;
        return i;
      }
    }
    c->fr.hdr[c->fr.hlen++] = p[i++];
    if (c->fr.hlen < 2)
      continue;
    uint8_t b0 = c->fr.hdr[0], b1 = c->fr.hdr[1], op = b0 & 0x0F, len7 = b1 & 0x7F;
    if (c->fr.hlen == 2) {
      if ((op > 2 && op < 8) || op > 10)
        *why = "reserved opcode";
      else if (op >= 8 && !(b0 & 0x80))
        *why = "fragmented control frame";
      else if (op >= 8 && len7 > CTL_MAX)
        *why = "control frame over 125 bytes";
      else if (!(b1 & 0x80))
        *why = "client frames must be masked";
      if (*why)
        return hstart;
    }
    size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    if (c->fr.hlen < need)
      continue;
    uint64_t len = len7;
    if (len7 == 126)
      len = ((uint64_t)c->fr.hdr[2] << 8) | c->fr.hdr[3];
    else if (len7 == 127)
      for (int k = 0; k < 8; k++)
        len = (len << 8) | c->fr.hdr[2 + k];
    if (len7 == 127 && (len >> 63))
      *why = "frame length with the top bit set";
    else if ((len7 == 126 && len < 126) || (len7 == 127 && len < 65536))
      *why = "frame length not in its shortest form";
    if (*why)
      return hstart;
    if (op < 8) /* data frames open or close a message; control frames do not */
      c->fr.in_msg = !(b0 & 0x80);
    c->fr.remain = len;
    if (!len)
      c->fr.hlen = 0;
  }
  return n;
}

static void ws_ctx_release_if_idle(vx_conn *c) {
  if (c->ws && VX_OPEN_AS(c, VXK_WS) && !vx_has(c, VXC_F_CLOSED) && c->fr.hlen == 0 &&
      !c->fr.in_msg && !c->fr.in_ctl && !vx_has(c, VXC_F_CLOSE_RCVD) &&
      !wslay_event_get_close_sent(c->ws) && wslay_event_get_queued_msg_count(c->ws) == 0) {
    wslay_event_context_free(c->ws);
    c->ws = NULL;
  }
}

int vx__ws_start(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_events *ev = c->ev;
  vx__random_id(ev, c->id);
  if (vx__map_put(&ev->sockets, c->id, VX_SOCKET_ID_LEN, c) != 0)
    return VX_ENOMEM;
  c->kind = VXK_WS;
  c->tp = &vx__transport_ws;
  vx_set(c, VXC_F_ALIVE);
  vx_set(c, VXC_F_ANNOUNCED);
  c->deadline = 0;
  ev->nws++;
  vx__flow_join(c);

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
  if (vx_has(c, VXC_F_CLOSED) || vx__conn_discard(c, n))
    return;
  if (ws_ctx(c) != 0) {
    vx__conn_terminate(c);
    return;
  }
  vx_set(c, VXC_F_ALIVE); /* any bytes from the peer, a pong among them, prove it is there */
  while (n > 0 && !vx_has(c, VXC_F_CLOSED) && wslay_event_want_read(c->ws)) {
    if (c->fr.in_ctl) {
      size_t k = ctl_frame_bytes(c, p, n);
      p += k;
      n -= k;
      continue;
    }
    const char *why = NULL;
    size_t k = gate_scan(c, p, n, &why);
    if (k) {
      c->in = p;
      c->in_len = k;
      int r = wslay_event_recv(c->ws);
      c->in = NULL;
      c->in_len = 0;
      if (r != 0) {
        vx__conn_terminate(c);
        return;
      }
      p += k;
      n -= k;
    }
    if (why && !vx_has(c, VXC_F_CLOSED) && wslay_event_want_read(c->ws))
      protocol_close(c, WSLAY_CODE_PROTOCOL_ERROR, why);
  }
  if (vx_has(c, VXC_F_CLOSED))
    return;
  after_wslay(c);
  ws_ctx_release_if_idle(c);
}

void vx__ws_queue_close(vx_conn *c, uint16_t code, const char *reason) {
  if (vx_has(c, VXC_F_CLOSED) || ws_ctx(c) != 0 || wslay_event_get_close_sent(c->ws))
    return;
  size_t rl = reason ? strlen(reason) : 0;
  if (rl > 123)
    rl = 123;
  wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rl);
  after_wslay(c);
}

/* ---- the WebSocket transport ---- */

static void ws_send_json(vx_conn *c, const char *type, const char *json, size_t n) {
  (void)type; /* the JSON says it */
  vx__client_send_json(c, json, n);
}

static void ws_close(vx_conn *c, uint16_t code, const char *reason) {
  vx__ws_queue_close(c, code, reason);
}

static void ws_ping(vx_conn *c) { vx__conn_send(c, c->ev->ping_frame); }

static void ws_release(vx_conn *c) {
  if (c->ws)
    wslay_event_context_free(c->ws);
  c->ws = NULL;
}

const vx_transport vx__transport_ws = {
    .name = "websocket",
    .read = vx__ws_on_read,
    .send_json = ws_send_json,
    .close = ws_close,
    .ping = ws_ping,
    .release = ws_release,
};
