/* The public functions that act on the loop thread, and the command queue between them.
 * Each validates on the caller's thread, copies what it needs into a command (commands.h:
 * a tagged union, one struct per kind) and queues it; the loop thread runs it
 * (vx__cmd_run) or, when the instance closed first, answers it as closed
 * (vx__cmd_cancel).
 *
 * Calls: host -> here (any thread) -> the queue -> loop.c's async handler -> vx__cmd_run
 * -> the node (broadcasts, SSE subscriptions), the backplane (ev->bp: queries, the backlog
 * reservation), http.c (auth answers) and loop.c (listen, adopt, shutdown). */
#include "commands.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void vx__cmd_free(vx_cmd *c) {
  switch (c->type) {
  case CMD_LISTEN:
    free(c->u.listen.host);
    break;
  case CMD_ADOPT:
    free(c->u.adopt.bytes);
    break;
  case CMD_BROADCAST:
    for (size_t i = 0; i < c->u.broadcast.n; i++)
      free(c->u.broadcast.channels[i]);
    free(c->u.broadcast.channels);
    free(c->u.broadcast.event);
    free(c->u.broadcast.data);
    free(c->u.broadcast.except);
    break;
  case CMD_COUNT:
  case CMD_HAS:
  case CMD_CHANNELS:
  case CMD_STATS:
  case CMD_MEMBERS:
  case CMD_METRICS:
    free(c->u.query.channel);
    break;
  case CMD_AUTH_REPLY:
    free(c->u.auth_reply.member);
    free(c->u.auth_reply.error);
    break;
  case CMD_SSE_SUB:
  case CMD_SSE_UNSUB:
    free(c->u.sse.connection_id);
    free(c->u.sse.channel);
    free(c->u.sse.member);
    break;
  case CMD_HISTORY:
    free(c->u.history.channel);
    break;
  case CMD_PUBLISH:
    free(c->u.publish.channel);
    free(c->u.publish.event);
    free(c->u.publish.data);
    free(c->u.publish.except);
    break;
  case CMD_CLOSE:
    break;
  }
  free(c);
}

static vx_cmd *cmd_new(vx_cmd_type type) {
  vx_cmd *c = calloc(1, sizeof *c);
  if (c)
    c->type = type;
  return c;
}

static int push(vx_events *ev, vx_cmd *c) {
  uv_mutex_lock(&ev->mu);
  if (ev->closing_requested) {
    uv_mutex_unlock(&ev->mu);
    return VX_ECLOSED;
  }
  /* Flow control: broadcasts fill the queue up to max_command_queue bytes (one bigger than
   * that still goes into an empty queue); past it the caller waits for room (flow.c). */
  if (c->cost) {
    if (ev->cmd_bytes && ev->cmd_bytes + c->cost > ev->opts.max_command_queue) {
      ev->flow_waits++;
      uv_mutex_unlock(&ev->mu);
      return VX_EAGAIN;
    }
    ev->cmd_bytes += c->cost;
  }
  if (c->type == CMD_CLOSE) {
    ev->closing_requested = true;
    uv_cond_broadcast(&ev->room); /* vx_wait_capacity returns VX_ECLOSED */
  }
  if (ev->cmd_tail)
    ev->cmd_tail->next = c;
  else
    ev->cmd_head = c;
  ev->cmd_tail = c;
  uv_mutex_unlock(&ev->mu);
  uv_async_send(&ev->async);
  return 0;
}

/* Queue `c`, or free it when the instance is closed. Returns 0 or VX_ECLOSED. */
static int submit(vx_events *ev, vx_cmd *c) {
  int r = push(ev, c);
  if (r)
    vx__cmd_free(c);
  return r;
}

