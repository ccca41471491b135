"""The pure-Python backend: the reference semantics of the fastpath API (see api.py).

Straightforward on purpose: it is what the C backend is differentially tested against, and
the fallback where no compiler is present. Per-packet Python is its cost, not a bug.
How split super-frames are handed to the kernel in UDP_SEGMENT sends (a socket pool, refusals,
re-probes) is _pure_gso.py's: a test-only mirror of the C plumbing, not part of the reference.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Sequence

from ..core.counters import EP_COUNTERS, NET_COUNTERS
from ..core.esp_state import EspState, precheck
from ..linux import SOL_UDP, UDP_GRO
from ..core.fdb import LEARN_FULL, LEARN_MOVED, LEARN_NEW, Fdb
from ..core import neigh as cneigh
from ..core.fdbtable import FdbTable
from ..core.neigh import NEIGH_COUNTERS, NeighTable
from ..wire import neigh as wneigh
from ..wire import (WireError, decapsulate, decode_vxlan, encap_overhead, encapsulate, flow_hash, is_multicast,
                    mac_to_bytes, mac_to_str, max_frame_len)
from ..wire.csum import complete_partial, super_frame, super_partial
from ..wire.offload import (F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, VNET_HDR_LEN, VnetHdr, coalesce_runs,
                            decode_vnet_hdr, encode_vnet_hdr, split)
from ..wire.esp import ESP_EXTRA
from ._pure_gso import GsoSender
from .api import (FRAME_MAX, NEIGH_LEARN_MAX, OFFLOAD_STATS, POLL_STATS, QUEUES_MAX, SUPER_MAX, TAP_TSO4, TAP_TSO6, TAP_USO, FdbRow,
                  NeighRow, NetworkParams, check_batch, check_endpoint_args, check_esp_args, check_family,
                  check_fdb_table, check_mac_list, check_neigh_entry, check_neigh_mode, check_network_args,
                  check_queue, check_tap_args, gro_types)

__all__ = ["Dataplane"]

_NO_VNET = encode_vnet_hdr(VnetHdr())


def _norm(addr: str) -> str:
    return ipaddress.ip_address(addr).compressed


@dataclass
class _Net:
    params: NetworkParams
    endpoint: int
    local: bytes
    family: int
    tap_fd: int = -1
    tap_queues: dict[int, int] = field(default_factory=dict)   # queue >= 1 -> its TAP fd
    peers: list[str] = field(default_factory=list)
    packed: dict[str, bytes] = field(default_factory=dict)
    fdb: Fdb = field(default_factory=Fdb)
    local_seen: dict[bytes, float] = field(default_factory=dict)  # local-MAC table: mac -> last seen
    c: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NET_COUNTERS, 0))
    vnet: bool = False          # the TAP carries a virtio-net header per frame
    gro: int = 0                # TAP_* kinds writes may coalesce into (api.gro_types)
    esp: EspState | None = None  # encrypted network
    neigh: NeighTable | None = None     # ARP/ND suppression; None until first used
    suppress: bool = False
    snoop: bool = False
    nc: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NEIGH_COUNTERS, 0))

    def table(self) -> NeighTable:
        if self.neigh is None:
            self.neigh = NeighTable(self.params.ageing, 0)
        return self.neigh
    csum_peer: str | None = None    # outer source of the last completed checksum

    @property
    def outer_l3(self) -> int:
        """Bytes the 16-bit outer length field counts besides the frame (IPv6 excludes its header)."""
        extra = ESP_EXTRA if self.esp else 0
        return encap_overhead(self.params.encap, self.family == 6) - (40 if self.family == 6 else 0) + extra

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
    gro: bool = False           # UDP_GRO on: a message may hold several datagrams
    nets: dict[int, int] = field(default_factory=dict)        # key -> net (plain)
    nvgre_nets: dict[int, int] = field(default_factory=dict)  # VSID -> net
    esp_net: int = -1           # the one network of an encrypted endpoint
    queue_socks: dict[int, socket.socket] = field(default_factory=dict)  # queue >= 1 -> socket
    c: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EP_COUNTERS, 0))


class Dataplane:
    backend = "python"

    def __init__(self, batch: int = 64) -> None:
        check_batch(batch)
        self.batch = batch
        self._nets: dict[int, _Net] = {}
        self._eps: dict[int, _Endpoint] = {}
        self._tx: dict[int, socket.socket] = {}
        self._next_net = 0
        self._next_ep = 0
        self._ost = dict.fromkeys(OFFLOAD_STATS, 0)
        self._gso = GsoSender(self._ost)   # test-only mirror of C's UDP_SEGMENT sends
        self._queues = 1
        self._moved = [0] * QUEUES_MAX  # poll_stats' moved_bytes, by queue
        self._q = 0                 # the queue being pumped: frames for a TAP go out through its fd

    def _wfd(self, n: _Net) -> int:
        return n.tap_queues.get(self._q, -1) if self._q else n.tap_fd

    # --- queues: one event loop serves them all here (the order of work is the only difference)
    @property
    def queues(self) -> int:
        return self._queues

    def set_queues(self, n: int) -> None:
        check_queue(n - 1, QUEUES_MAX)
        if n < self._queues:
            raise ValueError(f"queues only grow: {self._queues} already")
        self._queues = n

    def set_tap_queue(self, net: int, queue: int, fd: int) -> None:
        n = self._nets[net]
        check_queue(queue, self._queues)
        if queue == 0:
            n.tap_fd = fd
        elif fd < 0:
            n.tap_queues.pop(queue, None)
        else:
            n.tap_queues[queue] = fd

    def set_endpoint_queue(self, ep: int, queue: int, fd: int) -> None:
        e = self._eps[ep]
        check_queue(queue, self._queues)
        old = e.sock if queue == 0 else e.queue_socks.pop(queue, None)
        if old is not None:
            old.detach()
        sock = socket.socket(fileno=fd) if fd >= 0 else None
        if queue == 0:
            e.sock = sock
        elif sock is not None:
            e.queue_socks[queue] = sock

    # --- management -------------------------------------------------------------------
    def set_tx_socket(self, family: int, fd: int) -> None:
        check_family(family)
        old = self._tx.pop(family, None)
        if old is not None:
            old.detach()
        if fd >= 0:
            self._tx[family] = socket.socket(fileno=fd)

    def add_endpoint(self, kind: str, fd: int, *, ipv4_header: bool = False, gro: bool = False) -> int:
        check_endpoint_args(kind, ipv4_header, gro)
        sock = socket.socket(fileno=fd) if fd >= 0 else None
        ep = self._next_ep
        self._next_ep += 1
        self._eps[ep] = _Endpoint(kind, sock, ipv4_header, gro)
        return ep

    def remove_endpoint(self, ep: int) -> None:
        e = self._eps[ep]
        if e.nets or e.nvgre_nets:
            raise ValueError("endpoint still has networks")
        for sock in [e.sock, *e.queue_socks.values()]:
            if sock is not None:
                sock.detach()
        del self._eps[ep]

    def add_network(self, params: NetworkParams, endpoint: int, tap_fd: int = -1, *,
                    vnet_hdr: bool = False, offload: int = 0) -> int:
        e = self._eps[endpoint]
        check_network_args(params, e.kind, vnet_hdr, offload)
        table = e.nvgre_nets if params.nvgre else e.nets
        if e.esp_net >= 0:
            raise OSError(errno.EBUSY, "an encrypted network has its endpoint to itself")
        if params.vni in table:
            raise ValueError(f"VNI {params.vni} already on this endpoint")
        local = ipaddress.ip_address(params.local)
        net = self._next_net
        self._next_net += 1
        self._nets[net] = _Net(params, endpoint, local.packed, local.version, tap_fd,
                               fdb=Fdb(params.ageing, params.max_fdb_entries),
                               vnet=vnet_hdr, gro=gro_types(offload) if vnet_hdr else 0)
        table[params.vni] = net
        return net

    def remove_network(self, net: int) -> None:
        n = self._nets.pop(net)
        e = self._eps[n.endpoint]
        (e.nvgre_nets if n.params.nvgre else e.nets).pop(n.params.vni, None)
        if n.esp is not None:
            n.esp.zero()
        if e.esp_net == net:
            e.esp_net = -1

    def set_esp(self, net: int, cipher: str, keys: dict[int, bytes], send_id: int,
                boot_id: int) -> None:
        check_esp_args(cipher, keys, send_id, boot_id)
        n = self._nets[net]
        e = self._eps[n.endpoint]
        if n.params.encap == "gre":
            raise OSError(errno.EINVAL, "ESP in UDP: vxlan and gre-udp networks only")
        if len(e.nets) + len(e.nvgre_nets) != 1:
            raise OSError(errno.EBUSY, "an encrypted network needs an endpoint of its own")
        if n.esp is None:
            n.esp = EspState(cipher, n.local, boot_id)
        elif n.esp.cipher != cipher or n.esp.boot_id != boot_id:
            raise OSError(errno.EINVAL, "cipher and boot id are fixed once set")
        n.esp.install(keys, send_id)
        e.esp_net = net

    def set_tap(self, net: int, fd: int, *, vnet_hdr: bool = False, offload: int = 0) -> None:
        n = self._nets[net]
        check_tap_args(vnet_hdr, offload)
        n.tap_fd = fd
        if fd < 0:              # the TAP is gone: every queue of it
            n.tap_queues.clear()
        n.vnet = vnet_hdr
        n.gro = gro_types(offload) if vnet_hdr else 0

    def tap_offload(self, net: int) -> int:
        return self._nets[net].gro

    def set_tx_gso(self, family: int, on: bool) -> None:
        check_family(family)
        self._gso.set(family, on)

    def tx_gso(self, family: int) -> bool:
        check_family(family)
        return self._gso.on[family]

    def inject_gso_error(self, err: int, count: int) -> None:
        if err <= 0 or count < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._gso.fail = (err, count)

    def offload_stats(self) -> dict[str, int]:
        return dict(self._ost)

    def poll_stats(self, queue: int = 0) -> dict[str, int]:
        """The loop's sleeps and spins are LoopPumps' to count (no pump thread here)."""
        check_queue(queue, self._queues)
        return {**dict.fromkeys(POLL_STATS, 0), "moved_bytes": self._moved[queue]}

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

    def fdb_load(self, net: int, table: FdbTable) -> None:
        """Every entry of `table` as a static entry, as that many fdb_add calls would."""
        n = self._nets[net]
        check_fdb_table(table, n.family)
        remotes = [_norm(r) for r in table.remotes]
        macs = table.macs
        for i, r in enumerate(table.index):
            n.fdb.add_static(macs[6 * i:6 * i + 6], remotes[r])

    def fdb_update(self, net: int, table: FdbTable, remove: bytes = b"", *, replace: bool = False) -> int:
        """Removals, then `table` as fdb_load, then (replace) no other static entry."""
        n = self._nets[net]
        check_fdb_table(table, n.family)
        check_mac_list(remove)
        for i in range(0, len(remove), 6):
            n.fdb.remove(remove[i:i + 6])
        self.fdb_load(net, table)
        if replace:
            n.fdb.keep_static({table.macs[i:i + 6] for i in range(0, len(table.macs), 6)})
        return n.fdb.statics()

    def fdb_get(self, net: int, mac: str, now: float) -> FdbRow | None:
        raw = mac_to_bytes(mac)
        return next((FdbRow(mac_to_str(e.mac), e.remote, e.static, e.age)
                     for e in self._nets[net].fdb.entries(now) if e.mac == raw), None)

    def fdb_statics(self, net: int) -> int:
        return self._nets[net].fdb.statics()

    def fdb_remove(self, net: int, mac: str) -> bool:
        return self._nets[net].fdb.remove(mac_to_bytes(mac))

    def fdb_size(self, net: int) -> int:
        """Entries in the network's FDB, static and learned: what a scrape needs, without a dump."""
        return len(self._nets[net].fdb)

    def fdb_dump(self, net: int, now: float) -> list[FdbRow]:
        return [FdbRow(mac_to_str(e.mac), e.remote, e.static, e.age)
                for e in self._nets[net].fdb.entries(now)]

    def age(self, now: float) -> int:
        total = 0
        for n in self._nets.values():
            aged = len(n.fdb.age(now))
            n.c["fdb_aged"] += aged
            total += aged
            if n.neigh is not None:
                n.nc["aged"] += n.neigh.age(now)
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

    # --- neighbour suppression ------------------------------------------------------------
    def neigh_mode(self, net: int, *, suppress: bool, snoop: bool = False,
                   max_learned: int = NEIGH_LEARN_MAX) -> None:
        n = self._nets[net]
        check_neigh_mode(max_learned)
        n.table().max_learned = max_learned
        n.suppress, n.snoop = bool(suppress), bool(snoop)

    def neigh_set(self, net: int, ip: str, mac: str) -> None:
        n = self._nets[net]
        _, packed, m = check_neigh_entry(ip, mac)
        n.table().set_static(packed, m)

    def neigh_remove(self, net: int, ip: str) -> bool:
        n = self._nets[net]
        packed = ipaddress.ip_address(ip).packed
        return n.neigh is not None and n.neigh.remove(packed)

    def neigh_size(self, net: int) -> int:
        n = self._nets[net]
        return 0 if n.neigh is None else len(n.neigh)

    def neigh_dump(self, net: int, now: float) -> list[NeighRow]:
        n = self._nets[net]
        if n.neigh is None:
            return []
        return [NeighRow(ipaddress.ip_address(e.ip).compressed, mac_to_str(e.mac), e.static, e.age)
                for e in n.neigh.entries(now)]

    def neigh_counters(self, net: int) -> dict[str, int]:
        return dict(self._nets[net].nc)

    def neigh_answer(self, net: int, frame: bytes) -> bytes | None:
        n = self._nets[net]
        m = wneigh.parse(frame)
        return None if m is None else self._answer(n, frame, m)[0]

    @staticmethod
    def _answer(n: _Net, frame: bytes, m: wneigh.NeighMsg) -> tuple[bytes | None, bool]:
        """(the answer or None, whether it was a request for an unknown address)."""
        if not wneigh.is_request(frame, m):
            return None, False
        mac = None if n.neigh is None else n.neigh.lookup(m.target_ip)
        if mac is None:
            return None, True
        if mac == m.sender_mac:
            return None, False      # asking for its own address: the network should see it
        reply = wneigh.arp_reply(m, mac) if m.kind == wneigh.ARP_REQUEST else wneigh.neighbor_advert(m, mac)
        return reply, False

    def _neigh_egress(self, n: _Net, frame: bytes, now: float) -> bool:
        """The suppression step (api.py): True when the frame was answered, not forwarded."""
        if not (n.suppress or n.snoop):
            return False
        m = wneigh.parse(frame)
        if m is None:
            return False
        nc = n.nc
        if n.snoop:
            a = wneigh.announcement(m)
            if a is not None:
                r = n.table().learn(a[0], a[1], now)
                if r in (cneigh.LEARN_NEW, cneigh.LEARN_MOVED):
                    nc["snooped"] += 1
                elif r == cneigh.LEARN_FULL:
                    nc["snoop_full"] += 1
        if not n.suppress:
            return False
        reply, unknown = self._answer(n, frame, m)
        if reply is None:
            nc["unknown_flooded"] += unknown
            return False
        nc["arp_suppressed" if m.kind == wneigh.ARP_REQUEST else "nd_suppressed"] += 1
        try:
            fd = self._wfd(n)
            if fd < 0:
                raise OSError(errno.EBADF, "no TAP")
            if n.vnet:
                os.writev(fd, [_NO_VNET, reply])
            else:
                os.write(fd, reply)
        except OSError:
            nc["reply_errors"] += 1
        else:
            nc["replies_sent"] += 1
        return True

    def csum_peer(self, net: int) -> str | None:
        return self._nets[net].csum_peer

    def endpoint_counters(self, ep: int) -> dict[str, int]:
        return dict(self._eps[ep].c)

    # --- per-packet work, no I/O ------------------------------------------------------
    def encap(self, net: int, frames: Sequence[bytes], now: float, *,
              vnet_hdr: bool = False) -> list[tuple[str, bytes]]:
        n = self._nets[net]
        if vnet_hdr:
            frames = [f for item in frames for f in self._expand(n, item, now)[0]]
        return self._encap_frames(n, frames, now)

    def _expand(self, n: _Net, item: bytes, now: float) -> tuple[list[bytes], bool]:
        """One vnet TAP read -> its wire frames (split), and whether it was a GSO super-frame.
        What cannot be split counts as one frame read and dropped malformed, here."""
        st = self._ost
        if len(item) < VNET_HDR_LEN:
            n.c["tap_rx_frames"] += 1
            n.c["drop_malformed"] += 1
            st["vnet_malformed"] += 1
            return [], False
        hdr, frame = decode_vnet_hdr(item), item[VNET_HDR_LEN:]
        try:
            segs = split(hdr, frame)
        except WireError:
            n.c["tap_rx_frames"] += 1
            n.c["tap_rx_bytes"] += len(frame)
            n.c["drop_malformed"] += 1
            st["vnet_malformed"] += 1
            return [], False
        if hdr.gso_type & ~GSO_ECN == GSO_NONE:
            if hdr.flags & F_NEEDS_CSUM:
                st["csum_filled"] += 1
            return segs, False
        st["tso_frames"] += 1
        st["tso_segments"] += len(segs)
        self._gso.reprobe(n.family, now)
        return segs, True

    def _encap_frames(self, n: _Net, frames: Sequence[bytes], now: float) -> list[tuple[str, bytes]]:
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
            if n.neigh is not None and self._neigh_egress(n, frame, now):
                continue    # an ARP / ND request answered on the TAP: not flooded
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
                pkt = encapsulate(p.encap, n.local, n.addr(r), p.vni, frame, dport=p.port,
                                  sport_range=(p.sport_min, p.sport_max), nvgre=p.nvgre, fhash=fh)
                out.append((r, n.esp.seal(pkt) if n.esp else pkt))
        return out

    def decap(self, ep: int, datagrams: Sequence[tuple[str, bytes]], now: float) -> list[tuple[int, bytes]]:
        e = self._eps[ep]
        ec = e.c
        out: list[tuple[int, bytes]] = []
        for sender, datagram in datagrams:
            payload = datagram
            ec["rx_datagrams"] += 1
            ec["rx_bytes"] += len(payload)
            if e.esp_net >= 0:          # encrypted endpoint: api.py, "Encrypted networks"
                en = self._nets[e.esp_net]
                assert en.esp is not None
                why = precheck(payload)
                if why is None and not en.params.allow_unknown_sources and sender not in en.peers:
                    en.c["drop_unknown_source"] += 1
                    continue
                inner = None
                if why is None:
                    why, inner = en.esp.open(en.addr(sender), payload)
                if inner is None:
                    ec["drop_" + (why or "malformed")] += 1
                    continue
                payload = inner
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
            if n.params.strict and e.kind == "vxlan":
                try:
                    decode_vxlan(payload, strict=True)  # RFC 7348 sec. 5 reserved bits, only where asked
                except WireError as err:
                    ec["drop_" + err.reason] += 1
                    continue
            # A raw (GRE) socket's sender is the outer IPv4 header's source address.
            src = socket.inet_ntoa(payload[12:16]) if e.ipv4_header else sender
            c = n.c
            if not n.params.allow_unknown_sources and src not in n.peers:
                c["drop_unknown_source"] += 1
                continue
            frame = payload[d.offset:]
            if len(frame) < 14 or is_multicast(frame[6:12]):
                c["drop_malformed"] += 1
                continue
            sup = len(frame) > max_frame_len(n.params.mtu, frame)
            if sup and super_frame(frame, n.params.mtu) is None:
                c["drop_too_big"] += 1  # a peer's TCP super-frame is split, not dropped
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
            done = None if sup else complete_partial(frame)
            if sup:                     # its checksum is the segments' business (_deliver_super)
                self._ost["rx_super_frames"] += 1
            elif done is not None:      # before coalescing: completed segments coalesce
                frame = done
                c["csum_completed"] += 1
                n.csum_peer = _norm(src)
            out.append((net, frame))
        return out

    # --- one readiness event, with I/O --------------------------------------------------
    def pump_tap(self, net: int, now: float, queue: int = 0) -> int:
        """Read up to `batch` frames from the TAP, send them; returns frames read or -errno."""
        n = self._nets[net]
        check_queue(queue, self._queues)
        self._q = queue
        try:
            return self._pump_tap(n, now, queue)
        finally:
            self._q = 0

    def _pump_tap(self, n: _Net, now: float, queue: int) -> int:
        fd = n.tap_fd if queue == 0 else n.tap_queues.get(queue, -1)
        frames: list[bytes] = []
        err = 0
        size = SUPER_MAX + VNET_HDR_LEN if n.vnet else FRAME_MAX
        for _ in range(self.batch):
            try:
                frames.append(os.read(fd, size))
            except BlockingIOError:
                break
            except OSError as e:
                err = -(e.errno or errno.EIO)
                break
        if frames:
            n.c["tap_rx_batches"] += 1
            self._moved[queue] += sum(len(f) for f in frames)
            if not n.vnet:
                self._send(n, self._encap_frames(n, frames, now))
            for item in frames if n.vnet else ():
                segs, superframe = self._expand(n, item, now)
                packets = self._encap_frames(n, segs, now)
                if superframe and len(segs) > 1 and n.params.encap != "gre" and self._gso.on[n.family]:
                    self._gso.send(n, packets, len(segs[0]), now, self._send)
                else:
                    self._send(n, packets)
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

    def pump_endpoint(self, ep: int, now: float, queue: int = 0) -> int:
        """Receive up to `batch` datagrams, deliver them; returns datagrams read or -errno."""
        e = self._eps[ep]
        check_queue(queue, self._queues)
        self._q = queue
        try:
            return self._pump_endpoint(ep, e, now, queue)
        finally:
            self._q = 0

    def _pump_endpoint(self, ep: int, e: _Endpoint, now: float, queue: int) -> int:
        sock = e.sock if queue == 0 else e.queue_socks.get(queue)
        if sock is None:
            return -errno.ENOTCONN
        got: list[tuple[str, bytes]] = []
        err = 0
        msgs = 0
        for _ in range(self.batch):
            try:
                if e.gro:
                    data, anc, _flags, addr = sock.recvmsg(FRAME_MAX, socket.CMSG_SPACE(4))
                else:
                    data, addr = sock.recvfrom(FRAME_MAX)
                    anc = []
            except BlockingIOError:
                break
            except OSError as ex:
                e.c["drop_socket_error"] += 1
                err = -(ex.errno or errno.EIO)
                break
            msgs += 1
            self._moved[queue] += len(data)
            size = _gro_size(anc)
            if 0 < size < len(data):    # UDP_GRO: each datagram as if it had come alone
                self._ost["gro_messages"] += 1
                self._ost["gro_datagrams"] += -(-len(data) // size)
                got.extend((addr[0], data[i:i + size]) for i in range(0, len(data), size))
            else:
                got.append((addr[0], data))
        if got:
            e.c["rx_batches"] += 1
            by_net: dict[int, list[bytes]] = {}
            for net, frame in self.decap(ep, got, now):
                by_net.setdefault(net, []).append(frame)
            for net, frames in by_net.items():   # in order of first delivery, like the C pump
                self._deliver(self._nets[net], frames)
        return err if err and not msgs else msgs

    def _deliver(self, n: _Net, frames: list[bytes]) -> None:
        """Super-frames on their own (_deliver_super), the runs between them as below."""
        run: list[bytes] = []
        for f in frames:
            if len(f) <= max_frame_len(n.params.mtu, f):
                run.append(f)
                continue
            self._deliver_run(n, run)
            run = []
            self._deliver_super(n, f)
        self._deliver_run(n, run)

    def _deliver_super(self, n: _Net, frame: bytes) -> None:
        """A peer's TCP super-frame in MTU-sized segments: one GSO write where the TAP took
        TSO for its IP version, else split here and written segment by segment."""
        got = super_frame(frame, n.params.mtu)
        if got is None:                 # cannot happen: decap checked the same
            n.c["drop_tap_write_error"] += 1
            return
        hdr, nseg = got
        self._ost["rx_super_segments"] += nseg
        tso = TAP_TSO4 if hdr.gso_type & ~GSO_ECN == GSO_TCPV4 else TAP_TSO6
        if n.vnet and n.gro & tso:
            try:
                os.writev(self._wfd(n), [encode_vnet_hdr(hdr), super_partial(frame, hdr)])
            except OSError as ex:
                if ex.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    n.c["drop_tap_write_error"] += nseg
                    return
                n.gro = 0       # the TAP refuses GSO frames: split them here from now on
                self._ost["tap_gso_fallbacks"] += 1
                self._ost["tap_gso_errno"] = ex.errno
            else:
                n.c["tap_tx_frames"] += nseg
                n.c["tap_tx_bytes"] += (nseg - 1) * hdr.hdr_len + len(frame)
                return
        for seg in split(hdr, frame):
            self._tap_write(n, seg)

    def _deliver_run(self, n: _Net, frames: list[bytes]) -> None:
        if not frames:
            return
        if not n.vnet or not n.gro:
            for f in frames:
                self._tap_write(n, f)
            return
        runs = coalesce_runs(frames, tcp4=bool(n.gro & TAP_TSO4), tcp6=bool(n.gro & TAP_TSO6),
                             udp=bool(n.gro & TAP_USO))
        for hdr, frame, idx in runs:
            if len(idx) == 1:
                self._tap_write(n, frame)
                continue
            if n.gro:
                try:
                    os.writev(self._wfd(n), [encode_vnet_hdr(hdr), frame])
                except OSError as ex:
                    if ex.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                        n.c["drop_tap_write_error"] += len(idx)
                        continue
                    n.gro = 0   # the TAP refuses GSO frames: write them as they came
                    self._ost["tap_gso_fallbacks"] += 1
                    self._ost["tap_gso_errno"] = ex.errno
                else:
                    n.c["tap_tx_frames"] += len(idx)
                    n.c["tap_tx_bytes"] += sum(len(frames[i]) for i in idx)
                    self._ost["coalesced_frames"] += 1
                    self._ost["coalesced_segments"] += len(idx)
                    continue
            for i in idx:
                self._tap_write(n, frames[i])

    def _tap_write(self, n: _Net, frame: bytes) -> None:
        try:
            if n.vnet:
                os.writev(self._wfd(n), [_NO_VNET, frame])
            else:
                os.write(self._wfd(n), frame)
        except OSError:
            n.c["drop_tap_write_error"] += 1
            return
        n.c["tap_tx_frames"] += 1
        n.c["tap_tx_bytes"] += len(frame)




def _gro_size(anc: list[tuple[int, int, bytes]]) -> int:
    """The UDP_GRO cmsg's segment size (udp(7): an int in host order), or 0."""
    for level, kind, data in anc:
        if level == SOL_UDP and kind == UDP_GRO:
            if len(data) >= 4:
                return int(struct.unpack("=i", data[:4])[0])
            if len(data) >= 2:
                return int(struct.unpack("=H", data[:2])[0])
    return 0
