/*
 * neigh.c: ARP (RFC 826) and IPv6 ND (RFC 4861) suppression: the neighbour table and the
 * egress hook. Decisions and bytes are those of vxlan_dp/wire/neigh.py and
 * vxlan_dp/core/neigh.py (their docstrings state the rules; tests/unit/test_neigh.py checks
 * that both backends agree).
 *
 * Table: open addressing with linear probing and backward-shift deletion, entries inline,
 * keyed by struct vxdp_addr (family + 16 bytes, so IPv4 and IPv6 never collide) with a
 * per-table random hash seed. At most half full. It grows only in management calls:
 * vxdp_neigh_set for statics, vxdp_neigh_mode reserving room for max_learned snooped
 * entries, so the per-frame hook never allocates. A network without a table (never given
 * an entry or a mode) costs one NULL test per frame.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>

#include "internal.h"
#include "neigh.h"

#define ARP_LEN 42
#define ND_MIN (14 + 40 + 24)
#define OP_REQUEST 1
#define OP_REPLY 2
#define ND_NS 135
#define ND_NA 136
#define OPT_SLLA 1
#define OPT_TLLA 2
#define NA_S 0x40
#define NA_O 0x20

struct ent {
    struct vxdp_addr ip;
    uint8_t mac[6];
    bool used, is_static;
    double seen;
};

struct vxdp_neigh {
    struct ent *slot;
    uint32_t nslots;            /* 0 or a power of two, >= 2 * (count + reserve) */
    uint32_t count, learned, max_learned;
    bool suppress, snoop;
    double ageing;
    uint64_t seed;
    struct vxdp_neigh_counters c;
    pthread_mutex_t lock;       /* pumps of several queues snoop and answer (internal.h) */
};

/* What one frame says, as wire/neigh.py's NeighMsg. */
struct msg {
    int kind;                   /* OP_REQUEST, OP_REPLY, ND_NS, ND_NA */
    const uint8_t *sender_mac;
    struct vxdp_addr sender_ip, target_ip;
    const uint8_t *lladdr;      /* ND option address, or NULL */
};

/* ---- the table ----------------------------------------------------------------------- */

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint32_t home(const struct vxdp_neigh *t, const struct vxdp_addr *a)
{
    uint64_t w[2];
    memcpy(w, a->bytes, 16);
    return (uint32_t)mix(mix(t->seed ^ a->family ^ w[0]) ^ w[1]) & (t->nslots - 1);
}

static inline bool same(const struct vxdp_addr *a, const struct vxdp_addr *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* Slot holding ip, or the free slot where it would go (*found false). nslots > 0. */
static uint32_t probe(const struct vxdp_neigh *t, const struct vxdp_addr *ip, bool *found)
{
    uint32_t i = home(t, ip), mask = t->nslots - 1;
    while (t->slot[i].used) {
        if (same(&t->slot[i].ip, ip)) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = false;
    return i;
}

static struct ent *find(const struct vxdp_neigh *t, const struct vxdp_addr *ip)
{
    if (!t || !t->count)
        return NULL;
    bool found;
    uint32_t i = probe(t, ip, &found);
    return found ? &t->slot[i] : NULL;
}

static int resize(struct vxdp_neigh *t, uint32_t nslots)
{
    struct ent *s = calloc(nslots, sizeof *s);
    if (!s)
        return -ENOMEM;
    struct ent *old = t->slot;
    uint32_t n = t->nslots;
    t->slot = s;
    t->nslots = nslots;
    for (uint32_t k = 0; k < n; k++) {
        if (!old[k].used)
            continue;
        bool found;
        t->slot[probe(t, &old[k].ip, &found)] = old[k];
    }
    free(old);
    return 0;
}

/* Room for `entries` at most half full. */
static int reserve(struct vxdp_neigh *t, uint64_t entries)
{
    uint64_t want = 16;
    while (want < 2 * entries)
        want <<= 1;
    if (want > (1u << 31))
        return -ENOMEM;
    return want > t->nslots ? resize(t, (uint32_t)want) : 0;
}

static uint64_t headroom(const struct vxdp_neigh *t)
{
    return t->snoop ? t->max_learned : 0;
}

static struct vxdp_neigh *table(struct vxdp_net *n)
{
    if (!n->neigh) {
        struct vxdp_neigh *t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->ageing = n->p.ageing;
        pthread_mutex_init(&t->lock, NULL);
        if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != sizeof t->seed)
            t->seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uintptr_t)t;
        n->neigh = t;
    }
    return n->neigh;
}

