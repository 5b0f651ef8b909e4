/* The transport seam (DESIGN §11). A connection carries a table of what its transport does
 * and an encoding tag; the hub, the node and conn.c go through these and never name
 * WebSocket or SSE. What a broadcast sends to a recipient is chosen by the encoding tag
 * alone (encode.c): one field read, no indirect call per recipient. */
#ifndef VX_TRANSPORT_H
#define VX_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

typedef struct vx_conn vx_conn;
typedef struct vx_buf vx_buf;
typedef struct vx_events vx_events;

/* How a connection's bytes are framed on the wire. A broadcast is encoded at most once per
 * encoding, on its first recipient that needs it. (TLS variants come later: the plaintext
 * frame is still shared, only the ciphertext is per connection.) */
typedef enum {
  VX_ENC_WS = 0,     /* WebSocket text frames */
  VX_ENC_WS_DEFLATE, /* WebSocket with permessage-deflate, no context takeover */
  VX_ENC_SSE,        /* text/event-stream */
  VX_ENC_COUNT
} vx_encoding;

/* What a connection is, and where it is in its life: kept apart (a closing WebSocket is
 * still a WebSocket). Closed is a flag (VXC_F_CLOSED). */
typedef enum { VXK_HTTP = 0, VXK_WS, VXK_SSE } vx_kind;
typedef enum { VXP_OPEN = 0, VXP_CLOSING } vx_phase;

typedef struct vx_transport {
  const char *name;
  /* Bytes arrived from the peer (loop thread; `p` valid for the call only). */
  void (*read)(vx_conn *c, const uint8_t *p, size_t n);
  /* Send one JSON message of the core's own; `type` is its "type" (SSE names the event
   * after it, WebSocket ignores it). NULL for HTTP. */
  void (*send_json)(vx_conn *c, const char *type, const char *json, size_t n);
  /* Begin closing: no more data; a close frame (WebSocket) or the end of the stream (SSE)
   * after what is queued; the connection leaves every channel. */
  void (*close)(vx_conn *c, uint16_t code, const char *reason);
  /* Keep-alive tick: queue a ping. NULL when the transport has none (liveness is then not
   * checked by pings). */
  void (*ping)(vx_conn *c);
  /* The connection is gone: free what the transport holds (after the handle closed). */
  void (*release)(vx_conn *c);
} vx_transport;

extern const vx_transport vx__transport_http, vx__transport_ws, vx__transport_sse;

/* ---- encode.c: one encoded frame per encoding for one broadcast ---- */
typedef struct vx_frames {
  vx_events *ev;
  vx_buf *enc[VX_ENC_COUNT]; /* enc[VX_ENC_WS] is the frame the broadcast was built as */
  uint32_t tried;            /* bit per encoding: built (or failed: NULL) already */
  uint64_t seq;              /* SSE id of this broadcast, 0 = none */
} vx_frames;

/* Takes a new reference to `ws_frame`. */
void vx__frames_init(vx_frames *f, vx_events *ev, vx_buf *ws_frame, uint64_t seq);
vx_buf *vx__frames_build(vx_frames *f, int enc);
/* The frame for encoding `enc` (borrowed; NULL when it could not be built: out of memory). */
static inline vx_buf *vx__frames_get(vx_frames *f, int enc) {
  return (f->tried >> enc) & 1 ? f->enc[enc] : vx__frames_build(f, enc);
}
void vx__frames_release(vx_frames *f);

/* The payload of a frame built by the core (unmasked, FIN, one frame): its offset. */
size_t vx__frame_payload_offset(const vx_buf *frame);
/* SSE bytes "id: <tag>-<seq>\n" (seq non-zero) "event: <type>\ndata: <json>\n\n", a data:
 * line per line of the JSON. `type` is one of the core's message types. */
vx_buf *vx__encode_sse(const char *type, const char *json, size_t n, uint64_t seq, const char *tag);

#endif
