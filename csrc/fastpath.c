/*
 * fastpath.c: the per-packet pipeline of vxlan-dp, one readiness event's batch per call.
 *
 * Egress, vxdp_pump_tap (TAP fd readable):
 *   1. read:   up to dp->batch frames, read() until EAGAIN, each into its own slab slot
 *              at offset VXDP_HEADROOM. The slab belongs to the dp and is reused by every
 *              batch; a frame lives there until stage 5 has sent it. A vnet-header TAP
 *              (offloads on) puts a struct vxdp_vnet_hdr in front: it is read into the
 *              headroom, copied to dp->vh[slot], and the frame may be a 64 KiB TSO/USO
 *              super-frame (the slot holds VXDP_SUPER_MAX).
 *   2. split (offload.c, vnet TAPs only): a frame without GSO whose L4 checksum the stack
 *              left partial (NEEDS_CSUM) gets it filled in place; a super-frame is cut into
 *              MSS-sized segments: vxdp_split_seg writes each segment's headers (lengths,
 *              IPv4 ID, TCP sequence and flags, full checksums) into a header buffer and
 *              the segment's payload stays where it was read, a slice of the super-frame.
 *              Nothing leaves with a checksum still to be done.
 *   3. classify (classify): per wire frame, whole or segment: runt -> drop_malformed, source
 *              MAC -> local-MAC table, over the MTU -> drop_too_big, unicast in the FDB ->
 *              one remote, else flood to every peer in order. Counters count wire frames,
 *              so a 45-segment super-frame moves them as 45 frames read without offloads.
 *   4. headers (outer.c): a whole frame going to one remote gets its outer header written in
 *              place in its own headroom (one iovec, no copy to prepend); a flooded frame gets
 *              a header per copy in dp->txq->hdr and a two-iovec message {header, shared
 *              frame}; a segment gets {outer + inner headers in dp->txq->seg, payload slice}.
 *              The frame or payload itself is never copied.
 *   5. send:   messages queue in dp->txq (VXDP_TXQ of them) and leave by sendmmsg on the
 *              egress raw socket (IP_HDRINCL, destination port 0); a full queue is flushed
 *              mid-batch. Each message sent counts tx_packets/tx_bytes, each one refused
 *              drop_socket_error (a partial sendmmsg resumes after the refused message).
 *              Segments of a UDP encapsulation with tx GSO on take the other road
 *              (gso_send): up to VXDP_GSO_SEGS {encap header + inner headers, payload}
 *              datagrams in ONE sendmsg with UDP_SEGMENT, on the pool socket bound to the
 *              flow's source port (gsosock.c says why a pool and not the raw socket). The raw
 *              queue is flushed first, so no flow is reordered. A refused send (counted
 *              in dp->ost) goes through the raw queue instead: the fallback loses nothing.
 *              EINVAL / EMSGSIZE refuse that send only; EIO & co (the path cannot do
 *              UDP_SEGMENT) turn tx GSO off for the family until a re-probe later.
 *              Why both roads: the raw socket keeps single frames byte-identical to
 *              vxlan_dp.wire (checksum 0, ID 0) at one sendmmsg per batch; UDP_SEGMENT saves
 *              a stack traversal per segment where there are segments to share one (the two
 *              roads side by side: bench/README.md). A 64 KiB TCP super-frame becomes
 *              two sends (43 + 2 datagrams: a UDP datagram carries at most 65507 bytes).
 * Ingress, vxdp_pump_endpoint (underlay socket readable):
 *   1. recvmmsg of up to dp->batch messages into the same slab, sources into dp->rx_sa;
 *              with UDP_GRO on (e->gro) a message may hold several datagrams of the size its
 *              cmsg says, each handled as if it had come alone;
 *   2. decap_one: validate (wire.c), find the network by key, check the source, the inner
 *              frame and the MTU, learn, count, complete an inner checksum the peer
 *              left partial (csum.c, in place in the slab); deliveries {net, frame, length} are listed in
 *              dp->dl_* (pointers into the slab: no copy);
 *   3. deliver: per network in order of first delivery; a vnet TAP with coalescing on gets
 *              its frames through vxdp_gro_run (offload.c: runs of in-order, checksum-verified
 *              segments of one flow, the kernel GRO's rules) and each run goes out in ONE
 *              writev {virtio-net header, patched headers, payload slices...}; everything
 *              else is one write() per frame (a TAP takes one frame per write). A GSO write
 *              the TAP refuses turns coalescing off for that TAP (counted) and the run's
 *              frames are written one by one.
 * Encrypted networks (esp.c): every outer packet is sealed as it is queued (enqueue: into
 * txq->esp, the frame read once by the cipher, never copied first), a super-frame's segments
 * are sealed one by one inside gso_send and still leave in one UDP_SEGMENT send; on ingress
 * esp_step authenticates and decrypts in place before decap_inner sees the payload.
 * The I/O-free vxdp_encap / vxdp_encap_vnet / vxdp_decap run stages 2-4 / 2 on the
 * caller's buffers (which must give each frame VXDP_HEADROOM bytes in front) and copy the
 * messages out instead of sending, so the differential tests exercise the very code the
 * pumps run.
 *
 * Ownership: the caller owns its buffers and every fd but the GSO pool's; the dp owns the
 * slab, the txq, the GSO batch, the GRO workspace and the rx arrays, all allocated by
 * vxdp_new. Nothing here allocates or calls Python per packet, and each public call holds
 * its view's lock for its whole batch (internal.h "queues").
 * Order of checks and counters: vxlan_dp/fastpath/api.py, identical to _pure.py.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/uio.h>

#include "internal.h"
#include "neigh.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

/* ---- where a batch's outer packets go ------------------------------------------------ */

struct sink {
    struct vxdp_dp *dp;         /* the queue view running the batch (its pending learning) */
    struct vxdp_net *n;         /* the network whose tx counters move (send mode) */
    int fd;                     /* egress socket; -1: none configured */
    bool send;                  /* sendmmsg, or copy into out (vxdp_encap) */
    uint8_t *out;
    size_t cap, used;
    uint32_t *out_lens;
    int out_max, nout, err;
};

static void flush_send(struct vxdp_txq *q, struct sink *s)
{
    struct vxdp_net_counters *c = &NQ(s->n)->c;
    int i = 0;
    while (i < q->n) {
        if (s->fd < 0) {        /* like _pure: no egress socket, every packet is refused */
            c->drop_socket_error += (uint64_t)(q->n - i);
            break;
        }
        int r = sendmmsg(s->fd, q->msg + i, (unsigned)(q->n - i), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* sendmmsg reports an error only for the first message it could not send:
             * count that one, skip it and carry on with the rest of the queue */
            c->drop_socket_error++;
            i++;
            continue;
        }
        for (int k = i; k < i + r; k++) {
            c->tx_packets++;
            c->tx_bytes += q->len[k];
        }
        i += r;
    }
}

