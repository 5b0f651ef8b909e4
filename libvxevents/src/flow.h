/* Flow control (DESIGN §4): the accounting of unsent bytes that paces producers, kept by
 * conn.c on every change of a connection's send queue. Inline because it runs once per
 * recipient on the broadcast path: a flag test and two additions, no call. The rest (the
 * pause, the blame tick, waiting for capacity, parked publish requests) is in flow.c. */
#ifndef VX_FLOW_H
#define VX_FLOW_H

#include "vx_int.h"

/* `n` bytes were queued to `c`. */
static inline void vx__flow_add(vx_conn *c, size_t n) {
  size_t q = c->qbytes + n;
  c->qbytes = q;
  if (vx_has(c, VXC_F_COUNTED)) {
    vx_events *ev = c->ev;
    ev->flow.bytes += n;
    if (q >= ev->flow.half && !vx_has(c, VXC_F_CONGESTED)) {
      vx_set(c, VXC_F_CONGESTED);
      ev->flow.ncongested++;
    }
  }
}

void vx__flow_rejoin(vx_conn *c); /* flow.c: a lagging connection caught up */

/* `n` bytes of `c`'s queue were written (`sent`) or dropped. */
static inline void vx__flow_sub(vx_conn *c, size_t n, bool sent) {
  vx_events *ev = c->ev;
  c->qbytes -= n;
  if (sent)
    c->sent += (uint32_t)n;
  if (vx_has(c, VXC_F_COUNTED)) {
    ev->flow.bytes -= n;
    if (vx_has(c, VXC_F_CONGESTED) && c->qbytes <= ev->opts.max_send_queue / 4) {
      vx_clr(c, VXC_F_CONGESTED);
      ev->flow.ncongested--;
    }
  }
  if (c->qbytes == 0) {
    c->blame_ms = 0;
    if (vx_has(c, VXC_F_LAGGING))
      vx__flow_rejoin(c);
  }
}

/* flow.c */
void vx__flow_join(vx_conn *c);  /* an open client starts pacing producers */
void vx__flow_leave(vx_conn *c); /* it closes: it paces nothing any more */
void vx__flow_check(vx_events *ev); /* after the queues changed: pause or go on */
int vx__flow_init(vx_events *ev);   /* loop handles (before the thread starts) */
void vx__flow_close(vx_events *ev); /* close them (shutdown) */
/* The async handler's part: run queued commands while not paused, put the rest back,
 * account what ran and wake whoever waits for room. */
void vx__flow_run_commands(vx_events *ev);
/* The thread is exiting: everyone waiting for capacity hears VX_ECLOSED. */
void vx__flow_teardown(vx_events *ev);
/* Publish API: park the request on `c` until capacity (true), or false to go on now. */
bool vx__flow_park(vx_conn *c);
void vx__flow_unpark(vx_conn *c);    /* the connection goes away */
void vx__flow_expire(vx_events *ev); /* the sweep: parked requests past publish_wait_ms */
#endif
