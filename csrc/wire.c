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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define VXDP_CSUM_AVX2 1
#define AVX2_MIN 256            /* below this the vector set-up is not worth it */

/* The same sum, 128 bytes a round: each 32-bit word is widened to a 64-bit lane and added,
 * so there is no carry to chain (the adc chain of the scalar loop is its limit); 2^32 words
 * per lane before one could overflow, far beyond any buffer here. 32-bit words in host order
 * sum to the same folded result as 16-bit ones (RFC 1071 sec. 2(B) and 2^16 = 1 mod 0xffff).
 * Picked at run time (x86-64 without AVX2 and other CPUs take the scalar loop): the
 * offload paths sum every payload byte once, the sender's top symbol in bench/README.md. */
__attribute__((target("avx2")))
static uint64_t csum_avx2(const uint8_t **pp, size_t *plen, uint64_t sum)
{
    const uint8_t *p = *pp;
    size_t len = *plen;
    __m256i z = _mm256_setzero_si256(), a = z, b = z, c = z, d = z;
    while (len >= 128) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)p);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));
        __m256i v2 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 64));
        __m256i v3 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 96));
        a = _mm256_add_epi64(a, _mm256_unpacklo_epi32(v0, z));
        b = _mm256_add_epi64(b, _mm256_unpackhi_epi32(v0, z));
        c = _mm256_add_epi64(c, _mm256_unpacklo_epi32(v1, z));
        d = _mm256_add_epi64(d, _mm256_unpackhi_epi32(v1, z));
        a = _mm256_add_epi64(a, _mm256_unpacklo_epi32(v2, z));
        b = _mm256_add_epi64(b, _mm256_unpackhi_epi32(v2, z));
        c = _mm256_add_epi64(c, _mm256_unpacklo_epi32(v3, z));
        d = _mm256_add_epi64(d, _mm256_unpackhi_epi32(v3, z));
        p += 128;
        len -= 128;
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t l[4];
    _mm256_storeu_si256((__m256i *)(void *)l, a);
    /* fold each lane to < 2^33 first, so the caller's sum (< 2^34) plus four never wraps */
    for (int i = 0; i < 4; i++)
        sum += (l[i] & 0xFFFFFFFFu) + (l[i] >> 32);
    sum = (sum & 0xFFFFFFFFu) + (sum >> 32);
    *pp = p;
    *plen = len;
    return sum;
}

/* -1: not asked yet; vxdp_csum_vector may turn it off (tests). Every queue's pump thread asks
 * on first use, and may at once: relaxed atomics (each computes the same answer; a plain int
 * here is a data race, which TSan reports, tests/tsan). */
static int csum_vector = -1;

static bool use_avx2(void)
{
    int v = __atomic_load_n(&csum_vector, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&csum_vector, v, __ATOMIC_RELAXED);
    }
    return v == 1;
}
#endif

int vxdp_csum_vector(int on)
{
#ifdef VXDP_CSUM_AVX2
    if (on == 0)
        __atomic_store_n(&csum_vector, 0, __ATOMIC_RELAXED);
    else if (on > 0)
        __atomic_store_n(&csum_vector, -1, __ATOMIC_RELAXED);  /* back to what the CPU can do */
    return use_avx2();
#else
    (void)on;
    return 0;
#endif
}

uint64_t vxdp_csum_partial(const uint8_t *p, size_t len, uint64_t sum)
{
    uint32_t w32;
    uint16_t w16;

#ifdef VXDP_CSUM_AVX2
    if (len >= AVX2_MIN && use_avx2())
        sum = csum_avx2(&p, &len, sum);
#endif
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
