/* HTTP/1.1 ingress: request parsing with http_parser, the WebSocket handshake check,
 * /health and the publish API (POST /api/broadcast, /api/batch).
 *
 * Requests are handled one at a time and answered at once, so pipelined requests are
 * answered in order. The parser is paused at the end of each message so the request is
 * handled outside its callbacks. */
#include "vx_int.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Headers kept by value. Sec-WebSocket-Extensions is kept apart, whole (a list of offers
 * can be long; the 16 KiB header bound still applies). */
enum { H_NONE = 0, H_UPGRADE, H_CONNECTION, H_KEY, H_VERSION, H_AUTH, H_LAST_EVENT_ID, H_HOST,
       H_OTHER, H_EXT };

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
  vx_str ext;         /* Sec-WebSocket-Extensions, repeated lines joined with "," */
  vx_str body;
  vx_str raw_headers; /* "Name: value\r\n" each, for the host's authorizer */
  int error_status;
  bool complete, keep_alive, stop;
  int method;
};

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
  c->state = VXC_HTTP;
  return 0;
}

void vx__http_free(vx_conn *c) {
  if (c->req) {
    vx__str_free(&c->req->body);
    vx__str_free(&c->req->raw_headers);
    vx__str_free(&c->req->ext);
  }
  free(c->req);
  free(c->hp);
  c->req = NULL;
  c->hp = NULL;
}

static const char *status_text(int s) {
  switch (s) {
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 403: return "Forbidden";
  case 413: return "Payload Too Large";
  case 414: return "URI Too Long";
  case 426: return "Upgrade Required";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Error";
  }
}

void vx__http_respond(vx_conn *c, int status, const char *extra_headers, const char *body,
                      bool keep_alive) {
  if (c->closed)
    return;
  size_t blen = body ? strlen(body) : 0;
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                    status, status_text(status), blen, keep_alive ? "keep-alive" : "close",
                    extra_headers ? extra_headers : "");
  if (hl < 0 || (size_t)hl >= sizeof head) {
    vx__conn_terminate(c);
    return;
  }
  vx_buf *b = vx__buf_new((size_t)hl + blen);
  if (!b) {
    vx__conn_terminate(c);
    return;
  }
  memcpy(b->data, head, (size_t)hl);
  if (blen)
    memcpy(b->data + hl, body, blen);
  vx__conn_send_owned(c, b);
  if (!keep_alive) {
    c->close_after_flush = true;
    if (c->req)
      c->req->stop = true;
  }
}

static void respond_error(vx_conn *c, int status, const char *msg, const char *extra, bool ka) {
  vx_str s = {0};
  vx__str_addz(&s, "{\"error\":");
  vx__str_add_json_string(&s, msg, strlen(msg));
  vx__str_addz(&s, "}");
  vx__http_respond(c, status, extra, s.oom ? "{}" : s.p, ka);
  vx__str_free(&s);
}

