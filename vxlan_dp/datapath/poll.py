"""Readiness to pumps: who waits on the TAPs and underlay sockets, and how (`[daemon] poll`).

Modes, the same for both backends:
- "interrupt" (default): sleep until a descriptor is readable; no CPU while idle.
- "adaptive": as interrupt, but after a round that moved packets keep polling for
  `poll_spin_us` more, so a reply arriving inside that window is taken without a sleep and a
  wake-up; idle, it sleeps like interrupt and uses no CPU. Not the default: on the 2-core
  machine this project is measured on, the spin costs bulk throughput (the CPU it burns is
  the CPU iperf3 and the kernel need) for a few microseconds of request/response latency;
  bench/README.md has the figures.
- "busy": never sleep. Holds ONE core whatever the number of networks: the one pump thread
  (C backend) or the event loop (Python backend) polls without pause.

Two implementations of one interface (`make_pumps` picks by backend):
- `ThreadPumps` (C backend): one thread runs csrc/poll.c's loop, which waits in epoll and
  calls the C pumps itself, without the GIL: no Python frame between readiness and a pump.
  Python hears from it only when a TAP fails (its callback runs on the event loop) or at stop.
  Management calls on the event loop and the pumps serialise on the Dataplane's own lock.
- `LoopPumps` (Python backend): the asyncio loop's readers call the pumps, as the reference
  backend always did; adaptive spins and busy polls as tasks on the same loop.

Ownership: callers open and close the fds; a caller removes an fd here before closing it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import threading
import time
from typing import Any, Callable

__all__ = ["POLL_MODES", "Pumps", "ThreadPumps", "LoopPumps", "make_pumps"]

log = logging.getLogger("vxlan_dp")

POLL_MODES = ("interrupt", "adaptive", "busy")
OnFail = Callable[[int], None]      # called with the errno on the event loop's thread


class Pumps:
    """What the networks room needs: register fds with their pump, start, stop."""

    def __init__(self, dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop) -> None:
        if mode not in POLL_MODES:
            raise ValueError(f"poll mode {mode!r} is not one of {', '.join(POLL_MODES)}")
        self.dp, self.mode, self.spin = dp, mode, spin_us / 1e6
        self.loop = loop
        self._tap_fail: dict[int, OnFail] = {}

    def add_tap(self, net: int, fd: int, on_fail: OnFail) -> None:
        raise NotImplementedError

    def remove_tap(self, net: int, fd: int) -> None:
        raise NotImplementedError

    def add_endpoint(self, ep: int, fd: int) -> None:
        raise NotImplementedError

    def remove_endpoint(self, ep: int, fd: int) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _failed(self, net: int, err: int) -> None:
        """A TAP read failed; on the event loop. Once per failure: the fd is out already."""
        cb = self._tap_fail.pop(net, None)
        if cb is not None:
            cb(err)


class ThreadPumps(Pumps):
    def __init__(self, dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(dp, mode, spin_us, loop)
        self._ep = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._tap_fds: dict[int, int] = {}
        dp.poll_ctl(self._ep.fileno(), True, self._wake, dp.POLL_WAKE, self._wake)

    def add_tap(self, net: int, fd: int, on_fail: OnFail) -> None:
        self._tap_fail[net] = on_fail
        self._tap_fds[net] = fd
        self.dp.poll_ctl(self._ep.fileno(), True, fd, self.dp.POLL_TAP, net)

    def remove_tap(self, net: int, fd: int) -> None:
        self._tap_fail.pop(net, None)
        self._tap_fds.pop(net, None)
        self._del(fd)

    def add_endpoint(self, ep: int, fd: int) -> None:
        self.dp.poll_ctl(self._ep.fileno(), True, fd, self.dp.POLL_EP, ep)

    def remove_endpoint(self, ep: int, fd: int) -> None:
        self._del(fd)

    def _del(self, fd: int) -> None:
        try:
            self.dp.poll_ctl(self._ep.fileno(), False, fd, 0, 0)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EBADF):  # out already, or closed (out with it)
                raise

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"vxdp-pump-{self.mode}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        spin_ns = int(self.spin * 1e9)
        while not self._stopping:
            r, net, err = self.dp.poll_run(self._ep.fileno(), self.mode, spin_ns)
            if r == 1:
                fd = self._tap_fds.pop(net, None)
                if fd is not None:          # level-triggered: it would be reported again
                    self._del(fd)
                try:
                    self.loop.call_soon_threadsafe(self._failed, net, err)
                except RuntimeError:        # the loop is closed: we are stopping anyway
                    return
            elif r < 0:
                log.error("pump thread: epoll failed (%s); packets are no longer moved", os.strerror(-r))
                return

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None:
            os.eventfd_write(self._wake, 1)
            self._thread.join(10)
            self._thread = None
        self._ep.close()
        os.close(self._wake)


class LoopPumps(Pumps):
    def __init__(self, dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(dp, mode, spin_us, loop)
        self._taps: dict[int, int] = {}
        self._eps: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._spinning = False

    def add_tap(self, net: int, fd: int, on_fail: OnFail) -> None:
        self._tap_fail[net] = on_fail
        self._taps[net] = fd
        if self.mode != "busy":
            self.loop.add_reader(fd, self._on_tap, net)

    def remove_tap(self, net: int, fd: int) -> None:
        self._tap_fail.pop(net, None)
        if self._taps.pop(net, None) is not None and self.mode != "busy":
            self.loop.remove_reader(fd)

    def add_endpoint(self, ep: int, fd: int) -> None:
        self._eps[ep] = fd
        if self.mode != "busy":
            self.loop.add_reader(fd, self._on_endpoint, ep)

    def remove_endpoint(self, ep: int, fd: int) -> None:
        if self._eps.pop(ep, None) is not None and self.mode != "busy":
            self.loop.remove_reader(fd)

    def start(self) -> None:
        if self.mode == "busy":
            self._task = self.loop.create_task(self._busy())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for net, fd in list(self._taps.items()):
            self.remove_tap(net, fd)
        for ep, fd in list(self._eps.items()):
            self.remove_endpoint(ep, fd)

    def _pump_tap(self, net: int) -> int:
        n: int = self.dp.pump_tap(net, time.monotonic())
        if n < 0:
            fd = self._taps.get(net)
            if fd is not None:
                self._drop_tap(net, fd)
            self._failed(net, -n)
            return 0
        return n

    def _drop_tap(self, net: int, fd: int) -> None:
        if self._taps.pop(net, None) is not None and self.mode != "busy":
            self.loop.remove_reader(fd)

    def _on_tap(self, net: int) -> None:
        if self._pump_tap(net) > 0:
            self._kick()

    def _on_endpoint(self, ep: int) -> None:
        if self.dp.pump_endpoint(ep, time.monotonic()) > 0:
            self._kick()

    def _round(self) -> bool:
        moved = False
        for net in list(self._taps):
            moved = self._pump_tap(net) > 0 or moved
        for ep in list(self._eps):
            moved = self.dp.pump_endpoint(ep, time.monotonic()) > 0 or moved
        return moved

    def _kick(self) -> None:
        if self.mode == "adaptive" and not self._spinning:
            self._spinning = True
            self._task = self.loop.create_task(self._spin())

    async def _spin(self) -> None:
        try:
            until = time.monotonic() + self.spin
            while time.monotonic() < until:
                await asyncio.sleep(0)
                if self._round():
                    until = time.monotonic() + self.spin
        finally:
            self._spinning = False

    async def _busy(self) -> None:
        while True:
            self._round()
            await asyncio.sleep(0)


def make_pumps(dp: Any, mode: str, spin_us: int, loop: asyncio.AbstractEventLoop) -> Pumps:
    """ThreadPumps where the backend has the C poll loop, LoopPumps otherwise."""
    cls = ThreadPumps if hasattr(dp, "poll_run") else LoopPumps
    return cls(dp, mode, spin_us, loop)
