/*
 * csum.c: completing inner L4 checksums a kernel peer left partial, decision for decision
 * what vxlan_dp/wire/csum.py does (its docstring states the rules; tests/unit/test_csum.py
 * holds the two together, byte for byte).
 *
 * Why: a Linux sender builds TCP/UDP packets as CHECKSUM_PARTIAL (the checksum field holds
 * the folded pseudo-header sum, __tcp_v4_send_check / udp4_hwcsum / __tcp_v6_send_check),
 * expecting the device to finish the sum. Through its vxlan device and a virtual link with
 * TX checksum offload (veth, virtio-net, many virtual switches) nobody ever does: the
 * receiving kernel trusts CHECKSUM_PARTIAL skbs, so our UDP socket hands us the inner frame
 * as it was built, and the TAP's stack would drop it as corrupt (TCP from such a peer hangs).
 *
 * Rule: a TCP or UDP packet (IPv4 without fragmentation, options allowed; IPv6 after
 * hop-by-hop, destination-options and routing headers with no segments left) whose checksum
 * field equals the folded pseudo-header sum AND whose full checksum does not verify is
 * completed in place: the field becomes the complement of the sum from the L4 header to the
 * IP payload's end (what skb_checksum_help does). Everything else, a checksum wrong in any
 * other way included, is left exactly as it came: the receiving stack judges it.
 * The common case costs one pseudo-header sum: the payload is summed only when the field
 * already equals the partial value.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define PROTO_TCP 6
#define PROTO_UDP 17

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Partial sum of the pseudo-header (RFC 793 sec. 3.1, RFC 768, RFC 8200 sec. 8.1). */
static uint64_t pseudo(int version, const uint8_t *ip, uint8_t proto, uint32_t l4len)
{
    uint8_t tail[8] = { 0 };
    if (version == 4) {
        uint64_t s = vxdp_csum_partial(ip + 12, 8, 0);     /* source, destination */
        tail[1] = proto;
        tail[2] = (uint8_t)(l4len >> 8);
        tail[3] = (uint8_t)l4len;
        return vxdp_csum_partial(tail, 4, s);
    }
    uint64_t s = vxdp_csum_partial(ip + 8, 32, 0);
    tail[0] = (uint8_t)(l4len >> 24);
    tail[1] = (uint8_t)(l4len >> 16);
    tail[2] = (uint8_t)(l4len >> 8);
    tail[3] = (uint8_t)l4len;
    tail[7] = proto;
    return vxdp_csum_partial(tail, 8, s);
}

int vxdp_csum_complete(uint8_t *f, uint32_t len)
{
    if (len < VXDP_ETH_HLEN)
        return 0;
    uint32_t l3 = VXDP_ETH_HLEN;
    unsigned et = rd16(f + 12);
    for (int tags = 0; tags < 2 && (et == 0x8100 || et == 0x88A8); tags++) {
        if (len < l3 + 4)       /* 802.1Q / 802.1ad: the inner type follows the tag */
            return 0;
        et = rd16(f + l3 + 2);
        l3 += 4;
    }
    int version;
    uint32_t l4, end;
    uint8_t proto;
    if (et == 0x0800) {
        if (len < l3 + 20 || f[l3] >> 4 != 4)
            return 0;
        uint32_t ihl = (uint32_t)(f[l3] & 0x0F) * 4, total = rd16(f + l3 + 2);
        if (ihl < 20 || total < ihl || len < l3 + total)
            return 0;
        if (rd16(f + l3 + 6) & 0x3FFF)
            return 0;           /* a fragment: its checksum covers the whole datagram */
        version = 4;
        proto = f[l3 + 9];
        l4 = l3 + ihl;
        end = l3 + total;       /* Ethernet padding beyond the IP length is not summed */
    } else if (et == 0x86DD) {
        if (len < l3 + 40 || f[l3] >> 4 != 6)
            return 0;
        uint32_t plen = rd16(f + l3 + 4);
        if (plen == 0 || len < l3 + 40 + plen)
            return 0;           /* 0: a jumbogram (RFC 2675), never from a vxlan peer */
        version = 6;
        proto = f[l3 + 6];
        l4 = l3 + 40;
        end = l3 + 40 + plen;
        /* RFC 8200 sec. 4: walk the headers that may precede the transport. A routing
         * header with segments left means the pseudo-header's destination is another
         * address (sec. 8.1): not ours to guess, left alone. Fragments are left too. */
        while (proto == 0 || proto == 43 || proto == 60) {
            if (end < l4 + 8)
                return 0;
            if (proto == 43 && f[l4 + 3] != 0)
                return 0;
            proto = f[l4];
            l4 += ((uint32_t)f[l4 + 1] + 1) * 8;
            if (l4 > end)
                return 0;
        }
    } else {
        return 0;
    }
    uint32_t l4len = end - l4, at;
    if (proto == PROTO_TCP) {
        if (l4len < 20)
            return 0;
        at = l4 + 16;
    } else if (proto == PROTO_UDP) {
        if (l4len < 8 || rd16(f + l4 + 4) != l4len)
            return 0;
        at = l4 + 6;
        if (f[at] == 0 && f[at + 1] == 0)
            return 0;           /* RFC 768: no checksum; never the partial value (non-zero) */
    } else {
        return 0;
    }
    uint64_t ps = pseudo(version, f + l3, proto, l4len);
    uint16_t field, part = vxdp_csum_fold(ps);
    memcpy(&field, f + at, 2);  /* host-order sums and stores: the bytes compare as they are */
    if (field != part)
        return 0;
    uint64_t d = vxdp_csum_partial(f + l4, l4len, 0);
    if (vxdp_csum_fold(ps + d) == 0xFFFF)
        return 0;               /* a full checksum that happens to equal the partial value */
    /* the field holds the pseudo-header sum, so the sum over the segment as it stands is
     * pseudo-header + data: its complement is the checksum (skb_checksum_help) */
    uint16_t c = (uint16_t)~vxdp_csum_fold(d);
    if (proto == PROTO_UDP && c == 0)
        c = 0xFFFF;             /* RFC 768: 0 would mean "no checksum" */
    memcpy(f + at, &c, 2);
    return 1;
}