/* Answer a command that will never run because the instance closed. */
void vx__cmd_cancel(vx_cmd *c) {
  switch (c->type) {
  case CMD_LISTEN:
    *c->u.listen.result = VX_ECLOSED;
    uv_sem_post(c->u.listen.sem);
    break;
  case CMD_ADOPT:
    close(c->u.adopt.fd);
    break;
  case CMD_COUNT:
  case CMD_HAS:
    ((vx_count_cb)c->u.query.cb)(VX_ECLOSED, 0, c->u.query.cb_data);
    break;
  case CMD_CHANNELS:
    ((vx_channels_cb)c->u.query.cb)(VX_ECLOSED, NULL, 0, c->u.query.cb_data);
    break;
  case CMD_STATS:
    ((vx_stats_cb)c->u.query.cb)(VX_ECLOSED, NULL, c->u.query.cb_data);
    break;
  case CMD_MEMBERS:
    ((vx_json_cb)c->u.query.cb)(VX_ECLOSED, NULL, 0, c->u.query.cb_data);
    break;
  case CMD_METRICS:
    ((vx_text_cb)c->u.query.cb)(VX_ECLOSED, NULL, 0, c->u.query.cb_data);
    break;
  case CMD_SSE_SUB:
  case CMD_SSE_UNSUB:
    if (c->u.sse.cb)
      c->u.sse.cb(VX_ECLOSED, "instance is closed", c->u.sse.cb_data);
    break;
  case CMD_HISTORY:
    c->u.history.cb(VX_ECLOSED, NULL, 0, c->u.history.cb_data);
    break;
  case CMD_PUBLISH:
    if (c->u.publish.cb)
      c->u.publish.cb(VX_ECLOSED, 0, NULL, c->u.publish.cb_data);
    break;
  default:
    break;
  }
}

static void run_broadcast(vx_events *ev, vx_cmd *c) {
  size_t lens[VX_BATCH_MAX];
  const char *data = c->u.broadcast.data;
  for (size_t i = 0; i < c->u.broadcast.n; i++)
    lens[i] = strlen(c->u.broadcast.channels[i]);
  int r = vx__node_broadcast_reserved(
      ev, (const char *const *)c->u.broadcast.channels, lens, c->u.broadcast.n,
      c->u.broadcast.event, strlen(c->u.broadcast.event), data ? data : "null",
      data ? c->u.broadcast.data_len : 4, c->u.broadcast.except, c->u.broadcast.reserved);
  if (r)
    vx__log(ev, VX_LOG_ERROR, "broadcast failed: %s", vx_strerror(r));
}

static void run_sse(vx_events *ev, vx_cmd *c) {
  const char *id = c->u.sse.connection_id, *ch = c->u.sse.channel, *member = c->u.sse.member;
  vx_conn *t = vx__map_get(&ev->sockets, id, strlen(id));
  int st = 0;
  const char *msg = NULL;
  if (!t || !VX_OPEN_AS(t, VXK_SSE) || vx_has(t, VXC_F_CLOSED)) {
    st = VX_ENOTFOUND;
    msg = "Unknown connectionId";
  } else if (c->type == CMD_SSE_UNSUB) {
    vx__node_unsubscribe(t, ch, strlen(ch));
  } else if (vx__node_subscribe(t, ch, strlen(ch), member, member ? strlen(member) : 0, &msg) !=
             0) {
    st = VX_EINVAL;
  }
  if (c->u.sse.cb)
    c->u.sse.cb(st, msg, c->u.sse.cb_data);
}

/* What vx_stats_get reports (and GET /metrics reads): the counters plus the gauges of now. */
void vx__stats_fill(vx_events *ev, vx_stats *out) {
  vx_stats st = ev->stats;
  st.connections = ev->nws;
  st.channels = ev->channels.len;
  st.flow_paused_ms = ev->flow.paused_ms;
  if (ev->flow.paused)
    st.flow_paused_ms += uv_now(&ev->loop) - ev->flow.paused_at;
  st.flow_refused = ev->flow.refused;
  st.flow_lagging = ev->flow.lagging;
  st.unsent_bytes = ev->flow.bytes;
  uv_mutex_lock(&ev->mu);
  st.flow_wait_ms = ev->flow_wait_us / 1000;
  st.flow_waits = ev->flow_waits;
  st.command_queue_bytes = ev->cmd_bytes;
  uv_mutex_unlock(&ev->mu);
  *out = st;
}

