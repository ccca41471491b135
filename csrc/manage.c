/*
 * manage.c: the management half of the C API: data plane, endpoint and network lifetimes,
 * peers, static FDB entries, dumps and counter snapshots. These calls are rare and may
 * allocate; they prepare everything the pumps need so the pumps never do.
 *
 * Every public function takes dp->lock; ids are indexes into grow-only pointer arrays and
 * are never reused, matching the pure-Python backend.
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

struct vxdp_net *vxdp_get_net(struct vxdp_dp *dp, int id)
{
    return id >= 0 && id < dp->nnets ? dp->nets[id] : NULL;
}

struct vxdp_ep *vxdp_get_ep(struct vxdp_dp *dp, int id)
{
    return id >= 0 && id < dp->neps ? dp->eps[id] : NULL;
}

/* ---- the data plane ------------------------------------------------------------------ */

struct vxdp_dp *vxdp_new(int batch)
{
    if (batch < 1 || batch > VXDP_BATCH_MAX)
        return NULL;
    struct vxdp_dp *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
    pthread_mutex_init(&dp->lock, NULL);
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
    for (int i = 0; i < VXDP_GSO_SOCKS; i++)
        dp->gso_socks[i].fd = -1;
    bool gro_ok = vxdp_gro_init(&dp->gro, dp->dl_cap) == 0;
    if (!dp->slab || !dp->lens || !dp->rx_msg || !dp->rx_iov || !dp->rx_sa || !dp->dl_net ||
        !dp->dl_ptr || !dp->dl_len || !dp->txq || !dp->vh || !dp->rx_ctl || !dp->gro_frames ||
        !dp->gro_lens || !dp->gsob || !gro_ok) {
        vxdp_free(dp);
        return NULL;
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
    for (int i = 0; i < dp->nnets; i++)
        if (dp->nets[i])
            free_net(dp->nets[i]);
    for (int i = 0; i < dp->neps; i++)
        if (dp->eps[i])
            free_ep(dp->eps[i]);
    free(dp->nets);
    free(dp->eps);
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
    vxdp_gro_free(&dp->gro);
    vxdp_gso_close(dp, 0);
    pthread_mutex_destroy(&dp->lock);
    free(dp);
}

int vxdp_set_tx_socket(struct vxdp_dp *dp, int family, int fd)
{
    if (family != 4 && family != 6)
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    dp->tx_fd[family == 6] = fd < 0 ? -1 : fd;
    pthread_mutex_unlock(&dp->lock);
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
    e->fd = fd < 0 ? -1 : fd;
    e->ipv4_header = ipv4_header != 0;
    pthread_mutex_lock(&dp->lock);
    int id = append((void ***)&dp->eps, &dp->neps, &dp->eps_cap, e);
    pthread_mutex_unlock(&dp->lock);
    if (id < 0)
        free(e);
    return id;
}

int vxdp_remove_endpoint(struct vxdp_dp *dp, int ep)
{
    pthread_mutex_lock(&dp->lock);
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
    pthread_mutex_unlock(&dp->lock);
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
    n->tap_fd = tap_fd < 0 ? -1 : tap_fd;
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

    pthread_mutex_lock(&dp->lock);
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
    pthread_mutex_unlock(&dp->lock);
    if (r < 0)
        free_net(n);
    return r;
}

int vxdp_remove_network(struct vxdp_dp *dp, int net)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        pthread_mutex_unlock(&dp->lock);
        return -ENOENT;
    }
    struct vxdp_ep *e = vxdp_get_ep(dp, n->ep);
    if (e) {
        keymap_remove(n->p.nvgre ? &e->nvgre : &e->plain, n->p.vni);
        if (e->esp_net == net)
            e->esp_net = -1;
    }
    dp->nets[net] = NULL;
    pthread_mutex_unlock(&dp->lock);
    free_net(n);
    return 0;
}