/* Is `tok` one of the comma-separated tokens of `v` (case-insensitive)? */
static bool has_token(const char *v, const char *tok) {
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

static bool key_valid(const hval *k) {
  static const char b64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (!k->seen || k->overflow || k->len != 24 || k->v[22] != '=' || k->v[23] != '=')
    return false;
  for (int i = 0; i < 22; i++)
    if (!strchr(b64, k->v[i]) || k->v[i] == 0)
      return false;
  return true;
}

/* ---- permessage-deflate negotiation (RFC 7692) ----
 *
 * Sec-WebSocket-Extensions is a list of offers, `name *( ";" param [ "=" value ] )`, a
 * value being a token or a quoted-string (RFC 6455 §9.1). The first permessage-deflate
 * offer whose parameters are all known, valid and given once is accepted; any other offer
 * is declined as a whole and the next one considered (§5). The answer always asks for no
 * context takeover both ways, so that one compressed frame serves every recipient, and the
 * one shared deflate stream uses a 15-bit window: an offer limiting server_max_window_bits
 * below 15 is declined, one naming 15 is accepted and the parameter echoed (§7.1.2.1).
 * client_max_window_bits is only a hint we may ignore (the inflater takes any window). */

static bool tchar(unsigned char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static void skip_ows(const char **p, const char *e) {
  while (*p < e && (**p == ' ' || **p == '\t'))
    (*p)++;
}

static size_t scan_token(const char **p, const char *e) {
  const char *s = *p;
  while (*p < e && tchar((unsigned char)**p))
    (*p)++;
  return (size_t)(*p - s);
}

/* A parameter value, token or quoted-string, unescaped into out[cap] (*len = cap when it
 * does not fit: no valid value is that long). False on bad syntax. */
static bool scan_value(const char **p, const char *e, char *out, size_t cap, size_t *len) {
  size_t n = 0;
  if (*p < e && **p == '"') {
    (*p)++;
    for (;;) {
      if (*p >= e)
        return false; /* unterminated */
      char ch = *(*p)++;
      if (ch == '"')
        break;
      if (ch == '\\') {
        if (*p >= e)
          return false;
        ch = *(*p)++;
      }
      if (n < cap)
        out[n] = ch;
      n++;
    }
  } else {
    const char *s = *p;
    n = scan_token(p, e);
    if (n == 0)
      return false;
    memcpy(out, s, n < cap ? n : cap);
  }
  *len = n < cap ? n : cap;
  return true;
}

/* 8..15 written without a leading zero (RFC 7692 §7.1.2.1), else 0. */
static int window_bits(const char *v, size_t n) {
  if (n == 1 && v[0] >= '8' && v[0] <= '9')
    return v[0] - '0';
  if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + v[1] - '0';
  return 0;
}

enum { PMD_SNCT = 1, PMD_CNCT = 2, PMD_SMWB = 4, PMD_CMWB = 8 };

static int pmd_param(const char *p, size_t n) {
  static const struct {
    const char *name;
    int bit;
  } names[] = {{"server_no_context_takeover", PMD_SNCT},
               {"client_no_context_takeover", PMD_CNCT},
               {"server_max_window_bits", PMD_SMWB},
               {"client_max_window_bits", PMD_CMWB}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == n && strncasecmp(names[i].name, p, n) == 0)
      return names[i].bit;
  return 0;
}

/* True when an offer is accepted; *echo_smwb when it named server_max_window_bits. */
static bool deflate_negotiate(const char *v, size_t n, bool *echo_smwb) {
  const char *p = v, *e = v + n;
  while (p < e) {
    skip_ows(&p, e);
    if (p < e && *p == ',') { /* empty list element */
      p++;
      continue;
    }
    const char *name = p;
    size_t nl = scan_token(&p, e);
    bool syntax = nl > 0;
    bool pmd = nl == 18 && strncasecmp(name, "permessage-deflate", 18) == 0;
    bool ok = true, smwb = false;
    unsigned seen = 0;
    while (syntax) {
      skip_ows(&p, e);
      if (p >= e || *p == ',')
        break;
      if (*p != ';') {
        syntax = false;
        break;
      }
      p++;
      skip_ows(&p, e);
      const char *pn = p;
      size_t pl = scan_token(&p, e);
      if (pl == 0) {
        syntax = false;
        break;
      }
      skip_ows(&p, e);
      char val[8];
      size_t vl = 0;
      bool has_value = p < e && *p == '=';
      if (has_value) {
        p++;
        skip_ows(&p, e);
        if (!scan_value(&p, e, val, sizeof val, &vl)) {
          syntax = false;
          break;
        }
      }
      if (!pmd)
        continue; /* another extension's parameters: only their syntax matters */
      int bit = pmd_param(pn, pl);
      if (!bit || (seen & (unsigned)bit)) {
        ok = false; /* unknown or repeated */
        continue;
      }
      seen |= (unsigned)bit;
      if (bit == PMD_SNCT || bit == PMD_CNCT)
        ok = ok && !has_value;
      else if (bit == PMD_SMWB) {
        ok = ok && has_value && window_bits(val, vl) == 15;
        smwb = true;
      } else
        ok = ok && (!has_value || window_bits(val, vl) != 0);
    }
    if (syntax && pmd && ok) {
      *echo_smwb = smwb;
      return true;
    }
    if (!syntax) { /* skip the rest of this offer, quoted commas included */
      bool quoted = false;
      for (; p < e && (quoted || *p != ','); p++) {
        if (*p == '\\' && quoted && p + 1 < e)
          p++;
        else if (*p == '"')
          quoted = !quoted;
      }
    }
    if (p < e && *p == ',')
      p++;
  }
  return false;
}

static void handle_upgrade(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_http_req *r = c->req;
  vx_events *ev = c->ev;
  if (r->method != HTTP_GET) {
    respond_error(c, 400, "WebSocket handshake must use GET", NULL, false);
    return;
  }
  /* RFC 6455 §4.2.1: an HTTP/1.1 (or later) GET naming the server in one Host header. */
  if (c->hp->http_major < 1 || (c->hp->http_major == 1 && c->hp->http_minor < 1)) {
    respond_error(c, 400, "WebSocket handshake needs HTTP/1.1 or later", NULL, false);
    return;
  }
  const hval *host = &r->h[H_HOST];
  if (!host->seen || host->repeated || host->overflow || host->len == 0) {
    respond_error(c, 400,
                  host->repeated ? "more than one Host header" : "WebSocket handshake needs a Host header",
                  NULL, false);
    return;
  }
  if (!has_token(r->h[H_CONNECTION].v, "upgrade")) {
    respond_error(c, 400, "Connection header must contain Upgrade", NULL, false);
    return;
  }
  if (!r->h[H_VERSION].seen || strcmp(r->h[H_VERSION].v, "13") != 0) {
    respond_error(c, 426, "unsupported Sec-WebSocket-Version (13 is supported)",
                  "Sec-WebSocket-Version: 13\r\n", false);
    return;
  }
  if (!key_valid(&r->h[H_KEY])) {
    respond_error(c, 400, "missing or malformed Sec-WebSocket-Key", NULL, false);
    return;
  }
  if (ev->shutting_down) {
    respond_error(c, 503, "server shutting down", NULL, false);
    return;
  }
  if (ev->nws >= ev->opts.max_connections) {
    ev->stats.rejected_connections++;
    respond_error(c, 503, "too many connections", "Retry-After: 5\r\n", false);
    return;
  }
  char accept[29];
  if (vx__ws_accept_key(r->h[H_KEY].v, r->h[H_KEY].len, accept) != 0) {
    respond_error(c, 500, "handshake failed", NULL, false);
    return;
  }
  bool smwb = false;
  bool deflate = ev->opts.permessage_deflate && r->ext.len && !r->ext.oom &&
                 deflate_negotiate(r->ext.p, r->ext.len, &smwb);
  char resp[320];
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                   accept,
                   deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                             "server_no_context_takeover; client_no_context_takeover"
                           : "",
                   smwb ? "; server_max_window_bits=15" : "", deflate ? "\r\n" : "");
  vx_buf *b = vx__buf_new((size_t)n);
  if (!b) {
    vx__conn_terminate(c);
    return;
  }
  memcpy(b->data, resp, (size_t)n);
  vx__conn_send_owned(c, b);
  vx__http_free(c);
  c->deflate = deflate;
  if (vx__ws_start(c, extra, extra_len) != 0)
    vx__conn_terminate(c);
}

/* ---- the publish API ---- */

typedef struct {
  vx_str s;
  int n;
} details;

static void detail(details *d, const char *path, const char *msg) {
  if (d->n++ == 0)
    vx__str_addz(&d->s, "{\"error\":\"Validation failed\",\"details\":[");
  else
    vx__str_addz(&d->s, ",");
  vx__str_addz(&d->s, "{\"path\":");
  vx__str_add_json_string(&d->s, path, strlen(path));
  vx__str_addz(&d->s, ",\"message\":");
  vx__str_add_json_string(&d->s, msg, strlen(msg));
  vx__str_addz(&d->s, "}");
}

/* Check one broadcast object; prefix is "" or "batch.N."; raw is its JSON text. */
static void check_broadcast(const cJSON *o, const char *raw, size_t rawlen, const char *prefix,
                            details *d) {
  char path[64];
  static const char *const names[] = {"channel", "channels", "event", "except"};
  for (size_t i = 0; cJSON_IsObject(o) && i < 4; i++) {
    const char *v;
    size_t vn;
    if (vx__json_field(raw, rawlen, names[i], &v, &vn) && vx__json_has_nul(v, vn)) {
      snprintf(path, sizeof path, "%s%s", prefix, names[i]);
      detail(d, path, "must not contain NUL characters");
      return;
    }
  }
  if (!cJSON_IsObject(o)) {
    snprintf(path, sizeof path, "%s", *prefix ? prefix : "body");
    if (*prefix)
      path[strlen(path) - 1] = '\0';
    detail(d, path, "must be an object");
    return;
  }
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "channel");
  const cJSON *chs = cJSON_GetObjectItemCaseSensitive(o, "channels");
  const cJSON *evn = cJSON_GetObjectItemCaseSensitive(o, "event");
  const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "except");
  if (ch && chs) {
    snprintf(path, sizeof path, "%schannel", prefix);
    detail(d, path, "give either channel or channels, not both");
  } else if (ch) {
    snprintf(path, sizeof path, "%schannel", prefix);
    if (!cJSON_IsString(ch))
      detail(d, path, "must be a string");
    else if (!vx__channel_valid(ch->valuestring, strlen(ch->valuestring)))
      detail(d, path, "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)");
  } else if (chs) {
    snprintf(path, sizeof path, "%schannels", prefix);
    int n = cJSON_IsArray(chs) ? cJSON_GetArraySize(chs) : -1;
    if (n < 1 || n > VX_BATCH_MAX) {
      detail(d, path, "must be an array of 1 to 100 channel names");
    } else {
      int i = 0;
      for (const cJSON *it = chs->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || !vx__channel_valid(it->valuestring, strlen(it->valuestring))) {
          snprintf(path, sizeof path, "%schannels.%d", prefix, i);
          detail(d, path, "invalid channel name");
        }
      }
    }
  } else {
    snprintf(path, sizeof path, "%schannel", prefix);
    detail(d, path, "required");
  }
  snprintf(path, sizeof path, "%sevent", prefix);
  if (!evn)
    detail(d, path, "required");
  else if (!cJSON_IsString(evn) || !*evn->valuestring || strlen(evn->valuestring) > VX_EVENT_MAX)
    detail(d, path, "must be a string of 1 to 200 bytes");
  if (ex && !cJSON_IsNull(ex)) {
    snprintf(path, sizeof path, "%sexcept", prefix);
    if (!cJSON_IsString(ex) || strlen(ex->valuestring) > 64)
      detail(d, path, "must be a socket id string");
  }
}