static void flush_copy(struct vxdp_txq *q, struct sink *s)
{
    for (int i = 0; i < q->n && !s->err; i++) {
        if (s->nout >= s->out_max || s->used + q->len[i] > s->cap) {
            s->err = -ENOBUFS;
            break;
        }
        const struct msghdr *m = &q->msg[i].msg_hdr;
        for (size_t v = 0; v < m->msg_iovlen; v++) {
            memcpy(s->out + s->used, m->msg_iov[v].iov_base, m->msg_iov[v].iov_len);
            s->used += m->msg_iov[v].iov_len;
        }
        s->out_lens[s->nout++] = q->len[i];
    }
}

static void flush(struct vxdp_txq *q, struct sink *s)
{
    if (s->send)
        flush_send(q, s);
    else
        flush_copy(q, s);
    q->n = 0;
}

/* Queues one outer packet: header h (hlen bytes) followed by the frame. When the header
 * sits right in front of the frame (in-place), one iovec covers both. */
static void enqueue(struct vxdp_txq *q, struct sink *s, const struct vxdp_net *n,
                    const struct vxdp_addr *dst, uint8_t *h, int hlen,
                    uint8_t *frame, uint32_t len)
{
    int k = q->n;
    struct msghdr *m = &q->msg[k].msg_hdr;
    memset(m, 0, sizeof *m);
    memset(&q->sa[k], 0, sizeof q->sa[k]);
    if (n->family == 4) {
        q->sa[k].v4.sin_family = AF_INET;           /* port 0: raw(7) ignores it */
        memcpy(&q->sa[k].v4.sin_addr, dst->bytes, 4);
        m->msg_namelen = sizeof q->sa[k].v4;
    } else {
        q->sa[k].v6.sin6_family = AF_INET6;
        memcpy(&q->sa[k].v6.sin6_addr, dst->bytes, 16);
        m->msg_namelen = sizeof q->sa[k].v6;
    }
    m->msg_name = &q->sa[k];
    m->msg_iov = q->iov[k];
    if (n->esp) {               /* encrypted network: the sealed packet replaces both parts */
        uint8_t *out = q->esp + (size_t)k * VXDP_ESP_BUF;
        uint32_t sl = vxdp_esp_seal(n->esp, n->family, h, hlen, frame, len, out);
        if (!sl) {              /* libcrypto refused: nothing to send, counted as a send */
            NQ((struct vxdp_net *)n)->c.drop_socket_error++;
            return;
        }
        q->iov[k][0].iov_base = out;
        q->iov[k][0].iov_len = sl;
        m->msg_iovlen = 1;
        q->len[k] = sl;
        q->n++;
        if (q->n == VXDP_TXQ)
            flush(q, s);
        return;
    }
    if (h + hlen == frame) {
        q->iov[k][0].iov_base = h;
        q->iov[k][0].iov_len = (size_t)hlen + len;
        m->msg_iovlen = 1;
    } else {
        q->iov[k][0].iov_base = h;
        q->iov[k][0].iov_len = (size_t)hlen;
        q->iov[k][1].iov_base = frame;
        q->iov[k][1].iov_len = len;
        m->msg_iovlen = 2;
    }
    q->len[k] = (uint32_t)hlen + len;
    q->n++;
    if (q->n == VXDP_TXQ)
        flush(q, s);
}

/* ---- learning from a pump (internal.h "queues") ---------------------------------------
 *
 * While a pump holds its view's lock no management call runs, so the FDB is stable and every
 * queue's pump may read it at once; only the pumps' own learning could change it under the
 * others. So a pump changes nothing shared here: a refresh (known MAC, same remote) is one
 * aligned 8-byte store of `seen`; a full table is counted and left alone; a new or moved MAC
 * is queued in the view, and the batch's end (qunlock) applies the queue under every view's
 * lock with vxdp_fdb_learn, in arrival order. A MAC already queued in this batch queues
 * again, so a MAC that flaps within a batch ends where it would have, with the same counters. */

static bool queued(const struct vxdp_dp *dp, int32_t net, bool local, uint64_t mac)
{
    for (int i = 0; i < dp->npend; i++)
        if (dp->pend[i].mac == mac && dp->pend[i].net == net && dp->pend[i].local == local)
            return true;
    return false;
}

static void apply_learned(struct vxdp_dp *dp)
{
    for (int i = 0; i < dp->npend; i++) {
        const struct vxdp_learn *l = &dp->pend[i];
        struct vxdp_net *n = vxdp_get_net(dp, l->net);
        if (!n)
            continue;           /* removed since: ids are never reused */
        if (l->local) {
            vxdp_fdb_learn(&n->local, l->mac, &l->remote, l->now);
            continue;
        }
        struct vxdp_net_counters *c = &NQ(n)->c;
        switch (vxdp_fdb_learn(&n->fdb, l->mac, &l->remote, l->now)) {
        case VXDP_LEARN_NEW: c->fdb_learned++; break;       /* the repeats: refreshes */
        case VXDP_LEARN_MOVED: c->fdb_moved++; break;
        case VXDP_LEARN_FULL: c->fdb_full += l->reps; break;
        default: break;
        }
    }
    dp->npend = 0;
}

/* `local`: the local-MAC table (no counters), else the FDB. */
static void learn(struct vxdp_dp *dp, struct vxdp_net *n, bool local, uint64_t mac,
                  const struct vxdp_addr *remote, double now)
{
    struct vxdp_fdb *f = local ? &n->local : &n->fdb;
    if (!dp->npend || !queued(dp, n->id, local, mac)) {
        const struct vxdp_fdb_entry *e = vxdp_fdb_lookup(f, mac);
        if (e && e->is_static)
            return;
        if (e && memcmp(&e->remote, remote, sizeof *remote) == 0) {
            __atomic_store(&((struct vxdp_fdb_entry *)e)->seen, &now, __ATOMIC_RELAXED);
            return;
        }
        if (!e && f->count >= f->max_entries) {
            if (!local)
                NQ(n)->c.fdb_full++;
            return;
        }
    }
    struct vxdp_learn *last = dp->npend ? &dp->pend[dp->npend - 1] : NULL;
    if (last && last->mac == mac && last->net == n->id && last->local == local &&
        memcmp(&last->remote, remote, sizeof *remote) == 0) {
        last->reps++;           /* a super-frame's segments, a burst of one flow */
        last->now = now;
        return;
    }
    if (dp->npend == dp->dl_cap) {
        if (!dp->wlocked)
            return;             /* only the local table can get here (one FDB request per
                                 * datagram, dl_cap per batch): its next frame records it */
        apply_learned(dp);
    }
    dp->pend[dp->npend++] = (struct vxdp_learn){ .net = n->id, .local = local, .reps = 1,
                                                 .mac = mac, .remote = *remote, .now = now };
}

/* A pump's batch on view dp: its own lock only (other queues' pumps run alongside). */
static void qlock(struct vxdp_dp *dp)
{
    pthread_mutex_lock(&dp->lock);
    vxdp_cur_q = dp->qid;
}

