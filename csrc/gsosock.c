/*
 * gsosock.c: the UDP sockets that send split super-frames with UDP_SEGMENT.
 *
 * Why sockets at all: egress normally leaves through one IP_HDRINCL raw socket, which is what
 * gives every flow its own outer UDP source port (RFC 7348 sec. 5: the port is the inner
 * flow's hash). UDP_SEGMENT (udp(7), Linux 4.18+), one sendmsg for up to 64 datagrams that the
 * stack (or the NIC) cuts apart, exists only on UDP sockets, and a UDP socket's source port
 * is the one it is bound to. So each source port that carries super-frames gets a socket
 * bound to (local, port), opened on first use; all segments of a super-frame share the
 * flow and so the port. At most VXDP_GSO_SOCKS are open; the least recently used is closed
 * to make room, so ECMP spreading keeps working with any number of flows (flows beyond that
 * reuse sockets, reopened as they come back).
 *
 * These sockets only send: a classic BPF filter that accepts nothing keeps anything addressed
 * to their port from queueing on them, and they are never bound with SO_REUSEADDR/PORT, so
 * they can neither steal the endpoint's traffic nor anyone else's. A port someone else holds
 * (bind fails) is remembered for RETRY_S seconds and its flows use the raw socket meanwhile.
 * Options mirror the raw path's outer header: DF clear (IP_PMTUDISC_DONT, like the kernel's
 * vxlan `df unset`), TTL / hop limit 64; IP(V6)_FREEBIND as the endpoint sockets have.
 * The kernel computes the outer UDP checksum of every datagram (UDP GSO needs it, so it is
 * there over IPv4 as well: RFC 7348 sec. 5 allows a correct non-zero one).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "internal.h"

#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef SO_SNDBUFFORCE
#define SO_SNDBUFFORCE 32
#endif

#define RETRY_S ((double)VXDP_GSO_RETRY_S)
#define SNDBUF (4 << 20)

static int open_bound(const struct vxdp_addr *local, uint16_t port)
{
    int af = local->family == 4 ? AF_INET : AF_INET6;
    int fd = socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, hops = 64, buf = SNDBUF;
    if (af == AF_INET) {
        int dont = IP_PMTUDISC_DONT;
        setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &dont, sizeof dont);
        setsockopt(fd, IPPROTO_IP, IP_TTL, &hops, sizeof hops);
    } else {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof hops);
    }
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    struct sock_filter none = BPF_STMT(BPF_RET | BPF_K, 0);    /* accept 0 bytes: drop */
    struct sock_fprog prog = { .len = 1, .filter = &none };
    setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);

    union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
    memset(&sa, 0, sizeof sa);
    socklen_t salen;
    if (af == AF_INET) {
        sa.v4.sin_family = AF_INET;
        sa.v4.sin_port = htons(port);
        memcpy(&sa.v4.sin_addr, local->bytes, 4);
        salen = sizeof sa.v4;
    } else {
        sa.v6.sin6_family = AF_INET6;
        sa.v6.sin6_port = htons(port);
        memcpy(&sa.v6.sin6_addr, local->bytes, 16);
        salen = sizeof sa.v6;
    }
    if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline bool in_use(const struct vxdp_gso_sock *g)
{
    return g->fd >= 0 || g->retry > 0;
}

int vxdp_gso_socket(struct vxdp_dp *dp, const struct vxdp_addr *local, uint16_t port,
                    double now)
{
    struct vxdp_gso_sock *slot = NULL, *lru = NULL;
    dp->gso_clock++;
    for (int i = 0; i < VXDP_GSO_SOCKS; i++) {
        struct vxdp_gso_sock *g = &dp->gso_socks[i];
        if (!in_use(g)) {
            if (!slot)
                slot = g;
            continue;
        }
        if (g->port == port && memcmp(&g->local, local, sizeof *local) == 0) {
            if (g->fd >= 0) {
                g->last = dp->gso_clock;
                return g->fd;
            }
            if (now < g->retry)
                return -1;      /* bind refused a while ago: raw socket until RETRY_S */
            slot = g;
            break;
        }
        if (!lru || g->last < lru->last)
            lru = g;
    }
    if (!slot)
        slot = lru;             /* all in use: close the least recently used */
    if (slot->fd >= 0)
        close(slot->fd);
    slot->fd = open_bound(local, port);
    slot->port = port;
    slot->local = *local;
    slot->last = dp->gso_clock;
    slot->retry = slot->fd < 0 ? (now + RETRY_S > 0 ? now + RETRY_S : 1e-9) : 0;
    return slot->fd;
}

void vxdp_gso_close(struct vxdp_dp *dp, int family)
{
    for (int i = 0; i < VXDP_GSO_SOCKS; i++) {
        struct vxdp_gso_sock *g = &dp->gso_socks[i];
        if (in_use(g) && (family == 0 || g->local.family == family)) {
            if (g->fd >= 0)
                close(g->fd);
            memset(g, 0, sizeof *g);
            g->fd = -1;
        }
    }
}
