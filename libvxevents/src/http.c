/* HTTP/1.1 ingress: request parsing with http_parser, the answers (vx__http_respond),
 * /health, and the routing of a complete request to its handler: the WebSocket handshake
 * (ws_handshake.c), the publish API (api.c), the auth and SSE subscribe routes (routes.c),
 * the event stream (sse.c).
 *
 * Requests are handled one at a time and answered at once, so pipelined requests are
 * answered in order. The parser is paused at the end of each message so the request is
 * handled outside its callbacks. */
#include "http_int.h"
#include "flow.h"

#include "landing_html.h" /* generated from page/landing.html */

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static http_parser_settings settings;
static uv_once_t settings_once = UV_ONCE_INIT;

static vx_conn *conn_of(http_parser *p) { return p->data; }

static int count_header(vx_conn *c, size_t n) {
  c->req->header_bytes += n;
  if (c->req->header_bytes > VX_HTTP_HEADER_MAX) {
    c->req->error_status = 431;
    return 1;
  }
  return 0;
}

static int on_message_begin(http_parser *p) {
  vx_http_req *r = conn_of(p)->req;
  vx__str_free(&r->body);
  vx__str_free(&r->raw_headers);
  vx__str_free(&r->ext);
  memset(r, 0, sizeof *r);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  vx_conn *c = conn_of(p);
  if (count_header(c, n))
    return 1;
  vx_http_req *r = c->req;
  if (r->url_len + n >= sizeof r->url) {
    r->error_status = 414;
    return 1;
  }
  memcpy(r->url + r->url_len, at, n);
  r->url_len += n;
  r->url[r->url_len] = '\0';
  return 0;
}

static int field_id(const char *f, size_t n) {
  static const struct {
    const char *name;
    int id;
  } names[] = {{"upgrade", H_UPGRADE},
               {"connection", H_CONNECTION},
               {"sec-websocket-key", H_KEY},
               {"sec-websocket-version", H_VERSION},
               {"authorization", H_AUTH},
               {"last-event-id", H_LAST_EVENT_ID},
               {"host", H_HOST},
               {"origin", H_ORIGIN},
               {"sec-websocket-extensions", H_EXT}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == n && strncasecmp(names[i].name, f, n) == 0)
      return names[i].id;
  return H_OTHER;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  vx_conn *c = conn_of(p);
  if (count_header(c, n))
    return 1;
  vx_http_req *r = c->req;
  if (r->in_value || r->raw_headers.len == 0) {
    if (r->raw_headers.len)
      vx__str_addz(&r->raw_headers, "\r\n");
    r->in_value = false;
    r->field_len = 0;
  }
  vx__str_add(&r->raw_headers, at, n);
  if (r->field_len + n < sizeof r->field) {
    memcpy(r->field + r->field_len, at, n);
    r->field_len += n;
  } else {
    r->field_len = sizeof r->field; /* too long to be one of ours */
  }
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  vx_conn *c = conn_of(p);
  if (count_header(c, n))
    return 1;
  vx_http_req *r = c->req;
  if (!r->in_value)
    vx__str_addz(&r->raw_headers, ": ");
  vx__str_add(&r->raw_headers, at, n);
  if (!r->in_value) {
    r->in_value = true;
    r->cur = r->field_len < sizeof r->field ? field_id(r->field, r->field_len) : H_OTHER;
    if (r->cur == H_EXT && r->ext.len) {
      vx__str_addz(&r->ext, ",");
    } else if (r->cur < H_OTHER) {
      hval *h = &r->h[r->cur];
      /* A repeated header is folded into one comma-separated value (RFC 9110 5.3). */
      h->repeated = h->seen;
      if (h->seen && h->len + 1 < sizeof h->v)
        h->v[h->len++] = ',';
      h->seen = true;
    }
  }
  if (r->cur == H_EXT) {
    vx__str_add(&r->ext, at, n);
    return 0;
  }
  if (r->cur == H_OTHER)
    return 0;
  hval *h = &r->h[r->cur];
  if (h->len + n >= sizeof h->v) {
    h->overflow = true;
    return 0;
  }
  memcpy(h->v + h->len, at, n);
  h->len += n;
  h->v[h->len] = '\0';
  return 0;
}