/* Ends it: queued learning is applied with every view's lock (this one's released first:
 * the locks are taken in order, never while holding one). */
static void qunlock(struct vxdp_dp *dp)
{
    /* view 0 reads nq under its own lock (the one that guards it); another view exists only
     * once there are several, and queues never shrink */
    if (dp->npend && (dp->qid > 0 || dp->main->nq > 1)) {
        pthread_mutex_unlock(&dp->lock);
        vxdp_wlock(dp);
        apply_learned(dp);
        vxdp_wunlock(dp);
        return;
    }
    if (dp->npend)
        apply_learned(dp);      /* one view: its lock is every lock */
    pthread_mutex_unlock(&dp->lock);
}

/* The I/O-free calls (tests, benchmarks) hold every lock, learning applies when due. */
static void iolock(struct vxdp_dp *dp)
{
    vxdp_wlock(dp);
    vxdp_cur_q = dp->qid;
    dp->wlocked = true;
}

static void iounlock(struct vxdp_dp *dp)
{
    apply_learned(dp);
    dp->wlocked = false;
    vxdp_wunlock(dp);
}

/* ---- egress: one wire frame ---------------------------------------------------------- */

/* Counts one wire frame read from the TAP and decides where it goes: returns the number of
 * destinations (0: dropped and counted) and points *dsts at them. Only the headers of
 * `frame` are read, so a split segment passes its super-frame's start with its own length. */
static int classify(struct vxdp_dp *dp, struct vxdp_net *n, const uint8_t *frame, uint32_t len, double now,
                    const struct vxdp_addr **dsts)
{
    struct vxdp_net_counters *c = &NQ(n)->c;
    c->tap_rx_frames++;
    c->tap_rx_bytes += len;
    if (len < VXDP_ETH_HLEN) {
        c->drop_malformed++;
        return 0;
    }
    if (!vxdp_is_multicast(frame + 6)) {
        /* local-MAC table for the control plane; full -> not recorded, frame still sent */
        static const struct vxdp_addr none;
        learn(dp, n, true, vxdp_mac_key(frame + 6), &none, now);
    }
    /* the 16-bit IP length check only bites where the MTU is configured beyond what one
     * outer packet can carry: drop as too big rather than truncate the length field */
    if ((int64_t)len > vxdp_max_frame_len(n->p.mtu, frame, len) || !vxdp_outer_fits(n, len)) {
        c->drop_too_big++;
        return 0;
    }
    if (n->neigh && vxdp_neigh_egress(n, frame, len, now))
        return 0;               /* an ARP / ND request answered on the TAP: not flooded */
    if (!vxdp_is_multicast(frame)) {
        const struct vxdp_fdb_entry *e = vxdp_fdb_lookup(&n->fdb, vxdp_mac_key(frame));
        if (e) {
            *dsts = &e->remote;
            return 1;
        }
    }
    /* unknown unicast, broadcast, multicast: head-end replication */
    if (!n->npeers) {
        c->drop_no_peers++;
        return 0;
    }
    c->flood_frames++;
    c->flood_copies += (uint64_t)n->npeers;
    *dsts = n->peers;
    return n->npeers;
}

/* A whole frame; it must have VXDP_HEADROOM writable bytes in front of it. */
static void encap_frame(struct vxdp_txq *q, struct sink *s, struct vxdp_net *n,
                        uint8_t *frame, uint32_t len, double now)
{
    const struct vxdp_addr *dsts;
    int ndst = classify(s->dp, n, frame, len, now, &dsts);
    if (!ndst)
        return;
    struct vxdp_outer o;
    vxdp_outer_prepare(n, frame, len, &o);
    int hlen = n->iphl + n->l4hlen;
    if (ndst == 1) {
        uint8_t *h = frame - hlen;  /* in place, in the headroom */
        vxdp_outer_write(n, &o, dsts, h);
        enqueue(q, s, n, dsts, h, hlen, frame, len);
        return;
    }
    for (int i = 0; i < ndst; i++) {
        uint8_t *h = q->hdr[q->n];  /* enqueue flushes when full, so q->n is a free slot */
        vxdp_outer_write(n, &o, &dsts[i], h);
        enqueue(q, s, n, &dsts[i], h, hlen, frame, len);
    }
}

/* One segment to one destination through the raw queue: {outer + inner headers, payload}. */
static void enqueue_seg(struct vxdp_txq *q, struct sink *s, const struct vxdp_net *n,
                        const struct vxdp_outer *o, const struct vxdp_addr *dst,
                        const uint8_t *ih, uint32_t ihlen, const uint8_t *payload, uint32_t plen)
{
    uint8_t *b = q->seg[q->n];      /* enqueue flushes when full, so q->n is a free slot */
    int ohlen = n->iphl + n->l4hlen;
    memcpy(b + VXDP_HDR_MAX, ih, ihlen);
    uint8_t *h = b + VXDP_HDR_MAX - ohlen;
    vxdp_outer_write(n, o, dst, h);
    enqueue(q, s, n, dst, h, ohlen + (int)ihlen, (uint8_t *)payload, plen);
}

/* The path cannot do UDP_SEGMENT at all (udp(7)): EIO where the device cannot checksum,
 * ENOPROTOOPT / EOPNOTSUPP / EPROTONOSUPPORT on kernels without it. Only these turn tx GSO
 * off for the family, and only for VXDP_GSO_REPROBE seconds: a route or a device changes,
 * and a daemon must not lose the offload until restart. wireguard-go (conn/bind_std.go,
 * errShouldDisableUDPGSO) falls back on EIO alone. */
static bool gso_path_refuses(int err)
{
    return err == EIO || err == ENOPROTOOPT || err == EOPNOTSUPP || err == EPROTONOSUPPORT;
}

/* EINVAL / EMSGSIZE: THIS send did not fit (a segment beyond the path MTU, a route that
 * changed under it): it goes through the raw socket, the next one tries UDP_SEGMENT again. */
static bool gso_send_refused(int err)
{
    return err == EINVAL || err == EMSGSIZE;
}

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Sends the segments in dp->gsob to every destination with UDP_SEGMENT; whatever it cannot
 * send that way (no pool socket for the port, or tx GSO refused right now) goes raw. */
