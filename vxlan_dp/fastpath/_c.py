"""The C backend: `Dataplane` over the compiled `vxlan_dp._fastpath` (csrc/), same API as _pure.

Python validates arguments (NetworkParams checks its own ranges) and converts text to bytes
here, once per management call; the per-packet work, whole pump batches included, runs in C
with the GIL released (cffi's API mode releases it around every call). Semantics, drop
decisions and counters are those of _pure.Dataplane; tests/unit/test_differential.py checks
that with hypothesis.

Invariants: network and endpoint ids are the C library's own (never reused); the Python-side
tables mirror them only to raise the same KeyError / ValueError as _pure before calling C;
addresses cross into C as `struct vxdp_addr` and come back as `ipaddress` compressed text.

Importing this module raises ImportError, so that `vxlan_dp.fastpath` falls back to the
pure-Python backend with one warning, when the compiled module is missing, was built for
another package version (a stale build), or its counter structs do not list the fields of
`vxlan_dp.core.counters` in order.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import __version__
from ..core.counters import EP_COUNTERS, NET_COUNTERS
from ..wire import ENCAPS, WireError, mac_to_bytes, mac_to_str
from ..wire.offload import VNET_HDR_LEN, VnetHdr, decode_vnet_hdr
from ..core.fdbtable import FdbTable
from ..core.neigh import NEIGH_COUNTERS
from ..wire.esp import CIPHERS, REPLAY_WINDOW
from .api import (NEIGH_LEARN_MAX, OFFLOAD_STATS, POLL_STATS, QUEUES_MAX, SUPER_MAX, FdbRow, NeighRow, NetworkParams, check_batch,
                  check_endpoint_args, check_esp_args, check_family, check_fdb_table, check_mac_list, check_neigh_entry,
                  check_neigh_mode, check_network_args, check_queue, check_shared_with_c,
                  check_tap_args)

try:
    from .._fastpath import ffi, lib
except ImportError as e:
    raise ImportError(f"vxlan_dp._fastpath is not built ({e})") from e

__all__ = ["Dataplane", "split", "coalesce", "aead_seal", "aead_open", "complete_partial", "super_frame"]

_BUILT_VERSION = ffi.string(lib.vxdp_version()).decode()
if _BUILT_VERSION != __version__:
    raise ImportError(f"stale C fast path: built for vxlan-dp {_BUILT_VERSION}, this is "
                      f"{__version__}; rebuild it with `pip install .`")


def _fields(struct: str) -> tuple[str, ...]:
    return tuple(name for name, _ in ffi.typeof(struct).fields)


if _fields("struct vxdp_net_counters") != NET_COUNTERS or \
        _fields("struct vxdp_ep_counters") != EP_COUNTERS:
    raise ImportError("C fast path counters do not match vxlan_dp.core.counters; rebuild it")
if not hasattr(lib, "vxdp_offload_stats") or _fields("struct vxdp_offload_stats") != OFFLOAD_STATS:
    raise ImportError("C fast path offload stats do not match vxlan_dp.fastpath.api; rebuild it")
if not hasattr(lib, "vxdp_poll_stats") or _fields("struct vxdp_poll_stats") != POLL_STATS:
    raise ImportError("C fast path poll stats do not match vxlan_dp.fastpath.api; rebuild it")
if not hasattr(lib, "vxdp_neigh_counters") or \
        _fields("struct vxdp_neigh_counters") != NEIGH_COUNTERS:
    raise ImportError("C fast path neighbour counters do not match vxlan_dp.core.neigh; rebuild it")
check_shared_with_c(lib)
if lib.VXDP_ESP_WINDOW != REPLAY_WINDOW or \
        (lib.VXDP_CIPHER_AES256GCM, lib.VXDP_CIPHER_CHACHA20POLY1305) != \
        (CIPHERS["aes-256-gcm"], CIPHERS["chacha20-poly1305"]):
    raise ImportError("C fast path ESP constants do not match vxlan_dp.wire.esp; rebuild it")
try:
    _KIND = {e: getattr(lib, "VXDP_ENCAP_" + e.upper().replace("-", "_")) for e in ENCAPS}
except AttributeError as e:
    raise ImportError(f"C fast path lacks an encapsulation of vxlan_dp.wire.ENCAPS: {e}") from e
_HEADROOM: int = lib.VXDP_HEADROOM
_HDR_MAX: int = lib.VXDP_HDR_MAX
_SEG_HDR_MAX: int = lib.VXDP_SEG_HDR_MAX


def _check(r: int) -> int:
    """C returns a count or -errno; the errno cases here are API misuse or ENOMEM."""
    if r < 0:
        if r == -errno.ENOMEM:
            raise MemoryError("vxlan-dp fast path: out of memory")
        raise OSError(-r, os.strerror(-r))
    return r


@functools.lru_cache(maxsize=4096)
def _parse(addr: str) -> tuple[int, bytes, str]:
    """Text address -> (family, packed, normalised text); ValueError if not an address."""
    a = ipaddress.ip_address(addr)
    return a.version, a.packed, a.compressed


@functools.lru_cache(maxsize=4096)
def _text(packed: bytes) -> str:
    return ipaddress.ip_address(packed).compressed


def _fill_addr(dst: Any, family: int, packed: bytes) -> None:
    dst.family = family
    ffi.memmove(dst.bytes, packed, len(packed))


def _new_addr(addr: str) -> Any:
    family, packed, _ = _parse(addr)
    a = ffi.new("struct vxdp_addr *")
    _fill_addr(a, family, packed)
    return a


def _addr_text(a: Any) -> str:
    return _text(bytes(ffi.buffer(a.bytes, 4 if a.family == 4 else 16)))


@dataclass
class _Net:
    params: NetworkParams
    endpoint: int
    family: int
    peers: list[str] = field(default_factory=list)


@dataclass
class _Endpoint:
    kind: str
    ipv4_header: bool
    nets: int = 0


class Dataplane:
    backend = "c"

    def __init__(self, batch: int = 64) -> None:
        check_batch(batch)
        self.batch = batch
        p = lib.vxdp_new(batch)
        if p == ffi.NULL:
            raise MemoryError("vxlan-dp fast path: cannot allocate the batch buffers")
        self._dp = ffi.gc(p, lib.vxdp_free)
        self._views = [self._dp]    # queue q's view (csrc/internal.h "queues"); view 0 is the dp
        self._nets: dict[int, _Net] = {}
        self._eps: dict[int, _Endpoint] = {}

    # --- management -------------------------------------------------------------------
    @property
    def queues(self) -> int:
        return len(self._views)

    def set_queues(self, n: int) -> None:
        """n queues from now on (grow only): each one's pump has its own buffers and lock."""
        check_queue(n - 1, QUEUES_MAX)
        if n < len(self._views):
            raise ValueError(f"queues only grow: {len(self._views)} already")
        got = _check(lib.vxdp_set_queues(self._dp, n))
        self._views = [lib.vxdp_queue(self._dp, q) for q in range(got)]

    def set_tap_queue(self, net: int, queue: int, fd: int) -> None:
        self._nets[net]
        check_queue(queue, len(self._views))
        _check(lib.vxdp_set_tap_queue(self._dp, net, queue, fd))

    def set_endpoint_queue(self, ep: int, queue: int, fd: int) -> None:
        self._eps[ep]
        check_queue(queue, len(self._views))
        _check(lib.vxdp_set_endpoint_queue(self._dp, ep, queue, fd))

    def set_tx_socket(self, family: int, fd: int) -> None:
        check_family(family)
        _check(lib.vxdp_set_tx_socket(self._dp, family, fd))

    def add_endpoint(self, kind: str, fd: int, *, ipv4_header: bool = False, gro: bool = False) -> int:
        check_endpoint_args(kind, ipv4_header, gro)
        ep = _check(lib.vxdp_add_endpoint(self._dp, _KIND[kind], fd, int(ipv4_header)))
        if gro:
            _check(lib.vxdp_set_endpoint_gro(self._dp, ep, 1))
        self._eps[ep] = _Endpoint(kind, ipv4_header)
        return ep

    def remove_endpoint(self, ep: int) -> None:
        e = self._eps[ep]
        if e.nets:
            raise ValueError("endpoint still has networks")
        _check(lib.vxdp_remove_endpoint(self._dp, ep))
        del self._eps[ep]

    def add_network(self, params: NetworkParams, endpoint: int, tap_fd: int = -1, *,
                    vnet_hdr: bool = False, offload: int = 0) -> int:
        e = self._eps[endpoint]
        check_network_args(params, e.kind, vnet_hdr, offload)
        for n in self._nets.values():
            if n.endpoint == endpoint and n.params.nvgre == params.nvgre \
                    and n.params.vni == params.vni:
                raise ValueError(f"VNI {params.vni} already on this endpoint")
        family, packed, _ = _parse(params.local)
        cp = ffi.new("struct vxdp_net_params *")
        cp.vni = params.vni
        cp.encap = _KIND[params.encap]
        _fill_addr(cp.local, family, packed)
        cp.port = params.port if params.encap != "gre" else 0   # GRE has no port to send
        cp.sport_min = params.sport_min
        cp.sport_max = params.sport_max
        cp.learning = params.learning
        cp.allow_unknown_sources = params.allow_unknown_sources
        cp.nvgre = params.nvgre
        cp.strict = params.strict
        cp.mtu = params.mtu
        cp.ageing = params.ageing
        cp.max_fdb_entries = params.max_fdb_entries
        net = _check(lib.vxdp_add_network(self._dp, cp, endpoint, tap_fd))
        if vnet_hdr:
            _check(lib.vxdp_set_tap_vnet(self._dp, net, tap_fd, 1, offload))
        self._nets[net] = _Net(params, endpoint, family)
        e.nets += 1
        return net

    def remove_network(self, net: int) -> None:
        n = self._nets.pop(net)
        _check(lib.vxdp_remove_network(self._dp, net))
        self._eps[n.endpoint].nets -= 1

    def set_esp(self, net: int, cipher: str, keys: dict[int, bytes], send_id: int,
                boot_id: int) -> None:
        check_esp_args(cipher, keys, send_id, boot_id)
        self._nets[net]     # KeyError for an unknown network, like _pure
        ids = ffi.new("uint8_t[]", list(keys))
        material = ffi.new("uint8_t[]", 32 * len(keys))
        for i, k in enumerate(keys.values()):
            ffi.memmove(material + 32 * i, bytes(k), 32)
        try:
            _check(lib.vxdp_set_esp(self._dp, net, CIPHERS[cipher], ids, material, len(keys),
                                    send_id, boot_id))
        finally:        # the C side keeps its own copy (DONTDUMP pages): zero this one
            ffi.memmove(material, bytes(32 * len(keys)), 32 * len(keys))

    def set_tap(self, net: int, fd: int, *, vnet_hdr: bool = False, offload: int = 0) -> None:
        self._nets[net]  # KeyError for an unknown network, like _pure
        check_tap_args(vnet_hdr, offload)
        _check(lib.vxdp_set_tap_vnet(self._dp, net, fd, int(vnet_hdr), offload))

    def tap_offload(self, net: int) -> int:
        self._nets[net]
        return _check(lib.vxdp_tap_offload(self._dp, net))

    def inject_gso_error(self, err: int, count: int) -> None:
        _check(lib.vxdp_inject_gso_error(self._dp, err, count))

    def set_tx_gso(self, family: int, on: bool) -> None:
        check_family(family)
        _check(lib.vxdp_set_tx_gso(self._dp, family, int(on)))

    def tx_gso(self, family: int) -> bool:
        check_family(family)
        return bool(_check(lib.vxdp_tx_gso(self._dp, family)))

    def offload_stats(self) -> dict[str, int]:
        st = ffi.new("struct vxdp_offload_stats *")
        _check(lib.vxdp_offload_stats(self._dp, st))
        return {name: int(getattr(st, name)) for name in OFFLOAD_STATS}

    def set_peers(self, net: int, peers: Sequence[str]) -> None:
        n = self._nets[net]
        norm = list(dict.fromkeys(_parse(p)[2] for p in peers))
        for p in norm:
            if _parse(p)[0] != n.family:
                raise ValueError(f"peer {p} is not of the network's address family")
        arr = ffi.new("struct vxdp_addr[]", max(1, len(norm)))
        for i, p in enumerate(norm):
            family, packed, _ = _parse(p)
            _fill_addr(arr[i], family, packed)
        _check(lib.vxdp_set_peers(self._dp, net, arr, len(norm)))
        n.peers = norm

    def peers(self, net: int) -> list[str]:
        return list(self._nets[net].peers)

    def fdb_add(self, net: int, mac: str, remote: str) -> None:
        n = self._nets[net]
        family, _, r = _parse(remote)
        if family != n.family:
            raise ValueError(f"remote {r} is not of the network's address family")
        _check(lib.vxdp_fdb_add(self._dp, net, mac_to_bytes(mac), _new_addr(r)))

    def fdb_load(self, net: int, table: FdbTable) -> None:
        """One C call for the whole table (csrc/manage.c vxdp_fdb_load)."""
        n = self._nets[net]
        check_fdb_table(table, n.family)
        remotes = ffi.new("struct vxdp_addr[]", max(1, len(table.remotes)))
        for i, r in enumerate(table.remotes):
            family, packed, _ = _parse(r)
            _fill_addr(remotes[i], family, packed)
        idx = ffi.from_buffer("uint32_t[]", table.index) if len(table) else ffi.NULL
        _check(lib.vxdp_fdb_load(self._dp, net, table.macs, idx, len(table), remotes, len(table.remotes)))

    def fdb_update(self, net: int, table: FdbTable, remove: bytes = b"", *, replace: bool = False) -> int:
        """One C call for a control plane's batch (csrc/manage.c vxdp_fdb_update)."""
        n = self._nets[net]
        check_fdb_table(table, n.family)
        check_mac_list(remove)
        remotes = ffi.new("struct vxdp_addr[]", max(1, len(table.remotes)))
        for i, r in enumerate(table.remotes):
            family, packed, _ = _parse(r)
            _fill_addr(remotes[i], family, packed)
        idx = ffi.from_buffer("uint32_t[]", table.index) if len(table) else ffi.NULL
        return _check(lib.vxdp_fdb_update(self._dp, net, remove, len(remove) // 6, table.macs, idx, len(table),
                                          remotes, len(table.remotes), int(replace)))

    def fdb_get(self, net: int, mac: str, now: float) -> FdbRow | None:
        self._nets[net]
        row = ffi.new("struct vxdp_fdb_row *")
        if not _check(lib.vxdp_fdb_get(self._dp, net, mac_to_bytes(mac), now, row)):
            return None
        return FdbRow(mac_to_str(bytes(ffi.buffer(row.mac))), _addr_text(row.remote), bool(row.is_static), row.age)

    def fdb_statics(self, net: int) -> int:
        self._nets[net]
        return _check(lib.vxdp_fdb_statics(self._dp, net))

    def fdb_remove(self, net: int, mac: str) -> bool:
        self._nets[net]
        return bool(_check(lib.vxdp_fdb_remove(self._dp, net, mac_to_bytes(mac))))

    def fdb_size(self, net: int) -> int:
        self._nets[net]  # KeyError for an unknown network, as in _pure
        return _check(lib.vxdp_fdb_count(self._dp, net))

    def fdb_dump(self, net: int, now: float) -> list[FdbRow]:
        self._nets[net]
        count = _check(lib.vxdp_fdb_count(self._dp, net))
        rows = ffi.new("struct vxdp_fdb_row[]", max(1, count))
        got = _check(lib.vxdp_fdb_dump(self._dp, net, now, rows, count))
        return [FdbRow(mac_to_str(bytes(ffi.buffer(rows[i].mac))), _addr_text(rows[i].remote),
                       bool(rows[i].is_static), rows[i].age) for i in range(got)]

    def age(self, now: float) -> int:
        return int(lib.vxdp_age(self._dp, now))

    def local_macs(self, net: int, now: float) -> list[tuple[str, float]]:
        self._nets[net]
        count = _check(lib.vxdp_local_count(self._dp, net))
        rows = ffi.new("struct vxdp_fdb_row[]", max(1, count))
        got = _check(lib.vxdp_local_macs(self._dp, net, now, rows, count))
        return [(mac_to_str(bytes(ffi.buffer(rows[i].mac))), rows[i].age) for i in range(got)]

    # --- neighbour suppression ------------------------------------------------------------
    def neigh_mode(self, net: int, *, suppress: bool, snoop: bool = False,
                   max_learned: int = NEIGH_LEARN_MAX) -> None:
        self._nets[net]
        check_neigh_mode(max_learned)
        _check(lib.vxdp_neigh_mode(self._dp, net, int(suppress), int(snoop), max_learned))

    def neigh_set(self, net: int, ip: str, mac: str) -> None:
        self._nets[net]
        family, packed, m = check_neigh_entry(ip, mac)
        a = ffi.new("struct vxdp_addr *")
        _fill_addr(a, family, packed)
        _check(lib.vxdp_neigh_set(self._dp, net, a, m))

    def neigh_remove(self, net: int, ip: str) -> bool:
        self._nets[net]
        a = ipaddress.ip_address(ip)
        ca = ffi.new("struct vxdp_addr *")
        _fill_addr(ca, a.version, a.packed)
        return bool(_check(lib.vxdp_neigh_remove(self._dp, net, ca)))

    def neigh_size(self, net: int) -> int:
        self._nets[net]
        return _check(lib.vxdp_neigh_count(self._dp, net))

    def neigh_dump(self, net: int, now: float) -> list[NeighRow]:
        self._nets[net]
        count = _check(lib.vxdp_neigh_count(self._dp, net))
        rows = ffi.new("struct vxdp_neigh_row[]", max(1, count))
        got = _check(lib.vxdp_neigh_dump(self._dp, net, now, rows, count))
        return [NeighRow(_addr_text(rows[i].ip), mac_to_str(bytes(ffi.buffer(rows[i].mac))),
                         bool(rows[i].is_static), rows[i].age) for i in range(got)]

    def neigh_counters(self, net: int) -> dict[str, int]:
        self._nets[net]
        c = ffi.new("struct vxdp_neigh_counters *")
        _check(lib.vxdp_neigh_counters(self._dp, net, c))
        return {name: getattr(c, name) for name in NEIGH_COUNTERS}

    def neigh_answer(self, net: int, frame: bytes) -> bytes | None:
        self._nets[net]
        out = ffi.new("uint8_t[]", lib.VXDP_NEIGH_REPLY_MAX)
        got = _check(lib.vxdp_neigh_answer(self._dp, net, frame, len(frame), out,
                                           lib.VXDP_NEIGH_REPLY_MAX))
        return bytes(ffi.buffer(out, got)) if got else None

    def counters(self, net: int) -> dict[str, int]:
        self._nets[net]
        c = ffi.new("struct vxdp_net_counters *")
        _check(lib.vxdp_net_counters(self._dp, net, c))
        return {name: getattr(c, name) for name in NET_COUNTERS}

    def csum_peer(self, net: int) -> str | None:
        self._nets[net]
        a = ffi.new("struct vxdp_addr *")
        return _addr_text(a) if _check(lib.vxdp_csum_peer(self._dp, net, a)) else None

    def endpoint_counters(self, ep: int) -> dict[str, int]:
        self._eps[ep]
        c = ffi.new("struct vxdp_ep_counters *")
        _check(lib.vxdp_ep_counters(self._dp, ep, c))
        return {name: getattr(c, name) for name in EP_COUNTERS}

    # --- per-packet work, no I/O ------------------------------------------------------
    def encap(self, net: int, frames: Sequence[bytes], now: float, *,
              vnet_hdr: bool = False) -> list[tuple[str, bytes]]:
        n = self._nets[net]
        if not frames:
            return []
        if vnet_hdr and any(len(f) > SUPER_MAX + VNET_HDR_LEN for f in frames):
            raise ValueError(f"a vnet frame is longer than a TAP read ({SUPER_MAX} bytes)")
        # one buffer, each frame with VXDP_HEADROOM free bytes in front (C writes there)
        count = len(frames)
        offs = ffi.new("size_t[]", count)
        lens = ffi.new("uint32_t[]", count)
        buf = bytearray(sum(_HEADROOM + len(f) for f in frames))
        pos = 0
        for i, f in enumerate(frames):
            pos += _HEADROOM
            buf[pos:pos + len(f)] = f
            offs[i] = pos
            lens[i] = len(f)
            pos += len(f)
        copies = max(1, len(n.peers))
        segs = [_max_segments(f) if vnet_hdr else 1 for f in frames]
        out_max = sum(segs) * copies
        out = bytearray(sum((_HDR_MAX + _SEG_HDR_MAX) * k + len(f) for k, f in zip(segs, frames))
                        * copies)
        out_lens = ffi.new("uint32_t[]", out_max)
        fn = lib.vxdp_encap_vnet if vnet_hdr else lib.vxdp_encap
        got = _check(fn(self._dp, net, ffi.from_buffer(buf), len(buf), offs, lens, count, now,
                        ffi.from_buffer(out), len(out), out_lens, out_max))
        dst = slice(16, 20) if n.family == 4 else slice(24, 40)
        result: list[tuple[str, bytes]] = []
        pos = 0
        for i in range(got):
            pkt = bytes(out[pos:pos + out_lens[i]])
            pos += out_lens[i]
            result.append((_text(pkt[dst]), pkt))
        return result

    def decap(self, ep: int, datagrams: Sequence[tuple[str, bytes]], now: float) -> list[tuple[int, bytes]]:
        e = self._eps[ep]
        if not datagrams:
            return []
        count = len(datagrams)
        offs = ffi.new("size_t[]", count)
        lens = ffi.new("uint32_t[]", count)
        srcs = ffi.new("struct vxdp_addr[]", count)
        buf = bytearray(sum(len(p) for _, p in datagrams))
        pos = 0
        for i, (src, payload) in enumerate(datagrams):
            if not e.ipv4_header:       # else C reads the source from the IP header
                family, packed, _ = _parse(src)
                _fill_addr(srcs[i], family, packed)
            buf[pos:pos + len(payload)] = payload
            offs[i] = pos
            lens[i] = len(payload)
            pos += len(payload)
        out_idx = ffi.new("int32_t[]", count)
        out_net = ffi.new("int32_t[]", count)
        out_off = ffi.new("uint32_t[]", count)
        out_len = ffi.new("uint32_t[]", count)
        got = _check(lib.vxdp_decap(self._dp, ep, ffi.from_buffer(buf), len(buf), offs, lens,
                                    srcs, count, now, out_idx, out_net, out_off, out_len))
        # frames are read back from buf: an encrypted endpoint decrypts in place, and
        # partial inner checksums are completed there (csum.c)
        return [(out_net[k], bytes(buf[offs[out_idx[k]] + out_off[k]:
                                       offs[out_idx[k]] + out_off[k] + out_len[k]]))
                for k in range(got)]

    # --- one readiness event, with I/O --------------------------------------------------
    def pump_tap(self, net: int, now: float, queue: int = 0) -> int:
        """Read up to `batch` frames from the TAP, send them; returns frames read or -errno."""
        self._nets[net]
        check_queue(queue, len(self._views))
        return int(lib.vxdp_pump_tap(self._views[queue], net, now))

    def pump_endpoint(self, ep: int, now: float, queue: int = 0) -> int:
        """Receive up to `batch` datagrams, deliver them; returns datagrams read or -errno."""
        self._eps[ep]
        check_queue(queue, len(self._views))
        return int(lib.vxdp_pump_endpoint(self._views[queue], ep, now))

    # --- a pump thread's loop in C (csrc/poll.c); C backend only, datapath/poll.py uses it ---
    POLL_MODES = {"interrupt": lib.VXDP_POLL_INTERRUPT, "adaptive": lib.VXDP_POLL_ADAPTIVE,
                  "busy": lib.VXDP_POLL_BUSY}
    POLL_TAP, POLL_EP, POLL_WAKE = lib.VXDP_POLL_TAP, lib.VXDP_POLL_EP, lib.VXDP_POLL_WAKE

    @staticmethod
    def poll_ctl(epfd: int, add: bool, fd: int, kind: int, ident: int) -> None:
        """Add `fd` to (or take it out of) the epoll set `epfd` with token (kind, ident)."""
        _check(lib.vxdp_poll_ctl(epfd, int(add), fd, kind, ident))

    def poll_stats(self, queue: int = 0) -> dict[str, int]:
        check_queue(queue, len(self._views))
        st = ffi.new("struct vxdp_poll_stats *")
        _check(lib.vxdp_poll_stats(self._dp, queue, st))
        return {name: int(getattr(st, name)) for name in POLL_STATS}

    def poll_run(self, epfd: int, mode: str, spin_ns: int, queue: int = 0) -> tuple[int, int, int]:
        """Pump `queue` for whatever `epfd` reports until woken (0, ...) or a TAP fails
        (1, net, errno). Blocks the calling thread without the GIL; -errno if epoll failed."""
        check_queue(queue, len(self._views))
        failed = ffi.new("int32_t[2]")
        r = int(lib.vxdp_poll_run(self._views[queue], epfd, self.POLL_MODES[mode], spin_ns, failed))
        return r, int(failed[0]), int(failed[1])



