/*
 * tests/tsan/stress.c: the C fast path's locking under ThreadSanitizer (.ci/tsan builds it
 * with the csrc/ sources and -fsanitize=thread and fails on any report).
 *
 * The daemon's shape, without Python (CPython is not TSan-built, so a Python driver would
 * bury the fast path's reports in the interpreter's): a dp with two queue views, one pump
 * thread per view calling vxdp_pump_endpoint / vxdp_pump_tap as csrc/poll.c does, and a
 * management thread doing what the event loop does meanwhile (static FDB entries in and out,
 * dumps, counters, ageing, a TAP re-set, a network added and removed, ARP/ND entries, keys).
 *
 * What the pumps are fed, so every shared path runs on both queues at once:
 * - VXLAN datagrams from two loopback sources (a peer each) whose inner source MACs hop
 *   between them: new and moved MACs queued and applied under every lock, refreshes stored
 *   in place;
 * - TCP super-frames (longer than the MTU) to a vnet TAP granted TSO whose "TAP" is an
 *   eventfd: every GSO write fails with EINVAL, the pump turns coalescing off for the network
 *   (n->gro_types) while the other pump reads it, and management turns it on again;
 * - frames on the TAPs (socketpairs) to learned MACs and to broadcast, for a plain and an
 *   encrypted network (ESP sealing shares the network's sequence numbers across queues).
 * Nothing leaves the host: the egress socket is an AF_UNIX one, every send fails and is counted.
 *
 * Usage: stress [seconds, default 3]. Exit 0 when the run completes and the counters add up;
 * TSan's own exit code (66, .ci/tsan sets it) on a report.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fastpath.h"
#include "neigh.h"

#define QUEUES 2
#define MACS 48

static struct vxdp_dp *dp;
static int ep_plain, ep_esp, net_plain, net_vnet, net_esp;
static uint16_t ep_port[QUEUES], esp_port[QUEUES];
static int tap_peer[QUEUES], esp_tap_peer[QUEUES];     /* our ends of the TAP socketpairs */
static int vnet_fd[QUEUES];
static atomic_bool stop;
static pthread_barrier_t go;    /* every thread starts at once: first-use races (lazy inits) */
static double deadline;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
    fprintf(stderr, "stress: %s failed: %d (%s)\n", what, r, strerror(r < 0 ? -r : errno));
    exit(1);
}

static struct vxdp_addr v4(const char *s)
{
    struct vxdp_addr a;
    memset(&a, 0, sizeof a);
    a.family = 4;
    inet_pton(AF_INET, s, a.bytes);
    return a;
}

static int udp_socket(const char *addr, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, addr, &sa.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("udp socket", -errno);
    int big = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    socklen_t l = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &l);
    if (port)
        *port = ntohs(sa.sin_port);
    return fd;
}

static void tap_pair(int *ours, int *theirs)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair", -errno);
    *ours = sv[0];
    *theirs = sv[1];
}

static void mac_of(uint8_t *m, int i)
{
    static const uint8_t base[6] = { 0x02, 0x42, 0xc0, 0xa8, 0x00, 0x00 };
    memcpy(m, base, 6);
    m[5] = (uint8_t)i;
}

/* VXLAN (RFC 7348) + an Ethernet frame: broadcast ARP-ish payload, or a TCP super-frame. */
static size_t vxlan_dgram(uint8_t *b, uint32_t vni, int src_mac, bool super)
{
    memset(b, 0, 8);
    b[0] = 0x08;
    b[4] = (uint8_t)(vni >> 16);
    b[5] = (uint8_t)(vni >> 8);
    b[6] = (uint8_t)vni;
    uint8_t *f = b + 8;
    memset(f, 0xff, 6);
    mac_of(f + 6, src_mac);
    if (!super) {
        f[12] = 0x88;           /* local experimental ethertype: not ARP, not IP */
        f[13] = 0xb5;
        memset(f + 14, 0xab, 46);
        return 8 + 60;
    }
    mac_of(f, 200);             /* unicast to a local MAC */
    uint32_t len = 3000;        /* > the network's MTU: split or written as one GSO frame */
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t *ip = f + 14;
    memset(ip, 0, len - 14);
    ip[0] = 0x45;
    ip[2] = (uint8_t)((len - 14) >> 8);
    ip[3] = (uint8_t)(len - 14);
    ip[8] = 64;
    ip[9] = 6;
    ip[12] = 192; ip[13] = 168; ip[14] = 0; ip[15] = 1;
    ip[16] = 192; ip[17] = 168; ip[18] = 0; ip[19] = 2;
    uint8_t *tcp = ip + 20;
    tcp[0] = 0x30; tcp[1] = 0x39; tcp[2] = 0x00; tcp[3] = 0x50;
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;             /* ACK */
    return 8 + len;
}

