/* The backplane: everything the hub and the node need from "the other instances".
 *
 * An instance has exactly one backplane, `ev->bp`: an ops table plus its state, chosen in
 * vx_new (backplane_local.c without redis_url, redis/ with it), and the handler the node
 * registers for the way back. Calls go down through `ops` (node/hub/loop -> backplane) and
 * come back up only through `h` (backplane -> node/hub), the way hiredis's
 * `redisAsyncContext.ev` and a Broker + BrokerEventHandler pair work: the backplane never
 * names a hub or node function, never walks the hub's maps, and the hub never asks which
 * backplane it has.
 *
 * Every op runs on the loop thread except those marked "any thread". */
#ifndef VX_BACKPLANE_H
#define VX_BACKPLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vx_events vx_events;
struct vx_member;

#define VX_BP_LOCAL_NOW 1

/* The kinds of a cluster-wide query (ops->query). */
enum { VX_Q_COUNT = 0, VX_Q_HAS, VX_Q_CHANNELS, VX_Q_MEMBERS };

struct vx_buf;

/* Who hears the offset a one-channel broadcast got (vx_publish), exactly once: with
 * assigns_offsets the backplane calls it when it assigned it (or failed), once publish
 * returned 0 or VX_BP_LOCAL_NOW; otherwise the node does. */
typedef struct vx_published {
  void (*cb)(int status, uint64_t offset, const char *epoch, void *data);
  void *data;
} vx_published;

/* A channel stream as a backplane holds it (ops->history, DESIGN §12): its position and the
 * entries asked for, each as the WebSocket frame of its event (which carries its offset). */
typedef struct vx_bp_history {
  int status;             /* 0, or VX_EUNAVAILABLE / VX_ECLOSED / VX_ENOMEM (nothing else set) */
  const char *epoch;      /* the stream's epoch */
  uint64_t offset;        /* its last offset */
  uint64_t created_seq;   /* the cluster seq when the stream began (SSE resume) */
  uint64_t last_seq;      /* the seq of its last entry */
  const char *cluster_epoch;
  size_t n;               /* entries, oldest first, consecutive unless some were trimmed */
  struct vx_buf *const *frames;
  const uint64_t *offsets, *seqs;
} vx_bp_history;
typedef void (*vx_bp_history_cb)(vx_events *ev, const vx_bp_history *h, void *ctx);

/* The way back, registered by the node (node.c: vx__node_backplane_handler). */
typedef struct vx_backplane_handler {
  /* A broadcast (from any instance, with a backplane that assigns offsets: this one's
   * too), in the channel's order: deliver it to the local subscribers of `channel`.
   * `extra` is the server-set tail of the envelope (the client-event members); `offset`
   * and `seq` the channel's offset and the cluster's seq (0: none). `quiet`: this instance
   * delivered it already (without an offset, during an outage): only the stream records it. */
  int (*deliver)(vx_events *ev, const char *channel, size_t n, const char *event, size_t elen,
                 const char *data, size_t dlen, const char *extra, size_t xlen, const char *except,
                 uint64_t offset, uint64_t seq, bool quiet);
  /* The backplane learned where `channel`'s stream is (its first read, or a new epoch):
   * the local stream follows on from there. `cluster_epoch` (may be NULL) names the SSE ids;
   * `channel` NULL: only that. */
  void (*position)(vx_events *ev, const char *channel, size_t n, const char *epoch,
                   uint64_t offset, uint64_t last_seq, const char *cluster_epoch);
  /* The backplane confirmed `channel` (or gave up on it): deferred acks go out. */
  void (*channel_ready)(vx_events *ev, const char *channel, size_t n);
  /* The answer to a presence join (ops->presence_join): the joining connection `socket_id`,
   * if still subscribed, gets subscription_succeeded with `members` (a JSON array), or, with
   * `members` NULL, with the members this instance knows. */
  void (*members)(vx_events *ev, const char *socket_id, const char *channel, size_t n,
                  const char *members, size_t mlen);
  /* Every presence member of every local channel (to register this instance again). */
  void (*each_member)(vx_events *ev,
                      void (*fn)(void *ctx, const char *channel, size_t n,
                                 const struct vx_member *m),
                      void *ctx);
} vx_backplane_handler;