static int on_headers_complete(http_parser *p) {
  vx_conn *c = conn_of(p);
  if (c->req->raw_headers.len)
    vx__str_addz(&c->req->raw_headers, "\r\n");
  if (c->req->raw_headers.oom) {
    c->req->error_status = 503;
    return 1;
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->ev->opts.max_payload) {
    c->req->error_status = 413;
    return 1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  vx_conn *c = conn_of(p);
  vx_http_req *r = c->req;
  if (r->body.len + n > c->ev->opts.max_payload) {
    r->error_status = 413;
    return 1;
  }
  vx__str_add(&r->body, at, n);
  if (r->body.oom) {
    r->error_status = 503;
    return 1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  vx_http_req *r = conn_of(p)->req;
  r->complete = true;
  r->keep_alive = http_should_keep_alive(p) != 0;
  r->method = p->method;
  /* An upgrade stops the parser by itself at the exact end of the headers; anything else
   * is paused so it is handled outside the parser. */
  if (!p->upgrade)
    http_parser_pause(p, 1);
  return 0;
}

static void init_settings(void) {
  http_parser_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
}

int vx__http_start(vx_conn *c) {
  uv_once(&settings_once, init_settings);
  c->hp = malloc(sizeof *c->hp);
  c->req = calloc(1, sizeof *c->req);
  if (!c->hp || !c->req)
    return VX_ENOMEM;
  http_parser_init(c->hp, HTTP_REQUEST);
  c->hp->data = c;
  c->kind = VXK_HTTP;
  c->tp = &vx__transport_http;
  return 0;
}

void vx__http_free(vx_conn *c) {
  if (c->req) {
    vx__str_free(&c->req->body);
    vx__str_free(&c->req->raw_headers);
    vx__str_free(&c->req->ext);
    vx__str_free(&c->req->rest);
  }
  free(c->req);
  free(c->hp);
  c->req = NULL;
  c->hp = NULL;
}

static const char *status_text(int s) {
  switch (s) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 403:
    return "Forbidden";
  case 413:
    return "Payload Too Large";
  case 414:
    return "URI Too Long";
  case 426:
    return "Upgrade Required";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  default:
    return "Error";
  }
}

void vx__http_respond_as(vx_conn *c, int status, const char *ctype, const char *extra_headers,
                         const char *body, size_t blen, bool head_only, bool keep_alive) {
  if (vx_has(c, VXC_F_CLOSED))
    return;
  if (c->req && c->req->api)
    vx__metrics_api_status(c->ev, status);
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                    status, status_text(status), ctype, blen, keep_alive ? "keep-alive" : "close",
                    extra_headers ? extra_headers : "");
  if (hl < 0 || (size_t)hl >= sizeof head) {
    vx__conn_terminate(c);
    return;
  }
  if (head_only)
    blen = 0;
  vx_buf *b = vx__buf_new((size_t)hl + blen);
  if (!b) {
    vx__conn_oom(c);
    return;
  }
  memcpy(b->data, head, (size_t)hl);
  if (blen)
    memcpy(b->data + hl, body, blen);
  vx__conn_send_owned(c, b);
  if (!keep_alive) {
    vx_set(c, VXC_F_CLOSE_AFTER_FLUSH);
    if (c->req)
      c->req->stop = true;
  }
}

void vx__http_respond(vx_conn *c, int status, const char *extra_headers, const char *body,
                      bool keep_alive) {
  vx__http_respond_as(c, status, "application/json", extra_headers, body, body ? strlen(body) : 0,
                      false, keep_alive);
}

void vx__http_error(vx_conn *c, int status, const char *msg, const char *extra, bool ka) {
  vx_str s = {0};
  vx__str_addz(&s, "{\"error\":");
  vx__str_add_json_string(&s, msg, strlen(msg));
  vx__str_addz(&s, "}");
  vx__http_respond(c, status, extra, s.oom ? "{}" : s.p, ka);
  vx__str_free(&s);
}

