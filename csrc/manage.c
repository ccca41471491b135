/*
 * manage.c: the management half of the C API: data plane, endpoint and network lifetimes,
 * peers, static FDB entries, dumps and counter snapshots. These calls are rare and may
 * allocate; they prepare everything the pumps need so the pumps never do.
 *
 * Every public function holds every queue view's lock (vxdp_wlock, internal.h "queues"), so
 * no pump runs meanwhile; ids are indexes into grow-only pointer arrays and are never reused,
 * matching the pure-Python backend.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "neigh.h"

#ifndef VXDP_VERSION
#error "VXDP_VERSION must be defined by the build (csrc/build_fastpath.py)"
#endif

const char *vxdp_version(void)
{
    return VXDP_VERSION;
}

_Thread_local int vxdp_cur_q;

struct vxdp_net *vxdp_get_net(struct vxdp_dp *dp, int id)
{
    dp = dp->main;
    return id >= 0 && id < dp->nnets ? dp->nets[id] : NULL;
}

struct vxdp_ep *vxdp_get_ep(struct vxdp_dp *dp, int id)
{
    dp = dp->main;
    return id >= 0 && id < dp->neps ? dp->eps[id] : NULL;
}

/* nq and qs[] change only with view 0's lock held (vxdp_set_queues, which may run while
 * pumps do: queues grow at any time), so they are read only once that lock is taken; and
 * wunlock, still holding it, releases exactly the locks wlock took. */
void vxdp_wlock(struct vxdp_dp *dp)
{
    dp = dp->main;
    pthread_mutex_lock(&dp->lock);
    for (int q = 1; q < dp->nq; q++)
        pthread_mutex_lock(&dp->qs[q]->lock);
}

void vxdp_wunlock(struct vxdp_dp *dp)
{
    dp = dp->main;
    for (int q = dp->nq - 1; q >= 1; q--)
        pthread_mutex_unlock(&dp->qs[q]->lock);
    pthread_mutex_unlock(&dp->lock);
}

/* ---- the data plane ------------------------------------------------------------------ */

static void free_view(struct vxdp_dp *dp);

