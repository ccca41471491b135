/*
 * fastpath.h: the public C interface of the vxlan-dp fast path.
 *
 * The block between the "cdef-begin" and "cdef-end" markers is read verbatim by
 * csrc/build_fastpath.py as cffi's cdef, so it holds only what cffi's parser accepts:
 * integer #defines, plain structs and prototypes (no macros with arguments, no #if).
 *
 * Conventions (STYLE.md, "how a C core sits beside Python"):
 * - every call works on caller-owned buffers with explicit lengths;
 * - returns a count (>= 0) or a negative errno, never allocates per packet, never calls back;
 * - a `struct vxdp_dp` is locked internally, so management calls and counter reads from
 *   another thread wait for the batch in progress instead of racing it;
 * - file descriptors are the caller's: nothing here ever closes one. TAP and underlay fds
 *   must be O_NONBLOCK (the pumps read until EAGAIN).
 *
 * The counter structs list their fields in exactly the order of
 * vxlan_dp.core.counters.NET_COUNTERS / EP_COUNTERS; vxlan_dp/fastpath/_c.py refuses to
 * import a build whose field names differ, and tests/unit/test_fastpath_c.py checks it.
 */
#ifndef VXDP_FASTPATH_H
#define VXDP_FASTPATH_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */
#define VXDP_HEADROOM 64        /* bytes kept free in front of every frame for outer headers */
#define VXDP_HDR_MAX 56         /* largest outer header: IPv6 40 + UDP 8 + VXLAN/GRE 8 */
#define VXDP_FRAME_MAX 65535    /* largest frame or datagram one read returns */
#define VXDP_BATCH_MAX 1024     /* UIO_MAXIOV: the most messages one sendmmsg/recvmmsg takes */

#define VXDP_ENCAP_VXLAN 0
#define VXDP_ENCAP_GRE 1
#define VXDP_ENCAP_GRE_UDP 2

struct vxdp_net_counters {
    uint64_t tap_rx_frames;
    uint64_t tap_rx_bytes;
    uint64_t tap_rx_batches;
    uint64_t tx_packets;
    uint64_t tx_bytes;
    uint64_t flood_frames;
    uint64_t flood_copies;
    uint64_t rx_packets;
    uint64_t rx_bytes;
    uint64_t tap_tx_frames;
    uint64_t tap_tx_bytes;
    uint64_t fdb_learned;
    uint64_t fdb_moved;
    uint64_t fdb_aged;
    uint64_t fdb_full;
    uint64_t drop_malformed;
    uint64_t drop_too_big;
    uint64_t drop_no_peers;
    uint64_t drop_unknown_source;
    uint64_t drop_tap_write_error;
    uint64_t drop_socket_error;
};

struct vxdp_ep_counters {
    uint64_t rx_datagrams;
    uint64_t rx_bytes;
    uint64_t rx_batches;
    uint64_t drop_malformed;
    uint64_t drop_bad_flags;
    uint64_t drop_bad_version;
    uint64_t drop_bad_protocol;
    uint64_t drop_bad_checksum;
    uint64_t drop_unknown_vni;
    uint64_t drop_socket_error;
};

/* An underlay address: family 4 (bytes[0..3], rest zero) or 6. Compared with memcmp, so
 * the padding and unused bytes must be zero (ffi.new and the C code both guarantee it). */
struct vxdp_addr {
    uint8_t family;
    uint8_t pad[3];
    uint8_t bytes[16];
};

struct vxdp_net_params {
    uint32_t vni;
    int32_t encap;              /* VXDP_ENCAP_* */
    struct vxdp_addr local;
    uint16_t port;
    uint16_t sport_min;
    uint16_t sport_max;
    uint8_t learning;
    uint8_t allow_unknown_sources;
    uint8_t nvgre;
    uint8_t strict;
    int32_t mtu;
    double ageing;
    uint32_t max_fdb_entries;
};

struct vxdp_fdb_row {
    uint8_t mac[6];
    uint8_t is_static;
    struct vxdp_addr remote;
    double age;
};

struct vxdp_dp;

const char *vxdp_version(void);
struct vxdp_dp *vxdp_new(int batch);
void vxdp_free(struct vxdp_dp *dp);

int vxdp_set_tx_socket(struct vxdp_dp *dp, int family, int fd);
int vxdp_add_endpoint(struct vxdp_dp *dp, int kind, int fd, int ipv4_header);
int vxdp_remove_endpoint(struct vxdp_dp *dp, int ep);
int vxdp_add_network(struct vxdp_dp *dp, const struct vxdp_net_params *params, int ep, int tap_fd);
int vxdp_remove_network(struct vxdp_dp *dp, int net);
int vxdp_set_tap(struct vxdp_dp *dp, int net, int fd);
int vxdp_set_peers(struct vxdp_dp *dp, int net, const struct vxdp_addr *peers, int n);

int vxdp_fdb_add(struct vxdp_dp *dp, int net, const uint8_t *mac, const struct vxdp_addr *remote);
int vxdp_fdb_remove(struct vxdp_dp *dp, int net, const uint8_t *mac);
int vxdp_fdb_count(struct vxdp_dp *dp, int net);
int vxdp_fdb_dump(struct vxdp_dp *dp, int net, double now, struct vxdp_fdb_row *rows, int max);
int64_t vxdp_age(struct vxdp_dp *dp, double now);
/* The local-MAC table (api.py): source MACs seen on the TAP; rows carry mac and age only. */
int vxdp_local_count(struct vxdp_dp *dp, int net);
int vxdp_local_macs(struct vxdp_dp *dp, int net, double now, struct vxdp_fdb_row *rows, int max);

int vxdp_net_counters(struct vxdp_dp *dp, int net, struct vxdp_net_counters *out);
int vxdp_ep_counters(struct vxdp_dp *dp, int ep, struct vxdp_ep_counters *out);

int vxdp_encap(struct vxdp_dp *dp, int net, uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, int n, double now,
               uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max);
int vxdp_decap(struct vxdp_dp *dp, int ep, const uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, const struct vxdp_addr *srcs, int n,
               double now, int32_t *out_idx, int32_t *out_net, uint32_t *out_off);

int vxdp_pump_tap(struct vxdp_dp *dp, int net, double now);
int vxdp_pump_endpoint(struct vxdp_dp *dp, int ep, double now);

uint32_t vxdp_flow_hash(const uint8_t *frame, size_t len);
uint16_t vxdp_checksum(const uint8_t *data, size_t len);
/* cdef-end */

#endif /* VXDP_FASTPATH_H */