/* Is `tok` one of the comma-separated tokens of `v` (case-insensitive)? */
bool vx__http_has_token(const char *v, const char *tok) {
  size_t tl = strlen(tok);
  const char *p = v;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    const char *s = p;
    while (*p && *p != ',')
      p++;
    const char *e = p;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
      e--;
    if ((size_t)(e - s) == tl && strncasecmp(s, tok, tl) == 0)
      return true;
  }
  return false;
}

/* ---- routes ---- */

/* GET /: the landing page (page/landing.html, embedded at build time). */
static void landing(vx_conn *c) {
  vx_http_req *r = c->req;
  bool ka = r->keep_alive && !c->ev->shutting_down;
  if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
    vx__http_error(c, 405, "Method not allowed", "Allow: GET\r\n", ka);
    return;
  }
  /* The page learns the WebSocket path from its one placeholder, a JSON string: the path
   * goes in escaped, with < and > as \u escapes so it cannot end the script element. */
  static const char mark[] = "\"__VX_PATH__\"";
  const char *page = VX_LANDING_HTML, *at = strstr(page, mark);
  vx_str b = {0};
  if (at) {
    vx__str_add(&b, page, (size_t)(at - page));
    vx_str js = {0};
    vx__str_add_json_string(&js, c->ev->path, c->ev->path_len);
    for (size_t i = 0; i < js.len && !js.oom; i++)
      if (js.p[i] == '<' || js.p[i] == '>')
        vx__str_addz(&b, js.p[i] == '<' ? "\\u003c" : "\\u003e");
      else
        vx__str_add(&b, js.p + i, 1);
    b.oom = b.oom || js.oom;
    vx__str_free(&js);
    vx__str_addz(&b, at + sizeof mark - 1);
  } else {
    vx__str_addz(&b, page);
  }
  if (b.oom) {
    vx__str_free(&b);
    vx__http_error(c, 503, "out of memory", NULL, false);
    return;
  }
  /* The page talks to its own origin only; it may not be framed by another site. */
  vx__http_respond_as(c, 200, "text/html; charset=utf-8",
                      "X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"
                      "Content-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; "
                      "style-src 'unsafe-inline'; connect-src 'self' ws: wss:\r\n",
                      b.p, b.len, r->method == HTTP_HEAD, ka);
  vx__str_free(&b);
}

static void route_landing(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  (void)extra;
  (void)extra_len;
  if (!c->ev->opts.landing_page) {
    vx__http_error(c, 404, "Not found", NULL, c->req->keep_alive && !c->ev->shutting_down);
    return;
  }
  landing(c);
}

static void route_ws(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_http_req *r = c->req;
  if (r->h[H_UPGRADE].seen && vx__http_has_token(r->h[H_UPGRADE].v, "websocket"))
    vx__ws_handshake(c, extra, extra_len);
  else if (c->ev->opts.landing_page && c->ev->path_len == 1 &&
           (r->method == HTTP_GET || r->method == HTTP_HEAD))
    landing(c); /* --path /: upgrades are the WebSocket's, a plain GET gets the page */
  else if (r->method == HTTP_GET || r->method == HTTP_HEAD)
    vx__http_error(c, 426, "WebSocket upgrade required", "Upgrade: websocket\r\n", false);
  else
    vx__http_error(c, 405, "Method not allowed", "Allow: GET\r\n", false);
}

static void route_sse(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  (void)extra;
  (void)extra_len;
  vx_http_req *r = c->req;
  if (r->method != HTTP_GET) {
    vx__http_error(c, 405, "Method not allowed", "Allow: GET\r\n", false);
    return;
  }
  const char *q = strpbrk(r->url, "?#");
  const hval *le = &r->h[H_LAST_EVENT_ID];
  vx__sse_start(c, q && *q == '?' ? q + 1 : NULL, le->seen && !le->overflow ? le->v : NULL);
  if (VX_OPEN_AS(c, VXK_SSE))
    vx__http_free(c);
}