/* A view's own part: lock, batch buffers, GSO pool (each view of a dp has one). */
static struct vxdp_dp *new_view(int batch)
{
    struct vxdp_dp *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
    pthread_mutex_init(&dp->lock, NULL);
    dp->main = dp;
    dp->batch = batch;
    dp->tx_fd[0] = dp->tx_fd[1] = -1;
    /* batch * 64 KiB of address space; only the pages frames actually touch get memory */
    dp->slab_len = (size_t)batch * VXDP_SLOT;
    dp->slab = mmap(NULL, dp->slab_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
    if (dp->slab == MAP_FAILED)
        dp->slab = NULL;
    dp->lens = calloc((size_t)batch, sizeof *dp->lens);
    dp->rx_msg = calloc((size_t)batch, sizeof *dp->rx_msg);
    dp->rx_iov = calloc((size_t)batch, sizeof *dp->rx_iov);
    dp->rx_sa = calloc((size_t)batch, sizeof *dp->rx_sa);
    dp->dl_cap = batch * VXDP_DL_PER_MSG;
    dp->dl_net = calloc((size_t)dp->dl_cap, sizeof *dp->dl_net);
    dp->dl_ptr = calloc((size_t)dp->dl_cap, sizeof *dp->dl_ptr);
    dp->dl_len = calloc((size_t)dp->dl_cap, sizeof *dp->dl_len);
    dp->txq = calloc(1, sizeof *dp->txq);
    dp->vh = calloc((size_t)batch, sizeof *dp->vh);
    dp->rx_ctl = calloc((size_t)batch, VXDP_RX_CTL);
    dp->gro_frames = calloc((size_t)dp->dl_cap, sizeof *dp->gro_frames);
    dp->gro_lens = calloc((size_t)dp->dl_cap, sizeof *dp->gro_lens);
    dp->gsob = calloc(1, sizeof *dp->gsob);
    dp->pend = calloc((size_t)dp->dl_cap, sizeof *dp->pend);
    for (int i = 0; i < VXDP_GSO_SOCKS; i++)
        dp->gso_socks[i].fd = -1;
    bool gro_ok = vxdp_gro_init(&dp->gro, dp->dl_cap) == 0;
    if (!dp->slab || !dp->lens || !dp->rx_msg || !dp->rx_iov || !dp->rx_sa || !dp->dl_net ||
        !dp->dl_ptr || !dp->dl_len || !dp->txq || !dp->vh || !dp->rx_ctl || !dp->gro_frames ||
        !dp->gro_lens || !dp->gsob || !dp->pend || !gro_ok) {
        free_view(dp);
        return NULL;
    }
    return dp;
}

struct vxdp_dp *vxdp_new(int batch)
{
    if (batch < 1 || batch > VXDP_BATCH_MAX)
        return NULL;
    struct vxdp_dp *dp = new_view(batch);
    if (dp) {
        dp->nq = 1;
        dp->qs[0] = dp;
    }
    return dp;
}

static void free_net(struct vxdp_net *n)
{
    vxdp_esp_free(n->esp);      /* zeroes the keys */
    vxdp_fdb_destroy(&n->fdb);
    vxdp_fdb_destroy(&n->local);
    vxdp_neigh_free(n->neigh);
    free(n->peers);
    free(n->peers_sorted);
    free(n);
}

static void free_ep(struct vxdp_ep *e)
{
    free(e->plain.v);
    free(e->nvgre.v);
    free(e);
}

void vxdp_free(struct vxdp_dp *dp)
{
    if (!dp)
        return;
    for (int q = 1; q < dp->nq; q++)
        free_view(dp->qs[q]);
    for (int i = 0; i < dp->nnets; i++)
        if (dp->nets[i])
            free_net(dp->nets[i]);
    for (int i = 0; i < dp->neps; i++)
        if (dp->eps[i])
            free_ep(dp->eps[i]);
    free(dp->nets);
    free(dp->eps);
    free_view(dp);
}

static void free_view(struct vxdp_dp *dp)
{
    if (dp->slab)
        munmap(dp->slab, dp->slab_len);
    free(dp->lens);
    free(dp->rx_msg);
    free(dp->rx_iov);
    free(dp->rx_sa);
    free(dp->dl_net);
    free(dp->dl_ptr);
    free(dp->dl_len);
    if (dp->txq && dp->txq->esp)
        munmap(dp->txq->esp, (size_t)VXDP_TXQ * VXDP_ESP_BUF);
    free(dp->txq);
    free(dp->vh);
    free(dp->rx_ctl);
    free(dp->gro_frames);
    free(dp->gro_lens);
    free(dp->gsob);
    free(dp->pend);
    vxdp_gro_free(&dp->gro);
    vxdp_gso_close(dp, 0);
    pthread_mutex_destroy(&dp->lock);
    free(dp);
}

int vxdp_set_tx_socket(struct vxdp_dp *dp, int family, int fd)
{
    if (family != 4 && family != 6)
        return -EINVAL;
    vxdp_wlock(dp);
    for (int q = 0; q < dp->nq; q++)
        dp->qs[q]->tx_fd[family == 6] = fd < 0 ? -1 : fd;
    vxdp_wunlock(dp);
    return 0;
}

/* Appends p to a grow-only pointer array; returns its index or -ENOMEM. */
static int append(void ***arr, int *n, int *cap, void *p)
{
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 8;
        void **a = realloc(*arr, (size_t)c * sizeof *a);
        if (!a)
            return -ENOMEM;
        *arr = a;
        *cap = c;
    }
    (*arr)[*n] = p;
    return (*n)++;
}

/* ---- endpoints and their key maps ---------------------------------------------------- */

int vxdp_add_endpoint(struct vxdp_dp *dp, int kind, int fd, int ipv4_header)
{
    if (kind < VXDP_ENCAP_VXLAN || kind > VXDP_ENCAP_GRE_UDP)
        return -EINVAL;
    if (ipv4_header && kind != VXDP_ENCAP_GRE)
        return -EINVAL;         /* only a raw IPv4 GRE socket delivers the IP header */
    struct vxdp_ep *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->kind = kind;
    e->esp_net = -1;
    for (int q = 0; q < VXDP_QUEUES_MAX; q++)
        e->q[q].fd = -1;
    e->q[0].fd = fd < 0 ? -1 : fd;
    e->ipv4_header = ipv4_header != 0;
    vxdp_wlock(dp);
    int id = append((void ***)&dp->eps, &dp->neps, &dp->eps_cap, e);
    vxdp_wunlock(dp);
    if (id < 0)
        free(e);
    return id;
}

int vxdp_remove_endpoint(struct vxdp_dp *dp, int ep)
{
    vxdp_wlock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    int r = 0;
    if (!e)
        r = -ENOENT;
    else if (e->plain.n || e->nvgre.n)
        r = -EBUSY;
    else {
        dp->eps[ep] = NULL;
        free_ep(e);
    }
    vxdp_wunlock(dp);
    return r;
}

/* Binary search: index of key, or -(insertion point) - 1. */
static int keymap_search(const struct vxdp_keymap *m, uint32_t key)
{
    int lo = 0, hi = m->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (m->v[mid].key < key)
            lo = mid + 1;
        else if (m->v[mid].key > key)
            hi = mid;
        else
            return mid;
    }
    return -lo - 1;
}

int vxdp_keymap_find(const struct vxdp_keymap *m, uint32_t key)
{
    int i = keymap_search(m, key);
    return i >= 0 ? m->v[i].net : -1;
}

static int keymap_insert(struct vxdp_keymap *m, uint32_t key, int32_t net)
{
    int i = keymap_search(m, key);
    if (i >= 0)
        return -EEXIST;
    i = -i - 1;
    if (m->n == m->cap) {
        int c = m->cap ? m->cap * 2 : 4;
        void *v = realloc(m->v, (size_t)c * sizeof *m->v);
        if (!v)
            return -ENOMEM;
        m->v = v;
        m->cap = c;
    }
    memmove(&m->v[i + 1], &m->v[i], (size_t)(m->n - i) * sizeof *m->v);
    m->v[i].key = key;
    m->v[i].net = net;
    m->n++;
    return 0;
}

static void keymap_remove(struct vxdp_keymap *m, uint32_t key)
{
    int i = keymap_search(m, key);
    if (i < 0)
        return;
    memmove(&m->v[i], &m->v[i + 1], (size_t)(m->n - i - 1) * sizeof *m->v);
    m->n--;
}

/* ---- networks ------------------------------------------------------------------------ */

int vxdp_add_network(struct vxdp_dp *dp, const struct vxdp_net_params *params, int ep,
                     int tap_fd)
{
    const struct vxdp_net_params *p = params;
    if (p->encap < VXDP_ENCAP_VXLAN || p->encap > VXDP_ENCAP_GRE_UDP ||
        (p->local.family != 4 && p->local.family != 6) || p->sport_min > p->sport_max ||
        !(p->ageing > 0) || p->max_fdb_entries == 0)
        return -EINVAL;
    struct vxdp_net *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->p = *p;
    for (int q = 0; q < VXDP_QUEUES_MAX; q++)
        n->q[q].tap_fd = -1;
    n->q[0].tap_fd = tap_fd < 0 ? -1 : tap_fd;
    n->ep = ep;
    n->family = p->local.family;
    n->iphl = n->family == 4 ? 20 : 40;
    n->udp = p->encap != VXDP_ENCAP_GRE;
    n->l4hlen = n->udp ? 16 : 8;
    int r = vxdp_fdb_init(&n->fdb, p->max_fdb_entries, p->ageing);
    if (r == 0)
        r = vxdp_fdb_init(&n->local, p->max_fdb_entries, p->ageing);
    if (r < 0) {
        vxdp_fdb_destroy(&n->fdb);
        free(n);
        return r;
    }

    vxdp_wlock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    struct vxdp_keymap *m = NULL;
    if (!e)
        r = -ENOENT;
    else if (e->kind != p->encap)
        r = -EINVAL;
    else if (e->esp_net >= 0)
        r = -EBUSY;             /* an encrypted network has its endpoint to itself */
    else {
        m = p->nvgre ? &e->nvgre : &e->plain;
        r = vxdp_keymap_find(m, p->vni) >= 0 ? -EEXIST : 0;
    }
    if (r == 0) {
        n->id = dp->nnets;
        r = keymap_insert(m, p->vni, n->id);
        if (r == 0) {
            r = append((void ***)&dp->nets, &dp->nnets, &dp->nets_cap, n);
            if (r < 0)
                keymap_remove(m, p->vni);
        }
    }
    vxdp_wunlock(dp);
    if (r < 0)
        free_net(n);
    return r;
}

int vxdp_remove_network(struct vxdp_dp *dp, int net)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        vxdp_wunlock(dp);
        return -ENOENT;
    }
    struct vxdp_ep *e = vxdp_get_ep(dp, n->ep);
    if (e) {
        keymap_remove(n->p.nvgre ? &e->nvgre : &e->plain, n->p.vni);
        if (e->esp_net == net)
            e->esp_net = -1;
    }
    dp->nets[net] = NULL;
    vxdp_wunlock(dp);
    free_net(n);
    return 0;
}

/* The sealed-packet slots of a view's txq, mapped once the first network encrypts. */
static int view_esp(struct vxdp_dp *v)
{
    if (v->txq->esp)
        return 0;
    void *m = mmap(NULL, (size_t)VXDP_TXQ * VXDP_ESP_BUF, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -ENOMEM;
    v->txq->esp = m;
    return 0;
}

int vxdp_set_esp(struct vxdp_dp *dp, int net, int cipher, const uint8_t *ids,
                 const uint8_t *keys, int n, int send_id, uint32_t boot)
{
    vxdp_wlock(dp);
    struct vxdp_net *nw = vxdp_get_net(dp, net);
    struct vxdp_ep *e = nw ? vxdp_get_ep(dp, nw->ep) : NULL;
    int r = 0;
    if (!nw || !e)
        r = -ENOENT;
    else if (!nw->udp)
        r = -EINVAL;            /* ESP in UDP: vxlan and gre-udp networks only */
    else if (e->plain.n + e->nvgre.n != 1)
        r = -EBUSY;             /* the SPI names no network: one per encrypted endpoint */
    for (int q = 0; r == 0 && q < dp->nq; q++)
        r = view_esp(dp->qs[q]);
    if (r == 0)
        r = vxdp_esp_set(&nw->esp, &nw->p.local, cipher, ids, keys, n, send_id, boot);
    if (r == 0)
        e->esp_net = net;
    vxdp_wunlock(dp);
    return r;
}

int vxdp_set_tap_vnet(struct vxdp_dp *dp, int net, int fd, int vnet_hdr, unsigned offload)
{
    if (!vnet_hdr && offload)
        return -EINVAL;         /* GSO frames need the header that describes them */
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (n) {
        if (fd < 0)             /* the TAP is gone: every queue of it */
            for (int q = 0; q < VXDP_QUEUES_MAX; q++)
                n->q[q].tap_fd = -1;
        n->q[0].tap_fd = fd < 0 ? -1 : fd;
        n->vnet = vnet_hdr != 0;
        /* what may be written: TCP GSO where the TAP took TSO, UDP_L4 where it took USO */
        n->gro_types = offload & (VXDP_TAP_TSO4 | VXDP_TAP_TSO6 | VXDP_TAP_USO);
        if ((n->gro_types & VXDP_TAP_USO) != VXDP_TAP_USO)
            n->gro_types &= ~(unsigned)VXDP_TAP_USO;
        if (!(offload & VXDP_TAP_CSUM))
            n->gro_types = 0;   /* every GSO frame is CHECKSUM_PARTIAL */
    }
    vxdp_wunlock(dp);
    return n ? 0 : -ENOENT;
}

int vxdp_tap_offload(struct vxdp_dp *dp, int net)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)n->gro_types : -ENOENT;
    vxdp_wunlock(dp);
    return r;
}