static void send_to(int fd, uint16_t port, const uint8_t *b, size_t len)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    (void)sendto(fd, b, len, 0, (struct sockaddr *)&sa, sizeof sa);
}

struct pump_arg {
    int q;
    struct vxdp_dp *view;       /* fetched before the threads start, as poll.py's _views */
    uint64_t rounds;
};

static void *pump(void *p)
{
    struct pump_arg *a = p;
    int q = a->q;
    struct vxdp_dp *v = a->view;
    pthread_barrier_wait(&go);
    int from[2] = { udp_socket("127.0.0.1", NULL), udp_socket("127.0.0.2", NULL) };
    uint8_t *b = malloc(4096);
    unsigned seed = (unsigned)q * 7919u + 1;
    while (!atomic_load(&stop)) {
        double now = now_s();
        if (now > deadline)
            break;
        for (int i = 0; i < 8; i++) {   /* MACs hop between the two sources: new and moved */
            int mac = rand_r(&seed) % MACS;
            size_t n = vxlan_dgram(b, 42, mac, false);
            send_to(from[rand_r(&seed) & 1], ep_port[q], b, n);
        }
        size_t n = vxlan_dgram(b, 43, MACS + q, true);
        send_to(from[0], ep_port[q], b, n);
        for (int i = 0; i < 4; i++) {   /* ESP with SPIs of no key: opened (and refused) */
            for (int k = 0; k < 96; k++)
                b[k] = (uint8_t)(rand_r(&seed) | 1);
            send_to(from[0], esp_port[q], b, 96);
        }
        for (int i = 0; i < 8; i++) {   /* egress: known MACs, broadcast */
            uint8_t f[60];
            memset(f, 0, sizeof f);
            if (i & 1)
                memset(f, 0xff, 6);
            else
                mac_of(f, rand_r(&seed) % MACS);
            mac_of(f + 6, 100 + q);
            f[12] = 0x88;
            f[13] = 0xb5;
            (void)write(tap_peer[q], f, sizeof f);
            (void)write(esp_tap_peer[q], f, sizeof f);
        }
        uint8_t arp[42];        /* who has 192.168.0.9: answered on the TAP, the sender snooped */
        memset(arp, 0xff, 6);
        mac_of(arp + 6, 110 + q);
        static const uint8_t req[10] = { 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1 };
        memcpy(arp + 12, req, sizeof req);
        memcpy(arp + 22, arp + 6, 6);
        arp[28] = 192; arp[29] = 168; arp[30] = 0; arp[31] = (uint8_t)(20 + q);
        memset(arp + 32, 0, 6);
        arp[38] = 192; arp[39] = 168; arp[40] = 0; arp[41] = 9;
        (void)write(tap_peer[q], arp, sizeof arp);
        vxdp_pump_endpoint(v, ep_plain, now);
        vxdp_pump_endpoint(v, ep_esp, now);
        vxdp_pump_tap(v, net_plain, now);
        vxdp_pump_tap(v, net_esp, now);
        a->rounds++;
        /* drain what the pumps wrote to our TAP ends, so their writes keep succeeding */
        while (read(tap_peer[q], b, 4096) > 0)
            ;
    }
    close(from[0]);
    close(from[1]);
    free(b);
    return NULL;
}