static void route_health(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  (void)extra;
  (void)extra_len;
  vx_events *ev = c->ev;
  bool ka = c->req->keep_alive && !ev->shutting_down;
  if (c->req->method != HTTP_GET && c->req->method != HTTP_HEAD) {
    vx__http_error(c, 405, "Method not allowed", "Allow: GET\r\n", ka);
    return;
  }
  char body[160];
  snprintf(body, sizeof body, "{\"status\":\"%s\",\"connections\":%u,\"channels\":%u}",
           ev->shutting_down ? "shutting_down" : "ok", ev->nws, ev->channels.len);
  vx__http_respond(c, ev->shutting_down ? 503 : 200, NULL, body, ka);
}

#define ROUTE(name, call)                                                                          \
  static void name(vx_conn *c, const uint8_t *extra, size_t extra_len) {                           \
    (void)extra;                                                                                   \
    (void)extra_len;                                                                               \
    call;                                                                                          \
  }
ROUTE(route_auth, vx__routes_auth(c))
ROUTE(route_sse_sub, vx__routes_sse_sub(c, true))
ROUTE(route_sse_unsub, vx__routes_sse_sub(c, false))
ROUTE(route_broadcast, vx__api_handle(c, false))
ROUTE(route_batch, vx__api_handle(c, true))
ROUTE(route_metrics, vx__metrics_route(c))
#undef ROUTE

/* The route table: a path (fixed, or one of the instance's configured paths, NULL when that
 * endpoint is off), its handler and flags. Matched on the path without the query.
 * R_ORIGIN: what a web page could use (the WebSocket, SSE, auth, subscribe and publish
 * routes) is refused with 403 when the request's Origin is not allowed (origin.c); /health,
 * /metrics and the landing page itself are not (no page can read them cross-origin).
 * R_API: the answer is counted in the publish API's metrics. */
enum { R_ORIGIN = 1, R_API = 2 };
typedef struct {
  const char *fixed;
  const char *(*configured)(const vx_events *ev);
  void (*handle)(vx_conn *c, const uint8_t *extra, size_t extra_len);
  unsigned flags;
} route;

static const char *p_ws(const vx_events *ev) { return ev->path; }
static const char *p_auth(const vx_events *ev) { return ev->auth_path; }
static const char *p_sse(const vx_events *ev) { return ev->sse_path; }
static const char *p_sse_sub(const vx_events *ev) { return ev->sse_sub_path; }
static const char *p_sse_unsub(const vx_events *ev) { return ev->sse_unsub_path; }

static const route routes[] = {
    {NULL, p_ws, route_ws, R_ORIGIN},
    {NULL, p_auth, route_auth, R_ORIGIN},
    {NULL, p_sse, route_sse, R_ORIGIN},
    {NULL, p_sse_sub, route_sse_sub, R_ORIGIN},
    {NULL, p_sse_unsub, route_sse_unsub, R_ORIGIN},
    {"/health", NULL, route_health, 0},
    {"/api/broadcast", NULL, route_broadcast, R_ORIGIN | R_API},
    {"/api/batch", NULL, route_batch, R_ORIGIN | R_API},
    {"/metrics", NULL, route_metrics, 0},
    {"/", NULL, route_landing, 0},
};

/* 403 for an Origin the policy refuses (counted, logged at info). True: refused. */
static bool origin_refused(vx_conn *c) {
  vx_http_req *r = c->req;
  const hval *o = &r->h[H_ORIGIN];
  if (!o->seen || vx__origin_allowed(c->ev, o->repeated || o->overflow ? "" : o->v,
                                     o->repeated || o->overflow ? 0 : o->len))
    return false;
  c->ev->m.rejected[VX_RJ_ORIGIN]++;
  vx__log(c->ev, VX_LOG_INFO, "refused a request from origin %.200s (not in allowed_origins)",
          o->overflow ? "(too long)" : o->v);
  vx__http_error(c, 403, "Origin not allowed", NULL, false);
  return true;
}

