/* Flow control (DESIGN §4): a producer's burst never costs healthy clients their
 * connection, and nothing the core holds grows without a bound.
 *
 * Three bounds, three places:
 * - The command queue (commands.c, max_command_queue bytes): a broadcast is accepted into it
 *   or refused with VX_EAGAIN; callers wait for room with vx_wait_capacity or
 *   vx_on_capacity (the bindings do, so `await broadcast()` paces itself).
 * - The send queues: the loop takes commands from the queue only while the unsent bytes of
 *   the counted connections (ev->flow.bytes) are under flow_high_water and none of them is
 *   congested (past half its max_send_queue); once paused, it goes on when they drained to
 *   flow_low_water and no one is congested. The publish API parks its requests meanwhile
 *   (at most publish_wait_ms, then 503 + Retry-After).
 * - Each connection's max_send_queue: over it a client is closed with 1008.
 *
 * The slow-consumer rule: while commands wait, a tick (TICK_MS) looks at every counted
 * connection with bytes queued. One that is a *hog* (congested, holding more than HOG_RATIO
 * times what the others hold on average: the producer waits for it alone; and reading so
 * slowly that draining a quarter of its bound would take longer than slow_consumer_ms)
 * is blamed for the tick; every tick it is not forgives one, and an empty queue forgives all. Blamed for
 * slow_consumer_ms it is *lagging*: it stops counting, so the others go on at their own
 * pace; it still gets every message, and either catches up (its queue empties: it counts
 * again) or reaches max_send_queue and is closed with 1008. A peer that took nothing at all
 * for slow_consumer_ms (stalled) is lagging at once, when the stalled ones are at most a
 * tenth of the clients (or it is the only one). Clients that are slow together are not blamed:
 * the producer just waits for them. Kernel socket buffers are not seen: a client is judged
 * by what the core holds for it. */
#include "flow.h"

#include "commands.h"
#include "http_int.h"

#include <stdlib.h>

#define TICK_MS 50
#define HOG_RATIO 32

typedef struct vx_capacity_req {
  vx_capacity_cb cb;
  void *data;
  uint64_t since; /* uv_hrtime at registration */
  struct vx_capacity_req *next;
} vx_capacity_req;

/* ---- the accounting ---- */

static void count(vx_conn *c) {
  vx_events *ev = c->ev;
  vx_set(c, VXC_F_COUNTED);
  ev->flow.nclients++;
  ev->flow.bytes += c->qbytes;
  if (c->qbytes >= ev->flow.half) {
    vx_set(c, VXC_F_CONGESTED);
    ev->flow.ncongested++;
  }
}

static void uncount(vx_conn *c) {
  vx_events *ev = c->ev;
  if (!vx_has(c, VXC_F_COUNTED))
    return;
  vx_clr(c, VXC_F_COUNTED);
  ev->flow.nclients--;
  ev->flow.bytes -= c->qbytes;
  if (vx_has(c, VXC_F_CONGESTED)) {
    vx_clr(c, VXC_F_CONGESTED);
    ev->flow.ncongested--;
  }
}

void vx__flow_join(vx_conn *c) {
  if (!vx_has(c, VXC_F_COUNTED) && !vx_has(c, VXC_F_LAGGING) && !vx_has(c, VXC_F_CLOSED))
    count(c);
}

void vx__flow_leave(vx_conn *c) {
  uncount(c);
  vx_clr(c, VXC_F_LAGGING);
  vx__flow_check(c->ev);
}

void vx__flow_rejoin(vx_conn *c) {
  vx_clr(c, VXC_F_LAGGING);
  if (VX_IS_CLIENT(c) && !vx_has(c, VXC_F_CLOSED) && !vx_has(c, VXC_F_DOOMED))
    count(c);
}

static void lag(vx_conn *c) {
  vx_events *ev = c->ev;
  uncount(c);
  vx_set(c, VXC_F_LAGGING);
  ev->flow.lagging++;
  vx__log(ev, VX_LOG_INFO,
          "%s held broadcasts back for %u ms (%zu bytes unsent): it no longer paces them", c->id,
          c->blame_ms, c->qbytes);
}

/* ---- pausing ---- */

static void on_tick(uv_timer_t *t);

