/*
 * fdb.c: one network's forwarding database, MAC -> remote underlay address, with the
 * semantics of vxlan_dp/core/fdb.py:
 * - a static entry is never aged, never moved by learning, only removed or replaced;
 * - a learned entry is refreshed by every frame from its MAC and moves with it;
 * - age(now) removes learned entries with now - seen >= ageing (same double arithmetic);
 * - learning beyond max_entries (statics included in the count) is refused, so spoofed
 *   source MACs cannot grow memory; statics always fit (the table grows at fdb_add time).
 *
 * Layout: a dense entry array (cheap sweeps for ageing and dumps) plus an open-addressing
 * index of entry numbers (+1, so fresh zero pages mean "empty"). Linear probing with
 * backward-shift deletion keeps probe chains short without tombstones. The index is at most
 * half full. Both arrays are reserved for max_entries when the network is created (virtual
 * address space only: nothing is resident until touched), so the per-packet path (lookup,
 * learn) never allocates. The entry array is dense, so only its used front is ever touched;
 * the index is a hash table, so it is used small and doubled as entries come: a table sized
 * for max_entries at once would have its entries hashed across all of it, touching every
 * page (512 KiB for 65,536 entries, per network, per table, for a handful of MACs). Doubling
 * rehashes into a second reserved region and hands the first one's pages back (MADV_DONTNEED):
 * a learn that crosses a power of two costs one rehash of the entries so far, amortised O(1).
 * The hash is keyed with a per-table random seed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

uint64_t vxdp_mac_key(const uint8_t *m)
{
    return (uint64_t)m[0] << 40 | (uint64_t)m[1] << 32 | (uint64_t)m[2] << 24 |
           (uint64_t)m[3] << 16 | (uint64_t)m[4] << 8 | m[5];
}

static inline uint32_t home(const struct vxdp_fdb *f, uint64_t mac)
{
    uint64_t x = mac ^ f->seed;             /* murmur3's 64-bit finaliser */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x & f->mask;
}

/* The index slot holding `mac`, or the empty slot where it would go (*found false). */
static uint32_t probe(const struct vxdp_fdb *f, uint64_t mac, bool *found)
{
    uint32_t i = home(f, mac);
    while (f->idx[i]) {
        if (f->ent[f->idx[i] - 1].mac == mac) {
            *found = true;
            return i;
        }
        i = (i + 1) & f->mask;
    }
    *found = false;
    return i;
}

/* The arrays come straight from mmap, not calloc: they are sized for max_entries (65,536 by
 * default, per network and twice: FDB and local-MAC table), and calloc may hand out reused heap
 * that it must clear, touching every page, where fresh anonymous pages stay untouched until an
 * entry lands there. 100 idle networks cost 53 MB of RSS through calloc, nothing this way. */
static void *zalloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void zfree(void *p, size_t len)
{
    if (p && len)
        munmap(p, len);
}

static uint32_t index_size(uint32_t cap)
{
    uint32_t n = 16;
    while (n < 2 * (uint64_t)cap)
        n <<= 1;
    return n;
}

#define INDEX_MIN 16u      /* slots of a new, empty index */

/* Rehash every entry into `to` (all zero) at `slots` slots, make it the live index, and give
 * the old one's pages back; the old region becomes the spare for the next doubling. */
static void rehash_into(struct vxdp_fdb *f, uint32_t *to, uint32_t slots)
{
    uint32_t *from = f->idx, old_slots = f->mask + 1;
    f->idx = to;
    f->mask = slots - 1;
    for (uint32_t k = 0; k < f->count; k++) {
        bool found;
        f->idx[probe(f, f->ent[k].mac, &found)] = k + 1;
    }
    if (from) {
        /* private anonymous memory reads back as zeros after MADV_DONTNEED: the spare is
         * clean for the next rehash without a memset (madvise(2)) */
        madvise(from, (size_t)old_slots * sizeof *from, MADV_DONTNEED);
        f->spare = from;
    }
}

/* Reserve both index regions for `reserve` slots and rehash into the smallest size that keeps
 * the index at most half full. */
static int reserve_index(struct vxdp_fdb *f, uint32_t reserve)
{
    uint32_t *a = zalloc((size_t)reserve * sizeof *a), *b = zalloc((size_t)reserve * sizeof *b);
    if (!a || !b) {
        zfree(a, (size_t)reserve * sizeof *a);
        zfree(b, (size_t)reserve * sizeof *b);
        return -ENOMEM;
    }
    uint32_t slots = INDEX_MIN;
    while (slots < reserve && slots < 2 * (uint64_t)f->count)
        slots <<= 1;
    uint32_t *old = f->idx, *old_spare = f->spare, old_reserve = f->reserve;
    f->idx = NULL;
    f->spare = NULL;
    rehash_into(f, a, slots);
    f->spare = b;
    f->reserve = reserve;
    zfree(old, (size_t)old_reserve * sizeof *old);
    zfree(old_spare, (size_t)old_reserve * sizeof *old_spare);
    return 0;
}

/* After an insert: double the index once it is more than half full (it never needs to pass
 * `reserve`, which holds 2 * cap slots). */
static void grow_index(struct vxdp_fdb *f)
{
    uint32_t slots = f->mask + 1;
    if (2 * (uint64_t)f->count <= slots || slots >= f->reserve)
        return;
    uint32_t *to = f->spare;
    f->spare = NULL;
    rehash_into(f, to, slots * 2);
}