static void handle_request(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  size_t plen = strcspn(r->url, "?#");
  if (r->error_status) { /* e.g. 413 found at the headers: the body was skipped */
    vx__http_error(c, r->error_status, status_text(r->error_status), NULL, false);
    return;
  }
  c->deadline = uv_now(&ev->loop) + VX_HTTP_DEADLINE_MS; /* keep-alive idle limit */
  bool wants_ws = r->h[H_UPGRADE].seen && vx__http_has_token(r->h[H_UPGRADE].v, "websocket");
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const char *path = routes[i].fixed ? routes[i].fixed : routes[i].configured(ev);
    if (!path || strlen(path) != plen || memcmp(r->url, path, plen) != 0)
      continue;
    if (wants_ws && routes[i].handle != route_ws)
      break; /* an upgrade anywhere but the WebSocket path */
    r->api = (routes[i].flags & R_API) != 0;
    if ((routes[i].flags & R_ORIGIN) && origin_refused(c))
      return;
    routes[i].handle(c, extra, extra_len);
    return;
  }
  vx__http_error(c, 404, "Not found", NULL, r->keep_alive && !ev->shutting_down && !wants_ws);
}

void vx__http_on_read(vx_conn *c, const uint8_t *p, size_t n) {
  if (vx__conn_discard(c, n))
    return;
  while (n > 0 && !vx_has(c, VXC_F_CLOSED) && c->kind == VXK_HTTP && c->req && !c->req->stop) {
    size_t used = http_parser_execute(c->hp, &settings, (const char *)p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(c->hp);
    if (c->hp->upgrade && e == HPE_OK) {
      if (!c->req->complete) {
        vx__http_error(c, 400, "WebSocket handshake must not have a body", NULL, false);
        return;
      }
      c->req->keep_alive = false; /* nothing after an upgrade request is HTTP */
      handle_request(c, p + used, n - used);
      return;
    }
    if (e == HPE_PAUSED) {
      http_parser_pause(c->hp, 0);
      handle_request(c, NULL, 0);
      p += used;
      n -= used;
      if (vx_has(c, VXC_F_PARKED)) { /* waits for capacity: the rest is parsed after it */
        if (n)
          vx__str_add(&c->req->rest, (const char *)p, n);
        if (c->req->rest.oom)
          vx__conn_oom(c);
        return;
      }
      continue;
    }
    if (e != HPE_OK) {
      int st = c->req->error_status ? c->req->error_status : 400;
      const char *msg = st == 400 ? http_errno_description(e) : status_text(st);
      vx__http_error(c, st, msg, NULL, false);
      return;
    }
    break; /* everything consumed; wait for more */
  }
}

/* A parked publish request was answered: what arrived after it is parsed now, and the
 * socket read again (unless the answer closes the connection). */
void vx__http_resume(vx_conn *c) {
  if (vx_has(c, VXC_F_CLOSED) || c->kind != VXK_HTTP || !c->req ||
      vx_has(c, VXC_F_CLOSE_AFTER_FLUSH))
    return;
  vx_str rest = c->req->rest;
  c->req->rest = (vx_str){0};
  c->req->stop = false;
  if (rest.len)
    vx__http_on_read(c, (const uint8_t *)rest.p, rest.len);
  vx__str_free(&rest);
  if (!vx_has(c, VXC_F_CLOSED) && c->kind == VXK_HTTP && !vx_has(c, VXC_F_PARKED) &&
      !vx_has(c, VXC_F_READ_PAUSED) && !vx_has(c, VXC_F_LINGERING) && vx__conn_read_start(c) != 0)
    vx__conn_terminate(c);
}

/* A connection in its HTTP phase: it reads requests; it is never a client, so it has no
 * messages, close handshake or ping of its own (vx__conn_close cuts it). */
static void http_release(vx_conn *c) {
  vx__http_auth_detach(c); /* an authorizer answer coming later finds no connection */
  vx__flow_unpark(c);      /* nor does capacity */
  vx__http_free(c);
}

const vx_transport vx__transport_http = {
    .name = "http",
    .read = vx__http_on_read,
    .release = http_release,
};
