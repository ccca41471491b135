/*
 * neigh.h: ARP / IPv6 neighbour-discovery suppression (csrc/neigh.c), the C twin of
 * vxlan_dp/core/neigh.py (the table) and vxlan_dp/wire/neigh.py (the messages).
 *
 * The block between the markers is read by csrc/build_fastpath.py as part of cffi's cdef,
 * after fastpath.h's, so it may use the types declared there.
 *
 * Each network may have a neighbour table (IP -> MAC). With suppression on, an ARP request or
 * neighbour solicitation read from the network's TAP for an address in the table is answered
 * on that TAP and not flooded; with snooping on, ARP replies, gratuitous ARP and NAs read
 * from the TAP teach the table. Management calls may allocate (the table grows when statics
 * are added; turning snooping on reserves room for max_learned entries), the per-frame hook
 * never does.
 */
#ifndef VXDP_NEIGH_H
#define VXDP_NEIGH_H

#include <stdbool.h>

#include "fastpath.h"

/* cdef-begin */
#define VXDP_NEIGH_REPLY_MAX 86  /* the longest answer: an NA, 14 + 40 + 24 + 8 */

/* vxlan_dp.core.neigh.NEIGH_COUNTERS, same order */
struct vxdp_neigh_counters {
    uint64_t arp_suppressed;
    uint64_t nd_suppressed;
    uint64_t replies_sent;
    uint64_t reply_errors;
    uint64_t unknown_flooded;
    uint64_t snooped;
    uint64_t snoop_full;
    uint64_t aged;
};

struct vxdp_neigh_row {
    struct vxdp_addr ip;
    uint8_t mac[6];
    uint8_t is_static;
    double age;
};

int vxdp_neigh_mode(struct vxdp_dp *dp, int net, int suppress, int snoop, uint32_t max_learned);
int vxdp_neigh_set(struct vxdp_dp *dp, int net, const struct vxdp_addr *ip, const uint8_t *mac);
int vxdp_neigh_remove(struct vxdp_dp *dp, int net, const struct vxdp_addr *ip);
int vxdp_neigh_count(struct vxdp_dp *dp, int net);
int vxdp_neigh_dump(struct vxdp_dp *dp, int net, double now, struct vxdp_neigh_row *rows, int max);
int vxdp_neigh_counters(struct vxdp_dp *dp, int net, struct vxdp_neigh_counters *out);
/* What would be answered to `frame` (mode aside, nothing counted): its length, or 0. */
int vxdp_neigh_answer(struct vxdp_dp *dp, int net, const uint8_t *frame, uint32_t len,
                      uint8_t *out, uint32_t cap);
/* cdef-end */

struct vxdp_net;
struct vxdp_neigh;

/* The egress hook: true when the frame was answered here and must not be forwarded. */
bool vxdp_neigh_egress(struct vxdp_net *n, const uint8_t *frame, uint32_t len, double now);
uint32_t vxdp_neigh_age(struct vxdp_neigh *t, double now);
void vxdp_neigh_free(struct vxdp_neigh *t);

#endif /* VXDP_NEIGH_H */
