/*
 * wire.c: checksums and ingress header validation, mirroring vxlan_dp/wire (packet.py,
 * vxlan.py, gre.py, ip.py) decision for decision, so both backends drop the same datagrams
 * for the same reasons. Pure functions over caller buffers: no state, no allocation.
 *
 * Checksums (RFC 1071): the one's-complement sum is byte-order independent (sec. 2(B)), so
 * we add 32-bit words in host order and store the folded result in host order, which puts
 * the right bytes on the wire. Partial sums of pieces that start at even offsets of one
 * stream may be added together (used for the IPv6 UDP pseudo-header, RFC 8200 sec. 8.1).
 */
#include <string.h>
#include <arpa/inet.h>

#include "internal.h"

uint64_t vxdp_csum_partial(const uint8_t *p, size_t len, uint64_t sum)
{
    uint32_t w32;
    uint16_t w16;

#ifdef __SIZEOF_INT128__
    /* 2^16 = 1 (mod 0xffff): 64-bit words summed into 128 bits and folded back with the
     * end-around carry give the same one's-complement sum as 16-bit words, four times fewer
     * adds (the offload paths sum every payload byte once). Two accumulators keep the adds
     * independent. The result stays below 2^34, so callers may keep adding partial sums. */
    if (len >= 32) {
        unsigned __int128 a = sum, b = 0;
        uint64_t w[4];
        while (len >= 32) {
            memcpy(w, p, 32);
            a += w[0];
            b += w[1];
            a += w[2];
            b += w[3];
            p += 32;
            len -= 32;
        }
        a += b;
        uint64_t lo = (uint64_t)a, hi = (uint64_t)(a >> 64), s = lo + hi;
        s += s < lo;            /* end-around carry */
        sum = (s & 0xFFFFFFFFu) + (s >> 32);
    }
#endif
    while (len >= 4) {
        memcpy(&w32, p, 4);
        sum += w32;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        memcpy(&w16, p, 2);
        sum += w16;
        p += 2;
        len -= 2;
    }
    if (len) {                  /* odd tail: padded with a zero octet (RFC 1071 sec. 4.1) */
        uint8_t t[2] = { p[0], 0 };
        memcpy(&w16, t, 2);
        sum += w16;
    }
    return sum;
}

uint16_t vxdp_csum_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)sum;
}

/* The Internet checksum of a buffer as a number (network order), for the tests. */
uint16_t vxdp_checksum(const uint8_t *data, size_t len)
{
    return ntohs((uint16_t)~vxdp_csum_fold(vxdp_csum_partial(data, len, 0)));
}

bool vxdp_is_multicast(const uint8_t *mac)
{
    return mac[0] & 1;          /* I/G bit: broadcast and multicast are both group addresses */
}

int64_t vxdp_max_frame_len(int32_t mtu, const uint8_t *frame, uint32_t len)
{
    /* one IEEE 802.1Q tag rides on top of the L3 MTU */
    if (len >= 16 && frame[12] == 0x81 && frame[13] == 0x00)
        return (int64_t)mtu + VXDP_ETH_HLEN + 4;
    return (int64_t)mtu + VXDP_ETH_HLEN;
}

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#define GRE_C 0x8000            /* RFC 2784 sec. 2.1: checksum present */
#define GRE_R 0x4000            /* RFC 1701 routing, deprecated by RFC 2784: refused */
#define GRE_K 0x2000            /* RFC 2890 sec. 2.1: key present (our VNI) */
#define GRE_S 0x1000            /* RFC 2890 sec. 2.1: sequence number present */
#define GRE_VERSION 0x0007
#define ETH_P_TEB 0x6558        /* transparent Ethernet bridging */

static int decode_vxlan(const uint8_t *p, uint32_t len, uint32_t *key, uint32_t *off)
{
    if (len < 8)
        return VXDP_E_MALFORMED;
    if (!(p[0] & 0x08))         /* RFC 7348 sec. 5: without I there is no valid VNI */
        return VXDP_E_BAD_FLAGS;
    /* reserved bits are ignored here (RFC 7348 sec. 5): `strict` is a per-network option,
     * checked once the VNI has named the network (fastpath.c, decap_one) */
    *key = (uint32_t)p[4] << 16 | (uint32_t)p[5] << 8 | p[6];
    *off = 8;
    return VXDP_OK;
}

static int decode_gre(const uint8_t *g, uint32_t len, uint32_t *key, uint32_t *hlen)
{
    if (len < 4)
        return VXDP_E_MALFORMED;
    unsigned flags = (unsigned)g[0] << 8 | g[1];
    unsigned proto = (unsigned)g[2] << 8 | g[3];
    if (flags & GRE_VERSION)
        return VXDP_E_BAD_VERSION;
    if (flags & GRE_R)
        return VXDP_E_BAD_FLAGS;
    if (!(flags & GRE_K))
        return VXDP_E_BAD_FLAGS;
    if (proto != ETH_P_TEB)
        return VXDP_E_BAD_PROTOCOL;
    uint32_t off = 4;
    if (flags & GRE_C)
        off += 4;
    uint32_t key_off = off;
    off += 4;
    if (flags & GRE_S)
        off += 4;
    if (len < off)
        return VXDP_E_MALFORMED;
    /* RFC 2784 sec. 2.5: the checksum covers the GRE header and the payload */
    if ((flags & GRE_C) && vxdp_csum_fold(vxdp_csum_partial(g, len, 0)) != 0xFFFF)
        return VXDP_E_BAD_CHECKSUM;
    *key = be32(g + key_off);
    *hlen = off;
    return VXDP_OK;
}

int vxdp_decapsulate(int kind, bool ipv4_header, const uint8_t *p, uint32_t len,
                     uint32_t *key, uint32_t *off)
{
    if (kind == VXDP_ENCAP_VXLAN)
        return decode_vxlan(p, len, key, off);

    uint32_t base = 0;
    if (ipv4_header) {          /* raw IPv4 sockets hand us the IP header too (raw(7)) */
        if (len < 20)
            return VXDP_E_MALFORMED;
        uint32_t ihl = (uint32_t)(p[0] & 0x0F) * 4;
        if (p[0] >> 4 != 4 || ihl < 20 || len < ihl)
            return VXDP_E_MALFORMED;
        if (p[9] != 47)         /* IPPROTO_GRE */
            return VXDP_E_MALFORMED;
        base = ihl;
    }
    uint32_t hlen;
    int r = decode_gre(p + base, len - base, key, &hlen);
    if (r != VXDP_OK)
        return r;
    *off = base + hlen;
    return VXDP_OK;
}
