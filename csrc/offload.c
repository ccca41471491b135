/*
 * offload.c: TSO/USO split and GRO coalescing over inner Ethernet frames, decision for
 * decision what vxlan_dp/wire/offload.py does (its docstring states the rules; the
 * differential tests in tests/unit/test_offload.py hold the two together).
 *
 * split: a super-frame read from a vnet-header TAP -> per-segment headers. The payload is
 * never copied here: vxdp_split_seg writes segment i's headers (lengths, IPv4 ID + i and
 * header checksum, TCP sequence, FIN/PSH only on the last and CWR only on the first segment,
 * full TCP/UDP checksum) into a caller buffer, and the segment's payload is the slice
 * frame + poff + i * gso of the super-frame, so the pump sends {headers, slice} iovecs.
 *
 * coalesce: one batch of received inner frames -> items: runs of in-order segments of one
 * flow, or single frames passed through. Per-frame parse once, an open-addressing table of
 * open runs by flow (reset by generation, no memset per batch), and a next[] chain per run;
 * everything lives in a workspace allocated once (vxdp_gro_init), so the pump never
 * allocates. The kernel's GRO rules it follows: net/ipv4/tcp_offload.c tcp_gro_receive,
 * net/ipv4/af_inet.c inet_gro_receive, net/ipv4/udp_offload.c udp_gro_receive.
 *
 * Checksums are sums of 16-bit words in host order (RFC 1071 sec. 2(B)), folded with
 * vxdp_csum_fold; stored values are the complement, in host order, so the bytes are right.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "internal.h"

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_CWR 0x80
#define PROTO_TCP 6
#define PROTO_UDP 17

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wr16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Stores the complement of a folded sum at p (host-order sum, host-order store). */
static inline void put_csum(uint8_t *p, uint64_t sum, bool udp)
{
    uint16_t c = (uint16_t)~vxdp_csum_fold(sum);
    if (udp && c == 0)
        c = 0xFFFF;             /* RFC 768: 0 means "no checksum" */
    memcpy(p, &c, 2);
}

/* Partial sum of the pseudo-header (RFC 793 sec. 3.1, RFC 768, RFC 8200 sec. 8.1). */
static uint64_t pseudo_sum(int version, const uint8_t *src, const uint8_t *dst, uint8_t proto,
                           uint32_t l4len)
{
    uint8_t tail[8];
    int alen = version == 4 ? 4 : 16;
    uint64_t s = vxdp_csum_partial(src, (size_t)alen, 0);
    s = vxdp_csum_partial(dst, (size_t)alen, s);
    if (version == 4) {
        tail[0] = 0;
        tail[1] = proto;
        wr16(tail + 2, l4len);
        return vxdp_csum_partial(tail, 4, s);
    }
    wr32(tail, l4len);
    tail[4] = tail[5] = tail[6] = 0;
    tail[7] = proto;
    return vxdp_csum_partial(tail, 8, s);
}

/* ---- parsing ------------------------------------------------------------------------- */

struct l4info {
    uint32_t l3, l4;
    int version;
    uint8_t proto;
};

/* IP version, L3/L4 offsets of an Ethernet frame (one 802.1Q tag if `vlan`); false if not
 * IPv4/IPv6 or too short. IPv6 extension headers are not walked. */
static bool parse_ip(const uint8_t *f, uint32_t len, bool vlan, struct l4info *p)
{
    if (len < VXDP_ETH_HLEN)
        return false;
    uint32_t l3 = VXDP_ETH_HLEN;
    unsigned et = rd16(f + 12);
    if (et == 0x8100 && vlan) {
        if (len < 18)
            return false;
        l3 = 18;
        et = rd16(f + 16);
    }
    if (et == 0x0800) {
        if (len < l3 + 20 || f[l3] >> 4 != 4)
            return false;
        uint32_t ihl = (uint32_t)(f[l3] & 0x0F) * 4;
        if (ihl < 20 || len < l3 + ihl)
            return false;
        p->l3 = l3;
        p->l4 = l3 + ihl;
        p->version = 4;
        p->proto = f[l3 + 9];
        return true;
    }
    if (et == 0x86DD) {
        if (len < l3 + 40 || f[l3] >> 4 != 6)
            return false;
        p->l3 = l3;
        p->l4 = l3 + 40;
        p->version = 6;
        p->proto = f[l3 + 6];
        return true;
    }
    return false;
}

