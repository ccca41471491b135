/*
 * internal.h: the fast path's private state and the helpers shared by its .c files.
 *
 * Invariants:
 * - all memory a pump touches is allocated by management calls (vxdp_new, add_network,
 *   set_peers, fdb_add); the per-packet code only reads and writes it;
 * - an FDB never holds more than max(max_entries, statics added) entries, and its
 *   entry array always has room for max_entries, so learning never allocates;
 * - network and endpoint ids are never reused (like the pure-Python backend).
 */
#ifndef VXDP_INTERNAL_H
#define VXDP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fastpath.h"

#define VXDP_ETH_HLEN 14
#define VXDP_TXQ 512            /* outer packets queued before a sendmmsg (or copy-out) */
#define VXDP_SLOT (VXDP_HEADROOM + VXDP_SUPER_MAX)  /* one rx buffer: headroom + (super-)frame */
#define VXDP_SEG_BUF (VXDP_HDR_MAX + VXDP_SEG_HDR_MAX)  /* outer + inner headers, inner at HDR_MAX */
#define VXDP_RX_CTL 64          /* control buffer per received message: one UDP_GRO cmsg */
#define VXDP_DL_PER_MSG 64      /* datagrams one UDP_GRO message holds at most (UDP_GRO_CNT_MAX) */

/* ---- wire.c: pure functions over bytes, mirroring vxlan_dp/wire ------------------------ */

/* Decapsulation results: 0 or a drop reason, in the order of the ep counters. */
enum vxdp_wire_err {
    VXDP_OK = 0,
    VXDP_E_MALFORMED,
    VXDP_E_BAD_FLAGS,
    VXDP_E_BAD_VERSION,
    VXDP_E_BAD_PROTOCOL,
    VXDP_E_BAD_CHECKSUM,
};

uint64_t vxdp_csum_partial(const uint8_t *p, size_t len, uint64_t sum);
uint16_t vxdp_csum_fold(uint64_t sum);
int vxdp_decapsulate(int kind, bool ipv4_header, const uint8_t *p, uint32_t len,
                     uint32_t *key, uint32_t *off);
bool vxdp_is_multicast(const uint8_t *mac);
int64_t vxdp_max_frame_len(int32_t mtu, const uint8_t *frame, uint32_t len);

/* ---- offload.c: TSO/USO split, GRO coalescing (pure, over caller buffers) ------------- */

/* One super-frame being split: segment i is the s->hlen header bytes vxdp_split_seg writes
 * followed by the payload slice frame + poff + i * gso (the last one may be shorter). */
struct vxdp_split {
    uint32_t l3, l4, thl, hlen;
    uint32_t poff, plen, gso, nseg;
    uint32_t seq;
    uint16_t ident;
    uint8_t version, proto;
};

int vxdp_fill_partial_csum(uint8_t *frame, uint32_t len, uint32_t start, uint32_t off);
/* 0: a GSO frame, s describes it; 1: not GSO, finished in place (partial checksum filled);
 * -1: malformed. */
int vxdp_split_init(struct vxdp_split *s, const struct vxdp_vnet_hdr *h, uint8_t *frame,
                    uint32_t len);
/* Writes segment i's headers at h; returns its payload length. frame_sum (if not NULL): the
 * partial checksum of the whole segment frame, for the IPv6 outer UDP checksum. */
uint32_t vxdp_split_seg(const struct vxdp_split *s, const uint8_t *frame, uint32_t i,
                        uint8_t *h, uint64_t *frame_sum);

struct vxdp_gro_cand;
struct vxdp_gro_slot;
struct vxdp_gro_item {
    int32_t first, last;        /* frame indexes; gro->next chains first -> last */
    uint32_t nsegs, total;      /* segments, payload bytes */
    uint8_t closed;
};
struct vxdp_gro {               /* workspace for batches of up to `cap` frames */
    int cap, nitems;
    struct vxdp_gro_cand *cand;
    int32_t *next;
    struct vxdp_gro_item *items;
    struct vxdp_gro_slot *tab;  /* open runs by flow, open addressing */
    uint32_t mask, gen;
};