int vxdp_csum_peer(struct vxdp_dp *dp, int net, struct vxdp_addr *out)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = !n ? -ENOENT : 0;
    double best = 0;
    for (int q = 0; n && q < dp->main->nq; q++) {   /* the newest of the queues' */
        const struct vxdp_net_q *nq = &n->q[q];
        if (nq->csum_peer.family && (!r || nq->csum_at > best)) {
            *out = nq->csum_peer;
            best = nq->csum_at;
            r = 1;
        }
    }
    vxdp_wunlock(dp);
    return r;
}

/* ---- super-frames: a peer's TSO packet, not segmented on a virtual link ----------------
 *
 * The same links pass whole TSO super-frames: a kernel vxlan device on a veth or virtio-net
 * with TSO sends one UDP datagram holding a 64 KiB inner TCP segment (SKB_GSO_UDP_TUNNEL),
 * and a UDP socket takes it as it is (udp_unexpected_gso only segments UDP_L4 / fraglist
 * GSO). The kernel's own vxlan receive would pass it up whole; we do the same: write it to a
 * TSO TAP as one GSO frame, or split it as a NIC would (offload.c), at the largest segment the
 * network's MTU carries. TCP only: a UDP super-frame's datagram boundaries are not in it.
 *
 * Accepted: Ethernet (one 802.1Q tag at most, as vxdp_max_frame_len), IPv4 (options allowed,
 * not a fragment, total length = the frame's) or IPv6 (no extension header, payload length =
 * the frame's), TCP with a valid data offset and payload beyond one segment of
 * mss = mtu - IP header - TCP header >= 1. The header describing it is what a TSO TAP read
 * would carry (CWR set -> GSO_ECN, as tcp_ecn_send marks SKB_GSO_TCP_ECN). */
int vxdp_super_frame(const uint8_t *f, uint32_t len, int32_t mtu, struct vxdp_vnet_hdr *vh)
{
    memset(vh, 0, sizeof *vh);
    if (len < VXDP_ETH_HLEN)
        return 0;
    uint32_t l3 = VXDP_ETH_HLEN, l4;
    unsigned et = rd16(f + 12);
    if (et == 0x8100) {
        if (len < 18)
            return 0;
        et = rd16(f + 16);
        l3 = 18;
    }
    uint8_t gso;
    if (et == 0x0800) {
        if (len < l3 + 20 || f[l3] >> 4 != 4)
            return 0;
        uint32_t ihl = (uint32_t)(f[l3] & 0x0F) * 4;
        if (ihl < 20 || rd16(f + l3 + 2) != len - l3 || (rd16(f + l3 + 6) & 0x3FFF) ||
            f[l3 + 9] != PROTO_TCP)
            return 0;
        l4 = l3 + ihl;
        gso = VXDP_GSO_TCPV4;
    } else if (et == 0x86DD) {
        if (len < l3 + 40 || f[l3] >> 4 != 6 || rd16(f + l3 + 4) != len - l3 - 40 ||
            f[l3 + 6] != PROTO_TCP)
            return 0;
        l4 = l3 + 40;
        gso = VXDP_GSO_TCPV6;
    } else {
        return 0;
    }
    if (len < l4 + 20)
        return 0;
    uint32_t thl = (uint32_t)(f[l4 + 12] >> 4) * 4;
    if (thl < 20 || len < l4 + thl)
        return 0;
    int64_t mss = (int64_t)mtu - (l4 - l3) - thl;
    uint32_t plen = len - l4 - thl;
    if (mss < 1 || plen <= (uint64_t)mss)
        return 0;
    vh->flags = VXDP_VNET_F_NEEDS_CSUM;
    vh->gso_type = (uint8_t)(gso | (f[l4 + 13] & 0x80 ? VXDP_GSO_ECN : 0));
    vh->hdr_len = (uint16_t)(l4 + thl);
    vh->gso_size = (uint16_t)mss;
    vh->csum_start = (uint16_t)l4;
    vh->csum_offset = 16;
    return (int)((plen + (uint32_t)mss - 1) / (uint32_t)mss);
}

/* A GSO frame goes to the TAP as CHECKSUM_PARTIAL: the TCP field holds the folded
 * pseudo-header sum over the whole segment, as the sender's stack had put it there. */
void vxdp_super_partial(uint8_t *f, uint32_t len, const struct vxdp_vnet_hdr *vh)
{
    uint32_t l4 = vh->csum_start;
    uint32_t l3 = f[12] == 0x81 && f[13] == 0x00 ? 18 : VXDP_ETH_HLEN;
    int version = (vh->gso_type & ~VXDP_GSO_ECN) == VXDP_GSO_TCPV4 ? 4 : 6;
    uint16_t part = vxdp_csum_fold(pseudo(version, f + l3, PROTO_TCP, len - l4));
    memcpy(f + l4 + vh->csum_offset, &part, 2);
}