static inline const uint8_t *src_of(const uint8_t *f, const struct l4info *p)
{
    return f + p->l3 + (p->version == 4 ? 12 : 8);
}

static inline const uint8_t *dst_of(const uint8_t *f, const struct l4info *p)
{
    return f + p->l3 + (p->version == 4 ? 16 : 24);
}

/* ---- partial checksums ----------------------------------------------------------------- */

int vxdp_fill_partial_csum(uint8_t *frame, uint32_t len, uint32_t start, uint32_t off)
{
    uint64_t at = (uint64_t)start + off;
    if (start >= len || at + 2 > len)
        return -1;
    /* the field holds the pseudo-header sum; the "device" sums on from csum_start
     * (include/linux/skbuff.h, CHECKSUM_PARTIAL). A zero result becomes 0xffff in a UDP
     * header only (RFC 768); TCP keeps 0x0000 (RFC 1624 sec. 3). */
    struct l4info p;
    bool udp = off == 6 && parse_ip(frame, len, true, &p) && p.proto == PROTO_UDP && p.l4 == start;
    put_csum(frame + at, vxdp_csum_partial(frame + start, len - start, 0), udp);
    return 0;
}

/* ---- split ---------------------------------------------------------------------------- */

int vxdp_split_init(struct vxdp_split *s, const struct vxdp_vnet_hdr *h, uint8_t *frame,
                    uint32_t len)
{
    unsigned gso = h->gso_type & (uint8_t)~VXDP_GSO_ECN;
    memset(s, 0, sizeof *s);
    if (gso == VXDP_GSO_NONE) {
        if ((h->flags & VXDP_VNET_F_NEEDS_CSUM) &&
            vxdp_fill_partial_csum(frame, len, h->csum_start, h->csum_offset) < 0)
            return -1;
        return 1;
    }
    if (gso != VXDP_GSO_TCPV4 && gso != VXDP_GSO_TCPV6 && gso != VXDP_GSO_UDP_L4)
        return -1;
    if (h->gso_size == 0)
        return -1;
    struct l4info p;
    if (!parse_ip(frame, len, true, &p))
        return -1;
    uint8_t proto = gso == VXDP_GSO_UDP_L4 ? PROTO_UDP : PROTO_TCP;
    if (p.proto != proto || (gso == VXDP_GSO_TCPV4 && p.version != 4) ||
        (gso == VXDP_GSO_TCPV6 && p.version != 6))
        return -1;
    if (p.version == 4 && (rd16(frame + p.l3 + 6) & 0x3FFF))
        return -1;              /* a fragment */
    uint32_t thl;
    if (proto == PROTO_TCP) {
        if (len < p.l4 + 20)
            return -1;
        thl = (uint32_t)(frame[p.l4 + 12] >> 4) * 4;
        if (thl < 20 || len < p.l4 + thl)
            return -1;
        s->seq = rd32(frame + p.l4 + 4);
    } else {
        thl = 8;
        if (len < p.l4 + 8)
            return -1;
    }
    s->l3 = p.l3;
    s->l4 = p.l4;
    s->thl = thl;
    s->hlen = p.l4 + thl;
    s->poff = s->hlen;
    s->plen = len - s->hlen;
    s->gso = h->gso_size;
    s->nseg = s->plen ? (s->plen + s->gso - 1) / s->gso : 1;
    s->version = (uint8_t)p.version;
    s->proto = proto;
    s->ident = p.version == 4 ? rd16(frame + p.l3 + 4) : 0;
    return 0;
}