void vx__cmd_run(vx_events *ev, vx_cmd *c) {
  switch (c->type) {
  case CMD_LISTEN:
    vx__loop_listen(ev, c);
    break;
  case CMD_ADOPT:
    vx__loop_adopt(ev, c);
    break;
  case CMD_BROADCAST:
    run_broadcast(ev, c);
    break;
  /* The backplane answers: the local one from the hub, the Redis one for the whole cluster
   * (waiting for the connection, VX_EUNAVAILABLE when Redis cannot answer). */
  case CMD_COUNT:
    ev->bp.ops->query(ev, VX_Q_COUNT, c->u.query.channel, c->u.query.cb, c->u.query.cb_data);
    break;
  case CMD_HAS:
    ev->bp.ops->query(ev, VX_Q_HAS, c->u.query.channel, c->u.query.cb, c->u.query.cb_data);
    break;
  case CMD_CHANNELS:
    ev->bp.ops->query(ev, VX_Q_CHANNELS, NULL, c->u.query.cb, c->u.query.cb_data);
    break;
  case CMD_MEMBERS:
    ev->bp.ops->query(ev, VX_Q_MEMBERS, c->u.query.channel, c->u.query.cb, c->u.query.cb_data);
    break;
  case CMD_STATS: {
    vx_stats st;
    vx__stats_fill(ev, &st);
    ((vx_stats_cb)c->u.query.cb)(0, &st, c->u.query.cb_data);
    break;
  }
  case CMD_METRICS: {
    vx_str s = {0};
    vx__metrics_render(ev, &s);
    ((vx_text_cb)c->u.query.cb)(s.oom ? VX_ENOMEM : 0, s.oom ? NULL : s.p, s.oom ? 0 : s.len,
                                c->u.query.cb_data);
    vx__str_free(&s);
    break;
  }
  case CMD_CLOSE:
    vx__loop_begin_shutdown(ev, c);
    break;
  case CMD_AUTH_REPLY:
    vx__http_auth_answer(ev, c->u.auth_reply.id, c->u.auth_reply.authorized, c->u.auth_reply.member,
                         c->u.auth_reply.error);
    break;
  case CMD_SSE_SUB:
  case CMD_SSE_UNSUB:
    run_sse(ev, c);
    break;
  case CMD_HISTORY:
    vx__history_query(ev, c);
    break;
  case CMD_PUBLISH:
    vx__node_publish_cmd(ev, c);
    break;
  }
}

/* ---- the public functions ---- */

int vx_listen(vx_events *ev, const char *host, int port, int *bound_port) {
  if (!ev || !host || port < 0 || port > 65535 || strlen(host) > 64 || vx__on_loop_thread(ev))
    return VX_EINVAL;
  vx_cmd *c = cmd_new(CMD_LISTEN);
  if (!c || !(c->u.listen.host = vx__dupz(host))) {
    free(c);
    return VX_ENOMEM;
  }
  uv_sem_t sem;
  int result = 0;
  uv_sem_init(&sem, 0);
  c->u.listen.sem = &sem;
  c->u.listen.result = &result;
  c->u.listen.port = port;
  c->u.listen.bound_port = bound_port;
  int r = push(ev, c);
  if (r) {
    vx__cmd_free(c);
    uv_sem_destroy(&sem);
    return r;
  }
  uv_sem_wait(&sem);
  uv_sem_destroy(&sem);
  return result;
}

int vx_adopt(vx_events *ev, int fd, const char *bytes, size_t len) {
  if (!ev || fd < 0 || (len && !bytes))
    return VX_EINVAL;
  vx_cmd *c = cmd_new(CMD_ADOPT);
  if (!c || (len && !(c->u.adopt.bytes = vx__dupn(bytes, len)))) {
    free(c);
    close(fd);
    return VX_ENOMEM;
  }
  c->u.adopt.fd = fd;
  c->u.adopt.len = len;
  int r = push(ev, c);
  if (r) {
    close(fd);
    vx__cmd_free(c);
  }
  return r;
}

int vx_broadcast_many(vx_events *ev, const char *const *channels, size_t n, const char *event,
                      const char *data, size_t data_len, const char *except_id) {
  if (!ev)
    return VX_EINVAL;
  int r = vx__validate_broadcast(channels, n, event, data, data_len, except_id);
  if (r)
    return r;
  if (data && data_len > UINT32_MAX / 2)
    return VX_ETOOBIG;
  /* The broadcast's room in the backplane's backlog is reserved here, exactly, so that it
   * is refused now (and delivered nowhere) rather than after it was accepted. */
  size_t cost = ev->bp.ops->cost(ev, channels, n, event, data ? data_len : 4, except_id);
  if (!ev->bp.ops->reserve(ev, cost))
    return VX_EBACKLOG;
  vx_cmd *c = cmd_new(CMD_BROADCAST);
  if (!c) {
    ev->bp.ops->release(ev, cost);
    return VX_ENOMEM;
  }
  c->u.broadcast.reserved = cost;
  c->cost = sizeof *c + (data ? data_len : 0) + strlen(event) + (except_id ? strlen(except_id) : 0);
  for (size_t i = 0; i < n; i++)
    c->cost += sizeof(char *) + strlen(channels[i]) + 2;
  c->u.broadcast.channels = calloc(n, sizeof *c->u.broadcast.channels);
  c->u.broadcast.n = c->u.broadcast.channels ? n : 0;
  bool ok = c->u.broadcast.channels != NULL;
  for (size_t i = 0; ok && i < n; i++)
    ok = (c->u.broadcast.channels[i] = vx__dupz(channels[i])) != NULL;
  ok = ok && (c->u.broadcast.event = vx__dupz(event)) != NULL;
  if (ok && data) {
    ok = (c->u.broadcast.data = vx__dupn(data, data_len)) != NULL;
    c->u.broadcast.data_len = data_len;
  }
  if (ok && except_id)
    ok = (c->u.broadcast.except = vx__dupz(except_id)) != NULL;
  if (!ok) {
    vx__cmd_free(c);
    ev->bp.ops->release(ev, cost);
    return VX_ENOMEM;
  }
  int r2 = submit(ev, c);
  if (r2)
    ev->bp.ops->release(ev, cost);
  return r2;
}

