/*
 * outer.c: egress outer headers, byte for byte what vxlan_dp.wire.encapsulate builds:
 *   IPv4 (RFC 791): 0x45, TOS 0, Identification 0, DF clear (like the kernel's vxlan
 *     `df unset`), TTL 64, header checksum computed so the bytes are right on their own;
 *   IPv6 (RFC 8200): traffic class and flow label 0, hop limit 64;
 *   UDP: source port from the flow hash (RFC 7348 sec. 5, RFC 8086 sec. 3.2), checksum 0
 *     over IPv4 (RFC 7348 sec. 5) and computed over IPv6 (RFC 8200 sec. 8.1; 0 -> 0xffff);
 *   VXLAN: flags 0x08, VNI << 8 (RFC 7348 sec. 5);
 *   GRE: K set, protocol 0x6558, key = VNI, or NVGRE VSID << 8 | FlowID (RFC 7637 sec. 3.2).
 *
 * Split in two so flooding does the per-frame work once: prepare() computes what depends on
 * the frame (flow hash, ports, key, the frame's share of the IPv6 UDP checksum), write()
 * what depends on the destination (IP header, pseudo-header checksum).
 */
#include <string.h>

#include "internal.h"

#define IPPROTO_UDP_ 17
#define IPPROTO_GRE_ 47

static inline void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

bool vxdp_outer_fits(const struct vxdp_net *n, uint32_t frame_len)
{
    /* IPv4 Total Length and IPv6 Payload Length are 16 bits; we never fragment */
    uint64_t l4 = (uint64_t)n->l4hlen + frame_len + (n->esp ? vxdp_esp_overhead_max() : 0);
    return n->family == 4 ? l4 + n->iphl <= 0xFFFF : l4 <= 0xFFFF;
}

void vxdp_outer_prepare(const struct vxdp_net *n, const uint8_t *frame, uint32_t len,
                        struct vxdp_outer *o)
{
    const struct vxdp_net_params *p = &n->p;
    uint32_t fh = 0;
    uint64_t sum = 0;
    if (n->udp || (p->nvgre && p->encap != VXDP_ENCAP_VXLAN))
        fh = vxdp_flow_hash(frame, len);
    if (n->udp && n->family == 6)
        sum = vxdp_csum_partial(frame, len, 0);
    vxdp_outer_prepare_fh(n, fh, len, sum, o);
}

/* Split segments know their hash (the super-frame's: it reads headers only) and their sum
 * (vxdp_split_seg), so nothing here touches the payload again. */
void vxdp_outer_prepare_fh(const struct vxdp_net *n, uint32_t fh, uint32_t len,
                           uint64_t frame_sum, struct vxdp_outer *o)
{
    const struct vxdp_net_params *p = &n->p;
    uint8_t *e = o->l4;
    if (n->udp) {
        uint32_t span = (uint32_t)p->sport_max - p->sport_min + 1;
        put16(e, p->sport_min + fh % span);
        put16(e + 2, p->port);
        put16(e + 4, 16 + len);
        put16(e + 6, 0);
        e += 8;
    }
    if (p->encap == VXDP_ENCAP_VXLAN) {
        put32(e, 0x08000000u);
        put32(e + 4, (p->vni & 0xFFFFFF) << 8);
    } else {
        uint32_t key = p->nvgre ? (p->vni & 0xFFFFFF) << 8 | (fh & 0xFF) : p->vni;
        put16(e, 0x2000);       /* K */
        put16(e + 2, 0x6558);   /* transparent Ethernet bridging */
        put32(e + 4, key);
    }
    o->l4len = (uint32_t)n->l4hlen + len;
    o->l4sum = 0;
    if (n->udp && n->family == 6)       /* l4[] is 16 bytes: the frame's sum adds on */
        o->l4sum = vxdp_csum_partial(o->l4, 16, frame_sum);
}

/* Writes the n->iphl + n->l4hlen bytes of header at h; returns that length. */
int vxdp_outer_write(const struct vxdp_net *n, const struct vxdp_outer *o,
                     const struct vxdp_addr *dst, uint8_t *h)
{
    uint8_t proto = n->udp ? IPPROTO_UDP_ : IPPROTO_GRE_;
    if (n->family == 4) {
        h[0] = 0x45;
        h[1] = 0;
        put16(h + 2, 20 + o->l4len);
        put32(h + 4, 0);        /* Identification 0, flags 0, fragment offset 0 */
        h[8] = 64;
        h[9] = proto;
        put16(h + 10, 0);
        memcpy(h + 12, n->p.local.bytes, 4);
        memcpy(h + 16, dst->bytes, 4);
        uint16_t c = (uint16_t)~vxdp_csum_fold(vxdp_csum_partial(h, 20, 0));
        memcpy(h + 10, &c, 2);  /* host-order sum stored in host order (RFC 1071 2(B)) */
    } else {
        put32(h, 6u << 28);
        put16(h + 4, o->l4len);
        h[6] = proto;
        h[7] = 64;
        memcpy(h + 8, n->p.local.bytes, 16);
        memcpy(h + 24, dst->bytes, 16);
    }
    memcpy(h + n->iphl, o->l4, (size_t)n->l4hlen);
    if (n->udp && n->family == 6) {
        uint8_t tail[8];        /* pseudo-header: upper-layer length, zero, next header */
        put32(tail, o->l4len);
        put32(tail + 4, IPPROTO_UDP_);
        uint64_t s = o->l4sum;
        s = vxdp_csum_partial(h + 8, 32, s);    /* source and destination addresses */
        s = vxdp_csum_partial(tail, 8, s);
        uint16_t c = (uint16_t)~vxdp_csum_fold(s);
        if (c == 0)
            c = 0xFFFF;         /* RFC 768 / RFC 8200 sec. 8.1: 0 means "no checksum" */
        memcpy(h + 40 + 6, &c, 2);
    }
    return n->iphl + n->l4hlen;
}
