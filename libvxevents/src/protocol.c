/* JSON text helpers and WebSocket frame building for the wire protocol.
 * Validation here allocates nothing: it runs once per broadcast, never per recipient. */
#include "vx_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- growable strings ---- */

void vx__str_add(vx_str *s, const char *p, size_t n) {
  if (s->oom)
    return;
  if (s->len + n + 1 > s->cap) {
    size_t ncap = s->cap ? s->cap : 64;
    while (ncap < s->len + n + 1)
      ncap *= 2;
    char *np = realloc(s->p, ncap);
    if (!np) {
      s->oom = true;
      return;
    }
    s->p = np;
    s->cap = ncap;
  }
  memcpy(s->p + s->len, p, n);
  s->len += n;
  s->p[s->len] = '\0';
}

void vx__str_addz(vx_str *s, const char *p) { vx__str_add(s, p, strlen(p)); }

void vx__str_add_json_string(vx_str *s, const char *p, size_t n) {
  size_t el = vx__json_escaped_len(p, n);
  char *tmp = malloc(el + 2);
  if (!tmp) {
    s->oom = true;
    return;
  }
  tmp[0] = '"';
  char *end = vx__json_escape_into(tmp + 1, p, n);
  *end++ = '"';
  vx__str_add(s, tmp, (size_t)(end - tmp));
  free(tmp);
}

void vx__str_free(vx_str *s) {
  free(s->p);
  s->p = NULL;
  s->len = s->cap = 0;
}

/* ---- UTF-8 (RFC 3629: no overlongs, no surrogates, max U+10FFFF) ---- */

static size_t utf8_seq(const uint8_t *p, size_t n) {
  uint8_t c = p[0];
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
      return 0;
    if (c == 0xE0 && p[1] < 0xA0)
      return 0;
    if (c == 0xED && p[1] > 0x9F)
      return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
      return 0;
    if (c == 0xF0 && p[1] < 0x90)
      return 0;
    if (c == 0xF4 && p[1] > 0x8F)
      return 0;
    return 4;
  }
  return 0;
}

bool vx__utf8_valid(const char *s, size_t n) {
  const uint8_t *p = (const uint8_t *)s;
  size_t i = 0;
  while (i < n) {
    /* Fast path over ASCII eight bytes at a time. */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull)
        break;
      i += 8;
    }
    if (i >= n)
      break;
    size_t k = utf8_seq(p + i, n - i);
    if (!k)
      return false;
    i += k;
  }
  return true;
}

/* ---- JSON validation (RFC 8259) ---- */

typedef struct {
  const uint8_t *p, *end;
  int depth;
} jv;