int vxdp_set_esp(struct vxdp_dp *dp, int net, int cipher, const uint8_t *ids,
                 const uint8_t *keys, int n, int send_id, uint32_t boot)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *nw = vxdp_get_net(dp, net);
    struct vxdp_ep *e = nw ? vxdp_get_ep(dp, nw->ep) : NULL;
    int r = 0;
    if (!nw || !e)
        r = -ENOENT;
    else if (!nw->udp)
        r = -EINVAL;            /* ESP in UDP: vxlan and gre-udp networks only */
    else if (e->plain.n + e->nvgre.n != 1)
        r = -EBUSY;             /* the SPI names no network: one per encrypted endpoint */
    if (r == 0 && !dp->txq->esp) {
        void *m = mmap(NULL, (size_t)VXDP_TXQ * VXDP_ESP_BUF, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            r = -ENOMEM;
        else
            dp->txq->esp = m;
    }
    if (r == 0)
        r = vxdp_esp_set(&nw->esp, &nw->p.local, cipher, ids, keys, n, send_id, boot);
    if (r == 0)
        e->esp_net = net;
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_set_tap_vnet(struct vxdp_dp *dp, int net, int fd, int vnet_hdr, unsigned offload)
{
    if (!vnet_hdr && offload)
        return -EINVAL;         /* GSO frames need the header that describes them */
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (n) {
        n->tap_fd = fd < 0 ? -1 : fd;
        n->vnet = vnet_hdr != 0;
        /* what may be written: TCP GSO where the TAP took TSO, UDP_L4 where it took USO */
        n->gro_types = offload & (VXDP_TAP_TSO4 | VXDP_TAP_TSO6 | VXDP_TAP_USO);
        if ((n->gro_types & VXDP_TAP_USO) != VXDP_TAP_USO)
            n->gro_types &= ~(unsigned)VXDP_TAP_USO;
        if (!(offload & VXDP_TAP_CSUM))
            n->gro_types = 0;   /* every GSO frame is CHECKSUM_PARTIAL */
    }
    pthread_mutex_unlock(&dp->lock);
    return n ? 0 : -ENOENT;
}

int vxdp_tap_offload(struct vxdp_dp *dp, int net)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)n->gro_types : -ENOENT;
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_set_endpoint_gro(struct vxdp_dp *dp, int ep, int on)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    int r = !e ? -ENOENT : (on && e->kind == VXDP_ENCAP_GRE) ? -EINVAL : 0;
    if (r == 0)
        e->gro = on != 0;
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_set_tx_gso(struct vxdp_dp *dp, int family, int on)
{
    if (family != 4 && family != 6)
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    dp->tx_gso[family == 6] = on != 0;
    dp->tx_gso_retry[family == 6] = 0;      /* what the caller says wins over a re-probe */
    if (!on)
        vxdp_gso_close(dp, family);
    pthread_mutex_unlock(&dp->lock);
    return 0;
}

int vxdp_inject_gso_error(struct vxdp_dp *dp, int err, int count)
{
    if (err <= 0 || count < 0)
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    dp->gso_fail_err = err;
    dp->gso_fail_count = count;
    pthread_mutex_unlock(&dp->lock);
    return 0;
}