int vxdp_set_endpoint_gro(struct vxdp_dp *dp, int ep, int on)
{
    vxdp_wlock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    int r = !e ? -ENOENT : (on && e->kind == VXDP_ENCAP_GRE) ? -EINVAL : 0;
    if (r == 0)
        e->gro = on != 0;
    vxdp_wunlock(dp);
    return r;
}

int vxdp_set_tx_gso(struct vxdp_dp *dp, int family, int on)
{
    if (family != 4 && family != 6)
        return -EINVAL;
    vxdp_wlock(dp);
    for (int q = 0; q < dp->nq; q++) {
        struct vxdp_dp *v = dp->qs[q];
        v->tx_gso[family == 6] = on != 0;
        v->tx_gso_retry[family == 6] = 0;   /* what the caller says wins over a re-probe */
        if (!on)
            vxdp_gso_close(v, family);
    }
    vxdp_wunlock(dp);
    return 0;
}

int vxdp_inject_gso_error(struct vxdp_dp *dp, int err, int count)
{
    if (err <= 0 || count < 0)
        return -EINVAL;
    vxdp_wlock(dp);
    dp->gso_fail_err = err;
    dp->gso_fail_count = count;
    vxdp_wunlock(dp);
    return 0;
}

int vxdp_tx_gso(struct vxdp_dp *dp, int family)
{
    if (family != 4 && family != 6)
        return -EINVAL;
    vxdp_wlock(dp);
    int r = dp->tx_gso[family == 6];
    vxdp_wunlock(dp);
    return r;
}

int vxdp_offload_stats(struct vxdp_dp *dp, struct vxdp_offload_stats *out)
{
    vxdp_wlock(dp);
    *out = dp->ost;
    for (int q = 1; q < dp->nq; q++) {      /* every field adds up but the last errnos */
        const struct vxdp_offload_stats *o = &dp->qs[q]->ost;
        const uint64_t *from = (const uint64_t *)o;
        uint64_t *to = (uint64_t *)out;
        for (size_t i = 0; i < offsetof(struct vxdp_offload_stats, tx_gso_errno) / 8; i++)
            to[i] += from[i];
        if (o->tx_gso_errno)
            out->tx_gso_errno = o->tx_gso_errno;
        if (o->tap_gso_errno)
            out->tap_gso_errno = o->tap_gso_errno;
    }
    vxdp_wunlock(dp);
    return 0;
}

static int addr_cmp(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct vxdp_addr));
}

int vxdp_set_peers(struct vxdp_dp *dp, int net, const struct vxdp_addr *peers, int count)
{
    if (count < 0)
        return -EINVAL;
    size_t sz = (size_t)(count ? count : 1) * sizeof *peers;
    struct vxdp_addr *list = malloc(sz), *sorted = malloc(sz);
    if (!list || !sorted) {
        free(list);
        free(sorted);
        return -ENOMEM;
    }
    memcpy(list, peers, (size_t)count * sizeof *peers);
    memcpy(sorted, peers, (size_t)count * sizeof *peers);
    qsort(sorted, (size_t)count, sizeof *sorted, addr_cmp);

    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? 0 : -ENOENT;
    for (int i = 0; r == 0 && i < count; i++)
        if (peers[i].family != n->family)
            r = -EINVAL;
    if (r == 0) {               /* swap in whole: a pump never sees half a list */
        struct vxdp_addr *old = n->peers, *old_sorted = n->peers_sorted;
        n->peers = list;
        n->peers_sorted = sorted;
        n->npeers = count;
        list = old;
        sorted = old_sorted;
    }
    vxdp_wunlock(dp);
    free(list);
    free(sorted);
    return r;
}

