/*
 * flowhash.c: the flow hash of an inner frame, for the outer UDP source port and the NVGRE
 * FlowID. It must equal vxlan_dp/wire/flowhash.py bit for bit (the differential tests
 * compare them): FNV-1a 32 over
 *   dst MAC, src MAC, ethertype,
 *   IPv4: protocol, src, dst, and for TCP/UDP/SCTP first fragments the two ports,
 *   IPv6: next header, src, dst, and for TCP/UDP/SCTP the two ports,
 * folded h ^ h >> 16. Frames too short for a layer are hashed up to the previous one.
 * RFC 7348 sec. 5 / RFC 8086 sec. 3: one flow -> one source port, so ECMP keeps its order.
 */
#include "internal.h"

#define FNV_OFFSET 0x811C9DC5u
#define FNV_PRIME 0x01000193u

static inline uint32_t fnv(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

static inline bool has_ports(uint8_t proto)
{
    return proto == 6 || proto == 17 || proto == 132;   /* TCP, UDP, SCTP */
}

uint32_t vxdp_flow_hash(const uint8_t *f, size_t len)
{
    uint32_t h = fnv(FNV_OFFSET, f, len < VXDP_ETH_HLEN ? len : VXDP_ETH_HLEN);

    if (len >= VXDP_ETH_HLEN) {
        unsigned ethertype = (unsigned)f[12] << 8 | f[13];
        if (ethertype == 0x0800 && len >= 34) {
            size_t ihl = (size_t)(f[14] & 0x0F) * 4;
            uint8_t proto = f[23];
            /* RFC 791: ports exist only in the first fragment (offset 0) */
            bool first_fragment = ((f[20] & 0x1F) | f[21]) == 0;
            size_t l4 = VXDP_ETH_HLEN + ihl;
            h = fnv(h, f + 23, 1);
            h = fnv(h, f + 26, 8);
            if (has_ports(proto) && first_fragment && ihl >= 20 && len >= l4 + 4)
                h = fnv(h, f + l4, 4);
        } else if (ethertype == 0x86DD && len >= 54) {
            uint8_t nh = f[20];
            h = fnv(h, f + 20, 1);
            h = fnv(h, f + 22, 32);
            if (has_ports(nh) && len >= 58)
                h = fnv(h, f + 54, 4);
        }
    }
    return h ^ (h >> 16);
}