static int do_broadcast(vx_events *ev, const cJSON *o, const char *raw, size_t rawlen) {
  const char *names[VX_BATCH_MAX];
  size_t lens[VX_BATCH_MAX];
  size_t n = 0;
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "channel");
  if (ch) {
    names[0] = ch->valuestring;
    lens[0] = strlen(ch->valuestring);
    n = 1;
  } else {
    for (const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, "channels")->child; it; it = it->next) {
      names[n] = it->valuestring;
      lens[n++] = strlen(it->valuestring);
    }
  }
  const cJSON *evn = cJSON_GetObjectItemCaseSensitive(o, "event");
  const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "except");
  /* `data` is spliced as the client wrote it: no re-serialization, nothing lost. */
  const char *data = "null";
  size_t dlen = 4;
  vx__json_field(raw, rawlen, "data", &data, &dlen);
  return vx__hub_broadcast(ev, names, lens, n, evn->valuestring, strlen(evn->valuestring), data,
                           dlen, cJSON_IsString(ex) ? ex->valuestring : NULL);
}

static void handle_api(vx_conn *c, bool batch) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  bool ka = r->keep_alive;
  if (!ev->api_key) {
    respond_error(c, 404, "Not found", NULL, ka);
    return;
  }
  if (r->method != HTTP_POST) {
    respond_error(c, 405, "Method not allowed", "Allow: POST\r\n", ka);
    return;
  }
  const hval *a = &r->h[H_AUTH];
  size_t kl = strlen(ev->api_key);
  bool ok = a->seen && !a->overflow && a->len == 7 + kl && strncasecmp(a->v, "Bearer ", 7) == 0 &&
            CRYPTO_memcmp(a->v + 7, ev->api_key, kl) == 0;
  if (!ok) {
    respond_error(c, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n", ka);
    return;
  }
  const char *body = r->body.p;
  size_t blen = r->body.len;
  cJSON *root = blen && vx__json_valid(body, blen) ? cJSON_ParseWithLength(body, blen) : NULL;
  details d = {0};
  const char *items_raw[VX_BATCH_MAX];
  size_t items_len[VX_BATCH_MAX];
  if (!root || !cJSON_IsObject(root)) {
    detail(&d, "body", "must be a JSON object");
  } else if (batch) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "batch");
    int n = cJSON_IsArray(items) ? cJSON_GetArraySize(items) : -1;
    const char *araw;
    size_t alen;
    if (n < 1 || n > VX_BATCH_MAX || !vx__json_field(body, blen, "batch", &araw, &alen) ||
        vx__json_array_items(araw, alen, items_raw, items_len, VX_BATCH_MAX) != (size_t)n) {
      detail(&d, "batch", "must be an array of 1 to 100 broadcasts");
    } else {
      int i = 0;
      for (const cJSON *it = items->child; it; it = it->next, i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "batch.%d.", i);
        check_broadcast(it, items_raw[i], items_len[i], prefix, &d);
      }
    }
  } else {
    check_broadcast(root, body, blen, "", &d);
  }
  if (d.n) {
    vx__str_addz(&d.s, "]}");
    vx__http_respond(c, 400, NULL, d.s.oom ? "{\"error\":\"Validation failed\"}" : d.s.p, ka);
    vx__str_free(&d.s);
    cJSON_Delete(root);
    return;
  }
  int rc = 0, count = 0;
  if (batch) {
    for (const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "batch")->child; it && !rc;
         it = it->next, count++)
      rc = do_broadcast(ev, it, items_raw[count], items_len[count]);
  } else {
    rc = do_broadcast(ev, root, body, blen);
    count = 1;
  }
  cJSON_Delete(root);
  if (rc) {
    respond_error(c, rc == VX_ENOMEM || rc == VX_EBACKLOG ? 503 : 400, vx_strerror(rc), NULL, ka);
    return;
  }
  char out[64];
  if (batch)
    snprintf(out, sizeof out, "{\"success\":true,\"count\":%d}", count);
  else
    snprintf(out, sizeof out, "{\"success\":true}");
  vx__http_respond(c, 200, NULL, out, ka);
}

