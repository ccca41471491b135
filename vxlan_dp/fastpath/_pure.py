"""The pure-Python backend: the reference semantics of the fastpath API (see api.py).

Straightforward on purpose: it is what the C backend is differentially tested against, and
the fallback where no compiler is present. Per-packet Python is its cost, not a bug.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Sequence

from ..core.counters import EP_COUNTERS, NET_COUNTERS
from ..core.fdb import LEARN_FULL, LEARN_MOVED, LEARN_NEW, Fdb
from ..wire import (WireError, decapsulate, encap_overhead, encapsulate, flow_hash, is_multicast, mac_to_bytes,
                    mac_to_str, max_frame_len)
from .api import ENDPOINT_KINDS, FdbRow, NetworkParams

__all__ = ["Dataplane"]

_READ_MAX = 65535


def _norm(addr: str) -> str:
    return ipaddress.ip_address(addr).compressed


@dataclass
class _Net:
    params: NetworkParams
    endpoint: int
    local: bytes
    family: int
    tap_fd: int = -1
    peers: list[str] = field(default_factory=list)
    packed: dict[str, bytes] = field(default_factory=dict)
    fdb: Fdb = field(default_factory=Fdb)
    local_seen: dict[bytes, float] = field(default_factory=dict)  # local-MAC table: mac -> last seen
    c: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NET_COUNTERS, 0))

    @property
    def outer_l3(self) -> int:
        """Bytes the 16-bit outer length field counts besides the frame (IPv6 excludes its header)."""
        return encap_overhead(self.params.encap, self.family == 6) - (40 if self.family == 6 else 0)

    def addr(self, remote: str) -> bytes:
        p = self.packed.get(remote)
        if p is None:
            p = self.packed[remote] = ipaddress.ip_address(remote).packed
        return p


@dataclass
class _Endpoint:
    kind: str
    sock: socket.socket | None
    ipv4_header: bool
    nets: dict[int, int] = field(default_factory=dict)        # key -> net (plain)
    nvgre_nets: dict[int, int] = field(default_factory=dict)  # VSID -> net
    c: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EP_COUNTERS, 0))


class Dataplane:
    backend = "python"

    def __init__(self, batch: int = 64) -> None:
        if not 1 <= batch <= 1024:
            raise ValueError("batch must be 1..1024")
        self.batch = batch
        self._nets: dict[int, _Net] = {}
        self._eps: dict[int, _Endpoint] = {}
        self._tx: dict[int, socket.socket] = {}
        self._next_net = 0
        self._next_ep = 0

    # --- management -------------------------------------------------------------------
    def set_tx_socket(self, family: int, fd: int) -> None:
        if family not in (4, 6):
            raise ValueError("family must be 4 or 6")
        old = self._tx.pop(family, None)
        if old is not None:
            old.detach()
        if fd >= 0:
            self._tx[family] = socket.socket(fileno=fd)

    def add_endpoint(self, kind: str, fd: int, *, ipv4_header: bool = False) -> int:
        if kind not in ENDPOINT_KINDS:
            raise ValueError(f"unknown endpoint kind {kind!r}")
        if ipv4_header and kind != "gre":
            raise ValueError("ipv4_header is for raw IPv4 GRE sockets only")
        sock = socket.socket(fileno=fd) if fd >= 0 else None
        ep = self._next_ep
        self._next_ep += 1
        self._eps[ep] = _Endpoint(kind, sock, ipv4_header)
        return ep

    def remove_endpoint(self, ep: int) -> None:
        e = self._eps[ep]
        if e.nets or e.nvgre_nets:
            raise ValueError("endpoint still has networks")
        if e.sock is not None:
            e.sock.detach()
        del self._eps[ep]

    def add_network(self, params: NetworkParams, endpoint: int, tap_fd: int = -1) -> int:
        e = self._eps[endpoint]
        if params.encap != e.kind:
            raise ValueError(f"network encap {params.encap} on a {e.kind} endpoint")
        table = e.nvgre_nets if params.nvgre else e.nets
        if params.vni in table:
            raise ValueError(f"VNI {params.vni} already on this endpoint")
        local = ipaddress.ip_address(params.local)
        net = self._next_net
        self._next_net += 1
        self._nets[net] = _Net(params, endpoint, local.packed, local.version, tap_fd,
                               fdb=Fdb(params.ageing, params.max_fdb_entries))
        table[params.vni] = net
        return net

    def remove_network(self, net: int) -> None:
        n = self._nets.pop(net)
        e = self._eps[n.endpoint]
        (e.nvgre_nets if n.params.nvgre else e.nets).pop(n.params.vni, None)

    def set_tap(self, net: int, fd: int) -> None:
        self._nets[net].tap_fd = fd

    def set_peers(self, net: int, peers: Sequence[str]) -> None:
        n = self._nets[net]
        norm = list(dict.fromkeys(_norm(p) for p in peers))
        for p in norm:
            if ipaddress.ip_address(p).version != n.family:
                raise ValueError(f"peer {p} is not of the network's address family")
        n.peers = norm

    def peers(self, net: int) -> list[str]:
        return list(self._nets[net].peers)

    def fdb_add(self, net: int, mac: str, remote: str) -> None:
        n = self._nets[net]
        r = _norm(remote)
        if ipaddress.ip_address(r).version != n.family:
            raise ValueError(f"remote {r} is not of the network's address family")
        n.fdb.add_static(mac_to_bytes(mac), r)

    def fdb_remove(self, net: int, mac: str) -> bool:
        return self._nets[net].fdb.remove(mac_to_bytes(mac))

    def fdb_dump(self, net: int, now: float) -> list[FdbRow]:
        return [FdbRow(mac_to_str(e.mac), e.remote, e.static, e.age)
                for e in self._nets[net].fdb.entries(now)]

    def age(self, now: float) -> int:
        total = 0
        for n in self._nets.values():
            aged = len(n.fdb.age(now))
            n.c["fdb_aged"] += aged
            total += aged
            limit = n.params.ageing
            for mac in [m for m, seen in n.local_seen.items() if now - seen >= limit]:
                del n.local_seen[mac]
        return total

    def local_macs(self, net: int, now: float) -> list[tuple[str, float]]:
        n = self._nets[net]
        limit = n.params.ageing
        return [(mac_to_str(m), max(0.0, now - seen)) for m, seen in sorted(n.local_seen.items())
                if now - seen < limit]

    def counters(self, net: int) -> dict[str, int]:
        return dict(self._nets[net].c)

    def endpoint_counters(self, ep: int) -> dict[str, int]:
        return dict(self._eps[ep].c)

    # --- per-packet work, no I/O ------------------------------------------------------
    def encap(self, net: int, frames: Sequence[bytes], now: float) -> list[tuple[str, bytes]]:
        n = self._nets[net]
        p = n.params
        c = n.c
        out: list[tuple[str, bytes]] = []
        for frame in frames:
            c["tap_rx_frames"] += 1
            c["tap_rx_bytes"] += len(frame)
            if len(frame) < 14:
                c["drop_malformed"] += 1
                continue
            src = frame[6:12]
            if not is_multicast(src) and (src in n.local_seen or len(n.local_seen) < p.max_fdb_entries):
                n.local_seen[src] = now
            if len(frame) > max_frame_len(p.mtu, frame) or len(frame) + n.outer_l3 > 0xFFFF:
                # the second test only bites with an MTU beyond what one outer packet carries:
                # IPv4 Total Length / IPv6 Payload Length are 16 bits and we never fragment
                c["drop_too_big"] += 1
                continue
            dst = frame[:6]
            remote = None if is_multicast(dst) else n.fdb.lookup(dst)
            if remote is not None:
                remotes = [remote]
            else:
                remotes = n.peers
                if remotes:
                    c["flood_frames"] += 1
                    c["flood_copies"] += len(remotes)
            if not remotes:
                c["drop_no_peers"] += 1
                continue
            fh = flow_hash(frame)
            for r in remotes:
                out.append((r, encapsulate(p.encap, n.local, n.addr(r), p.vni, frame, dport=p.port,
                                           sport_range=(p.sport_min, p.sport_max),
                                           nvgre=p.nvgre, fhash=fh)))
        return out

    def decap(self, ep: int, datagrams: Sequence[tuple[str, bytes]], now: float) -> list[tuple[int, bytes]]:
        e = self._eps[ep]
        ec = e.c
        out: list[tuple[int, bytes]] = []
        for src, payload in datagrams:
            ec["rx_datagrams"] += 1
            ec["rx_bytes"] += len(payload)
            try:
                d = decapsulate(e.kind, payload, ipv4_header=e.ipv4_header)
            except WireError as err:
                ec["drop_" + err.reason] += 1
                continue
            net = e.nets.get(d.key)
            if net is None:
                net = e.nvgre_nets.get(d.key >> 8)
                if net is None:
                    ec["drop_unknown_vni"] += 1
                    continue
            n = self._nets[net]
            if n.params.strict and e.kind == "vxlan" and (payload[0] != 0x08 or payload[1:4] != b"\0\0\0" or payload[7]):
                ec["drop_bad_flags"] += 1  # RFC 7348 sec. 5 reserved bits, only where asked
                continue
            if e.ipv4_header:
                src = socket.inet_ntoa(payload[12:16])
            c = n.c
            if not n.params.allow_unknown_sources and src not in n.peers:
                c["drop_unknown_source"] += 1
                continue
            frame = payload[d.offset:]
            if len(frame) < 14 or is_multicast(frame[6:12]):
                c["drop_malformed"] += 1
                continue
            if len(frame) > max_frame_len(n.params.mtu, frame):
                c["drop_too_big"] += 1
                continue
            if n.params.learning:
                r = n.fdb.learn(frame[6:12], src, now)
                if r == LEARN_NEW:
                    c["fdb_learned"] += 1
                elif r == LEARN_MOVED:
                    c["fdb_moved"] += 1
                elif r == LEARN_FULL:
                    c["fdb_full"] += 1
            c["rx_packets"] += 1
            c["rx_bytes"] += len(payload)
            out.append((net, frame))
        return out

    # --- one readiness event, with I/O --------------------------------------------------
    def pump_tap(self, net: int, now: float) -> int:
        """Read up to `batch` frames from the TAP, send them; returns frames read or -errno."""
        n = self._nets[net]
        frames: list[bytes] = []
        err = 0
        for _ in range(self.batch):
            try:
                frames.append(os.read(n.tap_fd, _READ_MAX))
            except BlockingIOError:
                break
            except OSError as e:
                err = -(e.errno or errno.EIO)
                break
        if frames:
            n.c["tap_rx_batches"] += 1
            self._send(n, self.encap(net, frames, now))
        return err if err and not frames else len(frames)

    def _send(self, n: _Net, packets: list[tuple[str, bytes]]) -> None:
        sock = self._tx.get(n.family)
        c = n.c
        for remote, pkt in packets:
            try:
                if sock is None:
                    raise OSError(errno.ENOTCONN, "no egress socket")
                sock.sendto(pkt, (remote, 0))
            except OSError:
                c["drop_socket_error"] += 1
                continue
            c["tx_packets"] += 1
            c["tx_bytes"] += len(pkt)

    def pump_endpoint(self, ep: int, now: float) -> int:
        """Receive up to `batch` datagrams, deliver them; returns datagrams read or -errno."""
        e = self._eps[ep]
        if e.sock is None:
            return -errno.ENOTCONN
        got: list[tuple[str, bytes]] = []
        err = 0
        for _ in range(self.batch):
            try:
                data, addr = e.sock.recvfrom(_READ_MAX)
            except BlockingIOError:
                break
            except OSError as ex:
                e.c["drop_socket_error"] += 1
                err = -(ex.errno or errno.EIO)
                break
            got.append((addr[0], data))
        if got:
            e.c["rx_batches"] += 1
            for net, frame in self.decap(ep, got, now):
                n = self._nets[net]
                try:
                    os.write(n.tap_fd, frame)
                except OSError:
                    n.c["drop_tap_write_error"] += 1
                    continue
                n.c["tap_tx_frames"] += 1
                n.c["tap_tx_bytes"] += len(frame)
        return err if err and not got else len(got)
