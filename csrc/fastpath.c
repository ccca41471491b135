/*
 * fastpath.c: the per-packet pipeline of vxlan-dp, one readiness event's batch per call.
 *
 * Egress, vxdp_pump_tap (TAP fd readable):
 *   1. read:   up to dp->batch frames, read() until EAGAIN, each into its own slab slot
 *              at offset VXDP_HEADROOM. The slab belongs to the dp and is reused by every
 *              batch; a frame lives there until stage 4 has sent it.
 *   2. classify (encap_frame): runt -> drop_malformed, source MAC -> local-MAC table,
 *              over the MTU -> drop_too_big, unicast in the FDB -> one remote, else flood
 *              to every peer in order.
 *   3. headers (outer.c): a frame going to one remote gets its outer header written in
 *              place in its own headroom (one iovec, no copy to prepend); a flooded frame
 *              gets a header per copy in dp->txq->hdr and a two-iovec message {header,
 *              shared frame}, so the frame itself is never copied either.
 *   4. send:   messages queue in dp->txq (VXDP_TXQ of them) and leave by sendmmsg on the
 *              egress raw socket (IP_HDRINCL, destination port 0); a full queue is flushed
 *              mid-batch. Each message sent counts tx_packets/tx_bytes, each one refused
 *              drop_socket_error (a partial sendmmsg resumes after the refused message).
 * Ingress, vxdp_pump_endpoint (underlay socket readable):
 *   1. recvmmsg of up to dp->batch datagrams into the same slab, sources into dp->rx_sa;
 *   2. decap_one: validate (wire.c), find the network by key, check the source, the inner
 *              frame and the MTU, learn, count; deliveries are listed in dp->dl_*;
 *   3. write() each delivered frame to its network's TAP straight from the slab.
 * The I/O-free vxdp_encap / vxdp_decap run stages 2-3 / 2 on the caller's buffers (which
 * must give each frame VXDP_HEADROOM bytes in front) and copy the messages out instead of
 * sending, so the differential tests exercise the very code the pumps run.
 *
 * Ownership: the caller owns its buffers and every fd; the dp owns the slab, the txq and
 * the rx arrays, all allocated by vxdp_new. Nothing here allocates or calls Python per
 * packet, and each public call holds dp->lock for its whole batch.
 * Order of checks and counters: vxlan_dp/fastpath/api.py, identical to _pure.py.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

#include "internal.h"

/* ---- where a batch's outer packets go ------------------------------------------------ */