/* ---- POST {path}/auth: tokens for private/presence channels ---- */

static const char *channel_type(const char *name) {
  return vx__channel_kind_names[vx__channel_kind(name, strlen(name))];
}

static const cJSON *field2(const cJSON *o, const char *a, const char *b) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
  return v ? v : cJSON_GetObjectItemCaseSensitive(o, b);
}

/* Answer an auth request once the decision is known (on the loop thread). */
static void auth_respond(vx_conn *c, const char *socket_id, const char *channel, bool authorized,
                         const char *member, const char *error) {
  vx_events *ev = c->ev;
  if (!authorized) {
    respond_error(c, 403, error && *error ? error : "Forbidden", NULL, false);
    return;
  }
  const char *type = channel_type(channel);
  if (strcmp(type, "public") == 0) {
    vx__http_respond(c, 200, NULL, "{\"auth\":null}", false);
    return;
  }
  bool presence = strcmp(type, "presence") == 0;
  if (presence && (!member || !*member)) {
    respond_error(c, 403, "presence channels need a member from the authorizer", NULL, false);
    return;
  }
  char tok[VX_CHANNEL_MAX + 140];
  int n = vx__auth_token(ev->auth_secret, ev->auth_secret_len, socket_id, strlen(socket_id),
                         channel, strlen(channel), presence ? member : NULL,
                         presence ? strlen(member) : 0, tok, sizeof tok);
  if (n < 0) {
    respond_error(c, 500, "cannot sign the token", NULL, false);
    return;
  }
  vx_str s = {0};
  vx__str_addz(&s, "{\"auth\":");
  vx__str_add_json_string(&s, tok, (size_t)n);
  if (presence) {
    vx__str_addz(&s, ",\"channel_data\":");
    vx__str_add_json_string(&s, member, strlen(member));
  }
  vx__str_addz(&s, "}");
  if (s.oom)
    respond_error(c, 503, "out of memory", NULL, false);
  else
    vx__http_respond(c, 200, NULL, s.p, false);
  vx__str_free(&s);
}

/* The body of /auth and SSE (un)subscribe: {<id>, channel}. Returns the parsed root with
 * *id and *ch set, or NULL after answering 400 with the details. */
static cJSON *id_channel_body(vx_conn *c, const char *id_name, const char *id_alt,
                              const char *ch_alt, const cJSON **id, const cJSON **ch) {
  vx_http_req *r = c->req;
  const char *body = r->body.p;
  size_t blen = r->body.len;
  cJSON *root = blen && vx__json_valid(body, blen) && !vx__json_has_nul(body, blen)
                    ? cJSON_ParseWithLength(body, blen)
                    : NULL;
  details d = {0};
  *id = root ? field2(root, id_name, id_alt) : NULL;
  *ch = root ? field2(root, "channel", ch_alt) : NULL;
  if (!root || !cJSON_IsObject(root)) {
    char m[80];
    snprintf(m, sizeof m, "must be a JSON object {%s, channel}", id_name);
    detail(&d, "body", m);
  } else {
    if (!cJSON_IsString(*id) || !vx__socket_id_valid((*id)->valuestring, strlen((*id)->valuestring)))
      detail(&d, id_name, *id ? "must be 1-64 letters, digits, dots, dashes or underscores" : "required");
    if (!cJSON_IsString(*ch) || !vx__channel_valid((*ch)->valuestring, strlen((*ch)->valuestring)))
      detail(&d, "channel", *ch ? "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)"
                                : "required");
  }
  if (!d.n)
    return root;
  vx__str_addz(&d.s, "]}");
  vx__http_respond(c, 400, NULL, d.s.oom ? "{\"error\":\"Validation failed\"}" : d.s.p, false);
  vx__str_free(&d.s);
  cJSON_Delete(root);
  return NULL;
}

