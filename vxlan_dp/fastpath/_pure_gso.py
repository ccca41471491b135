"""TEST-ONLY: the Python mirror of the C fast path's UDP_SEGMENT send plumbing.

What it mirrors: csrc/fastpath.c gso_send (segments of one super-frame leave in UDP_SEGMENT
sendmsg calls of up to GSO_SEGS datagrams per destination, the path's refusals turn it off
until a re-probe) and csrc/gsosock.c (an LRU pool of at most GSO_SOCKS send sockets bound to
(local, flow source port)).

Why it exists: super-frames only come from a TAP with virtio-net headers, and the daemon gives
those to the Python backend only under VXLAN_DP_OFFLOAD=all, which the tests set. So no user's
daemon runs this; tests/unit/test_offload.py runs it to show that the C and Python backends
send, count and fall back alike. The wire and FDB semantics of the reference (what goes out,
to whom, which counter moves) stay in _pure.py; this is only how the bytes are handed to the
kernel.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from ..linux import (IP_FREEBIND, IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IPV6_FREEBIND, SO_ATTACH_FILTER,
                     SO_SNDBUFFORCE, SOL_UDP, UDP_SEGMENT)
from ..wire.esp import ESP_EXTRA
from .api import GSO_REPROBE, GSO_RETRY_S, GSO_SEGS, GSO_SOCKS

if TYPE_CHECKING:
    from ._pure import _Net

__all__ = ["GsoSender"]

# the path cannot do UDP_SEGMENT: off for the family until a re-probe (csrc/fastpath.c
# gso_path_refuses); this send did not fit: this send goes raw (gso_send_refused)
_GSO_PATH_REFUSES = {errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT}
_GSO_SEND_REFUSED = {errno.EINVAL, errno.EMSGSIZE}


class GsoSender:
    """UDP_SEGMENT state of one Dataplane: on/off and re-probe time per family, the socket pool,
    an injected failure (inject_gso_error). It holds no reference back to its Dataplane (a
    cycle would leave the Dataplane, and the socket objects wrapping its callers' fds, to the
    cyclic GC: closed at some later moment, when the fd numbers may be someone else's)."""

    def __init__(self, ost: dict[str, int]) -> None:
        self._ost = ost
        self.on = {4: False, 6: False}
        self.retry = {4: 0.0, 6: 0.0}
        self.fail: tuple[int, int] = (0, 0)     # inject_gso_error: (errno, count)
        # (local, port) -> bound socket, or the time a refused bind may be retried; LRU order
        self._socks: OrderedDict[tuple[str, int], socket.socket | float] = OrderedDict()

    def set(self, family: int, on: bool) -> None:
        self.on[family] = bool(on)
        self.retry[family] = 0.0
        if not on:
            self.close(family)

    def reprobe(self, family: int, now: float) -> None:
        """Turned off by the path a while ago: on again, and the next send says whether it works."""
        if not self.on[family] and 0 < self.retry[family] <= now:
            self.on[family] = True
            self.retry[family] = 0.0

    def send(self, n: _Net, packets: list[tuple[str, bytes]], seg0: int, now: float,
             send_raw: Callable[[_Net, list[tuple[str, bytes]]], None]) -> None:
        """The segments of one super-frame (outer packets, segment-major): UDP_SEGMENT sends of
        up to GSO_SEGS datagrams per destination, in csrc/fastpath.c gso_send's order; what
        cannot go that way goes through `send_raw` (the raw socket)."""
        # an encrypted datagram carries ESP around the UDP header and payload it would have had
        maxn = min(GSO_SEGS, (65507 if n.family == 4 else 65527) // (8 + seg0 + (ESP_EXTRA if n.esp else 0)))
        if maxn < 2 or not packets:
            send_raw(n, packets)
            return
        remotes = list(dict.fromkeys(r for r, _ in packets))   # the same for every segment
        per_seg = [packets[i:i + len(remotes)] for i in range(0, len(packets), len(remotes))]
        iphl = 20 if n.family == 4 else 40
        c, st = n.c, self._ost
        for k in range(0, len(per_seg), maxn):
            chunk = per_seg[k:k + maxn]
            sport = int.from_bytes(chunk[0][0][1][iphl:iphl + 2], "big")
            sock = self._socket(n, sport, now) if self.on[n.family] else None
            for d, remote in enumerate(remotes):
                pkts = [seg[d][1] for seg in chunk]
                if sock is not None:
                    anc = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(pkts[0]) - iphl - 8))] \
                        if len(pkts) > 1 else []
                    try:
                        if self.fail[1] > 0:
                            self.fail = (self.fail[0], self.fail[1] - 1)
                            raise OSError(self.fail[0], os.strerror(self.fail[0]))
                        sock.sendmsg([p[iphl + 8:] for p in pkts], anc, 0, (remote, n.params.port))
                    except OSError as e:
                        if e.errno not in _GSO_PATH_REFUSES | _GSO_SEND_REFUSED:
                            c["drop_socket_error"] += len(pkts)     # as the raw socket would
                            continue
                        st["tx_gso_fallbacks"] += 1
                        st["tx_gso_errno"] = e.errno
                        if e.errno in _GSO_PATH_REFUSES:            # off a while, then re-probed
                            self.on[n.family] = False
                            self.retry[n.family] = now + GSO_REPROBE
                            self.close(n.family)
                            sock = None
                    else:
                        c["tx_packets"] += len(pkts)
                        c["tx_bytes"] += sum(len(p) for p in pkts)
                        st["gso_sends"] += 1
                        st["gso_datagrams"] += len(pkts)
                        continue
                send_raw(n, [(remote, p) for p in pkts])

    def _socket(self, n: _Net, port: int, now: float) -> socket.socket | None:
        key = (n.params.local, port)
        have = self._socks.get(key)
        if isinstance(have, socket.socket):
            self._socks.move_to_end(key)
            return have
        if have is not None and now < have:
            return None         # bind refused a while ago: the raw socket until then
        self._socks.pop(key, None)
        if len(self._socks) >= GSO_SOCKS:
            _, old = self._socks.popitem(last=False)
            if isinstance(old, socket.socket):
                old.close()
        sock = _open_socket(n.params.local, n.family, port)
        self._socks[key] = sock if sock is not None else max(now + GSO_RETRY_S, 1e-9)
        return sock

    def close(self, family: int) -> None:
        for key in [k for k in self._socks if ipaddress.ip_address(k[0]).version == family]:
            s = self._socks.pop(key)
            if isinstance(s, socket.socket):
                s.close()


def _open_socket(local: str, family: int, port: int) -> socket.socket | None:
    """A send-only UDP socket bound to (local, port), options as csrc/gsosock.c sets them."""
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        if family == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 64)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        insn = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0))  # BPF "ret #0"
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,   # struct sock_fprog, native
                        struct.pack("@HP", 1, ctypes.addressof(insn)))
        sock.bind((local, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock
