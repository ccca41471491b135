"""Readiness to pumps (vxlan_dp/datapath/poll.py) in each poll mode, for both backends.

Without root: a unix datagram socketpair stands in for the TAP (one frame per read / write,
like tun) and UDP sockets on 127.0.0.1 for the underlay. What is checked is what the daemon
relies on: datagrams reaching the endpoint are delivered to the TAP and frames written to the
TAP are read by the pump without anyone calling a pump by hand, in interrupt, adaptive and
busy mode; a TAP whose read fails is reported once, with its errno, on the event loop, and its
fd is out of the poll set; stop() returns promptly (the C loop's thread is woken and joined),
and never closes the epoll set or wake eventfd of a thread still running.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
import time
from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import eth_frame, vxlan_payload
from vxlan_dp.datapath.poll import POLL_MODES, LoopPumps, ThreadPumps, _PumpThread, make_pumps
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.fastpath.api import SPIN_HEAVY_BYTES, SPIN_QUIET_NS, spin_next

VNI = 42
MAC_A, MAC_X = bytes.fromhex("02000000000a"), bytes.fromhex("020000000099")


def frame(dst: bytes, src: bytes, tag: int) -> bytes:
    return eth_frame(dst, src, 68, tag=tag)


def vxlan(inner: bytes) -> bytes:
    return vxlan_payload(VNI, inner)


@pytest.fixture(params=sorted(backends()))
def backend(request: pytest.FixtureRequest) -> Any:
    return backends()[request.param]


class Rig:
    def __init__(self, cls: Any) -> None:
        self.tap, self.host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tap.setblocking(False)
        self.host.settimeout(3)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.2", 0))
        self.dp = cls(batch=8)
        self.ep = self.dp.add_endpoint("vxlan", self.rx.fileno())
        params = NetworkParams(vni=VNI, encap="vxlan", local="127.0.0.1", port=self.rx.getsockname()[1])
        self.net = self.dp.add_network(params, self.ep, self.tap.fileno())
        self.dp.set_peers(self.net, ["127.0.0.2"])

    def close(self) -> None:
        for s in (self.tap, self.host, self.rx, self.peer):
            s.close()


async def _until(cond: Any, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.01)
    return bool(cond())


@pytest.mark.parametrize("mode", POLL_MODES)
def test_pumps_move_frames_both_ways_in_every_mode(backend: Any, mode: str) -> None:
    async def main() -> None:
        r = Rig(backend)
        pumps = make_pumps(r.dp, mode, 200, asyncio.get_running_loop())
        assert isinstance(pumps, ThreadPumps if hasattr(r.dp, "poll_run") else LoopPumps)
        failed: list[int] = []
        pumps.add_endpoint(r.ep, [r.rx.fileno()])
        pumps.add_tap(r.net, [r.tap.fileno()], failed.append)
        pumps.start()
        try:
            port = r.rx.getsockname()[1]
            frames = [frame(MAC_A, MAC_X, i) for i in range(20)]
            for i, f in enumerate(frames):
                r.peer.sendto(vxlan(f), ("127.0.0.1", port))
                if i % 5 == 4:
                    await asyncio.sleep(0.02)       # several bursts: the pump sleeps between
            got: list[bytes] = []
            r.host.setblocking(False)
            assert await _until(lambda: _drain(r.host, got) >= len(frames)), got
            assert got == frames
            for i in range(7):                      # egress: read by the pump (no egress socket:
                r.host.send(frame(b"\xff" * 6, MAC_A, 100 + i))     # counted as refused sends)
            assert await _until(lambda: r.dp.counters(r.net)["tap_rx_frames"] == 7)
            assert failed == []
            # what the pump says it did (the vxlan_dp_pump_* metrics): every byte read, and
            # sleeps / polls as the mode has them
            st = pumps.stats(0)
            assert st["moved_bytes"] == sum(len(vxlan(f)) for f in frames) + 7 * len(frames[0])
            if mode == "busy":
                assert st["wakeups"] == 0 and st["spin_polls"] > 0
            else:
                assert st["wakeups"] >= 1
            if mode == "interrupt":
                assert st["spin_windows"] == st["spin_polls"] == 0
            if mode == "adaptive":                  # sparse traffic: a window after each burst
                assert st["spin_windows"] >= 1 and st["spin_polls"] > 0
        finally:
            pumps.stop()
            r.close()
    asyncio.run(main())


def _drain(sock: socket.socket, into: list[bytes]) -> int:
    while True:
        try:
            into.append(sock.recv(70000))
        except BlockingIOError:
            return len(into)


@pytest.mark.parametrize("mode", POLL_MODES)
def test_a_failing_tap_is_reported_once_and_leaves_the_poll_set(backend: Any, mode: str) -> None:
    """The TAP's fd stays readable but the network's fd is gone (-1): the pump's read fails
    with EBADF. The callback runs once, on the event loop's thread; the other pumps go on."""
    async def main() -> None:
        r = Rig(backend)
        loop_thread = threading.get_ident()
        pumps = make_pumps(r.dp, mode, 200, asyncio.get_running_loop())
        calls: list[tuple[int, int]] = []
        pumps.add_endpoint(r.ep, [r.rx.fileno()])
        pumps.add_tap(r.net, [r.tap.fileno()], lambda err: calls.append((err, threading.get_ident())))
        pumps.start()
        try:
            r.dp.set_tap(r.net, -1)
            r.host.send(frame(b"\xff" * 6, MAC_A, 1))      # readable now, and unreadable by the pump
            assert await _until(lambda: calls)
            await asyncio.sleep(0.2)
            assert calls == [(errno.EBADF, loop_thread)]
            pumps.remove_tap(r.net, [r.tap.fileno()])        # what the daemon does next: no error
            r.dp.set_tap(r.net, r.tap.fileno())            # the TAP is back
            pumps.add_tap(r.net, [r.tap.fileno()], lambda err: calls.append((err, 0)))
            assert await _until(lambda: r.dp.counters(r.net)["tap_rx_frames"] == 1)
            r.peer.sendto(vxlan(frame(MAC_A, MAC_X, 9)), ("127.0.0.1", r.rx.getsockname()[1]))
            assert await _until(lambda: r.dp.counters(r.net)["tap_tx_frames"] == 1)
            assert len(calls) == 1
        finally:
            pumps.stop()
            r.close()
    asyncio.run(main())