static void gso_send(struct vxdp_dp *dp, struct sink *s, struct vxdp_net *n,
                     const struct vxdp_addr *dsts, int ndst, double now)
{
    struct vxdp_gsob *gb = dp->gsob;
    struct vxdp_txq *q = dp->txq;
    struct vxdp_net_counters *c = &NQ(n)->c;
    int cnt = gb->n, d = 0, fam = n->family == 6;
    gb->n = 0;
    flush(q, s);                /* what was queued first leaves first: no flow reorders */
    int fd = dp->tx_gso[fam] ? vxdp_gso_socket(dp, &n->p.local, rd16(gb->o[0].l4), now) : -1;
    if (fd >= 0) {
        uint64_t bytes = 0;
        for (int j = 0; j < cnt; j++) {
            gb->iov[2 * j].iov_base = gb->hdr[j] + VXDP_HDR_MAX - 8;
            gb->iov[2 * j].iov_len = 8 + gb->ihlen;
            gb->iov[2 * j + 1].iov_base = (void *)gb->payload[j];
            gb->iov[2 * j + 1].iov_len = gb->seglen[j] - gb->ihlen;
            bytes += (uint64_t)n->iphl + n->l4hlen + gb->seglen[j];
        }
        union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } ctl;
        union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = gb->iov;
        m.msg_iovlen = (size_t)(2 * cnt);
        m.msg_name = &sa;
        if (cnt > 1) {          /* the first datagram is a full-size one (udp(7)) */
            memset(&ctl, 0, sizeof ctl);
            m.msg_control = ctl.buf;
            m.msg_controllen = sizeof ctl.buf;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = (uint16_t)(8 + gb->seglen[0]);
            memcpy(CMSG_DATA(cm), &size, sizeof size);
        }
        for (; d < ndst; d++) {
            if (n->esp) {       /* encrypted: this destination's datagrams, each sealed with its own
                                 * sequence number, then ONE UDP_SEGMENT send of their ESP payloads
                                 * (equal-length segments seal to equal-length datagrams) */
                int ohlen = n->iphl + n->l4hlen, j = 0;
                bytes = 0;
                for (; j < cnt; j++) {
                    uint8_t *b = q->seg[j];     /* the raw queue was flushed: its slots are free */
                    memcpy(b + VXDP_HDR_MAX, gb->hdr[j] + VXDP_HDR_MAX, gb->ihlen);
                    uint8_t *h = b + VXDP_HDR_MAX - ohlen;
                    vxdp_outer_write(n, &gb->o[j], &dsts[d], h);
                    uint8_t *out = q->esp + (size_t)j * VXDP_ESP_BUF;
                    uint32_t sl = vxdp_esp_seal(n->esp, n->family, h, ohlen + (int)gb->ihlen, gb->payload[j],
                                                gb->seglen[j] - gb->ihlen, out);
                    if (!sl)
                        break;
                    gb->iov[j].iov_base = out + n->iphl + 8;
                    gb->iov[j].iov_len = sl - (uint32_t)n->iphl - 8;
                    bytes += sl;
                }
                if (j < cnt) {          /* libcrypto refused: counted as a failed send */
                    c->drop_socket_error += (uint64_t)cnt;
                    continue;
                }
                m.msg_iovlen = (size_t)cnt;
                if (cnt > 1) {
                    uint16_t size = (uint16_t)gb->iov[0].iov_len;
                    memcpy(CMSG_DATA(CMSG_FIRSTHDR(&m)), &size, sizeof size);
                }
            }
            memset(&sa, 0, sizeof sa);
            if (n->family == 4) {
                sa.v4.sin_family = AF_INET;
                sa.v4.sin_port = htons(n->p.port);
                memcpy(&sa.v4.sin_addr, dsts[d].bytes, 4);
                m.msg_namelen = sizeof sa.v4;
            } else {
                sa.v6.sin6_family = AF_INET6;
                sa.v6.sin6_port = htons(n->p.port);
                memcpy(&sa.v6.sin6_addr, dsts[d].bytes, 16);
                m.msg_namelen = sizeof sa.v6;
            }
            ssize_t r;
            if (dp->gso_fail_count > 0) {   /* vxdp_inject_gso_error (tests) */
                dp->gso_fail_count--;
                errno = dp->gso_fail_err;
                r = -1;
            } else {
                do
                    r = sendmsg(fd, &m, 0);
                while (r < 0 && errno == EINTR);
            }
            if (r >= 0) {
                c->tx_packets += (uint64_t)cnt;
                c->tx_bytes += bytes;
                dp->ost.gso_sends++;
                dp->ost.gso_datagrams += (uint64_t)cnt;
                continue;
            }
            int err = errno;
            if (gso_path_refuses(err) || gso_send_refused(err)) {
                dp->ost.tx_gso_fallbacks++;     /* the daemon logs when this moves */
                dp->ost.tx_gso_errno = err;
            }
            if (gso_path_refuses(err)) {
                dp->tx_gso[fam] = false;
                dp->tx_gso_retry[fam] = now + VXDP_GSO_REPROBE;
                vxdp_gso_close(dp, n->family);
                break;                      /* this destination and the rest: raw */
            }
            if (gso_send_refused(err)) {    /* this destination: raw, GSO stays on */
                for (int j = 0; j < cnt; j++)
                    enqueue_seg(q, s, n, &gb->o[j], &dsts[d], gb->hdr[j] + VXDP_HDR_MAX, gb->ihlen,
                                gb->payload[j], gb->seglen[j] - gb->ihlen);
                flush(q, s);
                continue;
            }
            c->drop_socket_error += (uint64_t)cnt;  /* buffer full, no route: as raw would */
        }
    }
    for (; d < ndst; d++)
        for (int j = 0; j < cnt; j++)
            enqueue_seg(q, s, n, &gb->o[j], &dsts[d], gb->hdr[j] + VXDP_HDR_MAX, gb->ihlen,
                        gb->payload[j], gb->seglen[j] - gb->ihlen);
}