static void ask_host(vx_conn *c, int kind, const char *socket_id, const char *channel,
                     const char *type);

static void handle_auth(vx_conn *c) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  if (r->method != HTTP_POST) {
    respond_error(c, 405, "Method not allowed", "Allow: POST\r\n", false);
    return;
  }
  const cJSON *sid, *ch;
  cJSON *root = id_channel_body(c, "socketId", "socket_id", "channel_name", &sid, &ch);
  if (!root)
    return;
  const char *type = channel_type(ch->valuestring);
  if (strcmp(type, "public") != 0 && !ev->auth_secret) {
    respond_error(c, 500, "authSecret is not configured", NULL, false);
    cJSON_Delete(root);
    return;
  }
  if (!ev->opts.authorize) { /* default: public yes, private/presence no */
    auth_respond(c, sid->valuestring, ch->valuestring, strcmp(type, "public") == 0, NULL,
                 "Forbidden");
    cJSON_Delete(root);
    return;
  }
  ask_host(c, VX_AUTH_TOKEN, sid->valuestring, ch->valuestring, type);
  cJSON_Delete(root);
}

/* ---- POST {sse_path}/subscribe and /unsubscribe ---- */

static vx_conn *sse_target(vx_events *ev, const char *id) {
  vx_conn *t = vx__map_get(&ev->sockets, id, strlen(id));
  return t && t->state == VXC_SSE && !t->closed ? t : NULL;
}

static void sse_subscribe_answer(vx_conn *c, const char *conn_id, const char *channel,
                                 bool authorized, const char *member, const char *error) {
  if (!authorized) {
    respond_error(c, 403, error && *error ? error : "Forbidden", NULL, false);
    return;
  }
  vx_conn *t = sse_target(c->ev, conn_id);
  if (!t) {
    respond_error(c, 404, "Unknown connectionId", NULL, false);
    return;
  }
  const char *err = vx__sse_subscribe(t, channel, strlen(channel), member);
  if (err)
    respond_error(c, 403, err, NULL, false);
  else
    vx__http_respond(c, 200, NULL, "{\"success\":true}", false);
}