static void del_at(struct vxdp_neigh *t, uint32_t i)
{
    uint32_t mask = t->nslots - 1, j = i;
    if (!t->slot[i].is_static)
        t->learned--;
    t->count--;
    for (;;) {                  /* backward shift: later chain members move into the hole */
        j = (j + 1) & mask;
        if (!t->slot[j].used)
            break;
        uint32_t h = home(t, &t->slot[j].ip);
        bool movable = j > i ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            t->slot[i] = t->slot[j];
            i = j;
        }
    }
    memset(&t->slot[i], 0, sizeof t->slot[i]);
}

/* Snooping: as core/neigh.py NeighTable.learn, with the counters it implies. */
static void learn(struct vxdp_neigh *t, const struct vxdp_addr *ip, const uint8_t *mac,
                  double now)
{
    bool found = false;
    uint32_t i = t->nslots ? probe(t, ip, &found) : 0;
    if (!found) {
        if (t->learned >= t->max_learned || 2 * ((uint64_t)t->count + 1) > t->nslots) {
            t->c.snoop_full++;
            return;
        }
        struct ent *e = &t->slot[i];
        e->ip = *ip;
        memcpy(e->mac, mac, 6);
        e->used = true;
        e->is_static = false;
        e->seen = now;
        t->count++;
        t->learned++;
        t->c.snooped++;
        return;
    }
    struct ent *e = &t->slot[i];
    if (e->is_static)
        return;
    e->seen = now;
    if (memcmp(e->mac, mac, 6) != 0) {
        memcpy(e->mac, mac, 6);
        t->c.snooped++;
    }
}

uint32_t vxdp_neigh_age(struct vxdp_neigh *t, double now)
{
    if (!t)
        return 0;
    uint32_t aged = 0;
    for (uint32_t i = 0; i < t->nslots;) {
        const struct ent *e = &t->slot[i];
        if (e->used && !e->is_static && now - e->seen >= t->ageing) {
            del_at(t, i);       /* a later entry may have moved into i: look at i again */
            aged++;
        } else {
            i++;
        }
    }
    t->c.aged += aged;
    return aged;
}

void vxdp_neigh_free(struct vxdp_neigh *t)
{
    if (t) {
        pthread_mutex_destroy(&t->lock);
        free(t->slot);
        free(t);
    }
}

/* ---- the messages -------------------------------------------------------------------- */

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void set_addr(struct vxdp_addr *a, int family, const uint8_t *b)
{
    memset(a, 0, sizeof *a);
    a->family = (uint8_t)family;
    memcpy(a->bytes, b, family == 4 ? 4 : 16);
}

