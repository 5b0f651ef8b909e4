/* The WebSocket opening handshake (RFC 6455 §4.2): the request checks, the accept key,
 * the permessage-deflate negotiation (RFC 7692), the 101 answer; then the connection is the
 * WebSocket layer's (ws.c). */
#include "http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool key_valid(const hval *k) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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
bool vx__ws_deflate_negotiate(const char *v, size_t n, bool *echo_smwb) {
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

void vx__ws_handshake(vx_conn *c, const uint8_t *extra, size_t extra_len) {
  vx_http_req *r = c->req;
  vx_events *ev = c->ev;
  if (r->method != HTTP_GET) {
    vx__http_error(c, 400, "WebSocket handshake must use GET", NULL, false);
    return;
  }
  /* RFC 6455 §4.2.1: an HTTP/1.1 (or later) GET naming the server in one Host header. */
  if (c->hp->http_major < 1 || (c->hp->http_major == 1 && c->hp->http_minor < 1)) {
    vx__http_error(c, 400, "WebSocket handshake needs HTTP/1.1 or later", NULL, false);
    return;
  }
  const hval *host = &r->h[H_HOST];
  if (!host->seen || host->repeated || host->overflow || host->len == 0) {
    vx__http_error(c, 400,
                   host->repeated ? "more than one Host header"
                                  : "WebSocket handshake needs a Host header",
                   NULL, false);
    return;
  }
  if (!vx__http_has_token(r->h[H_CONNECTION].v, "upgrade")) {
    vx__http_error(c, 400, "Connection header must contain Upgrade", NULL, false);
    return;
  }
  if (!r->h[H_VERSION].seen || strcmp(r->h[H_VERSION].v, "13") != 0) {
    vx__http_error(c, 426, "unsupported Sec-WebSocket-Version (13 is supported)",
                   "Sec-WebSocket-Version: 13\r\n", false);
    return;
  }
  if (!key_valid(&r->h[H_KEY])) {
    vx__http_error(c, 400, "missing or malformed Sec-WebSocket-Key", NULL, false);
    return;
  }
  if (ev->shutting_down) {
    ev->m.rejected[VX_RJ_SHUTTING_DOWN]++;
    vx__http_error(c, 503, "server shutting down", NULL, false);
    return;
  }
  if (ev->nws >= ev->opts.max_connections) {
    ev->stats.rejected_connections++;
    vx__http_error(c, 503, "too many connections", "Retry-After: 5\r\n", false);
    return;
  }
  char accept[29];
  if (vx__ws_accept_key(r->h[H_KEY].v, r->h[H_KEY].len, accept) != 0) {
    vx__http_error(c, 500, "handshake failed", NULL, false);
    return;
  }
  bool smwb = false;
  bool deflate = ev->opts.permessage_deflate && r->ext.len && !r->ext.oom &&
                 vx__ws_deflate_negotiate(r->ext.p, r->ext.len, &smwb);
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
    vx__conn_oom(c);
    return;
  }
  memcpy(b->data, resp, (size_t)n);
  vx__conn_send_owned(c, b);
  vx__http_free(c);
  c->enc = deflate ? VX_ENC_WS_DEFLATE : VX_ENC_WS;
  if (vx__ws_start(c, extra, extra_len) != 0)
    vx__conn_terminate(c);
}
