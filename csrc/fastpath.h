/*
 * fastpath.h: the public C interface of the vxlan-dp fast path.
 *
 * The block between the "cdef-begin" and "cdef-end" markers is read verbatim by
 * csrc/build_fastpath.py as cffi's cdef, so it holds only what cffi's parser accepts:
 * integer #defines, plain structs and prototypes (no macros with arguments, no #if).
 *
 * Conventions (docs/ARCHITECTURE.md, "C beside Python"):
 * - every call works on caller-owned buffers with explicit lengths;
 * - returns a count (>= 0) or a negative errno, never allocates per packet, never calls back;
 * - a `struct vxdp_dp` is locked internally, so management calls and counter reads from
 *   another thread wait for the batch in progress instead of racing it;
 * - file descriptors are the caller's: nothing here ever closes one. TAP and underlay fds
 *   must be O_NONBLOCK (the pumps read until EAGAIN). The one exception is the dp's own
 *   pool of UDP_SEGMENT send sockets (offloads, below): opened on demand per outer source
 *   port, at most VXDP_GSO_SOCKS of them, closed by vxdp_set_tx_gso(off) and vxdp_free.
 *
 * Offloads (csrc/offload.c, vxlan_dp/wire/offload.py, vxlan_dp/datapath/offload.py):
 * - a TAP attached with vxdp_set_tap_vnet(vnet_hdr = 1) reads and writes a struct
 *   vxdp_vnet_hdr (the kernel's struct virtio_net_hdr, host byte order) before each frame:
 *   super-frames read from it are split into wire frames (TSO/USO done here), frames written
 *   to it are coalesced (GRO done here) for the GSO types in `offload` (VXDP_TAP_*);
 * - vxdp_set_tx_gso(family, 1): split super-frames of UDP encapsulations leave by sendmsg
 *   with UDP_SEGMENT (one call per up to VXDP_GSO_SEGS datagrams) on a UDP socket bound to
 *   (local, flow source port); a refused send (counted) goes through the raw socket
 *   instead; only a path that cannot do UDP_SEGMENT at all (EIO & co) turns it off for
 *   the family, until a re-probe VXDP_GSO_REPROBE seconds later (csrc/fastpath.c);
 * - vxdp_set_endpoint_gro(ep, 1): the endpoint socket has UDP_GRO on; a received message
 *   may hold several datagrams of the cmsg's size, each handled as if received alone.
 * Counters count inner frames and datagrams as they are on the wire, whatever the batching:
 * a 45-segment super-frame is 45 tap_rx_frames and 45 tx_packets, as without offloads.
 *
 * The counter structs list their fields in exactly the order of
 * vxlan_dp.core.counters.NET_COUNTERS / EP_COUNTERS; vxlan_dp/fastpath/_c.py refuses to
 * import a build whose field names differ, and tests/unit/test_fastpath_c.py checks it.
 * The VXDP_* limits and wire numbers below are the ones the Python reference uses too: this
 * header is their home, vxlan_dp/fastpath/api.py's shared_with_c() lists the Python side's
 * values, and _c.py refuses to import a build where any of them differs.
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
#define VXDP_QUEUES_MAX 16      /* queue views (pump threads, TAP queues) per dp */