static bool all_zero(const uint8_t *p, int len)
{
    for (int i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

/* The ICMPv6 one's-complement sum with its pseudo-header (RFC 8200 sec. 8.1), folded. */
static uint16_t icmp6_sum(const uint8_t *src, const uint8_t *dst, const uint8_t *icmp,
                          uint32_t len)
{
    uint8_t tail[8] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                        (uint8_t)len, 0, 0, 0, 58 };
    uint64_t s = vxdp_csum_partial(src, 16, 0);
    s = vxdp_csum_partial(dst, 16, s);
    s = vxdp_csum_partial(tail, 8, s);
    return vxdp_csum_fold(vxdp_csum_partial(icmp, len, s));
}

static bool parse_arp(const uint8_t *f, uint32_t len, struct msg *m)
{
    static const uint8_t fixed[7] = { 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00 };
    if (len < ARP_LEN || memcmp(f + 14, fixed, sizeof fixed) != 0)
        return false;
    int op = f[21];
    if ((op != OP_REQUEST && op != OP_REPLY) || vxdp_is_multicast(f + 22))
        return false;
    m->kind = op;
    m->sender_mac = f + 22;
    set_addr(&m->sender_ip, 4, f + 28);
    set_addr(&m->target_ip, 4, f + 38);
    m->lladdr = NULL;
    return true;
}

static bool parse_nd(const uint8_t *f, uint32_t len, struct msg *m)
{
    if (len < ND_MIN || f[14] >> 4 != 6 || f[20] != 58 || f[21] != 255)
        return false;
    uint32_t plen = rd16(f + 18);
    if (plen < 24 || 54 + plen > len)
        return false;
    const uint8_t *icmp = f + 54;
    int kind = icmp[0];
    if ((kind != ND_NS && kind != ND_NA) || icmp[1] != 0)
        return false;
    if (icmp6_sum(f + 22, f + 38, icmp, plen) != 0xFFFF)
        return false;
    if (icmp[8] == 0xFF)        /* a multicast target is never a neighbour */
        return false;
    int want = kind == ND_NS ? OPT_SLLA : OPT_TLLA;
    m->lladdr = NULL;
    for (uint32_t at = 24; at < plen;) {
        if (at + 2 > plen || icmp[at + 1] == 0)
            return false;       /* RFC 4861 sec. 4.6: a zero-length option voids it */
        uint32_t olen = icmp[at + 1] * 8u;
        if (at + olen > plen)
            return false;
        if (icmp[at] == want && olen >= 8 && !m->lladdr)
            m->lladdr = icmp + at + 2;
        at += olen;
    }
    m->kind = kind;
    m->sender_mac = f + 6;
    set_addr(&m->sender_ip, 6, f + 22);
    set_addr(&m->target_ip, 6, icmp + 8);
    return true;
}

static bool parse(const uint8_t *f, uint32_t len, struct msg *m)
{
    if (len < 14)
        return false;
    uint16_t type = rd16(f + 12);
    if (type == 0x0806)
        return parse_arp(f, len, m);
    if (type == 0x86DD)
        return parse_nd(f, len, m);
    return false;
}

static bool is_request(const uint8_t *f, const struct msg *m)
{
    if (!vxdp_is_multicast(f))
        return false;
    if (m->kind == OP_REQUEST)  /* not a probe (RFC 5227 sec. 2.1), not gratuitous */
        return !all_zero(m->sender_ip.bytes, 4) && !same(&m->sender_ip, &m->target_ip);
    return m->kind == ND_NS && !all_zero(m->sender_ip.bytes, 16);  /* not DAD */
}

/* (ip, mac) snooping learns from m, as wire/neigh.py announcement(). */
static bool announcement(const struct msg *m, const struct vxdp_addr **ip, const uint8_t **mac)
{
    if (m->kind == OP_REQUEST || m->kind == OP_REPLY) {
        if (all_zero(m->sender_ip.bytes, 4) ||
            (m->kind == OP_REQUEST && !same(&m->sender_ip, &m->target_ip)))
            return false;
        *ip = &m->sender_ip;
        *mac = m->sender_mac;
        return true;
    }
    if (m->kind == ND_NA && m->lladdr && !vxdp_is_multicast(m->lladdr)) {
        *ip = &m->target_ip;
        *mac = m->lladdr;
        return true;
    }
    return false;
}

/* The owner's answer to request m, if it is at `mac`: wire/neigh.py arp_reply /
 * neighbor_advert. Returns its length; out holds VXDP_NEIGH_REPLY_MAX bytes. */
static uint32_t build_reply(const struct msg *m, const uint8_t *mac, uint8_t *out)
{
    memcpy(out, m->sender_mac, 6);
    memcpy(out + 6, mac, 6);
    if (m->kind == OP_REQUEST) {
        static const uint8_t hdr[10] = { 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
                                         0x00, OP_REPLY };
        memcpy(out + 12, hdr, sizeof hdr);
        memcpy(out + 22, mac, 6);
        memcpy(out + 28, m->target_ip.bytes, 4);
        memcpy(out + 32, m->sender_mac, 6);
        memcpy(out + 38, m->sender_ip.bytes, 4);
        return ARP_LEN;
    }
    uint8_t *ip6 = out + 14, *icmp = out + 54;
    out[12] = 0x86;
    out[13] = 0xDD;
    memset(ip6, 0, 40);
    ip6[0] = 0x60;
    ip6[5] = 32;                /* payload: NA 24 + TLLA option 8 */
    ip6[6] = 58;
    ip6[7] = 255;               /* RFC 4861 sec. 7.1.2: receivers drop anything else */
    memcpy(ip6 + 8, m->target_ip.bytes, 16);
    memcpy(ip6 + 24, m->sender_ip.bytes, 16);
    memset(icmp, 0, 32);
    icmp[0] = ND_NA;
    icmp[4] = NA_S | NA_O;
    memcpy(icmp + 8, m->target_ip.bytes, 16);
    icmp[24] = OPT_TLLA;
    icmp[25] = 1;
    memcpy(icmp + 26, mac, 6);
    uint16_t c = (uint16_t)~icmp6_sum(ip6 + 8, ip6 + 24, icmp, 32);
    memcpy(icmp + 2, &c, 2);    /* the sum is in wire order already (wire.c) */
    return 14 + 40 + 32;
}

/* The table's answer to frame, or 0: a request that may be answered, for a known address
 * that is not the requester's own MAC (that one is left to the network). */
static uint32_t answer(const struct vxdp_neigh *t, const uint8_t *f, const struct msg *m,
                       uint8_t *out, bool *unknown)
{
    *unknown = false;
    if (!is_request(f, m))
        return 0;
    const struct ent *e = find(t, &m->target_ip);
    if (!e) {
        *unknown = true;
        return 0;
    }
    if (memcmp(e->mac, m->sender_mac, 6) == 0)
        return 0;
    return build_reply(m, e->mac, out);
}

static bool tap_write(const struct vxdp_net *n, const uint8_t *frame, uint32_t len)
{
    int fd = NQ(n)->tap_fd;
    if (fd < 0)
        return false;
    static const struct vxdp_vnet_hdr none;
    struct iovec iov[2] = { { (void *)&none, VXDP_VNET_HDR_LEN }, { (void *)frame, len } };
    ssize_t w;
    do
        w = n->vnet ? writev(fd, iov, 2) : write(fd, frame, len);
    while (w < 0 && errno == EINTR);
    return w >= 0;
}

static bool egress_locked(struct vxdp_net *n, struct vxdp_neigh *t, const uint8_t *frame,
                          const struct msg *mp, double now)
{
    const struct msg m = *mp;
    const struct vxdp_addr *ip;
    const uint8_t *mac;
    if (t->snoop && announcement(&m, &ip, &mac))
        learn(t, ip, mac, now);
    if (!t->suppress)
        return false;
    uint8_t out[VXDP_NEIGH_REPLY_MAX];
    bool unknown;
    uint32_t rlen = answer(t, frame, &m, out, &unknown);
    if (!rlen) {
        t->c.unknown_flooded += unknown;
        return false;
    }
    if (m.kind == OP_REQUEST)
        t->c.arp_suppressed++;
    else
        t->c.nd_suppressed++;
    if (tap_write(n, out, rlen))
        t->c.replies_sent++;
    else
        t->c.reply_errors++;
    return true;
}

bool vxdp_neigh_egress(struct vxdp_net *n, const uint8_t *frame, uint32_t len, double now)
{
    struct vxdp_neigh *t = n->neigh;
    struct msg m;
    if (!(t->suppress || t->snoop) || !parse(frame, len, &m))
        return false;
    pthread_mutex_lock(&t->lock);
    bool r = egress_locked(n, t, frame, &m, now);
    pthread_mutex_unlock(&t->lock);
    return r;
}

/* ---- management ---------------------------------------------------------------------- */

static bool ip_ok(const struct vxdp_addr *ip)
{
    if (ip->family == 4)
        return all_zero(ip->bytes + 4, 12);
    return ip->family == 6;
}

int vxdp_neigh_mode(struct vxdp_dp *dp, int net, int suppress, int snoop, uint32_t max_learned)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    struct vxdp_neigh *t = n ? table(n) : NULL;
    int r = !n ? -ENOENT : !t ? -ENOMEM : 0;
    if (r == 0 && snoop)
        r = reserve(t, (uint64_t)t->count + 1 + max_learned);
    if (r == 0) {
        t->suppress = suppress != 0;
        t->snoop = snoop != 0;
        t->max_learned = max_learned;
    }
    vxdp_wunlock(dp);
    return r;
}