int vxdp_gro_init(struct vxdp_gro *g, int cap);
void vxdp_gro_free(struct vxdp_gro *g);
/* Groups frames[0..n) into g->items (in output order); returns their count. `types`:
 * VXDP_TAP_TSO4 / TSO6 / USO, which kinds may coalesce. */
int vxdp_gro_run(struct vxdp_gro *g, const uint8_t *const *frames, const uint32_t *lens,
                 int n, unsigned types);
/* For an item of 2+ segments: its patched headers at h (returns their length) and its
 * virtio-net header; 0 (and a zero header) for a single frame, written as it is. */
int vxdp_gro_header(const struct vxdp_gro *g, int item, const uint8_t *const *frames,
                    uint8_t *h, struct vxdp_vnet_hdr *vh);

/* ---- csum.c ------------------------------------------------------------------------ */

/* Sets the TCP checksum of a super-frame described by vh (vxdp_super_frame) to the
 * pseudo-header sum a GSO write to a TAP wants there. */
void vxdp_super_partial(uint8_t *frame, uint32_t len, const struct vxdp_vnet_hdr *vh);

/* ---- fdb.c: one network's forwarding table ------------------------------------------- */

struct vxdp_fdb_entry {
    uint64_t mac;               /* 48-bit MAC, first octet most significant */
    double seen;                /* time of the last frame from this MAC (learned only) */
    struct vxdp_addr remote;
    bool is_static;
    bool mark;                  /* vxdp_fdb_update(replace): named in the new table */
};

struct vxdp_fdb {
    struct vxdp_fdb_entry *ent; /* dense: [0, count) */
    uint32_t count, cap;        /* cap >= max_entries */
    uint32_t *idx;              /* open addressing, linear probing: entry index + 1, or 0 */
    uint32_t mask;              /* idx has mask + 1 slots, a power of two >= 2 * count */
    uint32_t *spare;            /* the next doubling's target, all zero (fdb.c: Layout) */
    uint32_t reserve;           /* slots reserved in idx and spare: a power of two >= 2 * cap */
    uint32_t max_entries;
    double ageing;
    uint64_t seed;              /* per-table hash key: spoofed MACs cannot pick collisions */
};

enum { VXDP_LEARN_NEW, VXDP_LEARN_MOVED, VXDP_LEARN_REFRESHED, VXDP_LEARN_STATIC,
       VXDP_LEARN_FULL };

int vxdp_fdb_init(struct vxdp_fdb *f, uint32_t max_entries, double ageing);
void vxdp_fdb_destroy(struct vxdp_fdb *f);
const struct vxdp_fdb_entry *vxdp_fdb_lookup(const struct vxdp_fdb *f, uint64_t mac);
int vxdp_fdb_learn(struct vxdp_fdb *f, uint64_t mac, const struct vxdp_addr *remote, double now);
int vxdp_fdb_set_static(struct vxdp_fdb *f, uint64_t mac, const struct vxdp_addr *remote);
bool vxdp_fdb_del(struct vxdp_fdb *f, uint64_t mac);
uint32_t vxdp_fdb_age(struct vxdp_fdb *f, double now);
uint64_t vxdp_mac_key(const uint8_t *mac);

/* ---- fastpath.c / manage.c: the objects -------------------------------------------- */

