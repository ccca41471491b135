"""Stopping a network while its pump threads run (C backend, csrc/internal.h "queues").

A pump writes every frame it decapsulates to the network's TAP fd, with no readiness event
of that TAP involved, until the Dataplane no longer has the network. So the fd may be closed
only after `remove_network`: closed first, the number can be handed to whatever another
thread opens next (a GSO send socket a pump opens, an executor's socket), and frames from the
overlay land in it. No root: the "TAP" is a socketpair, the overlay a loopback UDP socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Any

import pytest

from vxlan_dp.config import parse_config
from vxlan_dp.control import Desired
from vxlan_dp.datapath.offload import OffloadPlan
from vxlan_dp.fastpath import BACKEND, Dataplane
from vxlan_dp.networks import Endpoint, Network, Networks

pytestmark = pytest.mark.skipif(BACKEND != "c", reason="pump threads are the C backend's")

VNI = 4242


def _frame(i: int) -> bytes:
    dst, src = bytes.fromhex("02420a000001"), bytes.fromhex("02420a0000") + bytes([2 + i % 200])
    return dst + src + b"\x88\xb5" + i.to_bytes(4, "big") * 12


class _FdTap:
    """What Networks.stop needs of a Tap, over one end of a socketpair. close() opens a new
    socketpair at once (the lowest free fd numbers: the one just closed among them) and keeps
    it for a while, as another thread opening a socket would."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.peer.setblocking(False)
        self.reused: list[socket.socket] = []

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def fds(self) -> list[int]:
        return [self.fd]

    queue_fds: list[int] = []

    def close(self) -> None:
        fd = self.sock.fileno()
        self.sock.close()
        while True:     # until the closed number is taken (lowest free fd first)
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            a.setblocking(False)    # a pump writing to it must not block (holding its lock)
            b.setblocking(False)
            self.reused += [a, b]
            if fd in (a.fileno(), b.fileno()) or len(self.reused) > 64:
                break
        time.sleep(0.2)     # what another thread does with it meanwhile


def test_a_stopped_networks_tap_fd_gets_no_frame_after_it_is_closed() -> None:
    cfg = parse_config(f"""
[[network]]
name = "blue"
vni = {VNI}
local = "127.0.0.1"
port = 4789
tap = "vxdp-unused"
peers = ["127.0.0.2"]
""").networks[0]

    async def main() -> list[bytes]:
        dp: Any = Dataplane()
        nets = Networks(dp, OffloadPlan())
        ep_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ep_sock.bind(("127.0.0.1", 0))
        ep_sock.setblocking(False)
        port = ep_sock.getsockname()[1]
        ep = Endpoint(ep_sock, dp.add_endpoint("vxlan", ep_sock.fileno()), {"blue"})
        key = ("vxlan", "127.0.0.1", 4789)
        nets._endpoints[key] = ep
        tap = _FdTap()
        handle = dp.add_network(cfg.params(1450), ep.handle, tap.fd)
        dp.set_peers(handle, ["127.0.0.2"])
        nets.neigh.attach("blue", handle, cfg)
        nets._nets["blue"] = Network(cfg, handle, tap, 1450, key, Desired((), ()))  # type: ignore[arg-type]
        nets.pumps.add_endpoint(ep.handle, ep.fds)
        nets._watch_tap(nets._nets["blue"], tap)   # type: ignore[arg-type]

        stop = threading.Event()

        def feed() -> None:     # the overlay sends to the network all along
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("127.0.0.2", 0))   # the network's peer
            hdr = struct.pack("!II", 0x08 << 24, VNI << 8)
            i = 0
            while not stop.is_set():
                tx.sendto(hdr + _frame(i), ("127.0.0.1", port))
                i += 1
                time.sleep(0.0005)
            tx.close()

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # frames reach the TAP: the pump is at work
                try:
                    if tap.peer.recv(2048):
                        break
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            else:
                pytest.fail(f"no frame reached the TAP: {dp.endpoint_counters(ep.handle)} {dp.counters(handle)}")
            nets.stop("blue")
        finally:
            stop.set()
            feeder.join()
            nets.pumps.stop()
        leaked = []
        for s in tap.reused:
            while True:
                try:
                    leaked.append(s.recv(2048))
                except BlockingIOError:
                    break
            s.close()
        tap.peer.close()
        return leaked

    leaked = asyncio.run(main())
    assert leaked == [], f"{len(leaked)} overlay frames written to an fd the TAP had closed"