/* ---- FDB ----------------------------------------------------------------------------- */

int vxdp_fdb_add(struct vxdp_dp *dp, int net, const uint8_t *mac, const struct vxdp_addr *remote)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r;
    if (!n)
        r = -ENOENT;
    else if (remote->family != n->family)
        r = -EINVAL;
    else
        r = vxdp_fdb_set_static(&n->fdb, vxdp_mac_key(mac), remote);
    vxdp_wunlock(dp);
    return r;
}

static uint32_t fdb_statics(const struct vxdp_fdb *f)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < f->count; i++)
        k += f->ent[i].is_static;
    return k;
}

int vxdp_fdb_update(struct vxdp_dp *dp, int net, const uint8_t *del, int ndel, const uint8_t *macs,
                    const uint32_t *idx, int n, const struct vxdp_addr *remotes, int nremotes, int replace)
{
    if (n < 0 || nremotes < 0 || ndel < 0)
        return -EINVAL;
    vxdp_wlock(dp);
    struct vxdp_net *nw = vxdp_get_net(dp, net);
    int r = nw ? 0 : -ENOENT;
    for (int k = 0; r == 0 && k < nremotes; k++)
        if (remotes[k].family != nw->family)
            r = -EINVAL;
    for (int i = 0; r == 0 && i < n; i++)
        if (idx[i] >= (uint32_t)nremotes)
            r = -EINVAL;
    if (r == 0) {
        struct vxdp_fdb *f = &nw->fdb;
        for (int i = 0; i < ndel; i++)
            vxdp_fdb_del(f, vxdp_mac_key(del + 6 * (size_t)i));
        if (replace)
            for (uint32_t k = 0; k < f->count; k++)
                f->ent[k].mark = false;
        for (int i = 0; r == 0 && i < n; i++) {
            uint64_t mac = vxdp_mac_key(macs + 6 * (size_t)i);
            r = vxdp_fdb_set_static(f, mac, &remotes[idx[i]]);
            if (r == 0 && replace)
                ((struct vxdp_fdb_entry *)vxdp_fdb_lookup(f, mac))->mark = true;
        }
        /* after an ENOMEM half-way nothing more is removed: what is held stays usable */
        for (uint32_t k = 0; r == 0 && replace && k < f->count;) {
            const struct vxdp_fdb_entry *e = &f->ent[k];
            if (e->is_static && !e->mark)
                vxdp_fdb_del(f, e->mac);    /* moves the last entry into k: look at k again */
            else
                k++;
        }
        if (r == 0)
            r = (int)fdb_statics(f);
    }
    vxdp_wunlock(dp);
    return r;
}

int vxdp_fdb_load(struct vxdp_dp *dp, int net, const uint8_t *macs, const uint32_t *idx, int n,
                  const struct vxdp_addr *remotes, int nremotes)
{
    /* checked first, so a bad table changes nothing; growth failing half-way (ENOMEM) leaves
     * the entries before it in place, as that many vxdp_fdb_add calls would */
    int r = vxdp_fdb_update(dp, net, NULL, 0, macs, idx, n, remotes, nremotes, 0);
    return r < 0 ? r : n;
}

int vxdp_fdb_get(struct vxdp_dp *dp, int net, const uint8_t *mac, double now, struct vxdp_fdb_row *row)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? 0 : -ENOENT;
    const struct vxdp_fdb_entry *e = n ? vxdp_fdb_lookup(&n->fdb, vxdp_mac_key(mac)) : NULL;
    if (e) {
        memset(row, 0, sizeof *row);
        memcpy(row->mac, mac, 6);
        row->is_static = e->is_static;
        row->remote = e->remote;
        double age = now - e->seen;
        row->age = e->is_static || !(age > 0.0) ? 0.0 : age;
        r = 1;
    }
    vxdp_wunlock(dp);
    return r;
}

