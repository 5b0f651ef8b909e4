/* The instance: its loop thread, the command queue that makes every public function
 * thread-safe, listening, adopting sockets, and shutdown. */
#include "vx_int.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

static char *concat(const char *a, const char *b) {
  char *d = malloc(strlen(a) + strlen(b) + 1);
  if (d) {
    strcpy(d, a);
    strcat(d, b);
  }
  return d;
}

static char *dupz(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    if (n)
      memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* ---- commands ---- */

static void cmd_free(vx_cmd *c) {
  for (size_t i = 0; i < c->nchannels; i++)
    free(c->channels[i]);
  free(c->channels);
  free(c->event);
  free(c->data);
  free(c->except);
  free(c->bytes);
  free(c);
}

static int push(vx_events *ev, vx_cmd *c) {
  uv_mutex_lock(&ev->mu);
  if (ev->closing_requested) {
    uv_mutex_unlock(&ev->mu);
    return VX_ECLOSED;
  }
  if (c->type == CMD_CLOSE)
    ev->closing_requested = true;
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
    cmd_free(c);
  return r;
}

/* Give `c` its one channel (a copy). false: out of memory. */
static bool cmd_channel(vx_cmd *c, const char *channel) {
  c->channels = calloc(1, sizeof *c->channels);
  c->nchannels = c->channels ? 1 : 0;
  return c->channels && (c->channels[0] = dupz(channel)) != NULL;
}

/* Answer a command that will never run because the instance closed. */
static void cancel(vx_cmd *c) {
  switch (c->type) {
  case CMD_LISTEN:
    *c->result = VX_ECLOSED;
    uv_sem_post(c->sem);
    break;
  case CMD_ADOPT:
    close(c->fd);
    break;
  case CMD_COUNT:
  case CMD_HAS:
    ((vx_count_cb)c->cb)(VX_ECLOSED, 0, c->cb_data);
    break;
  case CMD_CHANNELS:
    ((vx_channels_cb)c->cb)(VX_ECLOSED, NULL, 0, c->cb_data);
    break;
  case CMD_STATS:
    ((vx_stats_cb)c->cb)(VX_ECLOSED, NULL, c->cb_data);
    break;
  case CMD_MEMBERS:
    ((vx_json_cb)c->cb)(VX_ECLOSED, NULL, 0, c->cb_data);
    break;
  case CMD_SSE_SUB:
  case CMD_SSE_UNSUB:
    if (c->cb)
      ((vx_status_cb)c->cb)(VX_ECLOSED, "instance is closed", c->cb_data);
    break;
  default:
    break;
  }
}

/* ---- connections ---- */

const vx_conn_up vx__conn_up = {
    .left = vx__node_left,
    .none_left = vx__loop_shutdown_progress,
};

/* Takes an initialized, connected c->tcp; starts HTTP parsing and reading. */
static void conn_begin(vx_events *ev, vx_conn *c, const uint8_t *bytes, size_t n) {
  c->tcp.data = c;
  vx__conn_accepted(ev, c);
  uv_tcp_nodelay(&c->tcp, 1);
  if (ev->shutting_down || vx__http_start(c) != 0 || vx__conn_read_start(c) != 0) {
    vx__conn_terminate(c);
    return;
  }
  if (n)
    c->tp->read(c, bytes, n);
}

static void on_connection(uv_stream_t *server, int status) {
  vx_events *ev = server->data;
  if (status < 0) {
    vx__log(ev, VX_LOG_WARN, "accept failed: %s", uv_strerror(status));
    return;
  }
  vx_conn *c = calloc(1, sizeof *c);
  if (!c || uv_tcp_init(&ev->loop, &c->tcp) != 0) {
    free(c);
    return;
  }
  c->ev = ev;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    c->tcp.data = c;
    vx_set(c, VXC_F_CLOSED);
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  /* HTTP-phase connections are bounded too, a little above the WebSocket limit, so a
   * flood of half-open requests cannot take unbounded memory. */
  if (ev->nconns >= ev->opts.max_connections + 1024) {
    ev->stats.rejected_connections++;
    vx_set(c, VXC_F_CLOSED);
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  conn_begin(ev, c, NULL, 0);
}

static int map_uv_err(int r) {
  switch (r) {
  case UV_EADDRINUSE:
    return VX_EADDRINUSE;
  case UV_ENOMEM:
    return VX_ENOMEM;
  case UV_EINVAL:
    return VX_EINVAL;
  default:
    return VX_ELISTEN;
  }
}

static void do_listen(vx_events *ev, vx_cmd *c) {
  int r;
  struct sockaddr_storage ss;
  if (ev->shutting_down) {
    r = VX_ECLOSED;
    goto done;
  }
  if (ev->listening) {
    r = VX_EBUSY;
    goto done;
  }
  if (uv_ip4_addr(c->event, c->port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(c->event, c->port, (struct sockaddr_in6 *)&ss) != 0) {
    r = VX_EINVAL;
    goto done;
  }
  uv_tcp_init(&ev->loop, &ev->listener);
  ev->listener.data = ev;
  r = uv_tcp_bind(&ev->listener, (struct sockaddr *)&ss, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&ev->listener, 1024, on_connection);
  if (r != 0) {
    vx__log(ev, VX_LOG_ERROR, "listen on %s:%d failed: %s", c->event, c->port, uv_strerror(r));
    uv_close((uv_handle_t *)&ev->listener, NULL);
    r = map_uv_err(r);
    goto done;
  }
  ev->listening = true;
  if (c->bound_port) {
    struct sockaddr_storage name;
    int nl = sizeof name;
    uv_tcp_getsockname(&ev->listener, (struct sockaddr *)&name, &nl);
    *c->bound_port = name.ss_family == AF_INET6
                         ? ntohs(((struct sockaddr_in6 *)&name)->sin6_port)
                         : ntohs(((struct sockaddr_in *)&name)->sin_port);
  }
done:
  *c->result = r;
  uv_sem_post(c->sem);
}

static void do_adopt(vx_events *ev, vx_cmd *cmd) {
  vx_conn *c = calloc(1, sizeof *c);
  if (!c || uv_tcp_init(&ev->loop, &c->tcp) != 0) {
    free(c);
    close(cmd->fd);
    return;
  }
  c->ev = ev;
  if (uv_tcp_open(&c->tcp, cmd->fd) != 0) {
    close(cmd->fd);
    vx_set(c, VXC_F_CLOSED);
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  conn_begin(ev, c, (const uint8_t *)cmd->bytes, cmd->bytes_len);
}

static void finish_if_done(vx_events *ev);

static void begin_shutdown(vx_events *ev, vx_cmd *c) {
  ev->shutting_down = true;
  if (c->port) /* vx_shutdown */
    ev->shutdown_cb = (vx_shutdown_cb)c->cb;
  else
    ev->close_cb = (vx_close_cb)c->cb;
  ev->close_data = c->cb_data;
  ev->shutdown_deadline = uv_now(&ev->loop) + (c->grace_ms ? c->grace_ms : 1000);
  if (ev->listening) {
    uv_close((uv_handle_t *)&ev->listener, NULL);
    ev->listening = false;
  }
  vx_conn *next;
  for (vx_conn *k = ev->conns; k; k = next) {
    next = k->next;
    if (VX_IS_CLIENT(k))
      vx__conn_close(k, 1001, "server shutting down");
    else if (k->kind == VXK_HTTP && !vx_has(k, VXC_F_CLOSE_AFTER_FLUSH))
      vx__conn_terminate(k);
    else if (k->deadline > ev->shutdown_deadline)
      k->deadline = ev->shutdown_deadline;
  }
  uv_timer_stop(&ev->ping_timer);
  uv_timer_stop(&ev->heartbeat_timer);
  ev->bp.ops->stop(ev, c->grace_ms);
  finish_if_done(ev);
}

static void run_cmd(vx_events *ev, vx_cmd *c) {
  switch (c->type) {
  case CMD_LISTEN:
    do_listen(ev, c);
    break;
  case CMD_ADOPT:
    do_adopt(ev, c);
    break;
  case CMD_BROADCAST: {
    size_t lens[VX_BATCH_MAX];
    for (size_t i = 0; i < c->nchannels; i++)
      lens[i] = strlen(c->channels[i]);
    int r = vx__node_broadcast_reserved(ev, (const char *const *)c->channels, lens, c->nchannels,
                                        c->event, strlen(c->event), c->data ? c->data : "null",
                                        c->data ? c->data_len : 4, c->except, c->reserved);
    if (r)
      vx__log(ev, VX_LOG_ERROR, "broadcast failed: %s", vx_strerror(r));
    break;
  }
  /* The backplane answers: the local one from the hub, the Redis one for the whole cluster
   * (waiting for the connection, VX_EUNAVAILABLE when Redis cannot answer). */
  case CMD_COUNT:
    ev->bp.ops->query(ev, VX_Q_COUNT, c->channels[0], c->cb, c->cb_data);
    break;
  case CMD_HAS:
    ev->bp.ops->query(ev, VX_Q_HAS, c->channels[0], c->cb, c->cb_data);
    break;
  case CMD_CHANNELS:
    ev->bp.ops->query(ev, VX_Q_CHANNELS, NULL, c->cb, c->cb_data);
    break;
  case CMD_STATS: {
    vx_stats st = ev->stats;
    st.connections = ev->nws;
    st.channels = ev->channels.len;
    ((vx_stats_cb)c->cb)(0, &st, c->cb_data);
    break;
  }
  case CMD_CLOSE:
    begin_shutdown(ev, c);
    break;
  case CMD_MEMBERS:
    ev->bp.ops->query(ev, VX_Q_MEMBERS, c->channels[0], c->cb, c->cb_data);
    break;
  case CMD_AUTH_REPLY:
    vx__http_auth_answer(ev, c->auth_id, c->port != 0, c->data, c->event);
    break;
  case CMD_SSE_SUB:
  case CMD_SSE_UNSUB: {
    vx_conn *t = vx__map_get(&ev->sockets, c->except, strlen(c->except));
    int st = 0;
    const char *msg = NULL;
    if (!t || !VX_OPEN_AS(t, VXK_SSE) || vx_has(t, VXC_F_CLOSED)) {
      st = VX_ENOTFOUND;
      msg = "Unknown connectionId";
    } else if (c->type == CMD_SSE_UNSUB) {
      vx__node_unsubscribe(t, c->channels[0], strlen(c->channels[0]));
    } else if (vx__node_subscribe(t, c->channels[0], strlen(c->channels[0]), c->data,
                                  c->data ? strlen(c->data) : 0, &msg) != 0) {
      st = VX_EINVAL;
    }
    if (c->cb)
      ((vx_status_cb)c->cb)(st, msg, c->cb_data);
    break;
  }
  }
}

static void on_async(uv_async_t *a) {
  vx_events *ev = a->data;
  uv_mutex_lock(&ev->mu);
  vx_cmd *c = ev->cmd_head;
  ev->cmd_head = ev->cmd_tail = NULL;
  uv_mutex_unlock(&ev->mu);
  while (c) {
    vx_cmd *next = c->next;
    run_cmd(ev, c);
    cmd_free(c);
    c = next;
  }
}

/* Frames queued by I/O callbacks and commands are flushed in the check phase, right after
 * poll; frames queued by timers (pings, deadlines) in the prepare phase, right before the
 * loop blocks. Either way nothing waits for the next wake-up. */
static void on_check(uv_check_t *h) { vx__conn_flush_all(h->data); }
static void on_prepare(uv_prepare_t *h) { vx__conn_flush_all(h->data); }

static void on_ping(uv_timer_t *t) { vx__conn_ping_all(t->data); }
static void on_heartbeat(uv_timer_t *t) { vx__sse_heartbeat_all(t->data); }

/* Clients and Redis have their own deadlines: clients get the grace (default 1 s) to finish
 * their close handshake, Redis the grace (default redis_connect_timeout_ms) to take the
 * broadcasts still held. */
static void finish_if_done(vx_events *ev) {
  if (!ev->shutting_down)
    return;
  if (ev->conns && uv_now(&ev->loop) >= ev->shutdown_deadline) {
    vx_conn *next;
    for (vx_conn *k = ev->conns; k; k = next) {
      next = k->next;
      vx__conn_terminate(k);
    }
  }
  if (ev->bp.ops->overdue(ev))
    ev->bp.ops->force(ev);
  if (ev->conns || !ev->bp.ops->done(ev))
    return;
  /* Everything is closed or closing: release the loop's own handles so uv_run returns
   * once the close callbacks have run. The check handle flushes nothing more. */
  if (!uv_is_closing((uv_handle_t *)&ev->async)) {
    uv_close((uv_handle_t *)&ev->async, NULL);
    uv_close((uv_handle_t *)&ev->check, NULL);
    uv_close((uv_handle_t *)&ev->prepare, NULL);
    uv_close((uv_handle_t *)&ev->ping_timer, NULL);
    uv_close((uv_handle_t *)&ev->heartbeat_timer, NULL);
    uv_close((uv_handle_t *)&ev->sweep_timer, NULL);
  }
}

static void on_sweep(uv_timer_t *t) {
  vx_events *ev = t->data;
  vx__conn_sweep(ev);
  vx__http_auth_expire(ev);
  finish_if_done(ev);
}

/* The last connection of a shutdown is gone: finish now rather than at the next sweep. */
void vx__loop_shutdown_progress(vx_events *ev) {
  if (ev->shutting_down && !uv_is_closing((uv_handle_t *)&ev->sweep_timer))
    uv_timer_start(&ev->sweep_timer, on_sweep, 0, 250);
}

static void thread_main(void *arg) {
  vx_events *ev = arg;
  /* Signals belong to the host's threads. A write to a reset socket then fails with
   * EPIPE here instead of raising SIGPIPE in the process. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  if (ev->bp.ops->start(ev) != 0)
    vx__log(ev, VX_LOG_ERROR, "%s: cannot start", ev->bp.ops->name);
  uv_run(&ev->loop, UV_RUN_DEFAULT);
  /* Commands that raced with close are answered now. */
  uv_mutex_lock(&ev->mu);
  vx_cmd *c = ev->cmd_head;
  ev->cmd_head = ev->cmd_tail = NULL;
  uv_mutex_unlock(&ev->mu);
  while (c) {
    vx_cmd *next = c->next;
    cancel(c);
    cmd_free(c);
    c = next;
  }
  uv_loop_close(&ev->loop);
  uint64_t lost = ev->bp.ops->unpublished(ev);
  if (lost)
    vx__log(ev, VX_LOG_ERROR, "redis: %llu broadcast(s) accepted before close were not published",
            (unsigned long long)lost);
  if (ev->shutdown_cb)
    ev->shutdown_cb(lost ? VX_EUNPUBLISHED : 0, lost, ev->close_data);
  else if (ev->close_cb)
    ev->close_cb(ev->close_data);
}

/* ---- public API ---- */

static void free_paths(vx_events *ev) {
  free(ev->auth_secret);
  free(ev->auth_path);
  free(ev->sse_path);
  free(ev->sse_sub_path);
  free(ev->sse_unsub_path);
  vx__buf_unref(ev->heartbeat);
  free(ev->redis_url);
  free(ev->redis_prefix);
  ev->redis_url = ev->redis_prefix = NULL;
  ev->auth_secret = ev->auth_path = ev->sse_path = ev->sse_sub_path = ev->sse_unsub_path = NULL;
  ev->heartbeat = NULL;
}

int vx_new(vx_events **out, const vx_options *opts) {
  if (!out)
    return VX_EINVAL;
  *out = NULL;
  vx_options o;
  if (opts)
    o = *opts;
  else
    vx_options_init(&o);
  int bad = vx_options_check(&o, NULL, 0);
  if (bad)
    return bad;
  vx_events *ev = calloc(1, sizeof *ev);
  if (!ev)
    return VX_ENOMEM;
  ev->opts = o;
  ev->path = dupz(o.path);
  ev->api_key = o.api_key && *o.api_key ? dupz(o.api_key) : NULL;
  if (o.auth_secret) {
    ev->auth_secret = dupz(o.auth_secret);
    ev->auth_secret_len = strlen(o.auth_secret);
  }
  ev->auth_path = malloc(strlen(o.path) + 6);
  if (ev->auth_path) {
    strcpy(ev->auth_path, o.path);
    strcat(ev->auth_path, "/auth");
    ev->auth_path_len = strlen(ev->auth_path);
  }
  ev->opts.auth_secret = ev->auth_secret;
  bool sse_ok = true;
  if (o.sse_path) {
    ev->sse_path = dupz(o.sse_path);
    ev->sse_sub_path = concat(o.sse_path, "/subscribe");
    ev->sse_unsub_path = concat(o.sse_path, "/unsubscribe");
    sse_ok = ev->sse_path && ev->sse_sub_path && ev->sse_unsub_path;
    ev->sse_path_len = ev->sse_path ? strlen(ev->sse_path) : 0;
  }
  ev->opts.sse_path = ev->sse_path;
  ev->redis_url = o.redis_url ? dupz(o.redis_url) : NULL;
  ev->redis_prefix = o.redis_prefix ? dupz(o.redis_prefix) : NULL;
  ev->opts.redis_url = ev->redis_url;
  ev->opts.redis_prefix = ev->redis_prefix;
  sse_ok = sse_ok && (!o.redis_url || ev->redis_url) && (!o.redis_prefix || ev->redis_prefix);
  ev->heartbeat = vx__buf_new(13);
  if (ev->heartbeat)
    memcpy(ev->heartbeat->data, ": heartbeat\n\n", 13);
  ev->opts.path = ev->path;
  ev->opts.api_key = ev->api_key;
  ev->ping_frame = vx__buf_new(2);
  ev->pong_msg = vx__frame_text("{\"type\":\"pong\"}", 15);
  if (!ev->path || (o.api_key && *o.api_key && !ev->api_key) || !ev->ping_frame ||
      !ev->pong_msg || !ev->auth_path || (o.auth_secret && !ev->auth_secret) || !sse_ok ||
      !ev->heartbeat) {
    free_paths(ev);
    vx__buf_unref(ev->ping_frame);
    vx__buf_unref(ev->pong_msg);
    free(ev->path);
    free(ev->api_key);
    free(ev);
    return VX_ENOMEM;
  }
  ev->path_len = strlen(ev->path);
  ev->bp.ops = ev->redis_url ? &vx__backplane_redis : &vx__backplane_local;
  ev->bp.h = &vx__node_backplane_handler;
  ev->conn_up = &vx__conn_up;
  ev->ping_frame->data[0] = (char)0x89;
  ev->ping_frame->data[1] = 0;
  ev->rnd_pos = sizeof ev->rnd; /* empty: first id fills it */
  char tag[VX_SOCKET_ID_LEN + 1];
  vx__random_id(ev, tag);
  memcpy(ev->sse_tag, tag, 8); /* the first 8 hex digits of a random id */
  ev->sse_tag[8] = 0;

  if (uv_loop_init(&ev->loop) != 0)
    goto fail_loop;
  uv_mutex_init(&ev->mu);
  uv_async_init(&ev->loop, &ev->async, on_async);
  ev->async.data = ev;
  uv_check_init(&ev->loop, &ev->check);
  ev->check.data = ev;
  uv_check_start(&ev->check, on_check);
  uv_prepare_init(&ev->loop, &ev->prepare);
  ev->prepare.data = ev;
  uv_prepare_start(&ev->prepare, on_prepare);
  uv_timer_init(&ev->loop, &ev->ping_timer);
  ev->ping_timer.data = ev;
  if (o.ping_interval_ms)
    uv_timer_start(&ev->ping_timer, on_ping, o.ping_interval_ms, o.ping_interval_ms);
  uv_timer_init(&ev->loop, &ev->heartbeat_timer);
  ev->heartbeat_timer.data = ev;
  if (o.sse_path && o.heartbeat_interval_ms)
    uv_timer_start(&ev->heartbeat_timer, on_heartbeat, o.heartbeat_interval_ms,
                   o.heartbeat_interval_ms);
  uv_timer_init(&ev->loop, &ev->sweep_timer);
  ev->sweep_timer.data = ev;
  uv_timer_start(&ev->sweep_timer, on_sweep, 250, 250);
  if (uv_thread_create(&ev->thread, thread_main, ev) != 0) {
    uv_close((uv_handle_t *)&ev->async, NULL);
    uv_close((uv_handle_t *)&ev->check, NULL);
    uv_close((uv_handle_t *)&ev->prepare, NULL);
    uv_close((uv_handle_t *)&ev->ping_timer, NULL);
    uv_close((uv_handle_t *)&ev->heartbeat_timer, NULL);
    uv_close((uv_handle_t *)&ev->sweep_timer, NULL);
    uv_run(&ev->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ev->loop);
    uv_mutex_destroy(&ev->mu);
    vx__buf_unref(ev->ping_frame);
    vx__buf_unref(ev->pong_msg);
    free(ev->path);
    free(ev->api_key);
    free_paths(ev);
    free(ev);
    return VX_ETHREAD;
  }
  ev->thread_started = true;
  *out = ev;
  return 0;
fail_loop:
  free_paths(ev);
  vx__buf_unref(ev->ping_frame);
  vx__buf_unref(ev->pong_msg);
  free(ev->path);
  free(ev->api_key);
  free(ev);
  return VX_ENOMEM;
}

static bool on_loop_thread(vx_events *ev) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &ev->thread);
}

int vx_listen(vx_events *ev, const char *host, int port, int *bound_port) {
  if (!ev || !host || port < 0 || port > 65535 || strlen(host) > 64 || on_loop_thread(ev))
    return VX_EINVAL;
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c || !(c->event = dupz(host))) {
    free(c);
    return VX_ENOMEM;
  }
  uv_sem_t sem;
  int result = 0;
  uv_sem_init(&sem, 0);
  c->type = CMD_LISTEN;
  c->sem = &sem;
  c->result = &result;
  c->port = port;
  c->bound_port = bound_port;
  int r = push(ev, c);
  if (r) {
    cmd_free(c);
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
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c || (len && !(c->bytes = dupn(bytes, len)))) {
    free(c);
    close(fd);
    return VX_ENOMEM;
  }
  c->type = CMD_ADOPT;
  c->fd = fd;
  c->bytes_len = len;
  int r = push(ev, c);
  if (r) {
    close(fd);
    cmd_free(c);
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
  /* With Redis the broadcast's room in the backlog is reserved here, exactly, so that it is
   * refused now (and delivered nowhere) rather than after it was accepted. */
  size_t cost = 0;
  cost = ev->bp.ops->cost(ev, channels, n, event, data ? data_len : 4, except_id);
  if (!ev->bp.ops->reserve(ev, cost))
    return VX_EBACKLOG;
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c) {
    ev->bp.ops->release(ev, cost);
    return VX_ENOMEM;
  }
  c->reserved = cost;
  c->type = CMD_BROADCAST;
  c->channels = calloc(n, sizeof *c->channels);
  c->nchannels = c->channels ? n : 0;
  bool ok = c->channels != NULL;
  for (size_t i = 0; ok && i < n; i++)
    ok = (c->channels[i] = dupz(channels[i])) != NULL;
  ok = ok && (c->event = dupz(event)) != NULL;
  if (ok && data) {
    ok = (c->data = dupn(data, data_len)) != NULL;
    c->data_len = data_len;
  }
  if (ok && except_id)
    ok = (c->except = dupz(except_id)) != NULL;
  if (!ok) {
    cmd_free(c);
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

static int query(vx_events *ev, vx_cmd_type type, const char *channel, void *cb, void *data) {
  if (!ev || !cb)
    return VX_EINVAL;
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c)
    return VX_ENOMEM;
  c->type = type;
  c->cb = cb;
  c->cb_data = data;
  if (channel) {
    if (!cmd_channel(c, channel)) {
      cmd_free(c);
      return VX_ENOMEM;
    }
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

int vx_auth_reply(vx_events *ev, uint64_t id, int authorized, const char *member_json,
                  const char *error) {
  if (!ev)
    return VX_EINVAL;
  if (authorized && member_json) {
    const char *err;
    vx_member *m = vx__member_parse(member_json, strlen(member_json), &err);
    if (!m)
      return VX_EINVAL;
    free(m);
  }
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c)
    return VX_ENOMEM;
  c->type = CMD_AUTH_REPLY;
  c->auth_id = id;
  c->port = authorized != 0;
  if ((member_json && !(c->data = dupz(member_json))) || (error && !(c->event = dupz(error)))) {
    cmd_free(c);
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
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c)
    return VX_ENOMEM;
  c->type = type;
  c->cb = (void *)cb;
  c->cb_data = data;
  if (!cmd_channel(c, channel) || !(c->except = dupz(id)) ||
      (member && !(c->data = dupz(member)))) {
    cmd_free(c);
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

int vx_channels(vx_events *ev, vx_channels_cb cb, void *data) {
  return query(ev, CMD_CHANNELS, NULL, (void *)cb, data);
}

int vx_stats_get(vx_events *ev, vx_stats_cb cb, void *data) {
  return query(ev, CMD_STATS, NULL, (void *)cb, data);
}

static int close_cmd(vx_events *ev, uint32_t grace_ms, void *cb, bool report, void *data) {
  if (!ev)
    return VX_EINVAL;
  vx_cmd *c = calloc(1, sizeof *c);
  if (!c)
    return VX_ENOMEM;
  c->type = CMD_CLOSE;
  c->grace_ms = grace_ms;
  c->cb = cb;
  c->port = report; /* which callback type `cb` is */
  c->cb_data = data;
  return submit(ev, c);
}

int vx_close(vx_events *ev, uint32_t grace_ms, vx_close_cb cb, void *data) {
  return close_cmd(ev, grace_ms, (void *)cb, false, data);
}

int vx_shutdown(vx_events *ev, uint32_t grace_ms, vx_shutdown_cb cb, void *data) {
  return close_cmd(ev, grace_ms, (void *)cb, true, data);
}

void vx_free(vx_events *ev) {
  if (!ev)
    return;
  if (ev->thread_started) {
    vx_close(ev, 0, NULL, NULL); /* VX_ECLOSED if already requested: fine */
    uv_thread_join(&ev->thread);
  }
  vx__hub_free(ev);
  ev->bp.ops->free(ev);
  vx__history_free(ev);
  vx__deflate_free(ev);
  vx__buf_unref(ev->ping_frame);
  vx__buf_unref(ev->pong_msg);
  uv_mutex_destroy(&ev->mu);
  while (ev->pending) {
    vx_pending_auth *p = ev->pending;
    ev->pending = p->next;
    free(p->socket_id);
    free(p);
  }
  if (ev->auth_secret) /* do not leave the key in freed memory */
    OPENSSL_cleanse(ev->auth_secret, ev->auth_secret_len);
  free_paths(ev);
  free(ev->path);
  free(ev->api_key);
  free(ev);
}