int vx_broadcast(vx_events *ev, const char *channel, const char *event, const char *data,
                 size_t data_len, const char *except_id) {
  const char *chs[1] = {channel};
  return vx_broadcast_many(ev, chs, 1, event, data, data_len, except_id);
}

/* ---- channel streams (DESIGN §12) ---- */

int vx_publish(vx_events *ev, const char *channel, const char *event, const char *data,
               size_t data_len, const char *except_id, vx_published_cb cb, void *cb_data) {
  if (!ev)
    return VX_EINVAL;
  const char *chs[1] = {channel};
  int r = vx__validate_broadcast(chs, 1, event, data, data_len, except_id);
  if (r)
    return r;
  if (data && data_len > UINT32_MAX / 2)
    return VX_ETOOBIG;
  size_t cost = ev->bp.ops->cost(ev, chs, 1, event, data ? data_len : 4, except_id);
  if (!ev->bp.ops->reserve(ev, cost))
    return VX_EBACKLOG;
  vx_cmd *c = cmd_new(CMD_PUBLISH);
  bool ok = c && (c->u.publish.channel = vx__dupz(channel)) && (c->u.publish.event = vx__dupz(event));
  if (ok && data)
    ok = (c->u.publish.data = vx__dupn(data, data_len)) != NULL;
  if (ok && except_id)
    ok = (c->u.publish.except = vx__dupz(except_id)) != NULL;
  if (!ok) {
    if (c)
      vx__cmd_free(c);
    ev->bp.ops->release(ev, cost);
    return VX_ENOMEM;
  }
  c->u.publish.data_len = data ? data_len : 0;
  c->u.publish.reserved = cost;
  /* Counted and held like any broadcast (flow control; flow.c keeps the order). */
  c->cost = sizeof *c + (data ? data_len : 0) + strlen(event) + strlen(channel) + 2 +
            (except_id ? strlen(except_id) : 0);
  c->u.publish.cb = cb;
  c->u.publish.cb_data = cb_data;
  int r2 = submit(ev, c);
  if (r2)
    ev->bp.ops->release(ev, cost);
  return r2;
}

int vx_history(vx_events *ev, const char *channel, uint64_t since, uint32_t limit, vx_json_cb cb,
               void *data) {
  if (!ev || !cb)
    return VX_EINVAL;
  if (!channel || !vx__channel_valid(channel, strlen(channel)))
    return VX_ECHANNEL;
  vx_cmd *c = cmd_new(CMD_HISTORY);
  if (!c || !(c->u.history.channel = vx__dupz(channel))) {
    free(c);
    return VX_ENOMEM;
  }
  c->u.history.since = since;
  c->u.history.limit = limit;
  c->u.history.cb = cb;
  c->u.history.cb_data = data;
  return submit(ev, c);
}

static int query(vx_events *ev, vx_cmd_type type, const char *channel, void *cb, void *data) {
  if (!ev || !cb)
    return VX_EINVAL;
  vx_cmd *c = cmd_new(type);
  if (!c)
    return VX_ENOMEM;
  c->u.query.cb = cb;
  c->u.query.cb_data = data;
  if (channel && !(c->u.query.channel = vx__dupz(channel))) {
    vx__cmd_free(c);
    return VX_ENOMEM;
  }
  return submit(ev, c);
}