int vxdp_neigh_set(struct vxdp_dp *dp, int net, const struct vxdp_addr *ip, const uint8_t *mac)
{
    if (!ip_ok(ip) || vxdp_is_multicast(mac))
        return -EINVAL;
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    struct vxdp_neigh *t = n ? table(n) : NULL;
    int r = !n ? -ENOENT : !t ? -ENOMEM : 0;
    if (r == 0)
        r = reserve(t, (uint64_t)t->count + 1 + headroom(t));
    if (r == 0) {
        bool found;
        struct ent *e = &t->slot[probe(t, ip, &found)];
        if (!found) {
            e->ip = *ip;
            e->used = true;
            t->count++;
        } else if (!e->is_static) {
            t->learned--;
        }
        memcpy(e->mac, mac, 6);
        e->is_static = true;
        e->seen = 0.0;
    }
    vxdp_wunlock(dp);
    return r;
}

int vxdp_neigh_remove(struct vxdp_dp *dp, int net, const struct vxdp_addr *ip)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? 0 : -ENOENT;
    struct vxdp_neigh *t = n ? n->neigh : NULL;
    if (t && t->count) {
        bool found;
        uint32_t i = probe(t, ip, &found);
        if (found) {
            del_at(t, i);
            r = 1;
        }
    }
    vxdp_wunlock(dp);
    return r;
}