/* A super-frame, split (stage 2) segment by segment into the raw queue or the GSO batch. */
static void encap_super(struct vxdp_dp *dp, struct sink *s, struct vxdp_net *n,
                        const struct vxdp_split *sp, uint8_t *frame, double now)
{
    struct vxdp_txq *q = dp->txq;
    struct vxdp_gsob *gb = dp->gsob;
    uint32_t fh = vxdp_flow_hash(frame, sp->hlen);  /* headers only: every segment's hash */
    uint32_t maxn = 0;
    int fam = n->family == 6;
    if (!dp->tx_gso[fam] && dp->tx_gso_retry[fam] > 0 && now >= dp->tx_gso_retry[fam]) {
        dp->tx_gso[fam] = true;         /* re-probe: the next send says whether it works now */
        dp->tx_gso_retry[fam] = 0;
    }
    if (s->send && n->udp && dp->tx_gso[fam] && sp->nseg > 1) {
        /* UDP length is 16 bits: IPv4 65535 - 20 - 8, IPv6 payload 65535 - 8; an encrypted
         * datagram carries ESP around the UDP header and payload it would have had */
        uint32_t lim = (n->family == 4 ? 65507u : 65527u) /
                       (8 + sp->hlen + sp->gso + (n->esp ? vxdp_esp_overhead_max() : 0));
        maxn = lim < VXDP_GSO_SEGS ? lim : VXDP_GSO_SEGS;
    }
    bool gso = maxn >= 2;
    const struct vxdp_addr *gdsts = NULL;
    int gndst = 0;
    gb->n = 0;
    gb->ihlen = sp->hlen;
    for (uint32_t i = 0; i < sp->nseg; i++) {
        uint32_t start = i * sp->gso;
        uint32_t chunk = sp->plen - start < sp->gso ? sp->plen - start : sp->gso;
        if (sp->plen == 0)
            chunk = 0;
        uint32_t seglen = sp->hlen + chunk;
        const struct vxdp_addr *dsts;
        int ndst = classify(dp, n, frame, seglen, now, &dsts);
        if (!ndst)
            continue;
        const uint8_t *payload = frame + sp->poff + start;
        uint64_t fsum;
        if (gso) {
            int j = gb->n;
            uint8_t *ih = gb->hdr[j] + VXDP_HDR_MAX;
            vxdp_split_seg(sp, frame, i, ih, &fsum);
            vxdp_outer_prepare_fh(n, fh, seglen, fsum, &gb->o[j]);
            memcpy(ih - 8, gb->o[j].l4 + 8, 8);     /* the VXLAN / GRE header */
            gb->payload[j] = payload;
            gb->seglen[j] = seglen;
            gb->n++;
            gdsts = dsts;       /* one destination MAC: the same for every segment */
            gndst = ndst;
            if ((uint32_t)gb->n == maxn)
                gso_send(dp, s, n, gdsts, gndst, now);
            continue;
        }
        uint8_t ih[VXDP_SEG_HDR_MAX];
        struct vxdp_outer o;
        vxdp_split_seg(sp, frame, i, ih, &fsum);
        vxdp_outer_prepare_fh(n, fh, seglen, fsum, &o);
        for (int d = 0; d < ndst; d++)
            enqueue_seg(q, s, n, &o, &dsts[d], ih, sp->hlen, payload, chunk);
    }
    if (gb->n)
        gso_send(dp, s, n, gdsts, gndst, now);
}

/* One frame read from a vnet-header TAP (stages 2-4). */
static void encap_vnet(struct vxdp_dp *dp, struct sink *s, struct vxdp_net *n,
                       const struct vxdp_vnet_hdr *vh, uint8_t *frame, uint32_t len, double now)
{
    struct vxdp_split sp;
    int r = vxdp_split_init(&sp, vh, frame, len);
    if (r == 1) {
        if (vh->flags & VXDP_VNET_F_NEEDS_CSUM)
            dp->ost.csum_filled++;
        encap_frame(dp->txq, s, n, frame, len, now);
        return;
    }
    if (r < 0) {                /* as one frame read and dropped: wire.offload raised */
        NQ(n)->c.tap_rx_frames++;
        NQ(n)->c.tap_rx_bytes += len;
        NQ(n)->c.drop_malformed++;
        dp->ost.vnet_malformed++;
        return;
    }
    dp->ost.tso_frames++;
    dp->ost.tso_segments += sp.nseg;
    encap_super(dp, s, n, &sp, frame, now);
}

/* A read shorter than the virtio-net header: a frame of nothing, malformed. */
static void short_vnet(struct vxdp_dp *dp, struct vxdp_net *n)
{
    NQ(n)->c.tap_rx_frames++;
    NQ(n)->c.drop_malformed++;
    dp->ost.vnet_malformed++;
}

/* ---- ingress: one datagram ----------------------------------------------------------- */