uint32_t vxdp_split_seg(const struct vxdp_split *s, const uint8_t *frame, uint32_t i,
                        uint8_t *h, uint64_t *frame_sum)
{
    uint32_t start = i * s->gso;
    uint32_t chunk = s->plen - start < s->gso ? s->plen - start : s->gso;
    if (s->plen == 0)
        chunk = 0;
    uint32_t l4len = s->thl + chunk;
    memcpy(h, frame, s->hlen);
    uint8_t *ip = h + s->l3, *l4 = h + s->l4;
    if (s->version == 4) {
        wr16(ip + 2, s->l4 - s->l3 + l4len);
        wr16(ip + 4, (uint16_t)(s->ident + i));
        wr16(ip + 10, 0);
        uint16_t c = (uint16_t)~vxdp_csum_fold(vxdp_csum_partial(ip, s->l4 - s->l3, 0));
        memcpy(ip + 10, &c, 2);
    } else {
        wr16(ip + 4, l4len);
    }
    uint8_t *field;
    if (s->proto == PROTO_TCP) {
        wr32(l4 + 4, s->seq + start);
        if (i + 1 < s->nseg)
            l4[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
        if (i > 0)
            l4[13] &= (uint8_t)~TCP_CWR;
        field = l4 + 16;
    } else {
        wr16(l4 + 4, l4len);
        field = l4 + 6;
    }
    field[0] = field[1] = 0;
    const uint8_t *payload = frame + s->poff + start;
    uint64_t psum = vxdp_csum_partial(payload, chunk, 0);
    uint64_t sum = pseudo_sum(s->version, h + s->l3 + (s->version == 4 ? 12 : 8),
                              h + s->l3 + (s->version == 4 ? 16 : 24), s->proto, l4len);
    sum = vxdp_csum_partial(l4, s->thl, sum);
    put_csum(field, sum + psum, s->proto == PROTO_UDP);
    if (frame_sum)              /* hlen is even: the two sums add up (RFC 1071 sec. 2(A)) */
        *frame_sum = vxdp_csum_partial(h, s->hlen, psum);
    return chunk;
}

int vxdp_split(const struct vxdp_vnet_hdr *h, const uint8_t *frame, uint32_t len,
               uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max)
{
    if (len > VXDP_SUPER_MAX || out_max < 0)
        return -EINVAL;
    uint8_t *copy = malloc(len ? len : 1);  /* I/O-free helper for tests: may allocate */
    if (!copy)
        return -ENOMEM;
    memcpy(copy, frame, len);
    struct vxdp_split s;
    int r = vxdp_split_init(&s, h, copy, len);
    if (r < 0) {
        free(copy);
        return -EBADMSG;
    }
    if (r == 1) {
        if (out_max < 1 || out_cap < len) {
            free(copy);
            return -ENOBUFS;
        }
        memcpy(out, copy, len);
        out_lens[0] = len;
        free(copy);
        return 1;
    }
    size_t used = 0;
    for (uint32_t i = 0; i < s.nseg; i++) {
        uint32_t start = i * s.gso;
        uint32_t chunk = s.plen ? (s.plen - start < s.gso ? s.plen - start : s.gso) : 0;
        if ((int)i >= out_max || used + s.hlen + chunk > out_cap) {
            free(copy);
            return -ENOBUFS;
        }
        vxdp_split_seg(&s, copy, i, out + used, NULL);
        memcpy(out + used + s.hlen, copy + s.poff + start, chunk);
        out_lens[i] = s.hlen + chunk;
        used += s.hlen + chunk;
    }
    free(copy);
    return (int)s.nseg;
}

/* ---- coalesce -------------------------------------------------------------------------- */

struct vxdp_gro_cand {
    uint8_t cand;               /* may join or start a run */
    uint8_t has_flow;           /* TCP/UDP with ports: may end its flow's open run */
    uint8_t version, proto;
    uint8_t psh;
    uint16_t l3, l4, thl;
    uint16_t ident;
    uint32_t seq, plen;
    uint32_t hash;              /* of the flow */
};

struct vxdp_gro_slot {
    uint32_t gen;
    int32_t item;
};

int vxdp_gro_init(struct vxdp_gro *g, int cap)
{
    memset(g, 0, sizeof *g);
    if (cap < 1)
        cap = 1;
    uint32_t slots = 16;
    while (slots < 2u * (uint32_t)cap)
        slots <<= 1;
    g->cap = cap;
    g->cand = calloc((size_t)cap, sizeof *g->cand);
    g->next = calloc((size_t)cap, sizeof *g->next);
    g->items = calloc((size_t)cap, sizeof *g->items);
    g->tab = calloc(slots, sizeof *g->tab);
    g->mask = slots - 1;
    if (!g->cand || !g->next || !g->items || !g->tab) {
        vxdp_gro_free(g);
        return -ENOMEM;
    }
    return 0;
}

void vxdp_gro_free(struct vxdp_gro *g)
{
    free(g->cand);
    free(g->next);
    free(g->items);
    free(g->tab);
    memset(g, 0, sizeof *g);
}

static bool l4_csum_ok(const uint8_t *f, uint32_t len, const struct l4info *p)
{
    uint32_t l4len = len - p->l4;
    uint64_t s = pseudo_sum(p->version, src_of(f, p), dst_of(f, p), p->proto, l4len);
    return vxdp_csum_fold(vxdp_csum_partial(f + p->l4, l4len, s)) == 0xFFFF;
}

static uint32_t flow_hash(const uint8_t *f, const struct l4info *p)
{
    int alen = p->version == 4 ? 4 : 16;
    uint32_t h = 0x811C9DC5u ^ p->proto;
    const uint8_t *a = src_of(f, p);
    for (int i = 0; i < 2 * alen; i++)  /* src and dst are adjacent in both versions */
        h = (h ^ a[i]) * 0x01000193u;
    for (int i = 0; i < 4; i++)
        h = (h ^ f[p->l4 + i]) * 0x01000193u;
    return h ^ (h >> 15);
}

/* Fills c for one frame: is it a candidate, which flow is it. Mirrors _candidate/_flow_of. */
static void classify_frame(const uint8_t *f, uint32_t len, unsigned types,
                           struct vxdp_gro_cand *c)
{
    memset(c, 0, sizeof *c);
    struct l4info p;
    if (!parse_ip(f, len, false, &p))
        return;
    if ((p.proto == PROTO_TCP || p.proto == PROTO_UDP) && len >= p.l4 + 4 &&
        !(p.version == 4 && (rd16(f + p.l3 + 6) & 0x1FFF))) {
        c->has_flow = 1;
        c->hash = flow_hash(f, &p);
    }
    c->version = (uint8_t)p.version;
    c->proto = p.proto;
    c->l3 = (uint16_t)p.l3;
    c->l4 = (uint16_t)p.l4;
    if (p.version == 4) {
        if (p.l4 - p.l3 != 20 || rd16(f + p.l3 + 2) != len - p.l3 || (rd16(f + p.l3 + 6) & 0x3FFF))
            return;
        if (vxdp_csum_fold(vxdp_csum_partial(f + p.l3, 20, 0)) != 0xFFFF)
            return;
        c->ident = rd16(f + p.l3 + 4);
    } else {
        if (rd16(f + p.l3 + 4) != len - p.l4)
            return;
    }
    if (p.proto == PROTO_TCP &&
        (types & (p.version == 4 ? VXDP_TAP_TSO4 : VXDP_TAP_TSO6))) {
        if (len < p.l4 + 20)
            return;
        uint32_t thl = (uint32_t)(f[p.l4 + 12] >> 4) * 4;
        uint8_t fl = f[p.l4 + 13];
        if (thl < 20 || len <= p.l4 + thl)
            return;
        if (!(fl & TCP_ACK) || (fl & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_CWR)))
            return;
        c->thl = (uint16_t)thl;
        c->seq = rd32(f + p.l4 + 4);
        c->psh = (fl & TCP_PSH) != 0;
    } else if (p.proto == PROTO_UDP && (types & VXDP_TAP_USO)) {
        if (len <= p.l4 + 8 || rd16(f + p.l4 + 4) != len - p.l4 || rd16(f + p.l4 + 6) == 0)
            return;
        c->thl = 8;
    } else {
        return;
    }
    if (!l4_csum_ok(f, len, &p))
        return;
    c->plen = len - p.l4 - c->thl;
    c->cand = 1;
}

