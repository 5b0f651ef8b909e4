/* The Origin policy (allowed_origins): which web pages may open a WebSocket or an event
 * stream, or call the auth, subscribe and publish routes, from a browser.
 *
 * Browsers send `Origin: scheme://host[:port]` with every WebSocket handshake and every
 * cross-origin (and same-origin POST) request; programs usually send none, and the policy
 * is about pages, so a request without Origin is allowed. An entry is
 *   [scheme://]host[:port]       exact; without scheme, http and https both match
 *   *.domain[:port]              any host under domain, optionally after "scheme://" like
 *                                an exact entry (at least one more label: the domain itself is
 *                                not included, list it as well)
 *   *                            every origin
 * and a port must match as written (no port = the scheme's default, i.e. none in the
 * header). Matching ignores case (schemes and host names are case-insensitive). `null`
 * (sandboxed frames, file:// pages: any page can produce it) matches only `*`.
 *
 * Cost: at most one walk of the list per handshake or request, never on the broadcast path. */
#include "vx_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORIGIN_MAX 300 /* an entry, or a header value, longer than this is refused */

/* Parts of "scheme://host[:port]" (entry: scheme optional). Spans into `s`, all lower-cased
 * by the caller. Returns false when it is not of that shape. */
typedef struct {
  const char *scheme, *host, *port;
  size_t slen, hlen, plen;
} parts;

static bool host_char(char c) { return isalnum((unsigned char)c) || c == '-' || c == '.'; }

static bool split(const char *s, size_t n, bool entry, parts *p) {
  memset(p, 0, sizeof *p);
  const char *sep = NULL;
  for (size_t i = 0; i + 2 < n; i++)
    if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
      sep = s + i;
      break;
    }
  const char *h = s;
  if (sep) {
    p->scheme = s;
    p->slen = (size_t)(sep - s);
    if (!p->slen)
      return false;
    for (size_t i = 0; i < p->slen; i++)
      if (!isalpha((unsigned char)s[i]) && !(i && (isdigit((unsigned char)s[i]) || s[i] == '+' ||
                                                   s[i] == '-' || s[i] == '.')))
        return false;
    h = sep + 3;
  } else if (!entry) {
    return false; /* a header value always has its scheme */
  }
  const char *end = s + n;
  const char *colon = memchr(h, ':', (size_t)(end - h));
  p->host = h;
  p->hlen = (size_t)((colon ? colon : end) - h);
  if (colon) {
    p->port = colon + 1;
    p->plen = (size_t)(end - p->port);
    if (!p->plen || p->plen > 5)
      return false;
    unsigned long v = 0;
    for (size_t i = 0; i < p->plen; i++) {
      if (!isdigit((unsigned char)p->port[i]))
        return false;
      v = v * 10 + (unsigned long)(p->port[i] - '0');
    }
    if (v == 0 || v > 65535)
      return false;
  }
  size_t start = 0;
  if (entry && p->hlen > 2 && h[0] == '*' && h[1] == '.')
    start = 2; /* a pattern */
  if (p->hlen <= start)
    return false;
  /* IPv6 literals are not supported in entries or matched: they are refused as malformed. */
  for (size_t i = start; i < p->hlen; i++)
    if (!host_char(h[i]))
      return false;
  return h[p->hlen - 1] != '.' && h[start] != '.';
}

static bool span_eq(const char *a, size_t an, const char *b, size_t bn) {
  return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* Does lower-cased entry `e` admit lower-cased origin `o`? */
static bool entry_admits(const char *e, const parts *o) {
  if (strcmp(e, "*") == 0)
    return true;
  parts pe;
  if (!split(e, strlen(e), true, &pe))
    return false;
  if (pe.scheme) {
    if (!span_eq(pe.scheme, pe.slen, o->scheme, o->slen))
      return false;
  } else if (!span_eq(o->scheme, o->slen, "http", 4) && !span_eq(o->scheme, o->slen, "https", 5)) {
    return false;
  }
  if (!span_eq(pe.port, pe.plen, o->port, o->plen))
    return false;
  if (pe.hlen > 2 && pe.host[0] == '*' && pe.host[1] == '.') {
    size_t dl = pe.hlen - 1; /* ".domain" */
    return o->hlen > dl && memcmp(o->host + o->hlen - dl, pe.host + 1, dl) == 0;
  }
  return span_eq(pe.host, pe.hlen, o->host, o->hlen);
}

/* The entries of `list`, trimmed, one at a time: returns the next start or NULL at the end. */
static const char *next_entry(const char *p, const char **s, size_t *n) {
  while (*p == ' ' || *p == '\t' || *p == ',')
    p++;
  if (!*p)
    return NULL;
  const char *b = p;
  while (*p && *p != ',')
    p++;
  const char *e = p;
  while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  if (e - b > 1 && e[-1] == '/') /* "https://a.example.com/" as copied from an address bar */
    e--;
  *s = b;
  *n = (size_t)(e - b);
  return p;
}

int vx__origins_check(const char *list, char *err, size_t errlen) {
  if (!list)
    return 0;
  const char *p = list, *s;
  size_t n;
  while ((p = next_entry(p, &s, &n))) {
    parts pt;
    if ((n == 1 && *s == '*'))
      continue;
    if (n > ORIGIN_MAX || !split(s, n, true, &pt)) {
      if (err && errlen)
        snprintf(err, errlen,
                 "allowed_origins: '%.*s' is not an origin ([scheme://]host[:port], host may "
                 "start with '*.'; or '*')",
                 (int)(n > 80 ? 80 : n), s);
      return VX_EINVAL;
    }
  }
  return 0;
}

int vx__origins_load(vx_events *ev, const char *list) {
  if (!list || !*list)
    return 0;
  size_t count = 0;
  const char *p = list, *s;
  size_t n;
  while ((p = next_entry(p, &s, &n)))
    count++;
  if (!count)
    return 0;
  ev->origins = calloc(count, sizeof *ev->origins);
  if (!ev->origins)
    return VX_ENOMEM;
  p = list;
  while ((p = next_entry(p, &s, &n))) {
    char *e = vx__dupn(s, n);
    if (!e)
      return VX_ENOMEM; /* vx__origins_free frees what was made */
    for (char *q = e; *q; q++)
      *q = (char)tolower((unsigned char)*q);
    ev->origins[ev->norigins++] = e;
  }
  return 0;
}

void vx__origins_free(vx_events *ev) {
  for (size_t i = 0; i < ev->norigins; i++)
    free(ev->origins[i]);
  free(ev->origins);
  ev->origins = NULL;
  ev->norigins = 0;
}

bool vx__origin_allowed(const vx_events *ev, const char *origin, size_t n) {
  if (!ev->origins || !origin)
    return true;
  bool all = false;
  for (size_t i = 0; i < ev->norigins; i++)
    all = all || strcmp(ev->origins[i], "*") == 0;
  if (all)
    return true;
  char low[ORIGIN_MAX + 1];
  if (n > ORIGIN_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    low[i] = (char)tolower((unsigned char)origin[i]);
  low[n] = '\0';
  parts o;
  if (!split(low, n, false, &o))
    return false; /* "null", or not an origin at all */
  for (size_t i = 0; i < ev->norigins; i++)
    if (entry_admits(ev->origins[i], &o))
      return true;
  return false;
}