int vxdp_fdb_statics(struct vxdp_dp *dp, int net)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)fdb_statics(&n->fdb) : -ENOENT;
    vxdp_wunlock(dp);
    return r;
}

int vxdp_fdb_remove(struct vxdp_dp *dp, int net, const uint8_t *mac)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? vxdp_fdb_del(&n->fdb, vxdp_mac_key(mac)) : -ENOENT;
    vxdp_wunlock(dp);
    return r;
}

int vxdp_fdb_count(struct vxdp_dp *dp, int net)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)n->fdb.count : -ENOENT;
    vxdp_wunlock(dp);
    return r;
}

static int row_cmp(const void *a, const void *b)
{
    return memcmp(((const struct vxdp_fdb_row *)a)->mac,
                  ((const struct vxdp_fdb_row *)b)->mac, 6);
}

int vxdp_fdb_dump(struct vxdp_dp *dp, int net, double now, struct vxdp_fdb_row *rows, int max)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        vxdp_wunlock(dp);
        return -ENOENT;
    }
    int k = 0;
    for (uint32_t i = 0; i < n->fdb.count && k < max; i++, k++) {
        const struct vxdp_fdb_entry *e = &n->fdb.ent[i];
        struct vxdp_fdb_row *r = &rows[k];
        memset(r, 0, sizeof *r);
        for (int b = 0; b < 6; b++)
            r->mac[b] = (uint8_t)(e->mac >> (40 - 8 * b));
        r->is_static = e->is_static;
        r->remote = e->remote;
        double age = now - e->seen;
        r->age = e->is_static || !(age > 0.0) ? 0.0 : age;  /* Python: max(0.0, now - seen) */
    }
    vxdp_wunlock(dp);
    qsort(rows, (size_t)k, sizeof *rows, row_cmp);      /* fdb.py sorts by MAC bytes */
    return k;
}

int64_t vxdp_age(struct vxdp_dp *dp, double now)
{
    int64_t total = 0;
    vxdp_wlock(dp);
    for (int i = 0; i < dp->nnets; i++) {
        struct vxdp_net *n = dp->nets[i];
        if (!n)
            continue;
        uint32_t aged = vxdp_fdb_age(&n->fdb, now);
        n->q[0].c.fdb_aged += aged;     /* counters add up over the queues */
        total += aged;
        vxdp_fdb_age(&n->local, now);  /* forgotten silently: not FDB entries, not counted */
        vxdp_neigh_age(n->neigh, now); /* counted in its own counters, not returned */
    }
    vxdp_wunlock(dp);
    return total;
}

int vxdp_local_count(struct vxdp_dp *dp, int net)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)n->local.count : -ENOENT;
    vxdp_wunlock(dp);
    return r;
}

/* MACs seen less than `ageing` ago (older ones wait for the next age() sweep), by MAC. */
int vxdp_local_macs(struct vxdp_dp *dp, int net, double now, struct vxdp_fdb_row *rows, int max)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        vxdp_wunlock(dp);
        return -ENOENT;
    }
    int k = 0;
    for (uint32_t i = 0; i < n->local.count && k < max; i++) {
        const struct vxdp_fdb_entry *e = &n->local.ent[i];
        double age = now - e->seen;
        if (!(age < n->local.ageing))
            continue;
        struct vxdp_fdb_row *r = &rows[k++];
        memset(r, 0, sizeof *r);
        for (int b = 0; b < 6; b++)
            r->mac[b] = (uint8_t)(e->mac >> (40 - 8 * b));
        r->age = age > 0.0 ? age : 0.0;
    }
    vxdp_wunlock(dp);
    qsort(rows, (size_t)k, sizeof *rows, row_cmp);
    return k;
}

