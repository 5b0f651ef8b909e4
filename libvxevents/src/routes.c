/* The routes that decide with the host: POST {path}/auth (signed tokens for private and
 * presence channels) and POST {sse_path}/subscribe|unsubscribe. Both ask the host's
 * authorizer asynchronously (vx_authorize_cb -> vx_auth_reply, 10 s limit, then 503);
 * an SSE subscription it allows is carried out by the node. */
#include "http_int.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    ev->m.auth_refusals[VX_AR_AUTHORIZER]++;
    vx__log_at(ev, VX_LOG_INFO, socket_id, channel, "auth request refused by the authorizer");
    vx__http_error(c, 403, error && *error ? error : "Forbidden", NULL, false);
    return;
  }
  const char *type = channel_type(channel);
  if (strcmp(type, "public") == 0) {
    vx__http_respond(c, 200, NULL, "{\"auth\":null}", false);
    return;
  }
  bool presence = strcmp(type, "presence") == 0;
  if (presence && (!member || !*member)) {
    vx__http_error(c, 403, "presence channels need a member from the authorizer", NULL, false);
    return;
  }
  char tok[VX_CHANNEL_MAX + 140];
  int n = vx__auth_token(ev->auth_secret, ev->auth_secret_len, socket_id, strlen(socket_id),
                         channel, strlen(channel), presence ? member : NULL,
                         presence ? strlen(member) : 0, tok, sizeof tok);
  if (n < 0) {
    vx__http_error(c, 500, "cannot sign the token", NULL, false);
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
    vx__http_error(c, 503, "out of memory", NULL, false);
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
  vx_details d = {0};
  *id = root ? field2(root, id_name, id_alt) : NULL;
  *ch = root ? field2(root, "channel", ch_alt) : NULL;
  if (!root || !cJSON_IsObject(root)) {
    char m[80];
    snprintf(m, sizeof m, "must be a JSON object {%s, channel}", id_name);
    vx__details_add(&d, "body", m);
  } else {
    if (!cJSON_IsString(*id) ||
        !vx__socket_id_valid((*id)->valuestring, strlen((*id)->valuestring)))
      vx__details_add(&d, id_name,
                      *id ? "must be 1-64 letters, digits, dots, dashes or underscores"
                          : "required");
    if (!cJSON_IsString(*ch) || !vx__channel_valid((*ch)->valuestring, strlen((*ch)->valuestring)))
      vx__details_add(&d, "channel",
                      *ch ? "invalid channel name (1-200 chars of A-Z a-z 0-9 _-=@,.;:/)"
                          : "required");
  }
  if (!d.n)
    return root;
  vx__details_send(c, &d, false);
  cJSON_Delete(root);
  return NULL;
}

static void ask_host(vx_conn *c, int kind, const char *socket_id, const char *channel,
                     const char *type);

void vx__routes_auth(vx_conn *c) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  if (r->method != HTTP_POST) {
    vx__http_error(c, 405, "Method not allowed", "Allow: POST\r\n", false);
    return;
  }
  const cJSON *sid, *ch;
  cJSON *root = id_channel_body(c, "socketId", "socket_id", "channel_name", &sid, &ch);
  if (!root)
    return;
  const char *type = channel_type(ch->valuestring);
  if (strcmp(type, "public") != 0 && !ev->auth_secret) {
    vx__http_error(c, 500, "authSecret is not configured", NULL, false);
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
  return t && VX_OPEN_AS(t, VXK_SSE) && !vx_has(t, VXC_F_CLOSED) ? t : NULL;
}

static void sse_subscribe_answer(vx_conn *c, const char *conn_id, const char *channel,
                                 bool authorized, const char *member, const char *error) {
  if (!authorized) {
    c->ev->m.auth_refusals[VX_AR_AUTHORIZER]++;
    vx__log_at(c->ev, VX_LOG_INFO, conn_id, channel, "SSE subscribe refused by the authorizer");
    vx__http_error(c, 403, error && *error ? error : "Forbidden", NULL, false);
    return;
  }
  vx_conn *t = sse_target(c->ev, conn_id);
  if (!t) {
    vx__http_error(c, 404, "Unknown connectionId", NULL, false);
    return;
  }
  const char *err = NULL;
  if (vx__node_subscribe(t, channel, strlen(channel), member, member ? strlen(member) : 0, &err) !=
      0)
    vx__http_error(c, 403, err, NULL, false);
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
    vx__http_error(c, 503, "out of memory", NULL, false);
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

void vx__routes_sse_sub(vx_conn *c, bool subscribe) {
  vx_events *ev = c->ev;
  vx_http_req *r = c->req;
  if (r->method != HTTP_POST) {
    vx__http_error(c, 405, "Method not allowed", "Allow: POST\r\n", false);
    return;
  }
  const cJSON *cid, *ch;
  cJSON *root = id_channel_body(c, "connectionId", "socketId", "channel", &cid, &ch);
  if (!root)
    return;
  vx_conn *t = sse_target(ev, cid->valuestring);
  if (!t) {
    vx__http_error(c, 404, "Unknown connectionId", NULL, false);
    cJSON_Delete(root);
    return;
  }
  const char *name = ch->valuestring;
  if (!subscribe) {
    vx__node_unsubscribe(t, name, strlen(name));
    vx__http_respond(c, 200, NULL, "{\"success\":true}", false);
  } else if (ev->opts.authorize) {
    ask_host(c, VX_AUTH_SUBSCRIBE, cid->valuestring, name, channel_type(name));
  } else { /* default: public yes, private/presence no */
    sse_subscribe_answer(c, cid->valuestring, name, strcmp(channel_type(name), "public") == 0, NULL,
                         "Forbidden");
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
  if (p->conn && !vx_has(p->conn, VXC_F_CLOSED)) {
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
      ev->m.auth_refusals[VX_AR_TIMEOUT]++;
      vx__http_error(p->conn, 503, "the authorizer did not answer in time", NULL, false);
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