@pytest.mark.skipif("c" not in backends(), reason="C fast path not built")
def test_the_c_pump_thread_stops_promptly_in_every_mode() -> None:
    async def main() -> None:
        for mode in POLL_MODES:
            r = Rig(backends()["c"])
            pumps = make_pumps(r.dp, mode, 10_000, asyncio.get_running_loop())
            pumps.add_endpoint(r.ep, [r.rx.fileno()])
            pumps.start()
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            pumps.stop()
            assert time.monotonic() - t0 < 1.0
            assert not any(t.name.startswith("vxdp-pump") for t in threading.enumerate())
            r.close()
    asyncio.run(main())


def test_an_unknown_mode_is_refused(backend: Any) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="poll mode 'spin'"):
            make_pumps(backend(batch=4), "spin", 100, asyncio.get_running_loop())
    asyncio.run(main())


# --- queues ([daemon] queues): each queue's fds pumped as that queue -----------------------------

class QueueRig(Rig):
    """Rig with a second queue: another "TAP queue" socketpair and another endpoint socket
    (the daemon's is a SO_REUSEPORT sibling on the same port; a port of its own here lets
    the test pick the queue a datagram arrives on)."""

    def __init__(self, cls: Any) -> None:
        super().__init__(cls)
        self.dp.set_queues(2)
        self.tap1, self.host1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tap1.setblocking(False)
        self.host1.settimeout(3)
        self.rx1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx1.bind(("127.0.0.1", 0))
        self.rx1.setblocking(False)
        self.dp.set_tap_queue(self.net, 1, self.tap1.fileno())
        self.dp.set_endpoint_queue(self.ep, 1, self.rx1.fileno())

    def close(self) -> None:
        super().close()
        for s in (self.tap1, self.host1, self.rx1):
            s.close()


