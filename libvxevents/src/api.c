/* The publish API of the standalone server: POST /api/broadcast and /api/batch, guarded by
 * the API key (constant-time compare), bodies validated with a details list (400), then
 * published through the node like any broadcast. */
#include "http_int.h"
#include "flow.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void vx__details_add(vx_details *d, const char *path, const char *msg) {
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

void vx__details_send(vx_conn *c, vx_details *d, bool ka) {
  vx__str_addz(&d->s, "]}");
  vx__http_respond(c, 400, NULL, d->s.oom ? "{\"error\":\"Validation failed\"}" : d->s.p, ka);
  vx__str_free(&d->s);
}

/* Check one broadcast object; prefix is "" or "batch.N."; raw is its JSON text. */
static void check_broadcast(const cJSON *o, const char *raw, size_t rawlen, const char *prefix,
                            vx_details *d) {
  char path[64];
  static const char *const names[] = {"channel", "channels", "event", "except"};
  for (size_t i = 0; cJSON_IsObject(o) && i < 4; i++) {
    const char *v;
    size_t vn;
    if (vx__json_field(raw, rawlen, names[i], &v, &vn) && vx__json_has_nul(v, vn)) {
      snprintf(path, sizeof path, "%s%s", prefix, names[i]);
      vx__details_add(d, path, "must not contain NUL characters");
      return;
    }
  }
  if (!cJSON_IsObject(o)) {
    snprintf(path, sizeof path, "%s", *prefix ? prefix : "body");
    if (*prefix)
      path[strlen(path) - 1] = '\0';
    vx__details_add(d, path, "must be an object");
    return;
  }
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "channel");
  const cJSON *chs = cJSON_GetObjectItemCaseSensitive(o, "channels");
  const cJSON *evn = cJSON_GetObjectItemCaseSensitive(o, "event");
  const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "except");
  if (ch && chs) {
    snprintf(path, sizeof path, "%schannel", prefix);
    vx__details_add(d, path, "give either channel or channels, not both");
  } else if (ch) {
    snprintf(path, sizeof path, "%schannel", prefix);
    if (!cJSON_IsString(ch))
      vx__details_add(d, path, "must be a string");
    else if (!vx__channel_valid(ch->valuestring, strlen(ch->valuestring)))
      vx__details_add(d, path, "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)");
  } else if (chs) {
    snprintf(path, sizeof path, "%schannels", prefix);
    int n = cJSON_IsArray(chs) ? cJSON_GetArraySize(chs) : -1;
    if (n < 1 || n > VX_BATCH_MAX) {
      vx__details_add(d, path, "must be an array of 1 to 100 channel names");
    } else {
      int i = 0;
      for (const cJSON *it = chs->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || !vx__channel_valid(it->valuestring, strlen(it->valuestring))) {
          snprintf(path, sizeof path, "%schannels.%d", prefix, i);
          vx__details_add(d, path, "invalid channel name");
        }
      }
    }
  } else {
    snprintf(path, sizeof path, "%schannel", prefix);
    vx__details_add(d, path, "required");
  }
  snprintf(path, sizeof path, "%sevent", prefix);
  if (!evn)
    vx__details_add(d, path, "required");
  else if (!cJSON_IsString(evn) || !*evn->valuestring || strlen(evn->valuestring) > VX_EVENT_MAX)
    vx__details_add(d, path, "must be a string of 1 to 200 bytes");
  if (ex && !cJSON_IsNull(ex)) {
    snprintf(path, sizeof path, "%sexcept", prefix);
    if (!cJSON_IsString(ex) || strlen(ex->valuestring) > 64)
      vx__details_add(d, path, "must be a socket id string");
  }
}

/* One validated broadcast object, its channels borrowed from the parsed body. */
typedef struct {
  const char *names[VX_BATCH_MAX];
  size_t lens[VX_BATCH_MAX];
  size_t n;
  const char *event, *data, *except;
  size_t dlen;
} item;

static void item_of(item *it, const cJSON *o, const char *raw, size_t rawlen) {
  it->n = 0;
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "channel");
  if (ch) {
    it->names[0] = ch->valuestring;
    it->lens[it->n++] = strlen(ch->valuestring);
  } else {
    for (const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "channels")->child; c; c = c->next) {
      it->names[it->n] = c->valuestring;
      it->lens[it->n++] = strlen(c->valuestring);
    }
  }
  it->event = cJSON_GetObjectItemCaseSensitive(o, "event")->valuestring;
  const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "except");
  it->except = cJSON_IsString(ex) ? ex->valuestring : NULL;
  /* `data` is spliced as the client wrote it: no re-serialization, nothing lost. */
  it->data = "null";
  it->dlen = 4;
  vx__json_field(raw, rawlen, "data", &it->data, &it->dlen);
}

