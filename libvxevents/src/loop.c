/* The instance: vx_new / vx_free, its loop thread and timers, listening, accepting and
 * adopting sockets, and shutdown. The public functions that act on a running instance and
 * the command queue that makes them thread-safe are commands.c's: the loop's async handler
 * drains the queue into vx__cmd_run, which calls back here for listen, adopt and close.
 *
 * Calls: loop -> conn.c / http.c (new connections), loop -> the backplane's lifetime ops
 * (ev->bp: start, stop, done, overdue, force, unpublished, free), loop -> commands.c. */
#include "commands.h"
#include "flow.h"

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
  if (ev->opts.socket_send_buffer) { /* what the kernel holds per connection, see options.c */
    int v = (int)ev->opts.socket_send_buffer;
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &v);
  }
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
  if (vx__tls_accept(c) < 0) { /* on a TLS listener every connection speaks TLS */
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

void vx__loop_listen(vx_events *ev, vx_cmd *cmd) {
  const char *host = cmd->u.listen.host;
  int port = cmd->u.listen.port;
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
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    r = VX_EINVAL;
    goto done;
  }
  uv_tcp_init(&ev->loop, &ev->listener);
  ev->listener.data = ev;
  r = uv_tcp_bind(&ev->listener, (struct sockaddr *)&ss, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&ev->listener, 1024, on_connection);
  if (r != 0) {
    vx__log(ev, VX_LOG_ERROR, "listen on %s:%d failed: %s", host, port, uv_strerror(r));
    uv_close((uv_handle_t *)&ev->listener, NULL);
    r = map_uv_err(r);
    goto done;
  }
  ev->listening = true;
  if (cmd->u.listen.bound_port) {
    struct sockaddr_storage name;
    int nl = sizeof name;
    uv_tcp_getsockname(&ev->listener, (struct sockaddr *)&name, &nl);
    *cmd->u.listen.bound_port = name.ss_family == AF_INET6
                                    ? ntohs(((struct sockaddr_in6 *)&name)->sin6_port)
                                    : ntohs(((struct sockaddr_in *)&name)->sin_port);
  }
done:
  *cmd->u.listen.result = r;
  uv_sem_post(cmd->u.listen.sem);
}

void vx__loop_adopt(vx_events *ev, vx_cmd *cmd) {
  vx_conn *c = calloc(1, sizeof *c);
  if (!c || uv_tcp_init(&ev->loop, &c->tcp) != 0) {
    free(c);
    close(cmd->u.adopt.fd);
    return;
  }
  c->ev = ev;
  if (uv_tcp_open(&c->tcp, cmd->u.adopt.fd) != 0) {
    close(cmd->u.adopt.fd);
    vx_set(c, VXC_F_CLOSED);
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  conn_begin(ev, c, (const uint8_t *)cmd->u.adopt.bytes, cmd->u.adopt.len);
}

static void finish_if_done(vx_events *ev);

void vx__loop_begin_shutdown(vx_events *ev, vx_cmd *cmd) {
  uint32_t grace_ms = cmd->u.close.grace_ms;
  ev->shutting_down = true;
  if (cmd->u.close.report) /* vx_shutdown */
    ev->shutdown_cb = (vx_shutdown_cb)cmd->u.close.cb;
  else
    ev->close_cb = (vx_close_cb)cmd->u.close.cb;
  ev->close_data = cmd->u.close.cb_data;
  ev->shutdown_deadline = uv_now(&ev->loop) + (grace_ms ? grace_ms : 1000);
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
  ev->bp.ops->stop(ev, grace_ms);
  finish_if_done(ev);
}

/* Commands run in order while flow control lets them (flow.c). */
static void on_async(uv_async_t *a) { vx__flow_run_commands(a->data); }

/* Frames queued by I/O callbacks and commands are flushed in the check phase, right after
 * poll; frames queued by timers (pings, deadlines) in the prepare phase, right before the
 * loop blocks. Either way nothing waits for the next wake-up. */
static void on_check(uv_check_t *h) { vx__conn_flush_all(h->data); }
static void on_prepare(uv_prepare_t *h) {
  vx_events *ev = h->data;
  /* Recovery replays go on as their connections' queues drain (node.c); when one made
   * progress and the flush may empty its queue, the loop comes straight back. */
  bool again = ev->replays && vx__node_pump(ev);
  vx__conn_flush_all(ev);
  if (again && !uv_is_closing((uv_handle_t *)&ev->async))
    uv_async_send(&ev->async);
}

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
    vx__flow_close(ev);
  }
}

static void on_sweep(uv_timer_t *t) {
  vx_events *ev = t->data;
  vx__conn_sweep(ev);
  vx__history_sweep(ev);
  vx__http_auth_expire(ev);
  vx__flow_expire(ev);
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
    vx__cmd_cancel(c);
    vx__cmd_free(c);
    c = next;
  }
  vx__flow_teardown(ev);
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