static void pause_now(vx_events *ev) {
  ev->flow.paused = true;
  ev->flow.paused_at = uv_now(&ev->loop);
  if (!ev->flow.timer_on && !uv_is_closing((uv_handle_t *)&ev->flow.timer)) {
    uv_timer_start(&ev->flow.timer, on_tick, TICK_MS, TICK_MS);
    ev->flow.timer_on = true;
  }
}

static void go_on(vx_events *ev) {
  ev->flow.paused = false;
  ev->flow.paused_ms += uv_now(&ev->loop) - ev->flow.paused_at;
  if (ev->flow.timer_on) {
    uv_timer_stop(&ev->flow.timer);
    ev->flow.timer_on = false;
  }
  /* the async handler runs what waited: queued commands, parked requests */
  if (!uv_is_closing((uv_handle_t *)&ev->async))
    uv_async_send(&ev->async);
}

static size_t low_water(const vx_events *ev) {
  size_t lo = ev->opts.flow_low_water, hi = ev->opts.flow_high_water;
  return lo && lo < hi ? lo : hi / 2;
}

static bool over(const vx_events *ev) {
  return ev->flow.ncongested > 0 || ev->flow.bytes >= ev->opts.flow_high_water;
}

void vx__flow_check(vx_events *ev) {
  if (!ev->flow.paused) {
    if (over(ev))
      pause_now(ev);
  } else if (ev->flow.ncongested == 0 && ev->flow.bytes <= low_water(ev)) {
    go_on(ev);
  }
}

static bool stalled(const vx_events *ev, const vx_conn *c) {
  return vx_has(c, VXC_F_COUNTED) && c->qbytes && c->stall_ms >= ev->opts.slow_consumer_ms;
}

static void on_tick(uv_timer_t *t) {
  vx_events *ev = t->data;
  if (!ev->flow.paused)
    return;
  uint32_t n = ev->flow.nclients, nstalled = 0;
  for (vx_conn *c = ev->conns; c; c = c->next) {
    if (!vx_has(c, VXC_F_COUNTED))
      continue;
    /* no progress: bytes queued, and the kernel took none of them since the last tick */
    if (c->qbytes && c->sent == c->sent_tick)
      c->stall_ms += TICK_MS;
    else
      c->stall_ms = 0;
    nstalled += stalled(ev, c);
  }
  /* stalled peers are cut loose when they are a small minority (a tenth at most) or the
   * only client: when many are stalled together, the producer is simply faster than they
   * are (or their host is busy), and they are waited for */
  bool cut_stalled = nstalled && (n == 1 || nstalled * 10 <= n);
  vx_conn *next;
  for (vx_conn *c = ev->conns; c; c = next) {
    next = c->next;
    if (!vx_has(c, VXC_F_COUNTED) || c->qbytes == 0)
      continue;
    if (cut_stalled && stalled(ev, c)) {
      c->blame_ms = c->stall_ms;
      c->sent_tick = c->sent;
      lag(c);
      continue;
    }
    /* a hog: past half its bound, with HOG_RATIO times what the others hold on average,
     * and reading too slowly to drain a quarter of its bound within slow_consumer_ms */
    uint32_t took = c->sent - c->sent_tick;
    c->sent_tick = c->sent;
    bool hog = false;
    if (n > 1 && vx_has(c, VXC_F_CONGESTED)) {
      size_t others = (ev->flow.bytes - c->qbytes) / (n - 1);
      uint64_t enough = (uint64_t)ev->opts.max_send_queue / 4 * TICK_MS / ev->opts.slow_consumer_ms;
      hog = c->qbytes > HOG_RATIO * others && took < enough;
    }
    if (!hog) { /* a straggler that keeps up again is forgiven as fast as it was blamed */
      c->blame_ms = c->blame_ms > TICK_MS ? c->blame_ms - TICK_MS : 0;
      continue;
    }
    c->blame_ms += TICK_MS;
    if (c->blame_ms >= ev->opts.slow_consumer_ms)
      lag(c);
  }
  vx__flow_check(ev);
}

int vx__flow_init(vx_events *ev) {
  ev->flow.half = ev->opts.max_send_queue / 2;
  uv_timer_init(&ev->loop, &ev->flow.timer);
  ev->flow.timer.data = ev;
  return uv_cond_init(&ev->room) == 0 ? 0 : VX_ENOMEM;
}

void vx__flow_close(vx_events *ev) {
  if (!uv_is_closing((uv_handle_t *)&ev->flow.timer))
    uv_close((uv_handle_t *)&ev->flow.timer, NULL);
}