static bool same_flow(const uint8_t *a, const struct vxdp_gro_cand *ca,
                      const uint8_t *b, const struct vxdp_gro_cand *cb)
{
    if (ca->hash != cb->hash || ca->version != cb->version || ca->proto != cb->proto)
        return false;
    size_t alen = ca->version == 4 ? 8 : 32;
    size_t off = ca->version == 4 ? 12 : 8;
    return memcmp(a + ca->l3 + off, b + cb->l3 + off, alen) == 0 &&
           memcmp(a + ca->l4, b + cb->l4, 4) == 0;
}

/* Headers equal but for lengths, IDs, checksums, sequence and PSH (the key of _candidate). */
static bool same_key(const uint8_t *a, const struct vxdp_gro_cand *ca,
                     const uint8_t *b, const struct vxdp_gro_cand *cb)
{
    if (memcmp(a, b, VXDP_ETH_HLEN) != 0 || ca->thl != cb->thl)
        return false;
    const uint8_t *ia = a + ca->l3, *ib = b + cb->l3;
    if (ca->version == 4) {
        if (ia[1] != ib[1] || (ia[6] & 0xE0) != (ib[6] & 0xE0) || ia[8] != ib[8])
            return false;
    } else if (memcmp(ia, ib, 4) != 0 || ia[7] != ib[7]) {
        return false;
    }
    const uint8_t *ta = a + ca->l4, *tb = b + cb->l4;
    if (ca->proto == PROTO_UDP)
        return true;            /* ports: same_flow */
    return memcmp(ta + 8, tb + 8, 5) == 0 &&                    /* ack, data offset */
           (ta[13] & ~TCP_PSH) == (tb[13] & ~TCP_PSH) &&
           memcmp(ta + 14, tb + 14, 2) == 0 &&                  /* window */
           memcmp(ta + 20, tb + 20, (size_t)ca->thl - 20) == 0; /* options */
}