static void ws_skip(jv *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

static bool is_hex(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool j_string(jv *j) {
  j->p++; /* opening quote */
  while (j->p < j->end) {
    uint8_t c = *j->p;
    if (c == '"') {
      j->p++;
      return true;
    }
    if (c < 0x20)
      return false;
    if (c == '\\') {
      if (j->end - j->p < 2)
        return false;
      uint8_t e = j->p[1];
      if (e == 'u') {
        if (j->end - j->p < 6)
          return false;
        for (int i = 2; i < 6; i++)
          if (!is_hex(j->p[i]))
            return false;
        j->p += 6;
        continue;
      }
      if (!strchr("\"\\/bfnrt", e) || e == 0)
        return false;
      j->p += 2;
      continue;
    }
    if (c < 0x80) {
      j->p++;
      continue;
    }
    size_t k = utf8_seq(j->p, (size_t)(j->end - j->p));
    if (!k)
      return false;
    j->p += k;
  }
  return false;
}

static bool j_digits(jv *j) {
  const uint8_t *s = j->p;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
    j->p++;
  return j->p > s;
}

static bool j_number(jv *j) {
  if (*j->p == '-')
    j->p++;
  if (j->p >= j->end)
    return false;
  if (*j->p == '0')
    j->p++;
  else if (!j_digits(j))
    return false;
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    if (!j_digits(j))
      return false;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
      j->p++;
    if (!j_digits(j))
      return false;
  }
  return true;
}

static bool j_lit(jv *j, const char *lit, size_t n) {
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
    return false;
  j->p += n;
  return true;
}

static bool j_value(jv *j) {
  ws_skip(j);
  if (j->p >= j->end)
    return false;
  switch (*j->p) {
  case '"':
    return j_string(j);
  case '{':
  case '[': {
    uint8_t close = *j->p == '{' ? '}' : ']';
    bool obj = *j->p == '{';
    if (++j->depth > VX_JSON_DEPTH_MAX)
      return false;
    j->p++;
    ws_skip(j);
    if (j->p < j->end && *j->p == close) {
      j->p++;
      j->depth--;
      return true;
    }
    for (;;) {
      if (obj) {
        ws_skip(j);
        if (j->p >= j->end || *j->p != '"' || !j_string(j))
          return false;
        ws_skip(j);
        if (j->p >= j->end || *j->p != ':')
          return false;
        j->p++;
      }
      if (!j_value(j))
        return false;
      ws_skip(j);
      if (j->p >= j->end)
        return false;
      if (*j->p == ',') {
        j->p++;
        continue;
      }
      if (*j->p == close) {
        j->p++;
        j->depth--;
        return true;
      }
      return false;
    }
  }
  case 't':
    return j_lit(j, "true", 4);
  case 'f':
    return j_lit(j, "false", 5);
  case 'n':
    return j_lit(j, "null", 4);
  default:
    if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
      return j_number(j);
    return false;
  }
}

size_t vx__json_value_len(const char *p, size_t n) {
  jv j = {(const uint8_t *)p, (const uint8_t *)p + n, 0};
  if (!j_value(&j))
    return 0;
  return (size_t)(j.p - (const uint8_t *)p);
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

bool vx__json_field(const char *obj, size_t n, const char *key, const char **v, size_t *vn) {
  const char *p = skip_ws(obj, obj + n), *end = obj + n;
  size_t kl = strlen(key);
  if (p >= end || *p != '{')
    return false;
  p++;
  for (;;) {
    p = skip_ws(p, end);
    if (p >= end || *p != '"')
      return false;
    size_t sl = vx__json_value_len(p, (size_t)(end - p));
    if (!sl)
      return false;
    bool match = sl == kl + 2 && memcmp(p + 1, key, kl) == 0;
    p = skip_ws(p + sl, end);
    if (p >= end || *p != ':')
      return false;
    p = skip_ws(p + 1, end);
    size_t vl = vx__json_value_len(p, (size_t)(end - p));
    if (!vl)
      return false;
    if (match) {
      *v = p;
      *vn = vl;
      return true;
    }
    p = skip_ws(p + vl, end);
    if (p >= end || *p != ',')
      return false;
    p++;
  }
}

size_t vx__json_array_items(const char *arr, size_t n, const char **items, size_t *lens,
                            size_t max) {
  const char *p = skip_ws(arr, arr + n), *end = arr + n;
  size_t count = 0;
  if (p >= end || *p != '[')
    return 0;
  p = skip_ws(p + 1, end);
  if (p < end && *p == ']')
    return 0;
  for (;;) {
    p = skip_ws(p, end);
    size_t vl = vx__json_value_len(p, (size_t)(end - p));
    if (!vl)
      return count;
    if (count == max)
      return max + 1;
    items[count] = p;
    lens[count++] = vl;
    p = skip_ws(p + vl, end);
    if (p >= end || *p != ',')
      return count;
    p++;
  }
}

bool vx__json_has_nul(const char *p, size_t n) {
  bool in_str = false;
  for (size_t i = 0; i < n; i++) {
    if (!in_str) {
      if (p[i] == '"')
        in_str = true;
      continue;
    }
    if (p[i] == '"') {
      in_str = false;
    } else if (p[i] == '\\' && i + 1 < n) {
      if (p[i + 1] == 'u' && i + 5 < n && memcmp(p + i + 2, "0000", 4) == 0)
        return true;
      i++; /* skip the escaped character */
    }
  }
  return false;
}

bool vx__json_valid(const char *p, size_t n) {
  jv j = {(const uint8_t *)p, (const uint8_t *)p + n, 0};
  if (!j_value(&j))
    return false;
  ws_skip(&j);
  return j.p == j.end;
}

/* ---- names ---- */

bool vx__channel_valid(const char *name, size_t n) {
  if (n == 0 || n > VX_CHANNEL_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
      continue;
    if (!strchr("_-=@,.;:/", c) || c == 0)
      return false;
  }
  return true;
}

const char *const vx__channel_kind_names[3] = {"public", "private", "presence"};

vx_chkind vx__channel_kind(const char *name, size_t n) {
  if (n >= 8 && memcmp(name, "private-", 8) == 0)
    return VX_CH_PRIVATE;
  if (n >= 9 && memcmp(name, "presence-", 9) == 0)
    return VX_CH_PRESENCE;
  return VX_CH_PUBLIC;
}

/* ---- JSON string escaping ---- */

static size_t esc_len(uint8_t c) {
  if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f')
    return 2;
  if (c < 0x20)
    return 6;
  return 1;
}

size_t vx__json_escaped_len(const char *p, size_t n) {
  size_t len = 0;
  for (size_t i = 0; i < n; i++)
    len += esc_len((uint8_t)p[i]);
  return len;
}

char *vx__json_escape_into(char *d, const char *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)p[i];
    switch (c) {
    case '"':
      *d++ = '\\';
      *d++ = '"';
      break;
    case '\\':
      *d++ = '\\';
      *d++ = '\\';
      break;
    case '\n':
      *d++ = '\\';
      *d++ = 'n';
      break;
    case '\r':
      *d++ = '\\';
      *d++ = 'r';
      break;
    case '\t':
      *d++ = '\\';
      *d++ = 't';
      break;
    case '\b':
      *d++ = '\\';
      *d++ = 'b';
      break;
    case '\f':
      *d++ = '\\';
      *d++ = 'f';
      break;
    default:
      if (c < 0x20) {
        memcpy(d, "\\u00", 4);
        d[4] = hex[c >> 4];
        d[5] = hex[c & 15];
        d += 6;
      } else {
        *d++ = (char)c;
      }
    }
  }
  return d;
}