typedef struct vx_backplane_ops {
  const char *name;
  /* ---- lifetime ---- */
  int (*start)(vx_events *ev); /* on the loop thread, before the first command */
  /* Shutdown began: publish what is left, leave the cluster, disconnect; `grace_ms` 0
   * means the backplane's own default. */
  void (*stop)(vx_events *ev, uint32_t grace_ms);
  bool (*done)(vx_events *ev);            /* shutdown finished (its handles are then closing) */
  bool (*overdue)(vx_events *ev);         /* the grace of stop is over */
  void (*force)(vx_events *ev);           /* give up on what is left */
  uint64_t (*unpublished)(vx_events *ev); /* broadcasts lost, at the end of shutdown */
  void (*free)(vx_events *ev);

  /* ---- publishing ---- */
  /* Bytes a broadcast takes in the backlog (any thread; 0: no backlog). */
  size_t (*cost)(vx_events *ev, const char *const *channels, size_t n, const char *event,
                 size_t dlen, const char *except);
  /* Reserve `cost` bytes of the backlog bound for a broadcast about to be queued as a
   * command (any thread); false: no room (VX_EBACKLOG). release gives them back. */
  bool (*reserve)(vx_events *ev, size_t cost);
  void (*release)(vx_events *ev, size_t cost);
  /* One broadcast to `n` channels for the other instances (local delivery is the node's).
   * `cmark` (may be NULL) is the client-event mark ,"c":{["u":<id>]}; `reserved` what the
   * caller reserved, or 0 to check the bound here. VX_EBACKLOG: nothing was queued, and
   * the broadcast must be delivered nowhere. VX_BP_LOCAL_NOW (with assigns_offsets): queued,
   * but the backplane cannot deliver it here soon (its connection is down): the node
   * delivers it locally now, without an offset, and the backplane records it quietly later. */
  int (*publish)(vx_events *ev, const char *const *channels, const size_t *lens, size_t n,
                 const char *event, size_t elen, const char *data, size_t dlen, const char *cmark,
                 size_t cmlen, const char *except, size_t reserved, const struct vx_published *done);

  /* ---- channels ---- */
  /* A channel got its first local subscriber / lost its last one. */
  void (*channel_open)(vx_events *ev, const char *name, size_t n);
  void (*channel_close)(vx_events *ev, const char *name, size_t n);
  /* May subscription_succeeded go out now? false: wait for h->channel_ready. */
  bool (*channel_ready)(vx_events *ev, const char *name, size_t n);
  /* The local subscriber count of an open channel changed by `delta`. */
  void (*count)(vx_events *ev, const char *name, size_t n, int delta);

  /* ---- presence ---- */
  /* Connection `socket_id` joined presence channel `name` as member `m` (`new_locally`: the
   * first local connection of that user). The joining connection is always answered
   * through h->members, now or later. Returns true when the backplane announces
   * member_added itself (to every instance); false: the caller sends it locally. */
  bool (*presence_join)(vx_events *ev, const char *name, size_t n, const struct vx_member *m,
                        const char *socket_id, bool new_locally);
  /* The last local connection of member `m` left. true: the backplane announces
   * member_removed itself; false: the caller sends it locally. */
  bool (*presence_leave)(vx_events *ev, const char *name, size_t n, const struct vx_member *m);

  /* ---- queries ---- */
  /* A count/has/channels/members query (VX_Q_*) with the public API's callback types; the
   * callback always runs, now or later (the Redis one fails with VX_EUNAVAILABLE when it
   * cannot answer). */
  void (*query)(vx_events *ev, int kind, const char *name, void *cb, void *data);

  /* ---- channel streams (DESIGN §12) ---- */
  /* true: the backplane assigns offsets and delivers every broadcast, this instance's own
   * included, through h->deliver, in order; false: the node delivers locally and the hub
   * assigns offsets. */
  bool assigns_offsets;
  /* Entries of `name` from offset `from` on (at most `count`), and its position; `cb` always
   * runs, now or later. NULL when the hub's in-memory stream is the whole history. */
  void (*history)(vx_events *ev, const char *name, size_t n, uint64_t from, uint32_t count,
                  vx_bp_history_cb cb, void *ctx);
} vx_backplane_ops;

typedef struct vx_backplane {
  const vx_backplane_ops *ops;
  void *state;                   /* the implementation's own (NULL for local) */
  const vx_backplane_handler *h; /* the way back */
} vx_backplane;

extern const vx_backplane_ops vx__backplane_local; /* backplane_local.c */
extern const vx_backplane_ops vx__backplane_redis; /* redis/ */

/* Any thread: is `url` a redis_url the Redis backplane accepts? 0 or VX_EINVAL/VX_ENOMEM. */
int vx__redis_url_valid(const char *url);

#endif
