/* Private to the HTTP ingress and its route handlers (http.c, ws_handshake.c, api.c,
 * routes.c): the request being parsed and the helpers every handler answers with. */
#ifndef VX_HTTP_INT_H
#define VX_HTTP_INT_H

#include "vx_int.h"

/* Headers kept by value. Sec-WebSocket-Extensions is kept apart, whole (a list of offers
 * can be long; the 16 KiB header bound still applies). */
enum {
  H_NONE = 0,
  H_UPGRADE,
  H_CONNECTION,
  H_KEY,
  H_VERSION,
  H_AUTH,
  H_LAST_EVENT_ID,
  H_HOST,
  H_ORIGIN,
  H_OTHER,
  H_EXT
};

typedef struct {
  char v[256];
  size_t len;
  bool overflow, seen, repeated;
} hval;

struct vx_http_req {
  size_t header_bytes;
  char url[2048];
  size_t url_len;
  char field[32];
  size_t field_len;
  bool in_value;
  int cur;
  hval h[H_OTHER];
  vx_str ext; /* Sec-WebSocket-Extensions, repeated lines joined with "," */
  vx_str body;
  vx_str raw_headers; /* "Name: value\r\n" each, for the host's authorizer */
  int error_status;
  bool complete, keep_alive, stop;
  bool api; /* a publish API request: its answer is counted by status (metrics.c) */
  bool batch; /* a parked publish request is /api/batch */
  int method;
  vx_str rest; /* input read after a parked request, parsed once it is answered */
};

/* An answer with its own Content-Type and a body of `blen` bytes (`head_only`: the headers
 * of a HEAD answer, no body). vx__http_respond is this with application/json. */
void vx__http_respond_as(vx_conn *c, int status, const char *ctype, const char *extra_headers,
                         const char *body, size_t blen, bool head_only, bool keep_alive);

/* {"error": msg} with `status`; `extra` headers may be NULL; `ka` keeps the connection. */
void vx__http_error(vx_conn *c, int status, const char *msg, const char *extra, bool ka);
/* Is `tok` one of the comma-separated tokens of `v` (case-insensitive)? */
bool vx__http_has_token(const char *v, const char *tok);

/* 400 bodies: {"error":"Validation failed","details":[{path,message}...]} */
typedef struct {
  vx_str s;
  int n;
} vx_details;
void vx__details_add(vx_details *d, const char *path, const char *msg);
/* Answer 400 with the details collected (at least one) and free them. */
void vx__details_send(vx_conn *c, vx_details *d, bool ka);

/* Does the Sec-WebSocket-Extensions value `v` hold an acceptable permessage-deflate offer
 * (RFC 7692 §5: the first offer whose parameters are all known, unrepeated and valid)?
 * *echo_smwb: that offer named server_max_window_bits (=15), which the answer must echo. */
bool vx__ws_deflate_negotiate(const char *v, size_t n, bool *echo_smwb);

/* Route handlers, called with the whole request in c->req. */
void vx__ws_handshake(vx_conn *c, const uint8_t *extra, size_t extra_len); /* GET {path} */
void vx__api_handle(vx_conn *c, bool batch);         /* POST /api/broadcast, /api/batch */
/* http.c: a parked request was answered: parse what came after it and read again. */
void vx__http_resume(vx_conn *c);
void vx__routes_auth(vx_conn *c);                    /* POST {path}/auth */
void vx__routes_sse_sub(vx_conn *c, bool subscribe); /* POST {sse_path}/(un)subscribe */
void vx__metrics_route(vx_conn *c);                  /* GET /metrics (metrics.c) */

#endif