/* Everything vx_new copied or built before the loop ran (each failure path and vx_free). */
static void free_copies(vx_events *ev) {
  vx__buf_unref(ev->ping_frame);
  vx__buf_unref(ev->pong_msg);
  free(ev->path);
  free(ev->api_key);
  ev->ping_frame = ev->pong_msg = NULL;
  ev->path = ev->api_key = NULL;
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
  vx__tls_free(ev);
  vx__origins_free(ev);
  free(ev->metrics_token);
  ev->metrics_token = NULL;
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
  ev->path = vx__dupz(o.path);
  ev->api_key = o.api_key && *o.api_key ? vx__dupz(o.api_key) : NULL;
  if (o.auth_secret) {
    ev->auth_secret = vx__dupz(o.auth_secret);
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
    ev->sse_path = vx__dupz(o.sse_path);
    ev->sse_sub_path = concat(o.sse_path, "/subscribe");
    ev->sse_unsub_path = concat(o.sse_path, "/unsubscribe");
    sse_ok = ev->sse_path && ev->sse_sub_path && ev->sse_unsub_path;
    ev->sse_path_len = ev->sse_path ? strlen(ev->sse_path) : 0;
  }
  ev->opts.sse_path = ev->sse_path;
  ev->redis_url = o.redis_url ? vx__dupz(o.redis_url) : NULL;
  ev->redis_prefix = o.redis_prefix ? vx__dupz(o.redis_prefix) : NULL;
  ev->opts.redis_url = ev->redis_url;
  ev->opts.redis_prefix = ev->redis_prefix;
  sse_ok = sse_ok && (!o.redis_url || ev->redis_url) && (!o.redis_prefix || ev->redis_prefix);
  ev->heartbeat = vx__buf_new(13);
  if (ev->heartbeat)
    memcpy(ev->heartbeat->data, ": heartbeat\n\n", 13);
  ev->opts.path = ev->path;
  ev->opts.api_key = ev->api_key;
  /* operations: the Origin list (split once), the metrics token */
  sse_ok = sse_ok && vx__origins_load(ev, o.allowed_origins) == 0;
  ev->opts.allowed_origins = NULL; /* ev->origins is what is read */
  ev->metrics_token = o.metrics_token && *o.metrics_token ? vx__dupz(o.metrics_token) : NULL;
  ev->opts.metrics_token = ev->metrics_token;
  sse_ok = sse_ok && (!o.metrics_token || !*o.metrics_token || ev->metrics_token);
  ev->ping_frame = vx__buf_new(2);
  ev->pong_msg = vx__frame_text("{\"type\":\"pong\"}", 15);
  if (!ev->path || (o.api_key && *o.api_key && !ev->api_key) || !ev->ping_frame || !ev->pong_msg ||
      !ev->auth_path || (o.auth_secret && !ev->auth_secret) || !sse_ok || !ev->heartbeat)
    goto fail_loop; /* nothing of the loop exists yet either */
  /* TLS files are loaded now (their errors named in the log); the option strings are the
   * caller's, so ev->opts keeps none of them. */
  int tls_r = vx__tls_new(ev);
  ev->opts.tls_cert = ev->opts.tls_key = ev->opts.tls_ca = NULL;
  ev->opts.redis_tls_ca = ev->opts.redis_tls_cert = ev->opts.redis_tls_key = NULL;
  if (tls_r) {
    free_copies(ev);
    free(ev);
    return tls_r;
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
  vx__flow_init(ev);
  if (uv_thread_create(&ev->thread, thread_main, ev) != 0) {
    uv_close((uv_handle_t *)&ev->async, NULL);
    uv_close((uv_handle_t *)&ev->check, NULL);
    uv_close((uv_handle_t *)&ev->prepare, NULL);
    uv_close((uv_handle_t *)&ev->ping_timer, NULL);
    uv_close((uv_handle_t *)&ev->heartbeat_timer, NULL);
    uv_close((uv_handle_t *)&ev->sweep_timer, NULL);
    vx__flow_close(ev);
    uv_run(&ev->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ev->loop);
    uv_mutex_destroy(&ev->mu);
    uv_cond_destroy(&ev->room);
    free_copies(ev);
    free(ev);
    return VX_ETHREAD;
  }
  ev->thread_started = true;
  *out = ev;
  return 0;
fail_loop:
  free_copies(ev);
  free(ev);
  return VX_ENOMEM;
}

void vx_free(vx_events *ev) {
  if (!ev)
    return;
  if (ev->thread_started) {
    vx_close(ev, 0, NULL, NULL); /* VX_ECLOSED if already requested: fine */
    uv_thread_join(&ev->thread);
  }
  /* threads still leaving vx_wait_capacity (woken by the close) are let out first */
  uv_mutex_lock(&ev->mu);
  while (ev->room_waiters) {
    uv_cond_broadcast(&ev->room);
    uv_mutex_unlock(&ev->mu);
    uv_sleep(1);
    uv_mutex_lock(&ev->mu);
  }
  uv_mutex_unlock(&ev->mu);
  vx__hub_free(ev);
  ev->bp.ops->free(ev);
  vx__history_free(ev);
  vx__deflate_free(ev);
  uv_mutex_destroy(&ev->mu);
  uv_cond_destroy(&ev->room);
  while (ev->pending) {
    vx_pending_auth *p = ev->pending;
    ev->pending = p->next;
    free(p->socket_id);
    free(p);
  }
  if (ev->auth_secret) /* do not leave the key in freed memory */
    OPENSSL_cleanse(ev->auth_secret, ev->auth_secret_len);
  free_copies(ev);
  free(ev);
}