def test_two_queues_each_move_frames_and_the_counters_add_up(backend: Any) -> None:
    async def main() -> None:
        r = QueueRig(backend)
        pumps = make_pumps(r.dp, "interrupt", 200, asyncio.get_running_loop(), queues=2)
        failed: list[int] = []
        pumps.add_endpoint(r.ep, [r.rx.fileno(), r.rx1.fileno()])
        pumps.add_tap(r.net, [r.tap.fileno(), r.tap1.fileno()], failed.append)
        pumps.start()
        try:
            # ingress: a datagram on either endpoint queue reaches the TAP through that queue
            r.peer.sendto(vxlan(frame(MAC_A, MAC_X, 1)), r.rx.getsockname())
            r.peer.sendto(vxlan(frame(MAC_A, MAC_X, 2)), r.rx1.getsockname())
            got0: list[bytes] = []
            got1: list[bytes] = []
            r.host.setblocking(False)
            r.host1.setblocking(False)
            assert await _until(lambda: _drain(r.host, got0) + _drain(r.host1, got1) >= 2)
            assert (got0, got1) == ([frame(MAC_A, MAC_X, 1)], [frame(MAC_A, MAC_X, 2)])
            # egress: a frame on either TAP queue is read and sent towards the peer (no egress
            # socket in this rig: the send is counted refused, after the flood decision)
            r.host.send(frame(b"\xff" * 6, MAC_A, 3))
            r.host1.send(frame(b"\xff" * 6, MAC_A, 4))
            assert await _until(lambda: r.dp.counters(r.net)["tap_rx_frames"] == 2)
            c, e = r.dp.counters(r.net), r.dp.endpoint_counters(r.ep)
            assert (c["rx_packets"], c["tap_tx_frames"], e["rx_datagrams"]) == (2, 2, 2), (c, e)
            assert (c["flood_frames"], c["drop_socket_error"]) == (2, 2), c
            assert c["fdb_learned"] == 1 and r.dp.fdb_size(r.net) == 1, c   # one MAC, seen on both
            assert [m for m, _ in r.dp.local_macs(r.net, time.monotonic())] == ["02:00:00:00:00:0a"]
            assert failed == []
        finally:
            pumps.stop()
            r.close()
    asyncio.run(main())


@pytest.mark.skipif("c" not in backends(), reason="C fast path not built")
def test_c_queues_pumped_at_once_learn_and_count_exactly() -> None:
    """Two threads pump the two queues at the same time (the C pumps release the GIL), both
    learning the same 32 MACs on ingress and on egress: every datagram and frame is counted
    once, and every MAC is learned once (csrc/internal.h "queues": learning applied under
    every queue's lock, a refresh in place)."""
    r = QueueRig(backends()["c"])
    macs = [bytes.fromhex(f"0200000001{i:02x}") for i in range(32)]
    rounds = 4
    total = len(macs) * rounds
    try:
        for rx in (r.rx, r.rx1):
            for k in range(rounds):
                for m in macs:
                    r.peer.sendto(vxlan(frame(MAC_A, m, k)), rx.getsockname())
        start = threading.Barrier(4)
        done = threading.Event()

        def pump(q: int, rx: socket.socket) -> None:
            start.wait()
            while not done.is_set():
                r.dp.pump_endpoint(r.ep, time.monotonic(), q)
                r.dp.pump_tap(r.net, time.monotonic(), q)

        def feed(host: socket.socket) -> None:
            host.setblocking(False)
            start.wait()
            for k in range(rounds):
                for m in macs:
                    while True:
                        try:
                            host.send(frame(b"\xff" * 6, m, k))
                            break
                        except BlockingIOError:     # the pump has not read the last ones yet
                            time.sleep(0.001)
                    _drain(host, [])                # what ingress wrote to this queue

        threads = [threading.Thread(target=pump, args=(0, r.rx)), threading.Thread(target=pump, args=(1, r.rx1)),
                   threading.Thread(target=feed, args=(r.host,)), threading.Thread(target=feed, args=(r.host1,))]
        for t in threads:
            t.start()
        for t in threads[2:]:
            t.join(10)
        deadline = time.monotonic() + 5
        while r.dp.counters(r.net)["tap_rx_frames"] < 2 * total and time.monotonic() < deadline:
            time.sleep(0.01)
        done.set()
        for t in threads[:2]:
            t.join(10)
        c, e = r.dp.counters(r.net), r.dp.endpoint_counters(r.ep)
        assert e["rx_datagrams"] == c["rx_packets"] == 2 * total, (c, e)
        assert c["tap_tx_frames"] + c["drop_tap_write_error"] == 2 * total, c
        assert c["tap_rx_frames"] == c["flood_frames"] == 2 * total, c
        assert c["fdb_learned"] == 32 and c["fdb_moved"] == 0 and r.dp.fdb_size(r.net) == 32, c
        assert len(r.dp.local_macs(r.net, time.monotonic())) == 32
    finally:
        r.close()


def _both_queues_failing(cls: Any) -> tuple[QueueRig, Any, list[int], list[int]]:
    """A two-queue rig pumped from the loop's view (the C backend: a thread per queue) whose
    TAP fds are both -1 in the Dataplane, a frame waiting on each: both queues' reads fail.
    Returns the rig, the pumps, the failure callback's calls and the TAP's fds."""
    r = QueueRig(cls)
    pumps = make_pumps(r.dp, "interrupt", 200, asyncio.get_running_loop(), queues=2)
    calls: list[int] = []
    fds = [r.tap.fileno(), r.tap1.fileno()]
    pumps.add_endpoint(r.ep, [r.rx.fileno(), r.rx1.fileno()])
    pumps.add_tap(r.net, fds, calls.append)
    pumps.start()
    r.dp.set_tap(r.net, -1)                         # every queue's fd: -1
    r.host.send(frame(b"\xff" * 6, MAC_A, 1))
    r.host1.send(frame(b"\xff" * 6, MAC_A, 2))
    return r, pumps, calls, fds


