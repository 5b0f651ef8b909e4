/* The command queue's records: what a public function on the host's thread hands to the
 * loop thread. One struct per kind inside a union, tagged by `type`; every string in a
 * command is the command's own copy (freed by vx__cmd_free). Built and run in commands.c;
 * loop.c reads the listen, adopt and close kinds it carries out. */
#ifndef VX_COMMANDS_H
#define VX_COMMANDS_H

#include "vx_int.h"

typedef enum {
  CMD_LISTEN = 1,
  CMD_ADOPT,
  CMD_BROADCAST,
  CMD_COUNT,    /* query */
  CMD_HAS,      /* query */
  CMD_CHANNELS, /* query, no channel */
  CMD_STATS,    /* query, no channel */
  CMD_MEMBERS,  /* query */
  CMD_CLOSE,
  CMD_AUTH_REPLY,
  CMD_SSE_SUB,
  CMD_SSE_UNSUB,
  CMD_HISTORY, /* history.c runs it */
  CMD_PUBLISH, /* a one-channel broadcast that reports its offset (node.c runs it) */
  CMD_METRICS, /* query, no channel: vx_text_cb */
} vx_cmd_type;

struct vx_cmd {
  struct vx_cmd *next;
  vx_cmd_type type;
  size_t cost; /* bytes it counts in ev->cmd_bytes (broadcasts; 0 for the rest) */
  union {
    struct { /* vx_listen waits on `sem` for `*result` */
      uv_sem_t *sem;
      int *result;
      int *bound_port;
      char *host;
      int port;
    } listen;
    struct {
      int fd;
      char *bytes; /* already read from the socket */
      size_t len;
    } adopt;
    struct {
      char **channels;
      size_t n;
      char *event;
      char *data; /* NULL: "null" */
      size_t data_len;
      char *except;
      size_t reserved; /* bytes of the backplane's backlog reserved on the caller's thread */
    } broadcast;
    struct {         /* CMD_COUNT/HAS (vx_count_cb), CHANNELS, STATS, MEMBERS (vx_json_cb) */
      char *channel; /* NULL for CHANNELS and STATS */
      void *cb;
      void *cb_data;
    } query;
    struct {
      uint64_t id;
      bool authorized;
      char *member; /* may be NULL */
      char *error;  /* may be NULL */
    } auth_reply;
    struct { /* CMD_SSE_SUB and CMD_SSE_UNSUB */
      char *connection_id;
      char *channel;
      char *member; /* SUB to a presence channel */
      vx_status_cb cb;
      void *cb_data;
    } sse;
    struct { /* CMD_HISTORY: vx_json_cb */
      char *channel;
      uint64_t since;
      uint32_t limit;
      vx_json_cb cb;
      void *cb_data;
    } history;
    struct { /* CMD_PUBLISH */
      char *channel, *event, *data, *except;
      size_t data_len, reserved;
      vx_published_cb cb;
      void *cb_data;
    } publish;
    struct {
      uint32_t grace_ms;
      bool report; /* vx_shutdown: cb is a vx_shutdown_cb, else a vx_close_cb */
      void *cb;
      void *cb_data;
    } close;
  } u;
};

/* commands.c: run on the loop thread, answer one that will never run, free one. */
void vx__cmd_run(vx_events *ev, vx_cmd *c);
void vx__cmd_cancel(vx_cmd *c);
void vx__cmd_free(vx_cmd *c);

/* history.c / node.c: the channel-stream kinds. */
void vx__history_query(vx_events *ev, vx_cmd *c);
void vx__node_publish_cmd(vx_events *ev, vx_cmd *c);

/* loop.c: the kinds the loop itself carries out. */
void vx__loop_listen(vx_events *ev, vx_cmd *c);
void vx__loop_adopt(vx_events *ev, vx_cmd *c);
void vx__loop_begin_shutdown(vx_events *ev, vx_cmd *c);

#endif