#define VXDP_SUPER_MAX 65600    /* largest frame a vnet-header TAP read returns: 64 KiB GSO */
#define VXDP_VNET_HDR_LEN 10    /* sizeof(struct virtio_net_hdr), linux/virtio_net.h */
#define VXDP_VNET_F_NEEDS_CSUM 1
#define VXDP_VNET_F_DATA_VALID 2
#define VXDP_GSO_NONE 0
#define VXDP_GSO_TCPV4 1
#define VXDP_GSO_UDP 3          /* UFO: never enabled, refused */
#define VXDP_GSO_TCPV6 4
#define VXDP_GSO_UDP_L4 5
#define VXDP_GSO_ECN 128
#define VXDP_TAP_CSUM 1         /* TUN_F_* (linux/if_tun.h) granted by TUNSETOFFLOAD */
#define VXDP_TAP_TSO4 2
#define VXDP_TAP_TSO6 4
#define VXDP_TAP_USO 96         /* TUN_F_USO4 | TUN_F_USO6: the kernel takes them together */
#define VXDP_GRO_MAX_SEGS 64    /* segments one coalesced frame holds at most */
#define VXDP_GRO_MAX_FRAME 65535
#define VXDP_GSO_SEGS 64        /* UDP_MAX_SEGMENTS: datagrams per UDP_SEGMENT send */
#define VXDP_GSO_SOCKS 64       /* UDP_SEGMENT send sockets kept open at most */
#define VXDP_GSO_RETRY_S 10     /* seconds a send socket whose bind failed is not tried again */
#define VXDP_SEG_HDR_MAX 160    /* inner headers of a segment: 14 + 4 (802.1Q) + 60 + 60 = 138 */

#define VXDP_ENCAP_VXLAN 0
#define VXDP_ENCAP_GRE 1
#define VXDP_ENCAP_GRE_UDP 2

#define VXDP_CIPHER_AES256GCM 1         /* encrypted networks (csrc/esp.c): also the HKDF id */
#define VXDP_CIPHER_CHACHA20POLY1305 2
#define VXDP_ESP_WINDOW 4096    /* anti-replay window, packets (vxlan_dp.wire.esp.REPLAY_WINDOW) */

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
    uint64_t csum_completed;    /* inner TCP/UDP checksums a peer left partial (csum.c) */
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
    uint64_t drop_esp_too_short;
    uint64_t drop_esp_plaintext;
    uint64_t drop_esp_unknown_key;
    uint64_t drop_esp_replay;
    uint64_t drop_esp_auth;
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

/* struct virtio_net_hdr: 10 bytes, no padding, host byte order (tun's legacy default). */
struct vxdp_vnet_hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
};