def test_a_tap_failing_on_both_queues_is_reported_once(backend: Any) -> None:
    """Every queue's fd of a vanished TAP fails, each in its own pump thread (C): the daemon
    hears of it once, and the TAP made again carries frames on both queues with no late report."""
    async def main() -> None:
        r, pumps, calls, fds = _both_queues_failing(backend)
        try:
            assert await _until(lambda: calls)
            pumps.remove_tap(r.net, fds)                    # what the daemon does next
            await asyncio.sleep(0.2)
            assert calls == [errno.EBADF]
            r.dp.set_tap(r.net, fds[0])                     # the TAP is back, both queues
            r.dp.set_tap_queue(r.net, 1, fds[1])
            pumps.add_tap(r.net, fds, calls.append)
            assert await _until(lambda: r.dp.counters(r.net)["tap_rx_frames"] == 2)
            await asyncio.sleep(0.1)
            assert calls == [errno.EBADF]
        finally:
            pumps.stop()
            r.close()
    asyncio.run(main())


def test_a_late_failure_report_does_not_undo_the_tap_made_since(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both queues' fds of a vanished TAP fail; one pump thread is slow between taking its fd
    out of its table and out of its epoll set (a GIL switch there, made long here). The event
    loop meanwhile takes the TAP out and, a loop turn later, puts the new one in under the same
    fd numbers, as the daemon's recovery does. The slow thread must neither take the new TAP's
    fd out of its epoll set (that queue would never be pumped again) nor report the old
    failure against the new TAP (torn down and made again for nothing)."""
    if "c" not in backends():
        pytest.skip("pump threads are the C backend's")
    real_delete = _PumpThread.delete
    pump_deletes: list[int] = []

    def slow_delete(self: _PumpThread, fd: int) -> None:
        if threading.current_thread().name.startswith("vxdp-pump"):
            pump_deletes.append(fd)
            if len(pump_deletes) == 2:      # the second thread to report: late
                time.sleep(0.5)
        real_delete(self, fd)
    monkeypatch.setattr(_PumpThread, "delete", slow_delete)

    async def main() -> None:
        r, pumps, calls, fds = _both_queues_failing(backends()["c"])
        try:
            assert await _until(lambda: calls)
            pumps.remove_tap(r.net, fds)                    # Networks._tap_lost
            await asyncio.sleep(0.2)                        # _recover_tap runs as a task
            r.dp.set_tap(r.net, fds[0])
            r.dp.set_tap_queue(r.net, 1, fds[1])
            pumps.add_tap(r.net, fds, calls.append)
            await asyncio.sleep(0.6)                        # the slow thread is done by now
            assert len(pump_deletes) == 2
            r.host.send(frame(b"\xff" * 6, MAC_A, 3))
            r.host1.send(frame(b"\xff" * 6, MAC_A, 4))
            # 1 and 2 were never read (the fds were -1): every frame, from both queues
            assert await _until(lambda: r.dp.counters(r.net)["tap_rx_frames"] == 4), \
                "a queue of the new TAP is not pumped"
            assert calls == [errno.EBADF]
        finally:
            pumps.stop()
            r.close()

    asyncio.run(main())


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def _kind(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return "closed"


@pytest.mark.skipif("c" not in backends(), reason="pump threads are the C backend's")
def test_stop_leaves_a_stuck_pump_threads_fds_open_until_it_ends(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Queue 1's thread is stuck in its C loop (a pump blocked, here a stand-in that ignores
    the wake) past stop's join: stop returns within its one bound for all queues, says which
    queue, and leaves that thread's epoll set and wake eventfd open, as the C loop still waits
    on and drains them (closed, their numbers would be the next file opened). Queue 0 stops as
    always. Once the stuck thread ends, it closes them itself: nothing is left open."""
    monkeypatch.setattr(ThreadPumps, "JOIN_TIMEOUT", 0.3)
    r = QueueRig(backends()["c"])
    real_run = r.dp.poll_run
    inside, release = threading.Event(), threading.Event()
    seen: list[tuple[str, str]] = []
    wake = [-1]

    def stuck_run(epfd: int, mode: str, spin_ns: int, queue: int = 0) -> tuple[int, int, int]:
        if queue != 1:
            return real_run(epfd, mode, spin_ns, queue)
        inside.set()
        release.wait(5)
        seen.append((_kind(epfd), _kind(wake[0])))     # what the C loop would use next
        return 0, 0, 0
    r.dp.poll_run = stuck_run

    async def main() -> None:
        before = _open_fds()
        pumps = make_pumps(r.dp, "interrupt", 200, asyncio.get_running_loop(), queues=2)
        assert isinstance(pumps, ThreadPumps)
        t0, t1 = pumps._threads
        wake[0] = t1.wake
        pumps.start()
        stuck = t1.thread
        assert stuck is not None and inside.wait(2)
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="vxlan_dp"):
            pumps.stop()
        assert time.monotonic() - began < 1.0
        assert t0.ep.closed                                 # queue 0: as always
        assert not t1.ep.closed, "the stuck thread's epoll set was closed under it"
        assert (_kind(t1.ep.fileno()), _kind(t1.wake)) == ("anon_inode:[eventpoll]", "anon_inode:[eventfd]")
        assert [m for m in caplog.messages if "pump thread 1 did not stop" in m], caplog.messages
        assert pumps.abandoned == [1]
        release.set()
        stuck.join(2)
        assert not stuck.is_alive()
        assert seen == [("anon_inode:[eventpoll]", "anon_inode:[eventfd]")]
        assert t1.ep.closed and _open_fds() == before, "fds left open after the stuck thread ended"

    try:
        asyncio.run(main())
    finally:
        release.set()
        r.close()