static bool is_peer(const struct vxdp_net *n, const struct vxdp_addr *a)
{
    int lo = 0, hi = n->npeers;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int r = memcmp(&n->peers_sorted[mid], a, sizeof *a);
        if (r == 0)
            return true;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static int decap_inner(struct vxdp_dp *dp, struct vxdp_ep *e, uint8_t *p, uint32_t len,
                       const struct vxdp_addr *src, double now, uint32_t *off);

/* An encrypted endpoint's datagram (api.py "Encrypted networks" has the order): 0 and the
 * decrypted payload's offset and length, or -1 (dropped and counted). */
static int esp_step(struct vxdp_dp *dp, struct vxdp_ep *e, uint8_t *p, uint32_t len,
                    const struct vxdp_addr *src, uint32_t *off, uint32_t *plen)
{
    struct vxdp_ep_counters *ec = &EQ(e)->c;
    struct vxdp_net *n = vxdp_get_net(dp, e->esp_net);
    int r = vxdp_esp_precheck(p, len);
    if (r == 0 && !n->p.allow_unknown_sources && !is_peer(n, src)) {
        NQ(n)->c.drop_unknown_source++;
        return -1;
    }
    if (r == 0)
        r = vxdp_esp_open(n->esp, src, p, len, off, plen);
    switch (r) {
    case VXDP_ESP_OK: return 0;
    case VXDP_ESP_TOO_SHORT: ec->drop_esp_too_short++; break;
    case VXDP_ESP_PLAINTEXT: ec->drop_esp_plaintext++; break;
    case VXDP_ESP_UNKNOWN_KEY: ec->drop_esp_unknown_key++; break;
    case VXDP_ESP_REPLAY: ec->drop_esp_replay++; break;
    case VXDP_ESP_AUTH: ec->drop_esp_auth++; break;
    default: ec->drop_malformed++; break;
    }
    return -1;
}

/* Returns the network to deliver the frame at p + *off (*flen bytes) to, or -1 (dropped and
 * counted). An encrypted endpoint's datagram is decrypted in place first. */
static int decap_one(struct vxdp_dp *dp, struct vxdp_ep *e, uint8_t *p, uint32_t len,
                     const struct vxdp_addr *src, double now, uint32_t *off, uint32_t *flen)
{
    struct vxdp_ep_counters *ec = &EQ(e)->c;
    ec->rx_datagrams++;
    ec->rx_bytes += len;
    uint32_t base = 0;
    if (e->esp_net >= 0) {
        uint32_t plen;
        if (esp_step(dp, e, p, len, src, &base, &plen) < 0)
            return -1;
        p += base;
        len = plen;
    }
    int id = decap_inner(dp, e, p, len, src, now, off);
    *flen = len - *off;
    *off += base;
    return id;
}

static int decap_inner(struct vxdp_dp *dp, struct vxdp_ep *e, uint8_t *p, uint32_t len,
                       const struct vxdp_addr *src, double now, uint32_t *off)
{
    struct vxdp_ep_counters *ec = &EQ(e)->c;
    uint32_t key;
    switch (vxdp_decapsulate(e->kind, e->ipv4_header, p, len, &key, off)) {
    case VXDP_OK: break;
    case VXDP_E_MALFORMED: ec->drop_malformed++; return -1;
    case VXDP_E_BAD_FLAGS: ec->drop_bad_flags++; return -1;
    case VXDP_E_BAD_VERSION: ec->drop_bad_version++; return -1;
    case VXDP_E_BAD_PROTOCOL: ec->drop_bad_protocol++; return -1;
    default: ec->drop_bad_checksum++; return -1;
    }
    /* plain networks match the whole key, NVGRE ones the VSID (RFC 7637 sec. 3.2) */
    int id = vxdp_keymap_find(&e->plain, key);
    if (id < 0)
        id = vxdp_keymap_find(&e->nvgre, key >> 8);
    struct vxdp_net *n = id >= 0 ? vxdp_get_net(dp, id) : NULL;
    if (!n) {
        ec->drop_unknown_vni++;
        return -1;
    }
    /* RFC 7348 sec. 5: reserved bits are ignored on receipt unless the network asks */
    if (n->p.strict && e->kind == VXDP_ENCAP_VXLAN &&
        (p[0] != 0x08 || p[1] || p[2] || p[3] || p[7])) {
        ec->drop_bad_flags++;
        return -1;
    }
    struct vxdp_addr hdr_src;
    if (e->ipv4_header) {       /* the IP header is the truth, not the socket's address */
        memset(&hdr_src, 0, sizeof hdr_src);
        hdr_src.family = 4;
        memcpy(hdr_src.bytes, p + 12, 4);
        src = &hdr_src;
    }
    struct vxdp_net_counters *c = &NQ(n)->c;
    if (!n->p.allow_unknown_sources && !is_peer(n, src)) {
        c->drop_unknown_source++;
        return -1;
    }
    uint8_t *frame = p + *off;
    uint32_t flen = len - *off;
    if (flen < VXDP_ETH_HLEN || vxdp_is_multicast(frame + 6)) {
        c->drop_malformed++;    /* a group source MAC is never a station (IEEE 802.3 3.2.3) */
        return -1;
    }
    bool super = false;
    if ((int64_t)flen > vxdp_max_frame_len(n->p.mtu, frame, flen)) {
        struct vxdp_vnet_hdr vh;    /* a peer's TSO super-frame is split, not dropped */
        if (!vxdp_super_frame(frame, flen, n->p.mtu, &vh)) {
            c->drop_too_big++;
            return -1;
        }
        super = true;
    }
    if (n->p.learning)
        learn(dp, n, false, vxdp_mac_key(frame + 6), src, now);
    c->rx_packets++;
    c->rx_bytes += len;
    if (super)                  /* its checksum is the segments' business (deliver_super) */
        dp->ost.rx_super_frames++;
    else if (vxdp_csum_complete(frame, flen)) { /* before GRO: completed segments coalesce */
        c->csum_completed++;
        NQ(n)->csum_peer = *src;
        NQ(n)->csum_at = now;
    }
    return id;
}

/* ---- I/O-free entry points: caller buffers in, caller buffers out -------------------- */

static bool spans_ok(size_t buflen, const size_t *offs, const uint32_t *lens, int n,
                     size_t headroom)
{
    for (int i = 0; i < n; i++)
        if (offs[i] < headroom || offs[i] > buflen || lens[i] > buflen - offs[i])
            return false;
    return true;
}

static int encap_io_free(struct vxdp_dp *dp, int net, bool vnet, uint8_t *buf, size_t buflen,
                         const size_t *offs, const uint32_t *lens, int n, double now,
                         uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max)
{
    if (n < 0 || !spans_ok(buflen, offs, lens, n, VXDP_HEADROOM))
        return -EINVAL;
    iolock(dp);
    struct vxdp_net *nw = vxdp_get_net(dp, net);
    if (!nw) {
        iounlock(dp);
        return -ENOENT;
    }
    struct sink s = { .dp = dp, .n = nw, .fd = -1, .send = false, .out = out, .cap = out_cap,
                      .out_lens = out_lens, .out_max = out_max };
    struct vxdp_txq *q = dp->txq;
    q->n = 0;
    for (int i = 0; i < n; i++) {
        uint8_t *p = buf + offs[i];
        if (!vnet) {
            encap_frame(q, &s, nw, p, lens[i], now);
        } else if (lens[i] < VXDP_VNET_HDR_LEN) {
            short_vnet(dp, nw);
        } else {
            struct vxdp_vnet_hdr vh;
            memcpy(&vh, p, sizeof vh);
            encap_vnet(dp, &s, nw, &vh, p + VXDP_VNET_HDR_LEN, lens[i] - VXDP_VNET_HDR_LEN, now);
        }
    }
    flush(q, &s);
    iounlock(dp);
    return s.err ? s.err : s.nout;
}

int vxdp_encap(struct vxdp_dp *dp, int net, uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, int n, double now,
               uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max)
{
    return encap_io_free(dp, net, false, buf, buflen, offs, lens, n, now, out, out_cap,
                         out_lens, out_max);
}

/* Each span is a virtio-net header and the frame after it, as a vnet TAP read returns. */
int vxdp_encap_vnet(struct vxdp_dp *dp, int net, uint8_t *buf, size_t buflen,
                    const size_t *offs, const uint32_t *lens, int n, double now,
                    uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max)
{
    return encap_io_free(dp, net, true, buf, buflen, offs, lens, n, now, out, out_cap,
                         out_lens, out_max);
}

int vxdp_decap(struct vxdp_dp *dp, int ep, uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, const struct vxdp_addr *srcs, int n,
               double now, int32_t *out_idx, int32_t *out_net, uint32_t *out_off,
               uint32_t *out_len)
{
    if (n < 0 || !spans_ok(buflen, offs, lens, n, 0))
        return -EINVAL;
    iolock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    if (!e) {
        iounlock(dp);
        return -ENOENT;
    }
    int nd = 0;
    for (int i = 0; i < n; i++) {
        uint32_t off, flen;
        int id = decap_one(dp, e, buf + offs[i], lens[i], &srcs[i], now, &off, &flen);
        if (id >= 0) {
            out_idx[nd] = i;
            out_net[nd] = id;
            out_off[nd] = off;
            out_len[nd] = flen;
            nd++;
        }
    }
    iounlock(dp);
    return nd;
}

/* ---- pumps: one readiness event each ------------------------------------------------- */

/* The pump thread's policy reads this (poll.c); single writer under the view's lock. */
static void moved(struct vxdp_dp *dp, uint64_t bytes)
{
    __atomic_store_n(&dp->pst.moved_bytes, dp->pst.moved_bytes + bytes, __ATOMIC_RELAXED);
}

int vxdp_pump_tap(struct vxdp_dp *dp, int net, double now)
{
    qlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        qunlock(dp);
        return -ENOENT;
    }
    int got = 0, err = 0;
    bool vnet = n->vnet;
    while (got < dp->batch) {
        uint8_t *f = dp->slab + (size_t)got * VXDP_SLOT + VXDP_HEADROOM;
        ssize_t r = vnet ? read(NQ(n)->tap_fd, f - VXDP_VNET_HDR_LEN, VXDP_SUPER_MAX + VXDP_VNET_HDR_LEN)
                         : read(NQ(n)->tap_fd, f, VXDP_FRAME_MAX);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                err = -errno;
            break;
        }
        if (vnet && r >= VXDP_VNET_HDR_LEN)   /* the outer header will overwrite it */
            memcpy(&dp->vh[got], f - VXDP_VNET_HDR_LEN, sizeof dp->vh[got]);
        dp->lens[got++] = (uint32_t)r;
    }
    if (got) {
        NQ(n)->c.tap_rx_batches++;
        uint64_t bytes = 0;
        for (int i = 0; i < got; i++)
            bytes += dp->lens[i];
        moved(dp, bytes);
        struct sink s = { .dp = dp, .n = n, .fd = dp->tx_fd[n->family == 6], .send = true };
        struct vxdp_txq *q = dp->txq;
        q->n = 0;
        for (int i = 0; i < got; i++) {
            uint8_t *f = dp->slab + (size_t)i * VXDP_SLOT + VXDP_HEADROOM;
            if (!vnet)
                encap_frame(q, &s, n, f, dp->lens[i], now);
            else if (dp->lens[i] < VXDP_VNET_HDR_LEN)
                short_vnet(dp, n);
            else
                encap_vnet(dp, &s, n, &dp->vh[i], f, dp->lens[i] - VXDP_VNET_HDR_LEN, now);
        }
        flush(q, &s);
    }
    qunlock(dp);
    return err && !got ? err : got;
}

