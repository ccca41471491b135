/*
 * poll.c: a pump thread's life in C: wait for readiness, pump, repeat.
 *
 * The daemon (vxlan_dp/datapath/poll.py) runs one thread that calls vxdp_poll_run; cffi
 * releases the GIL around the call, and the thread comes back to Python only to steer: a
 * TAP whose read failed (the caller takes its fd out of the set, level-triggered epoll
 * would report it again and again, and the daemon re-creates it) or the wake eventfd (stop). Between a
 * descriptor becoming readable and the pump reading it there is no Python frame, no GIL and
 * no asyncio callback: on the earlier design each packet paid for an event-loop iteration
 * and a Python call into the pump.
 *
 * Modes ([daemon] poll):
 *   interrupt  epoll_wait blocks until a descriptor is readable: no CPU at all when idle,
 *              a scheduler wake-up per burst.
 *   adaptive   after a round that moved packets, keep polling (epoll_wait, timeout 0) for
 *              spin_ns more before blocking again: a reply that arrives inside the window
 *              (a request/response exchange) is picked up without a sleep and a wake-up;
 *              an idle daemon blocks and uses no CPU. The window restarts with every round
 *              that moves packets and is never longer than spin_ns after the last one.
 *              Not after bulk (vxdp_spin_next): a round that moved VXDP_SPIN_HEAVY_BYTES
 *              has paid for its wake-up many times over, and the CPU a spin would burn
 *              between such rounds is the CPU the applications and the kernel's network
 *              stack need; so no window opens within VXDP_SPIN_QUIET_NS of a heavy round.
 *   busy       never block: this one thread polls without pause and holds one core, the
 *              asyncio thread (management, metrics, ageing) still sleeps in its own loop.
 *   An empty poll while spinning (adaptive, busy) yields the CPU to any other runnable task
 *   first: on a machine with fewer cores than busy tasks, a spinning pump would otherwise
 *   delay the very processes it waits for.
 * With [daemon] queues = N there are N such threads, each on its own queue view of the dp
 * (internal.h "queues"): a pump holds its view's lock for one batch at a time, never while
 * waiting; a management call from the asyncio thread holds every view's lock.
 *
 * Tokens (epoll_event.data.u64): kind << 32 | id; for VXDP_POLL_WAKE the id is the eventfd.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define POLL_EVENTS 64

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);     /* Python's time.monotonic() on Linux */
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int vxdp_poll_ctl(int epfd, int add, int fd, int kind, int id)
{
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t)(uint32_t)kind << 32 | (uint32_t)id;
    if (epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev) < 0)
        return -errno;
    return 0;
}

int64_t vxdp_spin_next(int64_t *last_heavy_ns, int64_t now_ns, uint64_t bytes, int64_t spin_ns)
{
    if (bytes >= VXDP_SPIN_HEAVY_BYTES)
        *last_heavy_ns = now_ns;
    if (*last_heavy_ns && now_ns - *last_heavy_ns < VXDP_SPIN_QUIET_NS)
        return 0;
    return now_ns + spin_ns;
}

static void count(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

int vxdp_poll_stats(struct vxdp_dp *dp, int queue, struct vxdp_poll_stats *out)
{
    dp = dp->main;
    pthread_mutex_lock(&dp->lock);          /* nq and qs[] (manage.c, vxdp_wlock) */
    int r = queue >= 0 && queue < dp->nq ? 0 : -EINVAL;
    if (!r) {
        const struct vxdp_poll_stats *s = &dp->qs[queue]->pst;
        out->moved_bytes = __atomic_load_n(&s->moved_bytes, __ATOMIC_RELAXED);
        out->wakeups = __atomic_load_n(&s->wakeups, __ATOMIC_RELAXED);
        out->spin_windows = __atomic_load_n(&s->spin_windows, __ATOMIC_RELAXED);
        out->spin_polls = __atomic_load_n(&s->spin_polls, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&dp->lock);
    return r;
}

int vxdp_poll_run(struct vxdp_dp *dp, int epfd, int mode, int64_t spin_ns, int32_t *failed)
{
    struct epoll_event ev[POLL_EVENTS];
    int64_t spin_until = 0, last_heavy = 0;
    if (mode < VXDP_POLL_INTERRUPT || mode > VXDP_POLL_BUSY || spin_ns < 0)
        return -EINVAL;
    char name[16];              /* "vxdp-pump<queue>" in top -H, perf, /proc/PID/task/TID/comm */
    snprintf(name, sizeof name, "vxdp-pump%d", dp->qid);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        int timeout = -1;
        if (mode == VXDP_POLL_BUSY ||
            (mode == VXDP_POLL_ADAPTIVE && spin_until && mono_ns() < spin_until))
            timeout = 0;
        int n = epoll_wait(epfd, ev, POLL_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (timeout == 0)
            count(&dp->pst.spin_polls);
        else if (n > 0)
            count(&dp->pst.wakeups);
        if (n == 0) {
            if (timeout != 0)
                continue;
            if (mode == VXDP_POLL_ADAPTIVE && mono_ns() >= spin_until)
                spin_until = 0;                 /* window over: block next time */
            /* Nothing yet: let whatever else is runnable on this CPU go first (the very
             * processes whose packets we wait for, on a machine with few cores). The
             * thread stays runnable, so the core is still ours whenever nobody else wants
             * it; EEVDF's yield_task_fair (kernel/sched/fair.c) pushes our deadline back. */
            sched_yield();
            continue;
        }
        int64_t now_ns = mono_ns();
        double now = (double)now_ns / 1e9;
        int moved = 0;
        uint64_t bytes0 = dp->pst.moved_bytes;     /* only this thread's pumps write it */
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(ev[i].data.u64 >> 32);
            int32_t id = (int32_t)(uint32_t)ev[i].data.u64;
            if (kind == VXDP_POLL_WAKE) {
                uint64_t v;
                ssize_t r = read(id, &v, sizeof v);     /* drain the eventfd */
                (void)r;
                return 0;
            }
            if (kind == VXDP_POLL_TAP) {
                int r = vxdp_pump_tap(dp, id, now);
                if (r > 0) {
                    moved = 1;
                } else if (r < 0 && r != -ENOENT) {     /* ENOENT: removed meanwhile */
                    failed[0] = id;     /* the caller takes its fd out of the set */
                    failed[1] = -r;
                    return 1;
                }
            } else if (kind == VXDP_POLL_EP) {
                if (vxdp_pump_endpoint(dp, id, now) > 0)
                    moved = 1;
            }
        }
        if (moved && mode == VXDP_POLL_ADAPTIVE) {
            spin_until = vxdp_spin_next(&last_heavy, now_ns, dp->pst.moved_bytes - bytes0, spin_ns);
            if (spin_until && timeout != 0)
                count(&dp->pst.spin_windows);
        }
    }
}