/* Publish every object of the request, or none: with Redis the backlog room for all of
 * them is reserved first, so a 503 never leaves a batch half delivered (a publisher that
 * retries it would duplicate the first half). */
static int publish_all(vx_events *ev, const cJSON *const *objs, const char *const *raws,
                       const size_t *rawlens, size_t count) {
  item it;
  size_t cost[VX_BATCH_MAX] = {0}, total = 0;
  for (size_t i = 0; i < count; i++) {
    item_of(&it, objs[i], raws[i], rawlens[i]);
    cost[i] = ev->bp.ops->cost(ev, it.names, it.n, it.event, it.dlen, it.except);
    total += cost[i];
  }
  if (!ev->bp.ops->reserve(ev, total))
    return VX_EBACKLOG;
  int rc = 0;
  for (size_t i = 0; i < count; i++) {
    item_of(&it, objs[i], raws[i], rawlens[i]);
    int r = vx__node_broadcast_reserved(ev, it.names, it.lens, it.n, it.event, strlen(it.event),
                                        it.data, it.dlen, it.except, cost[i]);
    if (r && !rc)
      rc = r;
  }
  return rc;
}

void vx__api_handle(vx_conn *c, bool batch) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  bool ka = r->keep_alive;
  if (!ev->api_key) {
    vx__http_error(c, 404, "Not found", NULL, ka);
    return;
  }
  if (r->method != HTTP_POST) {
    vx__http_error(c, 405, "Method not allowed", "Allow: POST\r\n", ka);
    return;
  }
  const hval *a = &r->h[H_AUTH];
  size_t kl = strlen(ev->api_key);
  bool ok = a->seen && !a->overflow && a->len == 7 + kl && strncasecmp(a->v, "Bearer ", 7) == 0 &&
            CRYPTO_memcmp(a->v + 7, ev->api_key, kl) == 0;
  if (!ok) {
    vx__http_error(c, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n", ka);
    return;
  }
  const char *body = r->body.p;
  size_t blen = r->body.len;
  cJSON *root = blen && vx__json_valid(body, blen) ? cJSON_ParseWithLength(body, blen) : NULL;
  vx_details d = {0};
  const char *items_raw[VX_BATCH_MAX];
  size_t items_len[VX_BATCH_MAX];
  if (!root || !cJSON_IsObject(root)) {
    vx__details_add(&d, "body", "must be a JSON object");
  } else if (batch) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "batch");
    int n = cJSON_IsArray(items) ? cJSON_GetArraySize(items) : -1;
    const char *araw;
    size_t alen;
    if (n < 1 || n > VX_BATCH_MAX || !vx__json_field(body, blen, "batch", &araw, &alen) ||
        vx__json_array_items(araw, alen, items_raw, items_len, VX_BATCH_MAX) != (size_t)n) {
      vx__details_add(&d, "batch", "must be an array of 1 to 100 broadcasts");
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
    vx__details_send(c, &d, ka);
    cJSON_Delete(root);
    return;
  }
  /* Flow control: while broadcasts wait for the send queues to drain, so does this one
   * (reading stops; it is answered 503 after publish_wait_ms). */
  if (vx__flow_park(c)) {
    r->batch = batch;
    cJSON_Delete(root);
    return;
  }
  const cJSON *objs[VX_BATCH_MAX];
  size_t count = 0;
  if (batch) {
    for (const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "batch")->child; it;
         it = it->next)
      objs[count++] = it;
  } else {
    objs[count++] = root;
    items_raw[0] = body;
    items_len[0] = blen;
  }
  int rc = publish_all(ev, objs, items_raw, items_len, count);
  cJSON_Delete(root);
  if (rc) {
    bool later = rc == VX_ENOMEM || rc == VX_EBACKLOG;
    vx__http_error(c, later ? 503 : 400, vx_strerror(rc), later ? "Retry-After: 1\r\n" : NULL, ka);
    return;
  }
  char out[64];
  if (batch)
    snprintf(out, sizeof out, "{\"success\":true,\"count\":%zu}", count);
  else
    snprintf(out, sizeof out, "{\"success\":true}");
  vx__http_respond(c, 200, NULL, out, ka);
}