/* ---- room in the command queue ---- */

static bool room(const vx_events *ev) { return ev->cmd_bytes <= ev->opts.max_command_queue / 2; }

/* Under ev->mu: the callbacks to run now (room, or closing), taken off the list. */
static vx_capacity_req *take_ready(vx_events *ev) {
  if (!ev->capacity || (!room(ev) && !ev->closing_requested))
    return NULL;
  vx_capacity_req *r = ev->capacity;
  ev->capacity = NULL;
  return r;
}

static void run_ready(vx_events *ev, vx_capacity_req *r, int status) {
  uint64_t now = uv_hrtime();
  uint64_t waited = 0;
  for (vx_capacity_req *p = r; p; p = p->next)
    waited += (now - p->since) / 1000;
  if (r) {
    uv_mutex_lock(&ev->mu);
    ev->flow_wait_us += waited;
    uv_mutex_unlock(&ev->mu);
  }
  /* registered newest first: call oldest first */
  vx_capacity_req *rev = NULL;
  while (r) {
    vx_capacity_req *n = r->next;
    r->next = rev;
    rev = r;
    r = n;
  }
  while (rev) {
    vx_capacity_req *n = rev->next;
    rev->cb(status, rev->data);
    free(rev);
    rev = n;
  }
}

static void run_parked(vx_events *ev);

/* Broadcasts (and a close behind them) wait while paused, in order; everything else
 * (queries, listen, adopted sockets, auth answers, SSE subscriptions) runs at once, so a
 * stats() or a subscriber count answers however slow the clients are. Once close is
 * requested nothing waits any more: the clients are going away, and the broadcasts
 * accepted before the close are still delivered (or published) first. */
void vx__flow_run_commands(vx_events *ev) {
  run_parked(ev);
  uv_mutex_lock(&ev->mu);
  vx_cmd *c = ev->cmd_head;
  bool closing = ev->closing_requested;
  ev->cmd_head = ev->cmd_tail = NULL;
  uv_mutex_unlock(&ev->mu);
  vx_cmd *kept = NULL, *kept_tail = NULL;
  size_t done = 0;
  while (c) {
    vx_cmd *next = c->next;
    c->next = NULL;
    bool held = c->type == CMD_BROADCAST || c->type == CMD_PUBLISH || c->type == CMD_CLOSE;
    if (held && (kept || (ev->flow.paused && !closing))) {
      if (kept_tail)
        kept_tail->next = c;
      else
        kept = c;
      kept_tail = c;
    } else {
      done += c->cost;
      vx__cmd_run(ev, c);
      vx__cmd_free(c);
      if (held)
        vx__flow_check(ev);
    }
    c = next;
  }
  uv_mutex_lock(&ev->mu);
  if (kept) { /* paused: they go back in front of what arrived meanwhile */
    kept_tail->next = ev->cmd_head;
    if (!ev->cmd_head)
      ev->cmd_tail = kept_tail;
    ev->cmd_head = kept;
  }
  ev->cmd_bytes -= done;
  if ((room(ev) || ev->closing_requested) && ev->room_waiters)
    uv_cond_broadcast(&ev->room);
  closing = ev->closing_requested;
  vx_capacity_req *ready = take_ready(ev);
  uv_mutex_unlock(&ev->mu);
  run_ready(ev, ready, closing && !room(ev) ? VX_ECLOSED : 0);
  /* close was requested while broadcasts waited: they go now (see above) */
  if (kept && closing && !uv_is_closing((uv_handle_t *)&ev->async))
    uv_async_send(&ev->async);
}

void vx__flow_teardown(vx_events *ev) {
  uv_mutex_lock(&ev->mu);
  vx_capacity_req *r = ev->capacity;
  ev->capacity = NULL;
  uv_cond_broadcast(&ev->room);
  uv_mutex_unlock(&ev->mu);
  run_ready(ev, r, VX_ECLOSED);
}