/* Registers a pending request and asks the host; answered in vx__http_auth_answer. */
static void ask_host(vx_conn *c, int kind, const char *socket_id, const char *channel,
                     const char *type) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  vx_pending_auth *p = calloc(1, sizeof *p);
  if (!p || !(p->socket_id = malloc(strlen(socket_id) + 1))) {
    free(p);
    respond_error(c, 503, "out of memory", NULL, false);
    return;
  }
  strcpy(p->socket_id, socket_id);
  strcpy(p->channel, channel);
  p->id = ++ev->next_auth_id;
  p->conn = c;
  p->kind = kind;
  p->deadline = uv_now(&ev->loop) + 10000;
  p->next = ev->pending;
  ev->pending = p;
  c->pending = p;
  r->stop = true; /* nothing more is read from this connection until it is answered */
  c->deadline = p->deadline + 1000;
  vx_auth_request req = {
      .id = p->id,
      .kind = kind,
      .socket_id = p->socket_id,
      .channel = p->channel,
      .channel_type = type,
      .method = "POST",
      .url = r->url,
      .headers = r->raw_headers.p ? r->raw_headers.p : "",
      .headers_len = r->raw_headers.len,
      .body = r->body.p ? r->body.p : "",
      .body_len = r->body.len,
  };
  ev->opts.authorize(&req, ev->opts.hook_data);
}

static void handle_sse_sub(vx_conn *c, bool subscribe) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  if (r->method != HTTP_POST) {
    respond_error(c, 405, "Method not allowed", "Allow: POST\r\n", false);
    return;
  }
  const cJSON *cid, *ch;
  cJSON *root = id_channel_body(c, "connectionId", "socketId", "channel", &cid, &ch);
  if (!root)
    return;
  vx_conn *t = sse_target(ev, cid->valuestring);
  if (!t) {
    respond_error(c, 404, "Unknown connectionId", NULL, false);
    cJSON_Delete(root);
    return;
  }
  const char *name = ch->valuestring;
  if (!subscribe) {
    vx__hub_unsubscribe(t, name, strlen(name));
    vx__http_respond(c, 200, NULL, "{\"success\":true}", false);
  } else if (ev->opts.authorize) {
    ask_host(c, VX_AUTH_SUBSCRIBE, cid->valuestring, name, channel_type(name));
  } else { /* default: public yes, private/presence no */
    sse_subscribe_answer(c, cid->valuestring, name, strcmp(channel_type(name), "public") == 0,
                         NULL, "Forbidden");
  }
  cJSON_Delete(root);
}

static vx_pending_auth *pending_take(vx_events *ev, uint64_t id) {
  for (vx_pending_auth **pp = &ev->pending; *pp; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      vx_pending_auth *p = *pp;
      *pp = p->next;
      if (p->conn)
        p->conn->pending = NULL;
      return p;
    }
  }
  return NULL;
}

void vx__http_auth_answer(vx_events *ev, uint64_t id, bool authorized, const char *member,
                          const char *error) {
  vx_pending_auth *p = pending_take(ev, id);
  if (!p)
    return; /* expired, or its connection is gone */
  if (p->conn && !p->conn->closed) {
    if (p->kind == VX_AUTH_SUBSCRIBE)
      sse_subscribe_answer(p->conn, p->socket_id, p->channel, authorized, member, error);
    else
      auth_respond(p->conn, p->socket_id, p->channel, authorized, member, error);
  }
  free(p->socket_id);
  free(p);
}

void vx__http_auth_expire(vx_events *ev) {
  uint64_t now = uv_now(&ev->loop);
  vx_pending_auth **pp = &ev->pending;
  while (*pp) {
    vx_pending_auth *p = *pp;
    if (now < p->deadline && !ev->shutting_down) {
      pp = &p->next;
      continue;
    }
    *pp = p->next;
    if (p->conn) {
      p->conn->pending = NULL;
      respond_error(p->conn, 503, "the authorizer did not answer in time", NULL, false);
    }
    free(p->socket_id);
    free(p);
  }
}