int vxdp_neigh_count(struct vxdp_dp *dp, int net)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = !n ? -ENOENT : n->neigh ? (int)n->neigh->count : 0;
    vxdp_wunlock(dp);
    return r;
}

static int row_cmp(const void *a, const void *b)
{
    return memcmp(&((const struct vxdp_neigh_row *)a)->ip,
                  &((const struct vxdp_neigh_row *)b)->ip, sizeof(struct vxdp_addr));
}

int vxdp_neigh_dump(struct vxdp_dp *dp, int net, double now, struct vxdp_neigh_row *rows, int max)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        vxdp_wunlock(dp);
        return -ENOENT;
    }
    const struct vxdp_neigh *t = n->neigh;
    int k = 0;
    for (uint32_t i = 0; t && i < t->nslots && k < max; i++) {
        const struct ent *e = &t->slot[i];
        if (!e->used)
            continue;
        struct vxdp_neigh_row *r = &rows[k++];
        memset(r, 0, sizeof *r);
        r->ip = e->ip;
        memcpy(r->mac, e->mac, 6);
        r->is_static = e->is_static;
        double age = now - e->seen;
        r->age = e->is_static || !(age > 0.0) ? 0.0 : age;
    }
    vxdp_wunlock(dp);
    qsort(rows, (size_t)k, sizeof *rows, row_cmp);  /* IPv4 first, then by address */
    return k;
}

int vxdp_neigh_counters(struct vxdp_dp *dp, int net, struct vxdp_neigh_counters *out)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (n) {
        if (n->neigh)
            *out = n->neigh->c;
        else
            memset(out, 0, sizeof *out);
    }
    vxdp_wunlock(dp);
    return n ? 0 : -ENOENT;
}

int vxdp_neigh_answer(struct vxdp_dp *dp, int net, const uint8_t *frame, uint32_t len,
                      uint8_t *out, uint32_t cap)
{
    if (cap < VXDP_NEIGH_REPLY_MAX)
        return -EINVAL;
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? 0 : -ENOENT;
    struct msg m;
    bool unknown;
    if (n && parse(frame, len, &m))
        r = (int)answer(n->neigh, frame, &m, out, &unknown);
    vxdp_wunlock(dp);
    return r;
}