/* ---- counters: consistent snapshots, taken between batches --------------------------- */

/* out = the sum of nq structs of uint64_t fields (size bytes) found `stride` bytes apart. */
static void sum_u64(void *out, const void *first, size_t size, size_t stride, int nq)
{
    uint64_t *to = out;
    memset(out, 0, size);
    for (int q = 0; q < nq; q++) {
        const uint64_t *from = (const uint64_t *)((const uint8_t *)first + (size_t)q * stride);
        for (size_t i = 0; i < size / 8; i++)
            to[i] += from[i];
    }
}

int vxdp_net_counters(struct vxdp_dp *dp, int net, struct vxdp_net_counters *out)
{
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (n)
        sum_u64(out, &n->q[0].c, sizeof n->q[0].c, sizeof n->q[0], dp->nq);
    vxdp_wunlock(dp);
    return n ? 0 : -ENOENT;
}

int vxdp_ep_counters(struct vxdp_dp *dp, int ep, struct vxdp_ep_counters *out)
{
    vxdp_wlock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    if (e)
        sum_u64(out, &e->q[0].c, sizeof e->q[0].c, sizeof e->q[0], dp->nq);
    vxdp_wunlock(dp);
    return e ? 0 : -ENOENT;
}

/* ---- queues ------------------------------------------------------------------------- */

int vxdp_set_queues(struct vxdp_dp *dp, int n)
{
    if (dp->main != dp || n < 1 || n > VXDP_QUEUES_MAX)
        return -EINVAL;
    int r = 0;
    vxdp_wlock(dp);
    int have = dp->nq;
    for (int q = have; q < n && r == 0; q++) {
        struct vxdp_dp *v = new_view(dp->batch);
        if (!v) {
            r = -ENOMEM;
            break;
        }
        v->main = dp;
        v->qid = q;
        memcpy(v->tx_fd, dp->tx_fd, sizeof v->tx_fd);
        memcpy(v->tx_gso, dp->tx_gso, sizeof v->tx_gso);
        if (dp->txq->esp && view_esp(v) < 0) {
            free_view(v);
            r = -ENOMEM;
            break;
        }
        dp->qs[q] = v;
    }
    int nq = dp->nq;
    while (nq < n && dp->qs[nq])
        nq++;
    dp->nq = nq;                /* no pump runs on a new view yet: nobody holds its lock */
    for (int q = have - 1; q >= 0; q--)     /* unlock what vxdp_wlock took (0, the nq guard, last) */
        pthread_mutex_unlock(&dp->qs[q]->lock);
    return r < 0 ? r : nq;
}

struct vxdp_dp *vxdp_queue(struct vxdp_dp *dp, int q)
{
    dp = dp->main;
    pthread_mutex_lock(&dp->lock);      /* nq and qs[] are view 0's lock's (vxdp_wlock) */
    struct vxdp_dp *v = q >= 0 && q < dp->nq ? dp->qs[q] : NULL;
    pthread_mutex_unlock(&dp->lock);
    return v;
}

int vxdp_set_tap_queue(struct vxdp_dp *dp, int net, int q, int fd)
{
    if (q < 0 || q >= VXDP_QUEUES_MAX)
        return -EINVAL;
    vxdp_wlock(dp);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (n)
        n->q[q].tap_fd = fd < 0 ? -1 : fd;
    vxdp_wunlock(dp);
    return n ? 0 : -ENOENT;
}

int vxdp_set_endpoint_queue(struct vxdp_dp *dp, int ep, int q, int fd)
{
    if (q < 0 || q >= VXDP_QUEUES_MAX)
        return -EINVAL;
    vxdp_wlock(dp);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    if (e)
        e->q[q].fd = fd < 0 ? -1 : fd;
    vxdp_wunlock(dp);
    return e ? 0 : -ENOENT;
}