int vx_subscriber_count(vx_events *ev, const char *channel, vx_count_cb cb, void *data) {
  if (!channel || !vx__channel_valid(channel, strlen(channel)))
    return VX_ECHANNEL;
  return query(ev, CMD_COUNT, channel, (void *)cb, data);
}

int vx_has_subscribers(vx_events *ev, const char *channel, vx_count_cb cb, void *data) {
  if (!channel || !vx__channel_valid(channel, strlen(channel)))
    return VX_ECHANNEL;
  return query(ev, CMD_HAS, channel, (void *)cb, data);
}

int vx_presence_members(vx_events *ev, const char *channel, vx_json_cb cb, void *data) {
  if (!channel || !vx__channel_valid(channel, strlen(channel)))
    return VX_ECHANNEL;
  return query(ev, CMD_MEMBERS, channel, (void *)cb, data);
}

int vx_channels(vx_events *ev, vx_channels_cb cb, void *data) {
  return query(ev, CMD_CHANNELS, NULL, (void *)cb, data);
}

int vx_stats_get(vx_events *ev, vx_stats_cb cb, void *data) {
  return query(ev, CMD_STATS, NULL, (void *)cb, data);
}

int vx_metrics(vx_events *ev, vx_text_cb cb, void *data) {
  return query(ev, CMD_METRICS, NULL, (void *)cb, data);
}

int vx_auth_reply(vx_events *ev, uint64_t id, int authorized, const char *member_json,
                  const char *error) {
  if (!ev)
    return VX_EINVAL;
  if (authorized && member_json) {
    const char *err;
    vx_member *m;
    int r = vx__member_parse(member_json, strlen(member_json), &m, &err);
    if (r)
      return r;
    free(m);
  }
  vx_cmd *c = cmd_new(CMD_AUTH_REPLY);
  if (!c)
    return VX_ENOMEM;
  c->u.auth_reply.id = id;
  c->u.auth_reply.authorized = authorized != 0;
  if ((member_json && !(c->u.auth_reply.member = vx__dupz(member_json))) ||
      (error && !(c->u.auth_reply.error = vx__dupz(error)))) {
    vx__cmd_free(c);
    return VX_ENOMEM;
  }
  return submit(ev, c);
}

static int sse_cmd(vx_events *ev, vx_cmd_type type, const char *id, const char *channel,
                   const char *member, vx_status_cb cb, void *data) {
  if (!ev || !id || !*id || strlen(id) > 64)
    return VX_EINVAL;
  if (!channel || !vx__channel_valid(channel, strlen(channel)))
    return VX_ECHANNEL;
  vx_cmd *c = cmd_new(type);
  if (!c)
    return VX_ENOMEM;
  c->u.sse.cb = cb;
  c->u.sse.cb_data = data;
  if (!(c->u.sse.channel = vx__dupz(channel)) || !(c->u.sse.connection_id = vx__dupz(id)) ||
      (member && !(c->u.sse.member = vx__dupz(member)))) {
    vx__cmd_free(c);
    return VX_ENOMEM;
  }
  return submit(ev, c);
}

int vx_sse_subscribe(vx_events *ev, const char *connection_id, const char *channel,
                     const char *member_json, vx_status_cb cb, void *data) {
  return sse_cmd(ev, CMD_SSE_SUB, connection_id, channel, member_json, cb, data);
}

int vx_sse_unsubscribe(vx_events *ev, const char *connection_id, const char *channel,
                       vx_status_cb cb, void *data) {
  return sse_cmd(ev, CMD_SSE_UNSUB, connection_id, channel, NULL, cb, data);
}

static int close_cmd(vx_events *ev, uint32_t grace_ms, void *cb, bool report, void *data) {
  if (!ev)
    return VX_EINVAL;
  vx_cmd *c = cmd_new(CMD_CLOSE);
  if (!c)
    return VX_ENOMEM;
  c->u.close.grace_ms = grace_ms;
  c->u.close.cb = cb;
  c->u.close.report = report;
  c->u.close.cb_data = data;
  return submit(ev, c);
}

int vx_close(vx_events *ev, uint32_t grace_ms, vx_close_cb cb, void *data) {
  return close_cmd(ev, grace_ms, (void *)cb, false, data);
}

int vx_shutdown(vx_events *ev, uint32_t grace_ms, vx_shutdown_cb cb, void *data) {
  return close_cmd(ev, grace_ms, (void *)cb, true, data);
}
