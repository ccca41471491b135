"""Readiness to pumps: who waits on the TAPs and underlay sockets, and how (`[daemon] poll`).

Modes, the same for both backends:
- "interrupt": sleep until a descriptor is readable; no CPU while idle, a scheduler wake-up
  (tens of microseconds on a VM whose idle vCPUs halt) for every burst.
- "adaptive" (default): as interrupt, but after a round that moved sparse traffic keep polling
  for `poll_spin_us` more, so a reply arriving inside that window (a ping, a request/response
  exchange) is taken without a sleep and a wake-up; idle, it sleeps like interrupt and uses no
  CPU. Bulk opens no window (fastpath.api.spin_next): a round that moved SPIN_HEAVY_BYTES has
  paid for its wake-up many times over, and a spin between such rounds would take the CPU
  the applications and the kernel need (it cost single-stream TCP 4-18 % on 2 cores before
  this rule; bench/README.md has the figures).
- "busy": never sleep. Holds ONE core per queue whatever the number of networks: each pump
  thread (C backend) or the event loop (Python backend, all queues) polls without pause.

Queues (`[daemon] queues` = N): every TAP has N fds (a multi-queue TAP, datapath/tap.py) and
every UDP endpoint N SO_REUSEPORT sockets (datapath/underlay.py); queue q of each is pumped
as queue q of the Dataplane. The C backend runs one thread per queue, each with its own epoll
set and wake eventfd and its own Dataplane view (no lock shared on the hot path: csrc/internal.h
"queues"), so N queues use up to N cores; the Python backend serves every queue from the loop.

Two implementations of one interface (`make_pumps` picks by backend):
- `ThreadPumps` (C backend): one thread per queue runs csrc/poll.c's loop, which waits in epoll
  and calls the C pumps itself, without the GIL: no Python frame between readiness and a pump.
  Python hears from it only when a TAP fails (its callback runs on the event loop) or at stop.
  A management call on the event loop waits for every queue's batch in progress (C locks).
- `LoopPumps` (Python backend): the asyncio loop's readers call the pumps, as the reference
  backend always did; adaptive spins and busy polls as tasks on the same loop.

Ownership: callers open and close the fds; a caller removes an fd here before closing it.
A pump thread's own epoll set and wake eventfd are closed only once the thread has ended: by
`stop` after the join, or, when the join timed out (ThreadPumps.JOIN_TIMEOUT, one bound for
all queues), by the thread itself as it ends; closed under a live thread, the C loop would wait
on and drain whatever file took their numbers next.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

from ..fastpath.api import POLL_STATS, check_queue, spin_next

__all__ = ["POLL_MODES", "Pumps", "ThreadPumps", "LoopPumps", "make_pumps"]

log = logging.getLogger("vxlan_dp")

POLL_MODES = ("interrupt", "adaptive", "busy")
OnFail = Callable[[int], None]      # called with the errno on the event loop's thread


class Pumps:
    """What the networks room needs: register fds with their pump, start, stop. A TAP or an
    endpoint comes with one fd per queue, queue 0 first (an endpoint may have fewer: a raw
    GRE socket is never duplicated, every raw socket would get a copy of every packet)."""

    def __init__(self, dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop,
                 queues: int = 1) -> None:
        if mode not in POLL_MODES:
            raise ValueError(f"poll mode {mode!r} is not one of {', '.join(POLL_MODES)}")
        self.dp, self.mode, self.spin = dp, mode, spin_us / 1e6
        self.loop = loop
        self.queues = queues
        self._tap_fail: dict[int, OnFail] = {}

    def add_tap(self, net: int, fds: Sequence[int], on_fail: OnFail) -> None:
        raise NotImplementedError

    def remove_tap(self, net: int, fds: Sequence[int]) -> None:
        raise NotImplementedError

    def add_endpoint(self, ep: int, fds: Sequence[int]) -> None:
        raise NotImplementedError

    def remove_endpoint(self, ep: int, fds: Sequence[int]) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def stats(self, queue: int) -> dict[str, int]:
        """POLL_STATS of one queue (fastpath.api): bytes moved, sleeps ended by work, spin
        windows opened, non-blocking polls."""
        raise NotImplementedError

    def _failed(self, net: int, err: int) -> None:
        """A TAP read failed; on the event loop. Once per failure (every queue of the TAP may
        report it: the first one wins); the failing fd is out of its set already."""
        cb = self._tap_fail.pop(net, None)
        if cb is not None:
            cb(err)


class _PumpThread:
    """One queue's thread: its epoll set, its wake eventfd, the TAP fds it watches."""

    def __init__(self, owner: "ThreadPumps", queue: int) -> None:
        self.owner, self.queue = owner, queue
        self.ep = select.epoll()
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.tap_fds: dict[int, int] = {}
        # Held by this thread from taking a failed TAP's fd out of tap_fds until its report is
        # queued on the loop, and by the loop around changes to tap_fds and the epoll set: a
        # report is either queued before remove_tap returns (so it runs before the TAP made
        # since is added, a loop turn later) or not made at all, and the fd the thread takes
        # out of its epoll set is still the failed TAP's, not a new one's under the same number.
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        # `stop` gave up waiting (abandoned) and the thread ending (ended) are decided under
        # this lock, so exactly one of them closes ep and wake, and only once the thread is done.
        self._end_lock = threading.Lock()
        self._ended = self._abandoned = self._closed = False
        owner.dp.poll_ctl(self.ep.fileno(), True, self.wake, owner.dp.POLL_WAKE, self.wake)

    def add(self, fd: int, kind: int, ident: int) -> None:
        self.owner.dp.poll_ctl(self.ep.fileno(), True, fd, kind, ident)

    def delete(self, fd: int) -> None:
        try:
            self.owner.dp.poll_ctl(self.ep.fileno(), False, fd, 0, 0)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EBADF):  # out already, or closed (out with it)
                raise

    def start(self) -> None:
        o = self.owner
        self.thread = threading.Thread(target=self._main, name=f"vxdp-pump{self.queue}-{o.mode}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.run()
        finally:
            with self._end_lock:
                self._ended = True
                if self._abandoned:     # stop left them open for us: nobody else uses them now
                    log.warning("pump thread %d ended after stop gave up waiting for it; its epoll "
                                "and wake fds (%d, %d) are closed now", self.queue, self.ep.fileno(), self.wake)
                    self._close()

    def run(self) -> None:
        o = self.owner
        spin_ns = int(o.spin * 1e9)
        while not o._stopping:
            r, net, err = o.dp.poll_run(self.ep.fileno(), o.mode, spin_ns, self.queue)
            if r == 1:
                with self.lock:
                    fd = self.tap_fds.pop(net, None)
                    if fd is None:
                        # the event loop took this TAP out already (another queue's thread saw
                        # it fail first): an event of this round read the fd -1 it left in the
                        # Dataplane. Reporting it could only hit the TAP made since.
                        continue
                    self.delete(fd)         # level-triggered: it would be reported again
                    try:
                        o.loop.call_soon_threadsafe(o._failed, net, err)
                    except RuntimeError:    # the loop is closed: we are stopping anyway
                        return
            elif r < 0:
                log.error("pump thread %d: epoll failed (%s); its packets are no longer moved",
                          self.queue, os.strerror(-r))
                return

    def wake_up(self) -> None:
        with self._end_lock:
            if self.thread is not None and not self._closed:
                os.eventfd_write(self.wake, 1)

    def stop(self, deadline: float) -> bool:
        """Join the thread (woken by `wake_up`) until `deadline` (time.monotonic) and close its
        fds; False if it is still running then: its fds stay open, for it to close as it ends."""
        if self.thread is not None:
            self.thread.join(max(0.0, deadline - time.monotonic()))
        with self._end_lock:
            if self.thread is not None and not self._ended:
                self._abandoned = True
                log.error("pump thread %d did not stop in time (stuck in a pump or in epoll); its "
                          "epoll and wake fds (%d, %d) are left open while it runs", self.queue,
                          self.ep.fileno(), self.wake)
                return False
            self.thread = None
            self._close()
        return True

    def _close(self) -> None:
        """Once (under _end_lock): stop, or an abandoned thread as it ends, may both get here."""
        if not self._closed:
            self._closed = True
            self.ep.close()
            os.close(self.wake)


class ThreadPumps(Pumps):
    # seconds `stop` waits for all the threads together (they are woken at once): a bound on
    # the daemon's stop however many queues there are, well inside systemd's TimeoutStopSec
    JOIN_TIMEOUT = 10.0

    def __init__(self, dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop,
                 queues: int = 1) -> None:
        super().__init__(dp, mode, spin_us, loop, queues)
        self._stopping = False
        self._threads = [_PumpThread(self, q) for q in range(queues)]
        self.abandoned: list[int] = []  # queues whose thread outlived `stop` (logged as an error)

    def add_tap(self, net: int, fds: Sequence[int], on_fail: OnFail) -> None:
        self._tap_fail[net] = on_fail
        for t, fd in zip(self._threads, fds):
            with t.lock:
                t.tap_fds[net] = fd
                t.add(fd, self.dp.POLL_TAP, net)

    def remove_tap(self, net: int, fds: Sequence[int]) -> None:
        self._tap_fail.pop(net, None)
        for t, fd in zip(self._threads, fds):
            with t.lock:            # a failure report in progress is queued first (_PumpThread)
                t.tap_fds.pop(net, None)
                t.delete(fd)

    def add_endpoint(self, ep: int, fds: Sequence[int]) -> None:
        for t, fd in zip(self._threads, fds):
            t.add(fd, self.dp.POLL_EP, ep)

    def remove_endpoint(self, ep: int, fds: Sequence[int]) -> None:
        for t, fd in zip(self._threads, fds):
            t.delete(fd)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopping = True
        for t in self._threads:
            t.wake_up()
        deadline = time.monotonic() + self.JOIN_TIMEOUT
        self.abandoned = [t.queue for t in self._threads if not t.stop(deadline)]

    def stats(self, queue: int) -> dict[str, int]:
        return dict(self.dp.poll_stats(queue))


class LoopPumps(Pumps):
    """Every queue from the event loop: (net, queue) and (ep, queue) are the units here."""

    def __init__(self, dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop,
                 queues: int = 1) -> None:
        super().__init__(dp, mode, spin_us, loop, queues)
        self._taps: dict[tuple[int, int], int] = {}
        self._eps: dict[tuple[int, int], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._spinning = False
        self._until = 0                 # adaptive: poll until (monotonic ns), 0: wait for readers
        self._last_heavy = [0]          # spin_next's state
        self._polls = [dict.fromkeys(POLL_STATS, 0) for _ in range(queues)]

    def add_tap(self, net: int, fds: Sequence[int], on_fail: OnFail) -> None:
        self._tap_fail[net] = on_fail
        for q, fd in enumerate(fds):
            self._taps[net, q] = fd
            if self.mode != "busy":
                self.loop.add_reader(fd, self._on_tap, net, q)

    def remove_tap(self, net: int, fds: Sequence[int]) -> None:
        self._tap_fail.pop(net, None)
        for q in range(len(fds)):
            self._drop_tap(net, q)

    def add_endpoint(self, ep: int, fds: Sequence[int]) -> None:
        for q, fd in enumerate(fds):
            self._eps[ep, q] = fd
            if self.mode != "busy":
                self.loop.add_reader(fd, self._on_endpoint, ep, q)

    def remove_endpoint(self, ep: int, fds: Sequence[int]) -> None:
        for q in range(len(fds)):
            fd = self._eps.pop((ep, q), None)
            if fd is not None and self.mode != "busy":
                self.loop.remove_reader(fd)

    def start(self) -> None:
        if self.mode == "busy":
            self._task = self.loop.create_task(self._busy())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for net, q in list(self._taps):
            self._drop_tap(net, q)
        for ep, q in list(self._eps):
            fd = self._eps.pop((ep, q))
            if self.mode != "busy":
                self.loop.remove_reader(fd)

    def _pump_tap(self, net: int, q: int) -> int:
        n: int = self.dp.pump_tap(net, time.monotonic(), q)
        if n < 0:
            self._drop_tap(net, q)
            self._failed(net, -n)
            return 0
        return n

    def _drop_tap(self, net: int, q: int) -> None:
        fd = self._taps.pop((net, q), None)
        if fd is not None and self.mode != "busy":
            self.loop.remove_reader(fd)

    def stats(self, queue: int) -> dict[str, int]:
        check_queue(queue, self.queues)
        return {**self._polls[queue], "moved_bytes": self.dp.poll_stats(queue)["moved_bytes"]}

    def _moved(self, queue: int | None = None) -> int:
        """Bytes the pumps moved: of `queue`, or of every queue (a spin round pumps them all)."""
        qs = range(self.queues) if queue is None else (queue,)
        return sum(self.dp.poll_stats(q)["moved_bytes"] for q in qs)

    def _on_tap(self, net: int, q: int) -> None:
        before = self._moved(q) if self.mode == "adaptive" else 0   # only adaptive weighs rounds
        if self._pump_tap(net, q) > 0:
            self._woken(q, before)

    def _on_endpoint(self, ep: int, q: int) -> None:
        before = self._moved(q) if self.mode == "adaptive" else 0
        if self.dp.pump_endpoint(ep, time.monotonic(), q) > 0:
            self._woken(q, before)

    def _woken(self, q: int, before: int) -> None:
        """A reader's callback moved packets: the loop's sleep ended with work (a wake-up, as
        csrc/poll.c counts them); adaptive may open a spin window after it."""
        if not self._spinning:
            self._polls[q]["wakeups"] += 1
        if self.mode == "adaptive":
            self._after_round(self._moved(q) - before)
            if self._until and not self._spinning:
                self._polls[q]["spin_windows"] += 1
                self._spinning = True
                self._task = self.loop.create_task(self._spin())

    def _after_round(self, moved: int) -> None:
        self._until = spin_next(self._last_heavy, time.monotonic_ns(), moved, int(self.spin * 1e9))

    def _round(self) -> bool:
        moved = False
        for net, q in list(self._taps):
            moved = self._pump_tap(net, q) > 0 or moved
        for ep, q in list(self._eps):
            moved = self.dp.pump_endpoint(ep, time.monotonic(), q) > 0 or moved
        return moved

    async def _spin(self) -> None:
        """adaptive: a round every loop iteration until the window closes (spin_next)."""
        try:
            while self._until and time.monotonic_ns() < self._until:
                await asyncio.sleep(0)
                self._polls[0]["spin_polls"] += 1   # one loop serves every queue: counted on 0
                before = self._moved()
                if self._round():
                    self._after_round(self._moved() - before)
                else:
                    os.sched_yield()    # as csrc/poll.c: whoever we wait for may need this CPU
        finally:
            self._spinning = False
            self._until = 0

    async def _busy(self) -> None:
        while True:
            self._polls[0]["spin_polls"] += 1
            if not self._round():
                os.sched_yield()
            await asyncio.sleep(0)


def make_pumps(dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop,
               queues: int = 1) -> Pumps:
    """ThreadPumps where the backend has the C poll loop, LoopPumps otherwise."""
    cls = ThreadPumps if hasattr(dp, "poll_run") else LoopPumps
    return cls(dp, mode, spin_us, loop, queues)