struct sink {
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
    struct vxdp_net_counters *c = &s->n->c;
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

/* ---- egress: one frame --------------------------------------------------------------- */

/* `frame` must have VXDP_HEADROOM writable bytes in front of it. */
static void encap_frame(struct vxdp_txq *q, struct sink *s, struct vxdp_net *n,
                        uint8_t *frame, uint32_t len, double now)
{
    struct vxdp_net_counters *c = &n->c;
    c->tap_rx_frames++;
    c->tap_rx_bytes += len;
    if (len < VXDP_ETH_HLEN) {
        c->drop_malformed++;
        return;
    }
    if (!vxdp_is_multicast(frame + 6)) {
        /* local-MAC table for the control plane; full -> not recorded, frame still sent */
        static const struct vxdp_addr none;
        vxdp_fdb_learn(&n->local, vxdp_mac_key(frame + 6), &none, now);
    }
    /* the 16-bit IP length check only bites where the MTU is configured beyond what one
     * outer packet can carry: drop as too big rather than truncate the length field */
    if ((int64_t)len > vxdp_max_frame_len(n->p.mtu, frame, len) || !vxdp_outer_fits(n, len)) {
        c->drop_too_big++;
        return;
    }
    const struct vxdp_addr *dsts = NULL;
    int ndst = 0;
    if (!vxdp_is_multicast(frame)) {
        const struct vxdp_fdb_entry *e = vxdp_fdb_lookup(&n->fdb, vxdp_mac_key(frame));
        if (e) {
            dsts = &e->remote;
            ndst = 1;
        }
    }
    if (!dsts) {                /* unknown unicast, broadcast, multicast: head-end replication */
        dsts = n->peers;
        ndst = n->npeers;
        if (ndst) {
            c->flood_frames++;
            c->flood_copies += (uint64_t)ndst;
        }
    }
    if (!ndst) {
        c->drop_no_peers++;
        return;
    }
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

/* Returns the network to deliver the frame at p + *off to, or -1 (dropped and counted). */
static int decap_one(struct vxdp_dp *dp, struct vxdp_ep *e, const uint8_t *p, uint32_t len,
                     const struct vxdp_addr *src, double now, uint32_t *off)
{
    struct vxdp_ep_counters *ec = &e->c;
    ec->rx_datagrams++;
    ec->rx_bytes += len;
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
    struct vxdp_net_counters *c = &n->c;
    if (!n->p.allow_unknown_sources && !is_peer(n, src)) {
        c->drop_unknown_source++;
        return -1;
    }
    const uint8_t *frame = p + *off;
    uint32_t flen = len - *off;
    if (flen < VXDP_ETH_HLEN || vxdp_is_multicast(frame + 6)) {
        c->drop_malformed++;    /* a group source MAC is never a station (IEEE 802.3 3.2.3) */
        return -1;
    }
    if ((int64_t)flen > vxdp_max_frame_len(n->p.mtu, frame, flen)) {
        c->drop_too_big++;
        return -1;
    }
    if (n->p.learning) {
        switch (vxdp_fdb_learn(&n->fdb, vxdp_mac_key(frame + 6), src, now)) {
        case VXDP_LEARN_NEW: c->fdb_learned++; break;
        case VXDP_LEARN_MOVED: c->fdb_moved++; break;
        case VXDP_LEARN_FULL: c->fdb_full++; break;
        default: break;
        }
    }
    c->rx_packets++;
    c->rx_bytes += len;
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

int vxdp_encap(struct vxdp_dp *dp, int net, uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, int n, double now,
               uint8_t *out, size_t out_cap, uint32_t *out_lens, int out_max)
{
    if (n < 0 || !spans_ok(buflen, offs, lens, n, VXDP_HEADROOM))
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *nw = vxdp_get_net(dp, net);
    if (!nw) {
        pthread_mutex_unlock(&dp->lock);
        return -ENOENT;
    }
    struct sink s = { .n = nw, .fd = -1, .send = false, .out = out, .cap = out_cap,
                      .out_lens = out_lens, .out_max = out_max };
    struct vxdp_txq *q = dp->txq;
    q->n = 0;
    for (int i = 0; i < n; i++)
        encap_frame(q, &s, nw, buf + offs[i], lens[i], now);
    flush(q, &s);
    pthread_mutex_unlock(&dp->lock);
    return s.err ? s.err : s.nout;
}

int vxdp_decap(struct vxdp_dp *dp, int ep, const uint8_t *buf, size_t buflen,
               const size_t *offs, const uint32_t *lens, const struct vxdp_addr *srcs, int n,
               double now, int32_t *out_idx, int32_t *out_net, uint32_t *out_off)
{
    if (n < 0 || !spans_ok(buflen, offs, lens, n, 0))
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    if (!e) {
        pthread_mutex_unlock(&dp->lock);
        return -ENOENT;
    }
    int nd = 0;
    for (int i = 0; i < n; i++) {
        uint32_t off;
        int id = decap_one(dp, e, buf + offs[i], lens[i], &srcs[i], now, &off);
        if (id >= 0) {
            out_idx[nd] = i;
            out_net[nd] = id;
            out_off[nd] = off;
            nd++;
        }
    }
    pthread_mutex_unlock(&dp->lock);
    return nd;
}

/* ---- pumps: one readiness event each ------------------------------------------------- */

int vxdp_pump_tap(struct vxdp_dp *dp, int net, double now)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        pthread_mutex_unlock(&dp->lock);
        return -ENOENT;
    }
    int got = 0, err = 0;
    while (got < dp->batch) {
        uint8_t *f = dp->slab + (size_t)got * VXDP_SLOT + VXDP_HEADROOM;
        ssize_t r = read(n->tap_fd, f, VXDP_FRAME_MAX);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                err = -errno;
            break;
        }
        dp->lens[got++] = (uint32_t)r;
    }
    if (got) {
        n->c.tap_rx_batches++;
        struct sink s = { .n = n, .fd = dp->tx_fd[n->family == 6], .send = true };
        struct vxdp_txq *q = dp->txq;
        q->n = 0;
        for (int i = 0; i < got; i++)
            encap_frame(q, &s, n, dp->slab + (size_t)i * VXDP_SLOT + VXDP_HEADROOM,
                        dp->lens[i], now);
        flush(q, &s);
    }
    pthread_mutex_unlock(&dp->lock);
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

int vxdp_pump_endpoint(struct vxdp_dp *dp, int ep, double now)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    int r = !e ? -ENOENT : e->fd < 0 ? -ENOTCONN : 0;
    if (r < 0) {
        pthread_mutex_unlock(&dp->lock);
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
    }
    do
        r = recvmmsg(e->fd, dp->rx_msg, (unsigned)dp->batch, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            r = 0;
        else {
            r = -errno;
            e->c.drop_socket_error++;
        }
        pthread_mutex_unlock(&dp->lock);
        return r;
    }
    if (r > 0)
        e->c.rx_batches++;
    int nd = 0;
    for (int i = 0; i < r; i++) {
        struct vxdp_addr src;
        uint32_t off;
        sockaddr_to_addr(&dp->rx_sa[i], &src);
        int id = decap_one(dp, e, dp->rx_iov[i].iov_base, dp->rx_msg[i].msg_len, &src, now,
                           &off);
        if (id >= 0) {
            dp->dl_idx[nd] = i;
            dp->dl_net[nd] = id;
            dp->dl_off[nd] = off;
            nd++;
        }
    }
    for (int d = 0; d < nd; d++) {  /* a TAP takes one frame per write(): no batching API */
        struct vxdp_net *n = vxdp_get_net(dp, dp->dl_net[d]);
        int i = dp->dl_idx[d];
        const uint8_t *frame = (const uint8_t *)dp->rx_iov[i].iov_base + dp->dl_off[d];
        size_t flen = dp->rx_msg[i].msg_len - dp->dl_off[d];
        ssize_t w;
        do
            w = write(n->tap_fd, frame, flen);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            n->c.drop_tap_write_error++;
        } else {
            n->c.tap_tx_frames++;
            n->c.tap_tx_bytes += flen;
        }
    }
    pthread_mutex_unlock(&dp->lock);
    return r;
}