static void *manage(void *p)
{
    uint64_t *rounds = p;
    struct vxdp_fdb_row *rows = calloc(1024, sizeof *rows);
    struct vxdp_addr peer = v4("127.0.0.1");
    uint8_t keys[2 * 32];
    pthread_barrier_wait(&go);
    for (int i = 0; i < (int)sizeof keys; i++)
        keys[i] = (uint8_t)(i * 13 + 1);
    while (!atomic_load(&stop) && now_s() < deadline) {
        double now = now_s();
        uint8_t mac[6];
        mac_of(mac, 150 + (int)(*rounds % 8));
        int r = vxdp_fdb_add(dp, net_plain, mac, &peer);
        if (r < 0)
            die("fdb_add", r);
        vxdp_fdb_dump(dp, net_plain, now, rows, 1024);
        vxdp_fdb_remove(dp, net_plain, mac);
        struct vxdp_net_counters nc;
        struct vxdp_ep_counters ec;
        struct vxdp_offload_stats os;
        vxdp_net_counters(dp, net_plain, &nc);
        vxdp_ep_counters(dp, ep_plain, &ec);
        vxdp_offload_stats(dp, &os);
        struct vxdp_poll_stats ps;      /* the pump counters a scrape reads (metrics.py) */
        for (int q = 0; q < 2; q++)
            vxdp_poll_stats(dp, q, &ps);
        vxdp_local_macs(dp, net_plain, now, rows, 1024);
        struct vxdp_addr csum_src;
        vxdp_csum_peer(dp, net_plain, &csum_src);
        struct vxdp_neigh_counters nbc;
        vxdp_neigh_counters(dp, net_plain, &nbc);
        vxdp_age(dp, now + 1000.0 * (*rounds % 50 == 0));   /* now and then: everything ages */
        vxdp_csum_vector(1);    /* the checksum's CPU probe again (as tests and bench do) */
        /* coalescing on again, for the pumps to turn off again */
        for (int q = 0; q < QUEUES; q++)
            vxdp_set_tap_queue(dp, net_vnet, q, vnet_fd[q]);
        r = vxdp_set_tap_vnet(dp, net_vnet, vnet_fd[0], 1, VXDP_TAP_CSUM | VXDP_TAP_TSO4);
        if (r < 0)
            die("set_tap_vnet", r);
        /* a network that comes and goes on the plain endpoint while its pumps run */
        struct vxdp_net_params np = {
            .vni = 1000 + (uint32_t)(*rounds % 100), .encap = VXDP_ENCAP_VXLAN,
            .local = v4("127.0.0.1"), .port = 4789, .sport_min = 49152, .sport_max = 65535,
            .learning = 1, .allow_unknown_sources = 1, .mtu = 1400, .ageing = 300.0,
            .max_fdb_entries = 256,
        };
        int id = vxdp_add_network(dp, &np, ep_plain, -1);
        if (id < 0)
            die("add_network", id);
        struct vxdp_addr ip = v4("192.168.7.1");
        vxdp_neigh_set(dp, id, &ip, mac);
        vxdp_remove_network(dp, id);
        uint8_t ids[2] = { 1, 2 };
        r = vxdp_set_esp(dp, net_esp, VXDP_CIPHER_AES256GCM, ids, keys, 2,
                         1 + (int)(*rounds & 1), 1);
        if (r < 0)
            die("set_esp", r);
        /* queues only grow, and may while pumps run (api.py): every lock taken must be a
         * lock released, for the pumps' own learning too */
        if (*rounds % 64 == 63 && vxdp_set_queues(dp, QUEUES + 1 + (int)(*rounds / 64) % 8) < 0)
            die("set_queues", -ENOMEM);
        (*rounds)++;
        usleep(200);
    }
    free(rows);
    return NULL;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    dp = vxdp_new(64);
    if (!dp || vxdp_set_queues(dp, QUEUES) != QUEUES)
        die("vxdp_new / set_queues", -ENOMEM);
    int tx[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, tx) < 0)
        die("socketpair", -errno);
    vxdp_set_tx_socket(dp, 4, tx[0]);   /* sendmmsg to an IPv4 address fails: counted, no packet */

    int ep_fd[QUEUES];
    for (int q = 0; q < QUEUES; q++)
        ep_fd[q] = udp_socket("127.0.0.1", &ep_port[q]);
    ep_plain = vxdp_add_endpoint(dp, VXDP_ENCAP_VXLAN, ep_fd[0], 0);
    if (ep_plain < 0)
        die("add_endpoint", ep_plain);
    vxdp_set_endpoint_queue(dp, ep_plain, 1, ep_fd[1]);
    ep_esp = vxdp_add_endpoint(dp, VXDP_ENCAP_VXLAN, udp_socket("127.0.0.1", &esp_port[0]), 0);
    vxdp_set_endpoint_queue(dp, ep_esp, 1, udp_socket("127.0.0.1", &esp_port[1]));

    struct vxdp_net_params np = {
        .vni = 42, .encap = VXDP_ENCAP_VXLAN, .local = v4("127.0.0.1"), .port = 4789,
        .sport_min = 49152, .sport_max = 65535, .learning = 1, .mtu = 1400, .ageing = 300.0,
        .max_fdb_entries = 64,
    };
    int tap[QUEUES], esp_tap[QUEUES];
    for (int q = 0; q < QUEUES; q++) {
        tap_pair(&tap_peer[q], &tap[q]);
        tap_pair(&esp_tap_peer[q], &esp_tap[q]);
        vnet_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);   /* every frame write: EINVAL */
    }
    net_plain = vxdp_add_network(dp, &np, ep_plain, tap[0]);
    if (net_plain < 0)
        die("add_network", net_plain);
    vxdp_set_tap_queue(dp, net_plain, 1, tap[1]);
    struct vxdp_addr peers[2] = { v4("127.0.0.1"), v4("127.0.0.2") };
    vxdp_set_peers(dp, net_plain, peers, 2);

    np.vni = 43;
    net_vnet = vxdp_add_network(dp, &np, ep_plain, -1);
    if (net_vnet < 0)
        die("add_network vnet", net_vnet);
    vxdp_set_peers(dp, net_vnet, peers, 2);

    np.vni = 44;
    net_esp = vxdp_add_network(dp, &np, ep_esp, esp_tap[0]);
    if (net_esp < 0)
        die("add_network esp", net_esp);
    vxdp_set_tap_queue(dp, net_esp, 1, esp_tap[1]);
    vxdp_set_peers(dp, net_esp, peers, 2);
    struct vxdp_addr ip = v4("192.168.0.9");
    uint8_t mac[6];
    mac_of(mac, 9);
    vxdp_neigh_mode(dp, net_plain, 1, 1, 64);   /* ARP/ND suppression and snooping: its lock */
    vxdp_neigh_set(dp, net_plain, &ip, mac);

    deadline = now_s() + secs;
    pthread_barrier_init(&go, NULL, QUEUES + 1);
    pthread_t t[QUEUES + 1];
    struct pump_arg pa[QUEUES];
    uint64_t mrounds = 0;
    for (int q = 0; q < QUEUES; q++) {
        pa[q] = (struct pump_arg){ .q = q, .view = vxdp_queue(dp, q) };
        pthread_create(&t[q], NULL, pump, &pa[q]);
    }
    pthread_create(&t[QUEUES], NULL, manage, &mrounds);
    for (int i = 0; i <= QUEUES; i++)
        pthread_join(t[i], NULL);

    struct vxdp_net_counters nc;
    struct vxdp_ep_counters ec;
    vxdp_net_counters(dp, net_plain, &nc);
    vxdp_ep_counters(dp, ep_plain, &ec);
    struct vxdp_neigh_counters nbc;
    vxdp_neigh_counters(dp, net_plain, &nbc);
    struct vxdp_ep_counters esp;
    vxdp_ep_counters(dp, ep_esp, &esp);
    uint64_t esp_drops = esp.drop_esp_too_short + esp.drop_esp_plaintext +
                         esp.drop_esp_unknown_key + esp.drop_esp_replay + esp.drop_esp_auth;
    printf("stress: %.1f s, pump rounds %llu + %llu, management rounds %llu; rx %llu datagrams, "
           "learned %llu, moved %llu, tap_rx %llu, ARP answered %llu, ESP refused %llu\n", secs,
           (unsigned long long)pa[0].rounds, (unsigned long long)pa[1].rounds,
           (unsigned long long)mrounds, (unsigned long long)ec.rx_datagrams,
           (unsigned long long)nc.fdb_learned, (unsigned long long)nc.fdb_moved,
           (unsigned long long)nc.tap_rx_frames, (unsigned long long)nbc.replies_sent,
           (unsigned long long)esp_drops);
    /* the run did what it is for: both pumps moved packets, MACs were learned and moved */
    if (!pa[0].rounds || !pa[1].rounds || !mrounds || !ec.rx_datagrams || !nc.fdb_learned ||
        !nc.fdb_moved || !nc.tap_rx_frames || !nbc.replies_sent ||
        !esp_drops) {
        fprintf(stderr, "stress: a path did not run\n");
        return 1;
    }
    vxdp_free(dp);
    return 0;
}