/* ---- queues (multi-queue TAPs, one pump thread each) ----------------------------------
 *
 * With [daemon] queues = N the dp has N queue views (vxdp_set_queues): view 0 is the dp
 * itself, views 1..N-1 are struct vxdp_dp too, with their own batch buffers, GSO pool and
 * lock, and `main` pointing at view 0, which alone holds the networks and endpoints. Each
 * pump thread works on its own view, so the hot path shares no buffer and no lock:
 * - a pump holds its view's lock for one batch (vxdp_qlock); a management call holds every
 *   view's lock, in order (vxdp_wlock): the Linux lglock pattern (one lock per CPU for
 *   readers, all of them for a writer). While any pump runs, the shared state (networks,
 *   FDB, peers, keymaps) is therefore read-only, for all of them at once;
 * - what a pump writes lives per queue: the counters and the TAP / socket fd of each network
 *   and endpoint (struct vxdp_net_q / vxdp_ep_q, one cache line apart), summed when read;
 * - FDB and local-MAC learning: a refresh (known MAC, same remote) is one aligned 8-byte
 *   store of `seen`, done in place; a new or moved MAC is queued in the view (vxdp_learn)
 *   and applied at the end of the batch under vxdp_wlock, in arrival order, with the very
 *   vxdp_fdb_learn a single pump used to call inline: same entries, same counters;
 * - the few per-network objects pumps must change as they go take their own short lock:
 *   an encrypted network's ESP state (sequence numbers, replay windows) and the ARP/ND
 *   table when snooping or answering.
 * vxdp_cur_q says which view the calling thread is running: set by every entry point that
 * pumps (vxdp_qlock), read through NQ() / EQ(). */
extern _Thread_local int vxdp_cur_q;

struct vxdp_net_q {
    int tap_fd;                 /* this queue's fd of the (multi-queue) TAP; -1: none */
    struct vxdp_net_counters c;
    struct vxdp_addr csum_peer; /* source of the last completed checksum (family 0: none) */
    double csum_at;             /* when: the newest of all queues is the answer */
} __attribute__((aligned(64)));

struct vxdp_ep_q {
    int fd;                     /* this queue's SO_REUSEPORT socket (queue 0: the endpoint's) */
    struct vxdp_ep_counters c;
} __attribute__((aligned(64)));

#define NQ(n) (&(n)->q[vxdp_cur_q])
#define EQ(e) (&(e)->q[vxdp_cur_q])

/* A new or moved MAC seen by a pump, applied at the end of its batch (commit_learned). */
struct vxdp_learn {
    int32_t net;
    bool local;                 /* the local-MAC table, else the FDB */
    uint32_t reps;              /* consecutive identical requests folded into this one */
    uint64_t mac;
    struct vxdp_addr remote;
    double now;
};

struct vxdp_keymap {            /* sorted by key: VNI / VSID -> network id */
    struct { uint32_t key; int32_t net; } *v;
    int n, cap;
};

struct vxdp_esp;

struct vxdp_ep {
    int kind;                   /* VXDP_ENCAP_* */
    int esp_net;                /* the one network of an encrypted endpoint, else -1 */
    bool ipv4_header;           /* raw IPv4 GRE socket: datagrams start with the IP header */
    bool gro;                   /* UDP_GRO on: a message may hold several datagrams */
    struct vxdp_keymap plain, nvgre;
    struct vxdp_ep_q q[VXDP_QUEUES_MAX];
};

struct vxdp_net {
    int id, ep;
    bool vnet;                  /* the TAP fd carries a struct vxdp_vnet_hdr per frame */
    unsigned gro_types;         /* VXDP_TAP_* that writes to the TAP may coalesce into; a pump
                                 * turns it off: atomic (fastpath.c gro_types) */
    struct vxdp_net_params p;
    int family;                 /* 4 or 6, from p.local */
    int iphl, l4hlen;           /* outer IP header; UDP + VXLAN/GRE (16) or GRE alone (8) */
    bool udp;
    struct vxdp_addr *peers;    /* flood list, in configured order */
    struct vxdp_addr *peers_sorted; /* same set, sorted: source checks by bsearch */
    int npeers;
    struct vxdp_fdb fdb;
    struct vxdp_fdb local;      /* local-MAC table: TAP source MACs, last seen (no remote) */
    struct vxdp_esp *esp;       /* encrypted network (esp.c), else NULL */
    struct vxdp_neigh *neigh;   /* ARP/ND suppression (neigh.c); NULL until first used */
    struct vxdp_net_q q[VXDP_QUEUES_MAX];
};