def test_adaptive_spins_after_sparse_traffic_and_not_after_bulk(backend: Any) -> None:
    """One datagram of more than SPIN_HEAVY_BYTES (one round, whatever the timing): the pump
    goes back to sleep at once, no window. A small one well after it (> SPIN_QUIET_NS): a
    window opens and the pump polls. Fails with the spin after every round it replaced."""
    async def main() -> None:
        r = Rig(backend)
        pumps = make_pumps(r.dp, "adaptive", 5000, asyncio.get_running_loop())
        pumps.add_endpoint(r.ep, [r.rx.fileno()])
        pumps.add_tap(r.net, [r.tap.fileno()], lambda err: None)
        pumps.start()
        try:
            port = r.rx.getsockname()[1]
            bulk = vxlan(eth_frame(MAC_A, MAC_X, SPIN_HEAVY_BYTES))
            r.peer.sendto(bulk, ("127.0.0.1", port))
            assert await _until(lambda: pumps.stats(0)["moved_bytes"] == len(bulk))
            await asyncio.sleep(0.05)               # longer than the 5 ms window would be
            st = pumps.stats(0)
            assert (st["wakeups"], st["spin_windows"], st["spin_polls"]) == (1, 0, 0), st
            await asyncio.sleep(SPIN_QUIET_NS / 1e9)
            small = vxlan(frame(MAC_A, MAC_X, 1))
            r.peer.sendto(small, ("127.0.0.1", port))
            assert await _until(lambda: pumps.stats(0)["moved_bytes"] == len(bulk) + len(small))
            assert await _until(lambda: pumps.stats(0)["spin_polls"] > 0)
            st = pumps.stats(0)
            assert (st["wakeups"], st["spin_windows"]) == (2, 1), st
        finally:
            pumps.stop()
            r.close()
    asyncio.run(main())


def test_spin_next_opens_a_window_after_sparse_rounds_only() -> None:
    state = [0]
    assert spin_next(state, 10_000, 100, 300_000) == 310_000            # sparse: a window
    assert spin_next(state, 20_000, SPIN_HEAVY_BYTES, 300_000) == 0     # bulk: sleep
    assert state == [20_000]
    quiet_end = 20_000 + SPIN_QUIET_NS
    assert spin_next(state, quiet_end - 1, 100, 300_000) == 0           # too soon after bulk
    assert spin_next(state, quiet_end, 100, 300_000) == quiet_end + 300_000
    assert spin_next(state, quiet_end + 5, SPIN_HEAVY_BYTES - 1, 7) == quiet_end + 12


@pytest.mark.skipif("c" not in backends(), reason="C fast path not built")
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * SPIN_QUIET_NS), st.integers(1, 4 * SPIN_HEAVY_BYTES)),
                max_size=30), st.integers(1, 10_000_000))
def test_c_spin_next_equals_python(steps: list[tuple[int, int]], spin_ns: int) -> None:
    from vxlan_dp.fastpath import _c
    py, c, now = [0], [0], 1
    for gap, moved in steps:
        now += gap
        assert _c.spin_next(c, now, moved, spin_ns) == spin_next(py, now, moved, spin_ns)
        assert c == py