static void sockaddr_to_addr(const struct sockaddr_in6 *sa, struct vxdp_addr *a)
{
    memset(a, 0, sizeof *a);
    if (sa->sin6_family == AF_INET) {
        a->family = 4;
        memcpy(a->bytes, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa->sin6_family == AF_INET6) {
        a->family = 6;
        memcpy(a->bytes, &sa->sin6_addr, 16);
    }                           /* anything else stays family 0: never a peer */
}

/* The UDP_GRO cmsg's segment size (udp(7)), or 0: the message is one datagram. */
static int gro_size(struct msghdr *m)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
        if (cm->cmsg_level != SOL_UDP || cm->cmsg_type != UDP_GRO)
            continue;
        if (cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v;
            memcpy(&v, CMSG_DATA(cm), sizeof v);
            return v;
        }
        if (cm->cmsg_len >= CMSG_LEN(sizeof(uint16_t))) {
            uint16_t v;
            memcpy(&v, CMSG_DATA(cm), sizeof v);
            return v;
        }
    }
    return 0;
}

/* One frame to a TAP: one write (a vnet TAP: after an all-zero header, no offload asked). */
static void tap_write_one(struct vxdp_net *n, const uint8_t *frame, uint32_t len)
{
    ssize_t w;
    if (n->vnet) {
        static const struct vxdp_vnet_hdr none;
        struct iovec iov[2] = { { (void *)&none, VXDP_VNET_HDR_LEN },
                                { (void *)frame, len } };
        do
            w = writev(NQ(n)->tap_fd, iov, 2);
        while (w < 0 && errno == EINTR);
    } else {
        do
            w = write(NQ(n)->tap_fd, frame, len);
        while (w < 0 && errno == EINTR);
    }
    if (w < 0) {
        NQ(n)->c.drop_tap_write_error++;
    } else {
        NQ(n)->c.tap_tx_frames++;
        NQ(n)->c.tap_tx_bytes += len;
    }
}

/* n->gro_types: set by management (every lock held), turned off by whichever pump's GSO write
 * the TAP refuses first, while the other queues' pumps read it: relaxed atomics, the value is
 * a hint (a write already under way with the old one fails the same way and falls back too). */
static inline unsigned gro_types(const struct vxdp_net *n)
{
    return __atomic_load_n(&n->gro_types, __ATOMIC_RELAXED);
}

static inline void gro_off(struct vxdp_net *n)
{
    __atomic_store_n(&n->gro_types, 0u, __ATOMIC_RELAXED);
}

/* A peer's TCP super-frame (decap_one accepted it: vxdp_super_frame), in MTU-sized segments:
 * one GSO write where the TAP took TSO for its IP version, else split here (offload.c) and
 * written segment by segment. Counted as the segments it stands for, like coalesced writes. */
static void deliver_super(struct vxdp_dp *dp, struct vxdp_net *n, uint8_t *frame, uint32_t len)
{
    struct vxdp_vnet_hdr vh;
    int nseg = vxdp_super_frame(frame, len, n->p.mtu, &vh);
    struct vxdp_split sp;
    if (nseg < 1 || vxdp_split_init(&sp, &vh, frame, len) != 0) {
        NQ(n)->c.drop_tap_write_error++;    /* cannot happen: decap_one checked the same */
        return;
    }
    dp->ost.rx_super_segments += (uint64_t)nseg;
    unsigned tso = (vh.gso_type & ~VXDP_GSO_ECN) == VXDP_GSO_TCPV4 ? VXDP_TAP_TSO4 : VXDP_TAP_TSO6;
    if (n->vnet && (gro_types(n) & tso)) {
        vxdp_super_partial(frame, len, &vh);
        struct iovec iov[2] = { { &vh, VXDP_VNET_HDR_LEN }, { frame, len } };
        ssize_t w;
        do
            w = writev(NQ(n)->tap_fd, iov, 2);
        while (w < 0 && errno == EINTR);
        if (w >= 0) {
            NQ(n)->c.tap_tx_frames += (uint64_t)nseg;
            NQ(n)->c.tap_tx_bytes += (uint64_t)(nseg - 1) * sp.hlen + len;
            return;
        }
        if (errno != EINVAL && errno != EOPNOTSUPP) {
            NQ(n)->c.drop_tap_write_error += (uint64_t)nseg;
            return;
        }
        gro_off(n);             /* the TAP refuses GSO frames: split them here from now on */
        dp->ost.tap_gso_fallbacks++;
        dp->ost.tap_gso_errno = errno;
    }
    static const struct vxdp_vnet_hdr none;
    for (uint32_t i = 0; i < sp.nseg; i++) {
        uint8_t h[VXDP_SEG_HDR_MAX];
        uint32_t chunk = vxdp_split_seg(&sp, frame, i, h, NULL);
        struct iovec iov[3] = { { (void *)&none, VXDP_VNET_HDR_LEN }, { h, sp.hlen },
                                { frame + sp.poff + i * sp.gso, chunk } };
        ssize_t w;
        do
            w = n->vnet ? writev(NQ(n)->tap_fd, iov, 3) : writev(NQ(n)->tap_fd, iov + 1, 2);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            NQ(n)->c.drop_tap_write_error++;
        } else {
            NQ(n)->c.tap_tx_frames++;
            NQ(n)->c.tap_tx_bytes += sp.hlen + chunk;
        }
    }
}

/* The frames in dp->gro_frames/gro_lens[0..cnt), all for network n, in arrival order:
 * super-frames on their own (deliver_super), the runs between them as below. */
static void deliver_run(struct vxdp_dp *dp, struct vxdp_net *n, const uint8_t *const *frames,
                        const uint32_t *lens, int cnt);