int vxdp_tx_gso(struct vxdp_dp *dp, int family)
{
    if (family != 4 && family != 6)
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    int r = dp->tx_gso[family == 6];
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_offload_stats(struct vxdp_dp *dp, struct vxdp_offload_stats *out)
{
    pthread_mutex_lock(&dp->lock);
    *out = dp->ost;
    pthread_mutex_unlock(&dp->lock);
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

    pthread_mutex_lock(&dp->lock);
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
    pthread_mutex_unlock(&dp->lock);
    free(list);
    free(sorted);
    return r;
}

/* ---- FDB ----------------------------------------------------------------------------- */

int vxdp_fdb_add(struct vxdp_dp *dp, int net, const uint8_t *mac, const struct vxdp_addr *remote)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r;
    if (!n)
        r = -ENOENT;
    else if (remote->family != n->family)
        r = -EINVAL;
    else
        r = vxdp_fdb_set_static(&n->fdb, vxdp_mac_key(mac), remote);
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_fdb_load(struct vxdp_dp *dp, int net, const uint8_t *macs, const uint32_t *idx, int n,
                  const struct vxdp_addr *remotes, int nremotes)
{
    if (n < 0 || nremotes < 0)
        return -EINVAL;
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *nw = vxdp_get_net(dp, net);
    int r = nw ? 0 : -ENOENT;
    for (int k = 0; r == 0 && k < nremotes; k++)
        if (remotes[k].family != nw->family)
            r = -EINVAL;
    for (int i = 0; r == 0 && i < n; i++)
        if (idx[i] >= (uint32_t)nremotes)
            r = -EINVAL;
    /* checked first, so a bad table changes nothing; growth failing half-way (ENOMEM) leaves
     * the entries before it in place, as that many vxdp_fdb_add calls would */
    for (int i = 0; r == 0 && i < n; i++)
        r = vxdp_fdb_set_static(&nw->fdb, vxdp_mac_key(macs + 6 * (size_t)i), &remotes[idx[i]]);
    pthread_mutex_unlock(&dp->lock);
    return r < 0 ? r : n;
}

int vxdp_fdb_remove(struct vxdp_dp *dp, int net, const uint8_t *mac)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? vxdp_fdb_del(&n->fdb, vxdp_mac_key(mac)) : -ENOENT;
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_fdb_count(struct vxdp_dp *dp, int net)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)n->fdb.count : -ENOENT;
    pthread_mutex_unlock(&dp->lock);
    return r;
}

static int row_cmp(const void *a, const void *b)
{
    return memcmp(((const struct vxdp_fdb_row *)a)->mac,
                  ((const struct vxdp_fdb_row *)b)->mac, 6);
}

int vxdp_fdb_dump(struct vxdp_dp *dp, int net, double now, struct vxdp_fdb_row *rows, int max)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        pthread_mutex_unlock(&dp->lock);
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
    pthread_mutex_unlock(&dp->lock);
    qsort(rows, (size_t)k, sizeof *rows, row_cmp);      /* fdb.py sorts by MAC bytes */
    return k;
}

int64_t vxdp_age(struct vxdp_dp *dp, double now)
{
    int64_t total = 0;
    pthread_mutex_lock(&dp->lock);
    for (int i = 0; i < dp->nnets; i++) {
        struct vxdp_net *n = dp->nets[i];
        if (!n)
            continue;
        uint32_t aged = vxdp_fdb_age(&n->fdb, now);
        n->c.fdb_aged += aged;
        total += aged;
        vxdp_fdb_age(&n->local, now);  /* forgotten silently: not FDB entries, not counted */
        vxdp_neigh_age(n->neigh, now); /* counted in its own counters, not returned */
    }
    pthread_mutex_unlock(&dp->lock);
    return total;
}

int vxdp_local_count(struct vxdp_dp *dp, int net)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    int r = n ? (int)n->local.count : -ENOENT;
    pthread_mutex_unlock(&dp->lock);
    return r;
}

/* MACs seen less than `ageing` ago (older ones wait for the next age() sweep), by MAC. */
int vxdp_local_macs(struct vxdp_dp *dp, int net, double now, struct vxdp_fdb_row *rows, int max)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (!n) {
        pthread_mutex_unlock(&dp->lock);
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
    pthread_mutex_unlock(&dp->lock);
    qsort(rows, (size_t)k, sizeof *rows, row_cmp);
    return k;
}

/* ---- counters: consistent snapshots, taken between batches --------------------------- */

int vxdp_net_counters(struct vxdp_dp *dp, int net, struct vxdp_net_counters *out)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_net *n = vxdp_get_net(dp, net);
    if (n)
        *out = n->c;
    pthread_mutex_unlock(&dp->lock);
    return n ? 0 : -ENOENT;
}

int vxdp_ep_counters(struct vxdp_dp *dp, int ep, struct vxdp_ep_counters *out)
{
    pthread_mutex_lock(&dp->lock);
    struct vxdp_ep *e = vxdp_get_ep(dp, ep);
    if (e)
        *out = e->c;
    pthread_mutex_unlock(&dp->lock);
    return e ? 0 : -ENOENT;
}