/* The per-frame part of an outer header: everything except the destination address. */
struct vxdp_outer {
    uint32_t l4len;             /* bytes after the IP header: (UDP +) VXLAN/GRE + frame */
    uint8_t l4[16];             /* UDP header (checksum 0) + VXLAN/GRE, or GRE alone */
    uint64_t l4sum;             /* IPv6 + UDP: partial checksum of l4[] and the frame */
};

/* Outgoing packets of one batch, waiting for sendmmsg (or, for vxdp_encap, a copy out). */
struct vxdp_txq {
    int n;
    uint32_t len[VXDP_TXQ];     /* outer packet lengths, for tx_bytes */
    struct mmsghdr msg[VXDP_TXQ];
    struct iovec iov[VXDP_TXQ][2];
    union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa[VXDP_TXQ];
    uint8_t hdr[VXDP_TXQ][VXDP_HEADROOM];   /* per-copy outer headers of flooded frames */
    uint8_t seg[VXDP_TXQ][VXDP_SEG_BUF];    /* outer + inner headers of split segments */
    uint8_t *esp;               /* VXDP_TXQ slots of VXDP_ESP_BUF: sealed packets (esp.c), */
};                              /* mapped when the first network turns encryption on */

/* Segments of one super-frame waiting for a UDP_SEGMENT send: datagram j is
 * hdr[j] + VXDP_HDR_MAX - 8 (encapsulation header + inner headers) then payload[j]. */
struct vxdp_gsob {
    int n;
    uint32_t ihlen;             /* inner header bytes, the same for every segment */
    uint32_t seglen[VXDP_GSO_SEGS];     /* inner frame lengths */
    const uint8_t *payload[VXDP_GSO_SEGS];
    struct vxdp_outer o[VXDP_GSO_SEGS]; /* for the raw fallback */
    uint8_t hdr[VXDP_GSO_SEGS][VXDP_SEG_BUF];
    struct iovec iov[2 * VXDP_GSO_SEGS];
};

struct vxdp_gso_sock {          /* a UDP_SEGMENT send socket bound to (local, port) */
    int fd;                     /* -1: none (free, or bind failed until `retry`) */
    uint16_t port;
    struct vxdp_addr local;
    uint64_t last;              /* use stamp, for LRU eviction */
    double retry;
};

struct vxdp_dp {
    pthread_mutex_t lock;       /* this view's: its pump holds it for a batch */
    struct vxdp_dp *main;       /* view 0, the owner of networks and endpoints (itself there) */
    int qid;                    /* this view's queue */
    int nq;                     /* view 0: how many views (1..VXDP_QUEUES_MAX) */
    struct vxdp_dp *qs[VXDP_QUEUES_MAX];    /* view 0: the views, qs[0] == itself */
    struct vxdp_learn *pend;    /* learning to apply at the end of the batch, dl_cap of them */
    int npend;
    bool wlocked;               /* an I/O-free call holds every lock: learning applies at once */
    int batch;
    int tx_fd[2];               /* egress raw sockets: [0] IPv4, [1] IPv6 */
    struct vxdp_net **nets;     /* by id; NULL once removed */
    int nnets, nets_cap;
    struct vxdp_ep **eps;
    int neps, eps_cap;
    /* Batch buffers, allocated once by vxdp_new (mmap: only touched pages are backed). */
    uint8_t *slab;              /* batch slots of VXDP_SLOT bytes */
    size_t slab_len;
    uint32_t *lens;             /* TAP read lengths */
    struct mmsghdr *rx_msg;
    struct iovec *rx_iov;
    struct sockaddr_in6 *rx_sa;
    int32_t *dl_net;            /* ingress deliveries of one batch: network, frame, length */
    const uint8_t **dl_ptr;
    uint32_t *dl_len;
    int dl_cap;                 /* batch * VXDP_DL_PER_MSG: UDP_GRO messages hold several */
    struct vxdp_txq *txq;
    /* offloads */
    struct vxdp_vnet_hdr *vh;   /* per slot: the virtio-net header of the frame read there */
    uint8_t *rx_ctl;            /* per slot: control buffer for the UDP_GRO cmsg */
    struct vxdp_gro gro;
    const uint8_t **gro_frames; /* one network's deliveries, gathered for vxdp_gro_run */
    uint32_t *gro_lens;
    bool tx_gso[2];             /* UDP_SEGMENT sends on, per family [0] IPv4, [1] IPv6 */
    double tx_gso_retry[2];     /* > 0: off since the path refused it, tried again from then */
    int gso_fail_err, gso_fail_count;   /* vxdp_inject_gso_error: the next sends fail so */
    struct vxdp_gsob *gsob;
    struct vxdp_gso_sock gso_socks[VXDP_GSO_SOCKS];
    uint64_t gso_clock;
    struct vxdp_offload_stats ost;
    /* this view's pump thread; written by it (moved_bytes: by the pumps, under `lock`), read
     * by vxdp_poll_stats from another thread: relaxed atomics, counters need no ordering */
    struct vxdp_poll_stats pst;
};