/* Offload events of the whole dp (vxlan_dp.fastpath.api.OFFLOAD_STATS, same order). */
struct vxdp_offload_stats {
    uint64_t tso_frames;        /* GSO super-frames read from TAPs */
    uint64_t tso_segments;      /* wire frames they were split into */
    uint64_t csum_filled;       /* partial checksums completed in frames without GSO */
    uint64_t vnet_malformed;    /* vnet frames that could not be split (drop_malformed) */
    uint64_t gso_sends;         /* sendmsg calls with UDP_SEGMENT that succeeded */
    uint64_t gso_datagrams;     /* datagrams they carried */
    uint64_t gro_messages;      /* received messages holding several datagrams (UDP_GRO) */
    uint64_t gro_datagrams;     /* datagrams in them */
    uint64_t coalesced_frames;  /* super-frames written to TAPs */
    uint64_t coalesced_segments;/* inner frames merged into them */
    uint64_t tx_gso_fallbacks;  /* UDP_SEGMENT sends refused: sent raw (EIO & co: GSO off a while) */
    uint64_t tap_gso_fallbacks; /* GSO TAP writes refused: coalescing turned off for the TAP */
    uint64_t rx_super_frames;   /* TCP super-frames received from peers (csum.c) */
    uint64_t rx_super_segments; /* the MTU-sized segments they were written to TAPs as */
    int64_t tx_gso_errno;       /* errno of the last refusal, 0 if none */
    int64_t tap_gso_errno;
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
int vxdp_set_peers(struct vxdp_dp *dp, int net, const struct vxdp_addr *peers, int n);
int vxdp_set_tap_vnet(struct vxdp_dp *dp, int net, int fd, int vnet_hdr, unsigned offload);
int vxdp_tap_offload(struct vxdp_dp *dp, int net);
int vxdp_set_endpoint_gro(struct vxdp_dp *dp, int ep, int on);
int vxdp_set_tx_gso(struct vxdp_dp *dp, int family, int on);
int vxdp_tx_gso(struct vxdp_dp *dp, int family);
#define VXDP_GSO_REPROBE 10      /* s: UDP_SEGMENT tried again after the path refused it */
/* Tests: the next `count` UDP_SEGMENT sends fail with errno `err` without being sent. */
int vxdp_inject_gso_error(struct vxdp_dp *dp, int err, int count);
int vxdp_offload_stats(struct vxdp_dp *dp, struct vxdp_offload_stats *out);

int vxdp_fdb_add(struct vxdp_dp *dp, int net, const uint8_t *mac, const struct vxdp_addr *remote);
/* n static entries at once: MAC i is macs[6i..6i+5], its remote remotes[idx[i]] (a config's
 * or control plane's table, FdbTable in Python). Returns n, or -errno with nothing changed
 * when an index or a remote's family is wrong. */
int vxdp_fdb_load(struct vxdp_dp *dp, int net, const uint8_t *macs, const uint32_t *idx, int n,
                  const struct vxdp_addr *remotes, int nremotes);
int vxdp_fdb_remove(struct vxdp_dp *dp, int net, const uint8_t *mac);
/* A control plane's batch in one call: first the `ndel` MACs of `del` are removed (whatever
 * entry they hold), then the n entries of (macs, idx, remotes) are set static as vxdp_fdb_load
 * does; with `replace`, every other static entry is removed as well (a resynchronisation: the
 * table is then the network's whole static set). Returns the static entries now held, or
 * -errno with nothing changed when an index or a remote's family is wrong. */
int vxdp_fdb_update(struct vxdp_dp *dp, int net, const uint8_t *del, int ndel, const uint8_t *macs,
                    const uint32_t *idx, int n, const struct vxdp_addr *remotes, int nremotes, int replace);
int vxdp_fdb_statics(struct vxdp_dp *dp, int net);
/* One entry: 1 and *row filled (age at `now`) if `mac` has one, 0 if not. */
int vxdp_fdb_get(struct vxdp_dp *dp, int net, const uint8_t *mac, double now, struct vxdp_fdb_row *row);
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
int vxdp_encap_vnet(struct vxdp_dp *dp, int net, uint8_t *buf, size_t buflen,
                    const size_t *offs, const uint32_t *lens, int n, double now,
                    uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max);
/* buf is written to: partial inner checksums are completed in place (csum.c). */
int vxdp_decap(struct vxdp_dp *dp, int ep, uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, const struct vxdp_addr *srcs, int n,
               double now, int32_t *out_idx, int32_t *out_net, uint32_t *out_off,
               uint32_t *out_len);

/* Queues (internal.h "queues"): vxdp_set_queues makes n views (grow only); vxdp_queue is
 * view q, a struct vxdp_dp every pump and I/O-free call takes in place of the dp (management
 * calls take the dp). Queue q of a network reads and writes tap fd q, of an endpoint socket q
 * (queue 0's are the ones add_network / add_endpoint / set_tap_vnet set). */
int vxdp_set_queues(struct vxdp_dp *dp, int n);
struct vxdp_dp *vxdp_queue(struct vxdp_dp *dp, int q);
int vxdp_set_tap_queue(struct vxdp_dp *dp, int net, int q, int fd);
int vxdp_set_endpoint_queue(struct vxdp_dp *dp, int ep, int q, int fd);

int vxdp_pump_tap(struct vxdp_dp *dp, int net, double now);
int vxdp_pump_endpoint(struct vxdp_dp *dp, int ep, double now);

/* poll.c: a pump thread's loop (modes and tokens described there) */
#define VXDP_POLL_INTERRUPT 0
#define VXDP_POLL_ADAPTIVE 1
#define VXDP_POLL_BUSY 2
#define VXDP_POLL_TAP 1
#define VXDP_POLL_EP 2
#define VXDP_POLL_WAKE 3
int vxdp_poll_ctl(int epfd, int add, int fd, int kind, int id);
/* adaptive: a round that moved this many bytes is bulk (its wake-up is paid for many times
 * over), and no window opens within VXDP_SPIN_QUIET_NS of one: spinning is for sparse traffic. */
#define VXDP_SPIN_HEAVY_BYTES 16384
#define VXDP_SPIN_QUIET_NS 1000000
/* adaptive's choice after a round that moved `bytes` (> 0) at `now_ns`: poll until the time
 * returned, or block (0). *last_heavy_ns is the caller's state, 0 at first. */
int64_t vxdp_spin_next(int64_t *last_heavy_ns, int64_t now_ns, uint64_t bytes, int64_t spin_ns);
/* One queue's pump thread (vxlan_dp.fastpath.api.POLL_STATS, same order). */
struct vxdp_poll_stats {
    uint64_t moved_bytes;       /* bytes its pumps read from TAPs and underlay sockets */
    uint64_t wakeups;           /* blocking waits that ended with work: a sleep and a wake-up */
    uint64_t spin_windows;      /* adaptive: rounds after which it kept polling instead */
    uint64_t spin_polls;        /* non-blocking polls (adaptive's windows, busy) */
};
int vxdp_poll_stats(struct vxdp_dp *dp, int queue, struct vxdp_poll_stats *out);
/* 0: woken through the VXDP_POLL_WAKE eventfd; 1: a TAP failed, failed[0] its network and
 * failed[1] the errno (take its fd out of the set before calling again); -errno: epoll failed. */
int vxdp_poll_run(struct vxdp_dp *dp, int epfd, int mode, int64_t spin_ns, int32_t *failed);

int vxdp_split(const struct vxdp_vnet_hdr *h, const uint8_t *frame, uint32_t len,
               uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max);
int vxdp_coalesce(const uint8_t *buf, size_t buflen, const size_t *offs, const uint32_t *lens,
                  int n, unsigned types, uint8_t *out, size_t out_cap,
                  struct vxdp_vnet_hdr *hdrs, uint32_t *out_lens, int out_max);

/* Encrypted networks (csrc/esp.c). vxdp_set_esp: keys are n ids and n * 32 key bytes; the
 * network must be the only one of a vxlan / gre-udp endpoint. The first call fixes cipher
 * and boot id; later calls replace the key set (reload, rotation). */
int vxdp_set_esp(struct vxdp_dp *dp, int net, int cipher, const uint8_t *ids,
                 const uint8_t *keys, int n, int send_id, uint32_t boot);
uint32_t vxdp_esp_spi(int key_id, uint32_t boot);
/* One AEAD operation with a 36-byte key | salt (known-answer tests): bytes written or -errno. */
int vxdp_aead_seal(int cipher, const uint8_t *keymat, const uint8_t *iv, const uint8_t *aad,
                   size_t aadlen, const uint8_t *in, size_t len, uint8_t *out);
int vxdp_aead_open(int cipher, const uint8_t *keymat, const uint8_t *iv, const uint8_t *aad,
                   size_t aadlen, const uint8_t *in, size_t len, uint8_t *out);

/* csum.c: 1 if frame's inner L4 checksum was partial and is now complete, else 0. */
int vxdp_csum_complete(uint8_t *frame, uint32_t len);
/* csum.c: segment count (0: not one) of a TCP super-frame over `mtu`, *vh its TSO header. */
int vxdp_super_frame(const uint8_t *frame, uint32_t len, int32_t mtu, struct vxdp_vnet_hdr *vh);
/* The outer source of the last datagram whose checksum a network completed: 1 if any. */
int vxdp_csum_peer(struct vxdp_dp *dp, int net, struct vxdp_addr *out);

uint32_t vxdp_flow_hash(const uint8_t *frame, size_t len);
uint16_t vxdp_checksum(const uint8_t *data, size_t len);
/* tests: 0 turns the vector checksum off, 1 back to what the CPU has, -1 asks; returns 1
 * when checksums now use it */
int vxdp_csum_vector(int on);
/* cdef-end */

#endif /* VXDP_FASTPATH_H */