/* The table slot of frame idx's flow: the flow's latest run (open or closed), or the free
 * slot to put one in. Slots are never emptied within a batch (a closed run stays as the
 * flow's tombstone and its next run takes the slot over), so linear probing stays sound. */
static struct vxdp_gro_slot *lookup(struct vxdp_gro *g, const uint8_t *const *frames,
                                    int idx)
{
    const struct vxdp_gro_cand *c = &g->cand[idx];
    for (uint32_t i = c->hash & g->mask;; i = (i + 1) & g->mask) {
        struct vxdp_gro_slot *s = &g->tab[i];
        if (s->gen != g->gen)
            return s;
        int32_t first = g->items[s->item].first;
        if (same_flow(frames[first], &g->cand[first], frames[idx], c))
            return s;
    }
}

int vxdp_gro_run(struct vxdp_gro *g, const uint8_t *const *frames, const uint32_t *lens,
                 int n, unsigned types)
{
    if (n > g->cap)
        return -ENOBUFS;
    if (++g->gen == 0) {        /* wrapped: stale slots could look current */
        memset(g->tab, 0, (size_t)(g->mask + 1) * sizeof *g->tab);
        g->gen = 1;
    }
    g->nitems = 0;
    for (int i = 0; i < n; i++) {
        struct vxdp_gro_cand *c = &g->cand[i];
        classify_frame(frames[i], lens[i], types, c);
        g->next[i] = -1;
        struct vxdp_gro_slot *slot = c->has_flow ? lookup(g, frames, i) : NULL;
        struct vxdp_gro_item *it = slot && slot->gen == g->gen ? &g->items[slot->item] : NULL;
        if (it && it->closed)
            it = NULL;
        if (c->cand && it) {
            const struct vxdp_gro_cand *c0 = &g->cand[it->first];
            uint32_t frame_len = lens[it->first] + it->total - c0->plen + c->plen;
            if (g->cand[it->first].cand && same_key(frames[it->first], c0, frames[i], c) &&
                c->plen <= c0->plen && it->nsegs < VXDP_GRO_MAX_SEGS &&
                frame_len <= VXDP_GRO_MAX_FRAME &&
                (c0->proto != PROTO_TCP || c->seq == c0->seq + it->total) &&
                (c->version == 6 || c->ident == (uint16_t)(c0->ident + it->nsegs))) {
                g->next[it->last] = i;
                it->last = i;
                it->nsegs++;
                it->total += c->plen;
                if (c->psh || c->plen < c0->plen)
                    it->closed = 1;     /* its slot stays: the flow's next run reuses it */
                continue;
            }
        }
        if (it)
            it->closed = 1;
        struct vxdp_gro_item *ni = &g->items[g->nitems];
        ni->first = ni->last = i;
        ni->nsegs = 1;
        ni->total = c->plen;
        ni->closed = !c->cand || c->psh;
        if (slot && !ni->closed) {
            slot->gen = g->gen;
            slot->item = g->nitems;
        }
        g->nitems++;
    }
    return g->nitems;
}