/* ---- esp.c: encrypted networks (ESP in UDP) ------------------------------------------ */

#define VXDP_ESP_SAS 64         /* receive security associations per network (LRU) */
#define VXDP_ESP_BUF (VXDP_HDR_MAX + VXDP_SEG_HDR_MAX + VXDP_FRAME_MAX + 64)
enum { VXDP_ESP_OK = 0, VXDP_ESP_TOO_SHORT, VXDP_ESP_PLAINTEXT, VXDP_ESP_UNKNOWN_KEY,
       VXDP_ESP_REPLAY, VXDP_ESP_AUTH, VXDP_ESP_MALFORMED };

int vxdp_esp_set(struct vxdp_esp **px, const struct vxdp_addr *local, int cipher,
                 const uint8_t *ids, const uint8_t *keys, int n, int send_id, uint32_t boot);
void vxdp_esp_free(struct vxdp_esp *x);
uint32_t vxdp_esp_overhead_max(void);
uint32_t vxdp_esp_seal(struct vxdp_esp *x, int family, const uint8_t *h, int hlen,
                       const uint8_t *frame, uint32_t len, uint8_t *out);
int vxdp_esp_precheck(const uint8_t *p, uint32_t len);
int vxdp_esp_open(struct vxdp_esp *x, const struct vxdp_addr *src, uint8_t *p, uint32_t len,
                  uint32_t *off, uint32_t *plen);

/* ---- outer.c: egress headers --------------------------------------------------------- */

bool vxdp_outer_fits(const struct vxdp_net *n, uint32_t frame_len);
void vxdp_outer_prepare(const struct vxdp_net *n, const uint8_t *frame, uint32_t len,
                        struct vxdp_outer *o);
/* The same from the frame's flow hash and (IPv6 UDP only) its partial checksum. */
void vxdp_outer_prepare_fh(const struct vxdp_net *n, uint32_t fh, uint32_t len,
                           uint64_t frame_sum, struct vxdp_outer *o);
int vxdp_outer_write(const struct vxdp_net *n, const struct vxdp_outer *o,
                     const struct vxdp_addr *dst, uint8_t *h);

/* ---- gsosock.c: the UDP_SEGMENT send sockets ------------------------------------------ */

/* A socket bound to (local, port), opened on first use; -1 if none can be (bind refused:
 * retried after a while, the caller sends through the raw socket meanwhile). */
int vxdp_gso_socket(struct vxdp_dp *dp, const struct vxdp_addr *local, uint16_t port,
                    double now);
void vxdp_gso_close(struct vxdp_dp *dp, int family);   /* 0: every family */

struct vxdp_net *vxdp_get_net(struct vxdp_dp *dp, int id);     /* any view: main's networks */
void vxdp_wlock(struct vxdp_dp *dp);    /* every view's lock, in order (management) */
void vxdp_wunlock(struct vxdp_dp *dp);
struct vxdp_ep *vxdp_get_ep(struct vxdp_dp *dp, int id);
int vxdp_keymap_find(const struct vxdp_keymap *m, uint32_t key);

#endif /* VXDP_INTERNAL_H */
