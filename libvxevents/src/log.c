/* The one logger: every line of the core goes through vx__log / vx__log_at to the host's
 * on_log_record (the line with its fields: socket id, channel) or on_log (the text only).
 * vx_log_format turns a record into a text or JSON line, for vxevents-server's own lines
 * and the core's alike, so --log-format json covers both. */
#include "vx_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void emit(vx_events *ev, int level, const char *socket_id, const char *channel,
                 const char *fmt, va_list ap) {
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (ev->opts.on_log_record) {
    vx_log_record rec = {level, msg, socket_id, channel};
    ev->opts.on_log_record(&rec, ev->opts.hook_data);
  } else {
    ev->opts.on_log(level, msg, ev->opts.hook_data);
  }
}

static bool wanted(const vx_events *ev, int level) {
  return (ev->opts.on_log || ev->opts.on_log_record) && level <= ev->opts.log_level;
}

void vx__log(vx_events *ev, int level, const char *fmt, ...) {
  if (!wanted(ev, level))
    return;
  va_list ap;
  va_start(ap, fmt);
  emit(ev, level, NULL, NULL, fmt, ap);
  va_end(ap);
}

void vx__log_at(vx_events *ev, int level, const char *socket_id, const char *channel,
                const char *fmt, ...) {
  if (!wanted(ev, level))
    return;
  va_list ap;
  va_start(ap, fmt);
  emit(ev, level, socket_id && *socket_id ? socket_id : NULL, channel, fmt, ap);
  va_end(ap);
}

/* ---- formatting ---- */

typedef struct {
  char *p;
  size_t len, cap; /* cap excludes the NUL */
} out;

static void put(out *o, const char *s, size_t n) {
  size_t room = o->cap - o->len;
  if (n > room)
    n = room;
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void putz(out *o, const char *s) { put(o, s, strlen(s)); }

/* A JSON string of `s`, with quotes, in at most `max` bytes of output (cut on a character
 * boundary: never inside an escape or a UTF-8 sequence). */
static void put_json(out *o, const char *s, size_t max) {
  static const char hex[] = "0123456789abcdef";
  size_t used = 2;
  putz(o, "\"");
  for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
    char e[8];
    size_t n = 1;
    if (*q == '"' || *q == '\\') {
      e[0] = '\\', e[1] = (char)*q, n = 2;
    } else if (*q == '\n') {
      e[0] = '\\', e[1] = 'n', n = 2;
    } else if (*q < 0x20 || *q == 0x7f) {
      memcpy(e, "\\u00", 4), e[4] = hex[*q >> 4], e[5] = hex[*q & 15], n = 6;
    } else if (*q >= 0x80) { /* copy the whole sequence, if valid, else U+FFFD */
      size_t len = (*q & 0xe0) == 0xc0 ? 2 : (*q & 0xf0) == 0xe0 ? 3 : (*q & 0xf8) == 0xf0 ? 4 : 0;
      bool ok = len && vx__utf8_valid((const char *)q, strnlen((const char *)q, len)) &&
                strnlen((const char *)q, len) == len;
      if (ok) {
        memcpy(e, q, len), n = len;
        q += len - 1;
      } else {
        memcpy(e, "\xef\xbf\xbd", 3), n = 3;
      }
    } else {
      e[0] = (char)*q;
    }
    if (used + n > max)
      break;
    put(o, e, n);
    used += n;
  }
  putz(o, "\"");
}

size_t vx_log_format(const vx_log_record *rec, int json, const char *program, char *buf,
                     size_t outlen) {
  if (!buf || !outlen)
    return 0;
  if (!rec) {
    buf[0] = '\0';
    return 0;
  }
  out o = {buf, 0, outlen - 1};
  const char *level = level_names[rec->level & 3];
  const char *msg = rec->message ? rec->message : "";
  if (!json) {
    if (program) {
      putz(&o, program);
      putz(&o, ": ");
    }
    putz(&o, level);
    putz(&o, ": ");
    /* Leave room for the newline. */
    size_t room = o.cap > o.len + 1 ? o.cap - o.len - 1 : 0;
    size_t ml = strlen(msg);
    put(&o, msg, ml < room ? ml : room);
    putz(&o, "\n");
    buf[o.len] = '\0';
    return o.len;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[96];
  snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (int)(ts.tv_nsec / 1000000));
  /* Everything but the message first, so the message is what gets shortened. */
  char tail[400];
  out t = {tail, 0, sizeof tail - 1};
  if (rec->socket_id) {
    putz(&t, ",\"socket_id\":");
    put_json(&t, rec->socket_id, 100);
  }
  if (rec->channel) {
    putz(&t, ",\"channel\":");
    put_json(&t, rec->channel, 230);
  }
  putz(&t, "}\n");
  tail[t.len] = '\0';
  putz(&o, "{\"level\":\"");
  putz(&o, level);
  putz(&o, "\",\"time\":\"");
  putz(&o, when);
  putz(&o, "\"");
  if (program) {
    putz(&o, ",\"program\":");
    put_json(&o, program, 64);
  }
  putz(&o, ",\"message\":");
  size_t fixed = o.len + 12 + t.len; /* ,"message": is already in; 12 spare */
  put_json(&o, msg, o.cap > fixed ? o.cap - fixed : 2);
  put(&o, tail, t.len);
  buf[o.len] = '\0';
  return o.len;
}