int vxdp_gro_header(const struct vxdp_gro *g, int item, const uint8_t *const *frames,
                    uint8_t *h, struct vxdp_vnet_hdr *vh)
{
    const struct vxdp_gro_item *it = &g->items[item];
    memset(vh, 0, sizeof *vh);
    if (it->nsegs < 2)
        return 0;
    const struct vxdp_gro_cand *c = &g->cand[it->first];
    const uint8_t *f = frames[it->first];
    uint32_t hlen = (uint32_t)c->l4 + c->thl;
    uint32_t l4len = c->thl + it->total;
    memcpy(h, f, hlen);
    uint8_t *ip = h + c->l3, *l4 = h + c->l4;
    if (c->version == 4) {
        wr16(ip + 2, 20 + l4len);
        wr16(ip + 10, 0);
        uint16_t s = (uint16_t)~vxdp_csum_fold(vxdp_csum_partial(ip, 20, 0));
        memcpy(ip + 10, &s, 2);
    } else {
        wr16(ip + 4, l4len);
    }
    uint8_t *field;
    if (c->proto == PROTO_TCP) {
        for (int32_t k = it->first; k >= 0; k = g->next[k])
            if (g->cand[k].psh)
                l4[13] |= TCP_PSH;
        field = l4 + 16;
        vh->gso_type = c->version == 4 ? VXDP_GSO_TCPV4 : VXDP_GSO_TCPV6;
    } else {
        wr16(l4 + 4, l4len);
        field = l4 + 6;
        vh->gso_type = VXDP_GSO_UDP_L4;
    }
    /* CHECKSUM_PARTIAL: the folded pseudo-header sum, not inverted */
    struct l4info p = { c->l3, c->l4, c->version, c->proto };
    uint16_t ps = vxdp_csum_fold(pseudo_sum(c->version, src_of(h, &p), dst_of(h, &p), c->proto,
                                            l4len));
    memcpy(field, &ps, 2);
    vh->flags = VXDP_VNET_F_NEEDS_CSUM;
    vh->hdr_len = (uint16_t)hlen;
    vh->gso_size = (uint16_t)c->plen;
    vh->csum_start = c->l4;
    vh->csum_offset = (uint16_t)(field - l4);
    return (int)hlen;
}

int vxdp_coalesce(const uint8_t *buf, size_t buflen, const size_t *offs, const uint32_t *lens,
                  int n, unsigned types, uint8_t *out, size_t out_cap,
                  struct vxdp_vnet_hdr *hdrs, uint32_t *out_lens, int out_max)
{
    if (n < 0)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (offs[i] > buflen || lens[i] > buflen - offs[i])
            return -EINVAL;
    struct vxdp_gro g;
    const uint8_t **frames = malloc((size_t)(n ? n : 1) * sizeof *frames);
    if (!frames || vxdp_gro_init(&g, n) < 0) {
        free(frames);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++)
        frames[i] = buf + offs[i];
    int r = vxdp_gro_run(&g, frames, lens, n, types);
    size_t used = 0;
    uint8_t h[VXDP_SEG_HDR_MAX];
    for (int k = 0; r >= 0 && k < g.nitems; k++) {
        const struct vxdp_gro_item *it = &g.items[k];
        if (k >= out_max) {
            r = -ENOBUFS;
            break;
        }
        int hlen = vxdp_gro_header(&g, k, frames, h, &hdrs[k]);
        uint32_t total = hlen ? (uint32_t)hlen + it->total : lens[it->first];
        if (used + total > out_cap) {
            r = -ENOBUFS;
            break;
        }
        if (!hlen) {
            memcpy(out + used, frames[it->first], lens[it->first]);
        } else {
            memcpy(out + used, h, (size_t)hlen);
            size_t pos = used + (size_t)hlen;
            for (int32_t j = it->first; j >= 0; j = g.next[j]) {
                uint32_t skip = (uint32_t)g.cand[j].l4 + g.cand[j].thl;
                memcpy(out + pos, frames[j] + skip, lens[j] - skip);
                pos += lens[j] - skip;
            }
        }
        out_lens[k] = total;
        used += total;
    }
    if (r >= 0)
        r = g.nitems;
    vxdp_gro_free(&g);
    free(frames);
    return r;
}