void vx__http_auth_detach(vx_conn *c) {
  if (c->pending) {
    c->pending->conn = NULL;
    c->pending = NULL;
  }
}

static void handle_request(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  size_t plen = strcspn(r->url, "?#");
  bool ka = r->keep_alive && !ev->shutting_down;
  if (r->error_status) { /* e.g. 413 found at the headers: the body was skipped */
    respond_error(c, r->error_status, status_text(r->error_status), NULL, false);
    return;
  }
  bool wants_ws = r->h[H_UPGRADE].seen && has_token(r->h[H_UPGRADE].v, "websocket");
  c->deadline = uv_now(&ev->loop) + VX_HTTP_DEADLINE_MS; /* keep-alive idle limit */
  if (plen == ev->path_len && memcmp(r->url, ev->path, plen) == 0) {
    if (wants_ws)
      handle_upgrade(c, extra, extra_len);
    else if (r->method == HTTP_GET || r->method == HTTP_HEAD)
      respond_error(c, 426, "WebSocket upgrade required", "Upgrade: websocket\r\n", false);
    else
      respond_error(c, 405, "Method not allowed", "Allow: GET\r\n", false);
    return;
  }
  if (wants_ws) {
    respond_error(c, 404, "Not found", NULL, false);
    return;
  }
  if (plen == ev->auth_path_len && memcmp(r->url, ev->auth_path, plen) == 0) {
    handle_auth(c);
    return;
  }
  if (ev->sse_path) {
    if (plen == ev->sse_path_len && memcmp(r->url, ev->sse_path, plen) == 0) {
      if (r->method != HTTP_GET) {
        respond_error(c, 405, "Method not allowed", "Allow: GET\r\n", false);
        return;
      }
      const hval *le = &r->h[H_LAST_EVENT_ID];
      vx__sse_start(c, r->url[plen] == '?' ? r->url + plen + 1 : NULL,
                    le->seen && !le->overflow ? le->v : NULL);
      if (c->state == VXC_SSE)
        vx__http_free(c);
      return;
    }
    if (strlen(ev->sse_sub_path) == plen && memcmp(r->url, ev->sse_sub_path, plen) == 0) {
      handle_sse_sub(c, true);
      return;
    }
    if (strlen(ev->sse_unsub_path) == plen && memcmp(r->url, ev->sse_unsub_path, plen) == 0) {
      handle_sse_sub(c, false);
      return;
    }
  }
  if (plen == 7 && memcmp(r->url, "/health", 7) == 0) {
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
      respond_error(c, 405, "Method not allowed", "Allow: GET\r\n", ka);
      return;
    }
    char body[160];
    snprintf(body, sizeof body, "{\"status\":\"%s\",\"connections\":%u,\"channels\":%u}",
             ev->shutting_down ? "shutting_down" : "ok", ev->nws, ev->channels.len);
    vx__http_respond(c, ev->shutting_down ? 503 : 200, NULL, body, ka);
    return;
  }
  if (plen == 14 && memcmp(r->url, "/api/broadcast", 14) == 0) {
    handle_api(c, false);
    return;
  }
  if (plen == 10 && memcmp(r->url, "/api/batch", 10) == 0) {
    handle_api(c, true);
    return;
  }
  respond_error(c, 404, "Not found", NULL, ka);
}

void vx__http_on_read(vx_conn *c, const uint8_t *p, size_t n) {
  if (vx__conn_discard(c, n))
    return;
  while (n > 0 && !c->closed && c->state == VXC_HTTP && c->req && !c->req->stop) {
    size_t used = http_parser_execute(c->hp, &settings, (const char *)p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(c->hp);
    if (c->hp->upgrade && e == HPE_OK) {
      if (!c->req->complete) {
        respond_error(c, 400, "WebSocket handshake must not have a body", NULL, false);
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
      continue;
    }
    if (e != HPE_OK) {
      int st = c->req->error_status ? c->req->error_status : 400;
      const char *msg = st == 400 ? http_errno_description(e) : status_text(st);
      respond_error(c, st, msg, NULL, false);
      return;
    }
    break; /* everything consumed; wait for more */
  }
}
