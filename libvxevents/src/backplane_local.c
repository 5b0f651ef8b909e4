/* The single-instance backplane: there are no other instances, so publishing goes nowhere,
 * every channel is ready at once, presence is what the hub holds, and queries answer
 * synchronously from the hub (counts, channels, members).
 *
 * Calls: node/hub/loop -> here (ops, backplane.h) -> the hub's read-only queries
 * (vx__hub_count, vx__hub_channels_local, vx__hub_members_json) and the node's handler
 * (ev->bp.h->members, to answer a presence join now). Nothing here keeps state. */
#include "vx_int.h"

#include <stdlib.h>
#include <string.h>

static int start(vx_events *ev) {
  (void)ev;
  return 0;
}
static void stop(vx_events *ev, uint32_t grace_ms) {
  (void)ev;
  (void)grace_ms;
}
static bool done(vx_events *ev) {
  (void)ev;
  return true;
}
static bool overdue(vx_events *ev) {
  (void)ev;
  return false;
}
static void nothing(vx_events *ev) { (void)ev; }
static uint64_t unpublished(vx_events *ev) {
  (void)ev;
  return 0;
}

static size_t cost(vx_events *ev, const char *const *channels, size_t n, const char *event,
                   size_t dlen, const char *except) {
  (void)ev, (void)channels, (void)n, (void)event, (void)dlen, (void)except;
  return 0; /* no backlog */
}
static bool reserve(vx_events *ev, size_t c) {
  (void)ev, (void)c;
  return true;
}
static void release(vx_events *ev, size_t c) { (void)ev, (void)c; }

static int publish(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                   const char *event, size_t elen, const char *data, size_t dlen, const char *cmark,
                   size_t cmlen, const char *except, size_t reserved, const vx_published *done) {
  (void)ev, (void)channels, (void)lens, (void)n, (void)event, (void)elen, (void)data;
  (void)dlen, (void)cmark, (void)cmlen, (void)except, (void)reserved, (void)done;
  return 0; /* nobody else to tell */
}

static void channel_change(vx_events *ev, const char *name, size_t n) {
  (void)ev, (void)name, (void)n;
}
static bool channel_ready(vx_events *ev, const char *name, size_t n) {
  (void)ev, (void)name, (void)n;
  return true;
}
static void count(vx_events *ev, const char *name, size_t n, int delta) {
  (void)ev, (void)name, (void)n, (void)delta;
}

/* The hub's members are the whole truth: answer the joining connection now; member_added
 * is the hub's to send. */
static bool presence_join(vx_events *ev, const char *name, size_t n, const vx_member *m,
                          const char *socket_id, bool new_locally) {
  (void)m, (void)new_locally;
  ev->bp.h->members(ev, socket_id, name, n, NULL, 0);
  return false;
}
static bool presence_leave(vx_events *ev, const char *name, size_t n, const vx_member *m) {
  (void)ev, (void)name, (void)n, (void)m;
  return false;
}

static void query(vx_events *ev, int kind, const char *name, void *cb, void *data) {
  size_t n = name ? strlen(name) : 0;
  switch (kind) {
  case VX_Q_COUNT:
    ((vx_count_cb)cb)(0, vx__hub_count(ev, name, n), data);
    break;
  case VX_Q_HAS:
    ((vx_count_cb)cb)(0, vx__hub_count(ev, name, n) > 0, data);
    break;
  case VX_Q_CHANNELS:
    vx__hub_channels_local(ev, (vx_channels_cb)cb, data);
    break;
  default: {
    size_t len = 0;
    char *json = vx__hub_members_json(ev, name, n, &len);
    ((vx_json_cb)cb)(json ? 0 : VX_ENOMEM, json, json ? len : 0, data);
    free(json);
    break;
  }
  }
}

const vx_backplane_ops vx__backplane_local = {
    .name = "local",
    .start = start,
    .stop = stop,
    .done = done,
    .overdue = overdue,
    .force = nothing,
    .unpublished = unpublished,
    .free = nothing,
    .cost = cost,
    .reserve = reserve,
    .release = release,
    .publish = publish,
    .channel_open = channel_change,
    .channel_close = channel_change,
    .channel_ready = channel_ready,
    .count = count,
    .presence_join = presence_join,
    .presence_leave = presence_leave,
    .query = query,
    .assigns_offsets = false,
    .history = NULL, /* the hub's streams are all there is */
};