int vx_wait_capacity(vx_events *ev, uint32_t timeout_ms) {
  if (!ev || vx__on_loop_thread(ev))
    return VX_EINVAL;
  uv_mutex_lock(&ev->mu);
  int r = 0;
  if (!room(ev) && !ev->closing_requested) {
    if (!timeout_ms) {
      r = VX_EAGAIN;
    } else {
      uint64_t start = uv_hrtime(), end = start + (uint64_t)timeout_ms * 1000000u;
      ev->room_waiters++;
      while (!room(ev) && !ev->closing_requested) {
        uint64_t now = uv_hrtime();
        if (now >= end || uv_cond_timedwait(&ev->room, &ev->mu, end - now) != 0) {
          if (!room(ev) && !ev->closing_requested)
            r = VX_EAGAIN;
          break;
        }
      }
      ev->room_waiters--;
      ev->flow_wait_us += (uv_hrtime() - start) / 1000;
    }
  }
  if (ev->closing_requested && !r && !room(ev))
    r = VX_ECLOSED;
  else if (ev->closing_requested && r == VX_EAGAIN)
    r = VX_ECLOSED;
  uv_mutex_unlock(&ev->mu);
  return r;
}

int vx_on_capacity(vx_events *ev, vx_capacity_cb cb, void *data) {
  if (!ev || !cb)
    return VX_EINVAL;
  vx_capacity_req *r = malloc(sizeof *r);
  if (!r)
    return VX_ENOMEM;
  r->cb = cb;
  r->data = data;
  r->since = uv_hrtime();
  uv_mutex_lock(&ev->mu);
  if (ev->closing_requested) {
    uv_mutex_unlock(&ev->mu);
    free(r);
    return VX_ECLOSED;
  }
  r->next = ev->capacity;
  ev->capacity = r;
  bool now = room(ev);
  uv_mutex_unlock(&ev->mu);
  if (now)
    uv_async_send(&ev->async); /* the loop runs it from its async handler */
  return 0;
}

/* ---- parked publish requests ---- */

bool vx__flow_park(vx_conn *c) {
  vx_events *ev = c->ev;
  if (ev->flow.resuming == c)
    return false;
  if (vx_has(c, VXC_F_PARKED))
    return true;
  if (!ev->flow.paused && !ev->flow.parked)
    return false;
  vx_set(c, VXC_F_PARKED);
  c->parked_next = NULL;
  if (ev->flow.parked_tail)
    ev->flow.parked_tail->parked_next = c;
  else
    ev->flow.parked = c;
  ev->flow.parked_tail = c;
  c->parked_until = uv_now(&ev->loop) + ev->opts.publish_wait_ms;
  c->deadline = c->parked_until + VX_HTTP_DEADLINE_MS;
  c->req->stop = true;
  uv_read_stop((uv_stream_t *)&c->tcp);
  return true;
}

void vx__flow_unpark(vx_conn *c) {
  if (!vx_has(c, VXC_F_PARKED))
    return;
  vx_events *ev = c->ev;
  vx_conn *prev = NULL;
  for (vx_conn *p = ev->flow.parked; p; prev = p, p = p->parked_next) {
    if (p != c)
      continue;
    if (prev)
      prev->parked_next = c->parked_next;
    else
      ev->flow.parked = c->parked_next;
    if (ev->flow.parked_tail == c)
      ev->flow.parked_tail = prev;
    break;
  }
  c->parked_next = NULL;
  vx_clr(c, VXC_F_PARKED);
}

/* The oldest parked requests go on while there is capacity; those whose wait is over are
 * answered 503 (the sweep calls this too, through vx__flow_expire). */
static void answer(vx_conn *c, bool refuse) {
  vx_events *ev = c->ev;
  vx__flow_unpark(c);
  if (vx_has(c, VXC_F_CLOSED) || !c->req)
    return;
  if (refuse) {
    ev->flow.refused++;
    vx__http_error(c, 503, "broadcasts are waiting for slow clients to drain (flow control)",
                   "Retry-After: 1\r\n", c->req->keep_alive && !ev->shutting_down);
  } else {
    ev->flow.resuming = c;
    vx__api_handle(c, c->req->batch);
    ev->flow.resuming = NULL;
  }
  vx__http_resume(c);
}

static void run_parked(vx_events *ev) {
  uint64_t now = uv_now(&ev->loop);
  while (ev->flow.parked) {
    vx_conn *c = ev->flow.parked;
    bool late = now >= c->parked_until || ev->shutting_down;
    if (ev->flow.paused && !late)
      break;
    answer(c, ev->flow.paused);
  }
}

void vx__flow_expire(vx_events *ev) {
  uint64_t now = uv_now(&ev->loop);
  vx_conn *next;
  for (vx_conn *c = ev->flow.parked; c; c = next) {
    next = c->parked_next;
    if (now >= c->parked_until || ev->shutting_down)
      answer(c, true);
  }
}