static void deliver_net(struct vxdp_dp *dp, struct vxdp_net *n, int cnt)
{
    int from = 0;
    for (int k = 0; k < cnt; k++) {
        uint32_t len = dp->gro_lens[k];
        if ((int64_t)len <= vxdp_max_frame_len(n->p.mtu, dp->gro_frames[k], len))
            continue;
        deliver_run(dp, n, dp->gro_frames + from, dp->gro_lens + from, k - from);
        deliver_super(dp, n, (uint8_t *)dp->gro_frames[k], len);   /* in the slab */
        from = k + 1;
    }
    deliver_run(dp, n, dp->gro_frames + from, dp->gro_lens + from, cnt - from);
}

static void deliver_run(struct vxdp_dp *dp, struct vxdp_net *n, const uint8_t *const *frames,
                        const uint32_t *lens, int cnt)
{
    if (cnt <= 0)
        return;
    unsigned types = n->vnet ? gro_types(n) : 0;
    if (!types) {
        for (int k = 0; k < cnt; k++)
            tap_write_one(n, frames[k], lens[k]);
        return;
    }
    struct vxdp_gro *g = &dp->gro;
    int items = vxdp_gro_run(g, frames, lens, cnt, types);
    if (items < 0) {            /* cannot happen: deliver() never gathers more than dl_cap */
        for (int k = 0; k < cnt; k++)
            tap_write_one(n, frames[k], lens[k]);
        return;
    }
    for (int k = 0; k < items; k++) {
        const struct vxdp_gro_item *it = &g->items[k];
        if (it->nsegs < 2) {
            tap_write_one(n, frames[it->first], lens[it->first]);
            continue;
        }
        if (gro_types(n)) {
            uint8_t h[VXDP_SEG_HDR_MAX];
            struct vxdp_vnet_hdr vh;
            int hlen = vxdp_gro_header(g, k, frames, h, &vh);
            struct iovec iov[2 + VXDP_GRO_MAX_SEGS];
            iov[0].iov_base = &vh;
            iov[0].iov_len = VXDP_VNET_HDR_LEN;
            iov[1].iov_base = h;
            iov[1].iov_len = (size_t)hlen;
            int m = 2;
            uint64_t bytes = 0;
            for (int32_t j = it->first; j >= 0; j = g->next[j]) {
                /* every segment of a run has the same header length (same key) */
                iov[m].iov_base = (void *)(frames[j] + hlen);
                iov[m].iov_len = lens[j] - (uint32_t)hlen;
                m++;
                bytes += lens[j];
            }
            ssize_t w;
            do
                w = writev(NQ(n)->tap_fd, iov, m);
            while (w < 0 && errno == EINTR);
            if (w >= 0) {
                NQ(n)->c.tap_tx_frames += it->nsegs;
                NQ(n)->c.tap_tx_bytes += bytes;
                dp->ost.coalesced_frames++;
                dp->ost.coalesced_segments += it->nsegs;
                continue;
            }
            if (errno != EINVAL && errno != EOPNOTSUPP) {
                NQ(n)->c.drop_tap_write_error += it->nsegs;
                continue;
            }
            gro_off(n);         /* the TAP refuses GSO frames: write them as they came */
            dp->ost.tap_gso_fallbacks++;
            dp->ost.tap_gso_errno = errno;
        }
        for (int32_t j = it->first; j >= 0; j = g->next[j])
            tap_write_one(n, frames[j], lens[j]);
    }
}

/* Stage 3 for deliveries dp->dl_*[0..nd): per network, in order of first delivery. */
static void deliver(struct vxdp_dp *dp, int nd)
{
    for (int d = 0; d < nd; d++) {
        int32_t id = dp->dl_net[d];
        if (id < 0)
            continue;
        int cnt = 0;
        for (int k = d; k < nd; k++) {
            if (dp->dl_net[k] != id)
                continue;
            dp->gro_frames[cnt] = dp->dl_ptr[k];
            dp->gro_lens[cnt] = dp->dl_len[k];
            cnt++;
            dp->dl_net[k] = -1;
        }
        struct vxdp_net *n = vxdp_get_net(dp, id);
        if (n)
            deliver_net(dp, n, cnt);
    }
}

int vxdp_pump_endpoint(struct vxdp_dp *dp, int ep, double now)
{
    qlock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    int r = !e ? -ENOENT : EQ(e)->fd < 0 ? -ENOTCONN : 0;
    if (r < 0) {
        qunlock(dp);
        return r;
    }
    for (int i = 0; i < dp->batch; i++) {
        struct msghdr *m = &dp->rx_msg[i].msg_hdr;
        dp->rx_iov[i].iov_base = dp->slab + (size_t)i * VXDP_SLOT + VXDP_HEADROOM;
        dp->rx_iov[i].iov_len = VXDP_FRAME_MAX;
        memset(m, 0, sizeof *m);
        m->msg_name = &dp->rx_sa[i];
        m->msg_namelen = sizeof dp->rx_sa[i];
        m->msg_iov = &dp->rx_iov[i];
        m->msg_iovlen = 1;
        if (e->gro) {
            m->msg_control = dp->rx_ctl + (size_t)i * VXDP_RX_CTL;
            m->msg_controllen = VXDP_RX_CTL;
        }
    }
    do
        r = recvmmsg(EQ(e)->fd, dp->rx_msg, (unsigned)dp->batch, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            r = 0;
        else {
            r = -errno;
            EQ(e)->c.drop_socket_error++;
        }
        qunlock(dp);
        return r;
    }
    if (r > 0) {
        EQ(e)->c.rx_batches++;
        uint64_t bytes = 0;
        for (int i = 0; i < r; i++)
            bytes += dp->rx_msg[i].msg_len;
        moved(dp, bytes);
    }
    int nd = 0;
    for (int i = 0; i < r; i++) {
        struct vxdp_addr src;
        sockaddr_to_addr(&dp->rx_sa[i], &src);
        uint8_t *p = dp->rx_iov[i].iov_base;
        uint32_t mlen = dp->rx_msg[i].msg_len, seg = mlen;
        if (e->gro) {
            int gs = gro_size(&dp->rx_msg[i].msg_hdr);
            if (gs > 0 && (uint32_t)gs < mlen) {
                seg = (uint32_t)gs;
                dp->ost.gro_messages++;
                dp->ost.gro_datagrams += (mlen + seg - 1) / seg;
            }
        }
        uint32_t at = 0;
        do {                    /* each datagram as if it had come alone; at least one */
            uint32_t dlen = mlen - at < seg ? mlen - at : seg;
            uint32_t off, flen;
            int id = decap_one(dp, e, p + at, dlen, &src, now, &off, &flen);
            if (id >= 0) {
                if (nd == dp->dl_cap) {
                    deliver(dp, nd);
                    nd = 0;
                }
                dp->dl_net[nd] = id;
                dp->dl_ptr[nd] = p + at + off;
                dp->dl_len[nd] = flen;
                nd++;
            }
            at += dlen;
        } while (at < mlen);
    }
    deliver(dp, nd);
    qunlock(dp);
    return r;
}