def _max_segments(item: bytes) -> int:
    """Upper bound of the wire frames one vnet read splits into (output sizing only)."""
    if len(item) < VNET_HDR_LEN:
        return 1
    h = decode_vnet_hdr(item)
    return max(1, -(-len(item) // h.gso_size)) if h.gso_type and h.gso_size else 1


# --- the offload functions alone, for the differential tests (vxlan_dp.wire.offload) ---------

def spin_next(last_heavy_ns: list[int], now_ns: int, moved: int, spin_ns: int) -> int:
    """vxlan_dp.fastpath.api.spin_next, computed by csrc/poll.c."""
    state = ffi.new("int64_t *", last_heavy_ns[0])
    r = int(lib.vxdp_spin_next(state, now_ns, moved, spin_ns))
    last_heavy_ns[0] = int(state[0])
    return r


def split(hdr: VnetHdr, frame: bytes) -> list[bytes]:
    """vxlan_dp.wire.offload.split, computed by csrc/offload.c."""
    vh = ffi.new("struct vxdp_vnet_hdr *", dict(hdr._asdict()))
    segs = max(1, -(-len(frame) // hdr.gso_size)) if hdr.gso_type and hdr.gso_size else 1
    cap = segs * _SEG_HDR_MAX + len(frame) + _SEG_HDR_MAX
    out = bytearray(cap)
    lens = ffi.new("uint32_t[]", segs + 1)
    r = lib.vxdp_split(vh, frame, len(frame), ffi.from_buffer(out), cap, lens, segs + 1)
    if r == -errno.EBADMSG:
        raise WireError("malformed", "csrc/offload.c refused to split it")
    got = _check(r)
    res, pos = [], 0
    for i in range(got):
        res.append(bytes(out[pos:pos + lens[i]]))
        pos += lens[i]
    return res


def complete_partial(frame: bytes) -> bytes | None:
    """vxlan_dp.wire.csum.complete_partial, computed by csrc/csum.c."""
    buf = bytearray(frame)
    return bytes(buf) if lib.vxdp_csum_complete(ffi.from_buffer(buf), len(buf)) else None


def super_frame(frame: bytes, mtu: int) -> tuple[VnetHdr, int] | None:
    """vxlan_dp.wire.csum.super_frame, computed by csrc/csum.c."""
    vh = ffi.new("struct vxdp_vnet_hdr *")
    nseg = lib.vxdp_super_frame(frame, len(frame), mtu, vh)
    if not nseg:
        return None
    return VnetHdr(vh.flags, vh.gso_type, vh.hdr_len, vh.gso_size, vh.csum_start, vh.csum_offset), nseg


def coalesce(frames: Sequence[bytes], *, tcp4: bool = True, tcp6: bool = True,
             udp: bool = False) -> list[tuple[VnetHdr, bytes]]:
    """vxlan_dp.wire.offload.coalesce, computed by csrc/offload.c."""
    n = len(frames)
    if not n:
        return []
    types = (lib.VXDP_TAP_TSO4 if tcp4 else 0) | (lib.VXDP_TAP_TSO6 if tcp6 else 0) | \
        (lib.VXDP_TAP_USO if udp else 0)
    buf = b"".join(frames)
    offs = ffi.new("size_t[]", n)
    lens = ffi.new("uint32_t[]", n)
    pos = 0
    for i, f in enumerate(frames):
        offs[i], lens[i] = pos, len(f)
        pos += len(f)
    out = bytearray(len(buf) + n * _SEG_HDR_MAX)
    hdrs = ffi.new("struct vxdp_vnet_hdr[]", n)
    out_lens = ffi.new("uint32_t[]", n)
    got = _check(lib.vxdp_coalesce(buf, len(buf), offs, lens, n, types, ffi.from_buffer(out),
                                   len(out), hdrs, out_lens, n))
    res, pos = [], 0
    for k in range(got):
        h = hdrs[k]
        res.append((VnetHdr(h.flags, h.gso_type, h.hdr_len, h.gso_size, h.csum_start,
                            h.csum_offset), bytes(out[pos:pos + out_lens[k]])))
        pos += out_lens[k]
    return res


def aead_seal(cipher: str, keymat: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """csrc/esp.c's AEAD seal, for the known-answer tests (vxlan_dp.wire.esp.aead_seal's twin)."""
    if len(keymat) != 36 or len(iv) != 8:
        raise ValueError("key material is 36 bytes and the IV 8")
    out = ffi.new("uint8_t[]", len(plaintext) + 16)
    n = _check(lib.vxdp_aead_seal(CIPHERS[cipher], bytes(keymat), iv, aad, len(aad), plaintext,
                                  len(plaintext), out))
    return bytes(ffi.buffer(out, n))


def aead_open(cipher: str, keymat: bytes, iv: bytes, aad: bytes, sealed: bytes) -> bytes | None:
    if len(keymat) != 36 or len(iv) != 8:
        raise ValueError("key material is 36 bytes and the IV 8")
    out = ffi.new("uint8_t[]", max(len(sealed), 1))
    n = lib.vxdp_aead_open(CIPHERS[cipher], bytes(keymat), iv, aad, len(aad), sealed, len(sealed), out)
    if n == -errno.EBADMSG:
        return None
    return bytes(ffi.buffer(out, _check(n)))
