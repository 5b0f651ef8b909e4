/* The Redis backplane's names in one place: the keys it uses under redis_prefix, and the
 * envelope of what it PUBLISHes. scripts.lua spells the same names (Lua cannot include
 * this header): change both together.
 *
 * Keys (<p> is redis_prefix, default "vx"; <id> an instance's 16-hex-digit origin):
 *   <p>:ch:<channel>          pub/sub channel of a vxevents channel (pubsub.c)
 *   <p>:count:<channel>       hash instance id -> local subscribers (cluster.c)
 *   <p>:channels              set of channels with subscribers anywhere
 *   <p>:ich:<id>              channels where instance <id> has a count (for reaping)
 *   <p>:pm:<channel>:<member> instances where presence member <member> is connected
 *   <p>:pinfo:<channel>       hash member id -> member JSON
 *   <p>:ipres:<id>            "<channel>\n<member>" entries of instance <id> (for reaping)
 *   <p>:seen, <p>:beat, <p>:grace, <p>:reaped:<id>   liveness (scripts.lua, BEAT)
 *   <p>:st:<channel>          a channel stream's position: epoch, last offset, seqs (PUB, HIST)
 *   <p>:sx:<channel>          a channel stream's entries (a Redis Stream, IDs "<offset>-1")
 *   <p>:seq, <p>:epoch        the cluster's SSE seq and its epoch
 *   <p>:pubseq                instance id -> its last broadcast Redis ran (resends are no-ops) */
#ifndef VX_REDIS_KEYS_H
#define VX_REDIS_KEYS_H

#define VXR_K_CHANNEL ":ch:"
#define VXR_K_COUNT ":count:"
#define VXR_K_CHANNELS ":channels"
#define VXR_K_ICH ":ich:"
#define VXR_K_PM ":pm:"
#define VXR_K_PINFO ":pinfo:"
#define VXR_K_IPRES ":ipres:"
#define VXR_K_ST ":st:"
#define VXR_K_SX ":sx:"
#define VXR_K_SEQ ":seq"
#define VXR_K_EPOCH ":epoch"
#define VXR_K_PUBSEQ ":pubseq"
#define VXR_KLEN(k) (sizeof k - 1)
/* A channel's position outlives its entries (history_ttl_ms) by this much, so that an idle
 * channel keeps its epoch and offsets for a day, not forever. */
#define VXR_ST_TTL_MS 86400000

/* The envelope: {"o":"<origin>","x":"<except>"|null,"e":"<event>","d":<data>[,"c":{["u":<user id>]}]}
 * where "c" (the `cmark` fragment) marks a client event and carries its sender's id. */
#define VXR_PL_O "{\"o\":\""
#define VXR_PL_X "\",\"x\":"
#define VXR_PL_E ",\"e\":"
#define VXR_PL_D ",\"d\":"
#define VXR_PL_FIXED                                                                               \
  (sizeof VXR_PL_O - 1 + 16 + sizeof VXR_PL_X - 1 + sizeof VXR_PL_E - 1 + sizeof VXR_PL_D - 1 + 1)

/* Its members, as read back (vx__json_field). */
#define VXR_F_ORIGIN "o"
#define VXR_F_EXCEPT "x"
#define VXR_F_EVENT "e"
#define VXR_F_DATA "d"
#define VXR_F_CLIENT "c" /* a client event: {"u":<sender's user id>} or {} */
#define VXR_F_USER "u"
/* Added by the PUB script: the channel's offset, the cluster's seq, the channel's epoch and
 * the cluster's epoch. */
#define VXR_F_OFFSET "f"
#define VXR_F_SEQ "g"
#define VXR_F_EPOCH "p"
#define VXR_F_CEPOCH "q"
/* Set by the publisher: its instance delivered it locally already (Redis was unreachable). */
#define VXR_F_LOCAL "l"

#endif