/* ---- frames ---- */

size_t vx__frame_header(uint8_t *h, uint8_t opcode, uint64_t n) {
  h[0] = (uint8_t)(0x80 | opcode);
  if (n < 126) {
    h[1] = (uint8_t)n;
    return 2;
  }
  if (n <= 0xFFFF) {
    h[1] = 126;
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
    return 4;
  }
  h[1] = 127;
  for (int i = 0; i < 8; i++)
    h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
  return 10;
}

vx_buf *vx__frame_text(const char *payload, size_t n) {
  uint8_t hdr[10];
  size_t hl = vx__frame_header(hdr, 0x1, n);
  vx_buf *b = vx__buf_new(hl + n);
  if (!b)
    return NULL;
  memcpy(b->data, hdr, hl);
  memcpy(b->data + hl, payload, n);
  return b;
}

#define ENV_A "{\"type\":\"event\",\"channel\":\""
#define ENV_B "\",\"event\":\""
#define ENV_C "\",\"data\":"
#define ENV_D "}"

size_t vx__client_extra(char *out, const char *uid, size_t uidlen) {
  static const char CL[] = ",\"client\":true", UID[] = ",\"user_id\":";
  size_t n = sizeof CL - 1;
  memcpy(out, CL, n);
  if (uid) {
    memcpy(out + n, UID, sizeof UID - 1);
    n += sizeof UID - 1;
    memcpy(out + n, uid, uidlen);
    n += uidlen;
  }
  return n;
}

vx_buf *vx__envelope_frame(const char *channel, size_t clen, const char *event, size_t elen,
                           const char *data, size_t dlen, const char *extra, size_t xlen) {
  return vx__envelope_frame_at(channel, clen, event, elen, data, dlen, extra, xlen, 0);
}

vx_buf *vx__envelope_frame_at(const char *channel, size_t clen, const char *event, size_t elen,
                              const char *data, size_t dlen, const char *extra, size_t xlen,
                              uint64_t offset) {
  /* Channel names are restricted to characters that need no escaping. */
  char off[32];
  size_t olen = 0;
  if (offset) {
    char digits[21];
    size_t nd = 0;
    for (uint64_t v = offset; v; v /= 10)
      digits[nd++] = (char)('0' + v % 10);
    memcpy(off, ",\"offset\":", 10);
    olen = 10;
    while (nd)
      off[olen++] = digits[--nd];
  }
  size_t eel = vx__json_escaped_len(event, elen);
  size_t plen = sizeof ENV_A - 1 + clen + sizeof ENV_B - 1 + eel + sizeof ENV_C - 1 + dlen + xlen +
                olen + sizeof ENV_D - 1;
  uint8_t hdr[10];
  size_t hl = vx__frame_header(hdr, 0x1, plen);
  vx_buf *b = vx__buf_new(hl + plen);
  if (!b)
    return NULL;
  char *d = b->data;
  memcpy(d, hdr, hl);
  d += hl;
  memcpy(d, ENV_A, sizeof ENV_A - 1);
  d += sizeof ENV_A - 1;
  memcpy(d, channel, clen);
  d += clen;
  memcpy(d, ENV_B, sizeof ENV_B - 1);
  d += sizeof ENV_B - 1;
  d = vx__json_escape_into(d, event, elen);
  memcpy(d, ENV_C, sizeof ENV_C - 1);
  d += sizeof ENV_C - 1;
  memcpy(d, data, dlen);
  d += dlen;
  if (xlen)
    memcpy(d, extra, xlen);
  d += xlen;
  if (olen)
    memcpy(d, off, olen);
  d += olen;
  memcpy(d, ENV_D, sizeof ENV_D - 1);
  return b;
}