int vxdp_fdb_init(struct vxdp_fdb *f, uint32_t max_entries, double ageing)
{
    memset(f, 0, sizeof *f);
    if (max_entries == 0 || max_entries > (1u << 30))
        return -EINVAL;
    f->max_entries = max_entries;
    f->ageing = ageing;
    f->cap = max_entries;
    if (getrandom(&f->seed, sizeof f->seed, GRND_NONBLOCK) != sizeof f->seed)
        f->seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uintptr_t)f;
    f->ent = zalloc((size_t)f->cap * sizeof *f->ent);
    if (!f->ent || reserve_index(f, index_size(f->cap)) < 0) {
        vxdp_fdb_destroy(f);
        return -ENOMEM;
    }
    return 0;
}

void vxdp_fdb_destroy(struct vxdp_fdb *f)
{
    zfree(f->ent, (size_t)f->cap * sizeof *f->ent);
    zfree(f->idx, (size_t)f->reserve * sizeof *f->idx);
    zfree(f->spare, (size_t)f->reserve * sizeof *f->spare);
    f->ent = NULL;
    f->idx = f->spare = NULL;
    f->count = f->cap = f->reserve = 0;
}

const struct vxdp_fdb_entry *vxdp_fdb_lookup(const struct vxdp_fdb *f, uint64_t mac)
{
    bool found;
    uint32_t i = probe(f, mac, &found);
    return found ? &f->ent[f->idx[i] - 1] : NULL;
}

static void insert_at(struct vxdp_fdb *f, uint32_t slot, uint64_t mac,
                      const struct vxdp_addr *remote, bool is_static, double seen)
{
    struct vxdp_fdb_entry *e = &f->ent[f->count];
    e->mac = mac;
    e->remote = *remote;
    e->is_static = is_static;
    e->seen = seen;
    f->idx[slot] = ++f->count;
}

int vxdp_fdb_learn(struct vxdp_fdb *f, uint64_t mac, const struct vxdp_addr *remote, double now)
{
    bool found;
    uint32_t i = probe(f, mac, &found);
    if (!found) {
        if (f->count >= f->max_entries)
            return VXDP_LEARN_FULL;
        insert_at(f, i, mac, remote, false, now);   /* count < max_entries <= cap: fits */
        grow_index(f);
        return VXDP_LEARN_NEW;
    }
    struct vxdp_fdb_entry *e = &f->ent[f->idx[i] - 1];
    if (e->is_static)
        return VXDP_LEARN_STATIC;
    e->seen = now;
    if (memcmp(&e->remote, remote, sizeof *remote) != 0) {
        e->remote = *remote;
        return VXDP_LEARN_MOVED;
    }
    return VXDP_LEARN_REFRESHED;
}

int vxdp_fdb_set_static(struct vxdp_fdb *f, uint64_t mac, const struct vxdp_addr *remote)
{
    bool found;
    uint32_t i = probe(f, mac, &found);
    if (found) {
        struct vxdp_fdb_entry *e = &f->ent[f->idx[i] - 1];
        e->remote = *remote;
        e->is_static = true;
        e->seen = 0.0;
        return 0;
    }
    if (f->count == f->cap) {   /* statics beyond max_entries: grow here, never when learning */
        uint32_t cap = f->cap * 2;
        if (cap <= f->cap)
            return -ENOMEM;
        struct vxdp_fdb_entry *ent = mremap(f->ent, (size_t)f->cap * sizeof *ent,
                                            (size_t)cap * sizeof *ent, MREMAP_MAYMOVE);
        if (ent == MAP_FAILED)
            return -ENOMEM;
        f->ent = ent;
        f->cap = cap;
        if (index_size(cap) > f->reserve && reserve_index(f, index_size(cap)) < 0)
            return -ENOMEM;
        i = probe(f, mac, &found);
    }
    insert_at(f, i, mac, remote, true, 0.0);
    grow_index(f);
    return 0;
}

/* Backward-shift deletion: pull later members of the probe chain into the hole so that
 * every entry stays reachable from its home slot without tombstones. */
static void index_remove(struct vxdp_fdb *f, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & f->mask;
        if (!f->idx[j])
            break;
        uint32_t h = home(f, f->ent[f->idx[j] - 1].mac);
        bool movable = j > i ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            f->idx[i] = f->idx[j];
            i = j;
        }
    }
    f->idx[i] = 0;
}

bool vxdp_fdb_del(struct vxdp_fdb *f, uint64_t mac)
{
    bool found;
    uint32_t i = probe(f, mac, &found);
    if (!found)
        return false;
    uint32_t k = f->idx[i] - 1;
    index_remove(f, i);
    uint32_t last = f->count - 1;
    if (k != last) {            /* keep the array dense: the last entry takes the hole */
        f->ent[k] = f->ent[last];
        uint32_t j = probe(f, f->ent[k].mac, &found);
        f->idx[j] = k + 1;
    }
    f->count--;
    return true;
}

uint32_t vxdp_fdb_age(struct vxdp_fdb *f, double now)
{
    uint32_t removed = 0;
    for (uint32_t k = 0; k < f->count;) {
        const struct vxdp_fdb_entry *e = &f->ent[k];
        if (!e->is_static && now - e->seen >= f->ageing) {
            vxdp_fdb_del(f, e->mac);    /* moves the last entry into k: look at k again */
            removed++;
        } else {
            k++;
        }
    }
    return removed;
}
