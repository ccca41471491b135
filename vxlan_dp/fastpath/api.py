"""The fastpath API both backends implement: whole batches in, whole batches out.

A `Dataplane` owns, for one daemon: the networks (VNI, encapsulation, peers, FDB, counters),
the receive endpoints (one underlay socket each, shared by every network with the same
encapsulation, local address and port) and one egress raw socket per address family.
Python hands it file descriptors it opened itself and keeps ownership of them; the Dataplane
never closes an fd.

Two layers:
- `encap` / `decap`: the per-packet work without I/O (list of frames -> list of outer packets,
  list of received payloads -> list of inner frames). The differential tests drive these.
- `pump_tap` / `pump_endpoint`: one readiness event's work with I/O: read up to `batch`
  items from the fd without blocking, transform them, write them out, count. The C backend
  does the whole pump in one call with the GIL released (readv/recvmmsg/sendmmsg/write).

Egress order (must match between backends): tap_rx_frames/bytes; frame < 14 bytes ->
drop_malformed; a unicast source MAC -> the local-MAC table (below); frame > max_frame_len(mtu)
-> drop_too_big; unicast destination in the FDB ->
that remote; otherwise flood to every peer in order (flood_frames += 1, flood_copies += n);
no destination at all -> drop_no_peers. Each outer packet sent -> tx_packets / tx_bytes
(outer IP length); a failed send -> drop_socket_error.

Ingress order: ep rx_datagrams/bytes; decapsulation error -> ep drop_<reason>; key not a
network of the endpoint -> ep drop_unknown_vni (NVGRE networks match key >> 8, plain networks
the whole key, plain first); a `strict` vxlan network with any reserved bit set (flags other
than exactly 0x08, or a non-zero reserved byte) -> ep drop_bad_flags; source not a peer (unless allow_unknown_sources) -> net
drop_unknown_source; inner frame < 14 bytes or group source MAC -> net drop_malformed; inner
frame too big -> net drop_too_big, unless it is a peer's TCP super-frame (wire/csum.py
super_frame: offload stat rx_super_frames, delivered whole); learn (if learning) source MAC ->
outer source; rx_packets, rx_bytes (payload length); an inner TCP/UDP checksum the peer left
partial is completed in the frame (vxlan_dp/wire/csum.py has the rule): csum_completed += 1 and
`csum_peer(net)` says that source; then written to the TAP: tap_tx_frames/bytes or
drop_tap_write_error (a super-frame: one GSO write where the TAP took TSO for its IP version,
else split at the MTU's segment size; counted as its segments, rx_super_segments).

Local-MAC table (per network; what the etcd control plane publishes as "this MAC is here"):
the unicast source MAC of every frame read from the TAP that is at least an Ethernet header
long, with the time it was last seen. At most `max_fdb_entries` MACs: a new MAC beyond that is
not recorded (silently: the table only feeds the control plane, the frame is still sent).
`local_macs(net, now)` lists the MACs seen less than `ageing` seconds ago, sorted by MAC, with
their age; `age(now)` also forgets the older ones. Its return value counts FDB entries only.

Offloads (vxlan_dp/wire/offload.py has the rules, csrc/offload.c the same in C):
- a TAP given with `vnet_hdr=True` reads and writes a virtio-net header before every frame.
  A frame read from it is `split` into wire frames first (TSO/USO super-frames into segments,
  partial checksums filled), and every counter above then counts those wire frames; a frame
  that cannot be split counts as one frame read and drop_malformed. `offload` says which
  TUN_F_* flags the TAP was granted: with TAP_CSUM and TAP_TSO4 / TAP_TSO6 / TAP_USO (both USO
  bits) the frames of one batch bound for the TAP are `coalesce`d before they are written, and
  tap_tx_frames/bytes still count the frames inside. A GSO write the TAP refuses (EINVAL)
  turns coalescing off for that TAP (`tap_offload` then says 0) and writes the frames singly.
- `set_tx_gso(family, True)`: super-frames of vxlan / gre-udp networks leave in UDP_SEGMENT
  sends from a socket bound to (local, the flow's source port), at most VXDP_GSO_SOCKS of them
  open; a refused send goes through the raw socket instead (tx_gso_fallbacks). EINVAL /
  EMSGSIZE refuse that send only; EIO, ENOPROTOOPT, EOPNOTSUPP, EPROTONOSUPPORT (the path
  cannot do UDP_SEGMENT) turn it off for the family (`tx_gso` says False) until the first
  super-frame GSO_REPROBE seconds later, which tries it again.
  `inject_gso_error(err, count)` (tests): the next `count` UDP_SEGMENT sends fail with `err`. The kernel computes
  their outer UDP checksum, over IPv4 too (RFC 7348 sec. 5 allows a correct one).
- `add_endpoint(..., gro=True)`: the socket has UDP_GRO on; a message holding several
  datagrams is handled datagram by datagram (rx_datagrams counts each).
- `encap(..., vnet_hdr=True)`: each item is a virtio-net header and its frame, as a vnet TAP
  read returns them; the I/O-free twin of the vnet pump_tap (raw-socket packets only).
- `offload_stats()`: counters of the whole Dataplane, named by OFFLOAD_STATS.
- `poll_stats(queue)`: POLL_STATS of one queue: the bytes its pumps read (TAP frames as read,
  datagrams as received), and in the C backend its pump thread's sleeps and spins
  (csrc/poll.c); the Python backend's loop counts its own (datapath/poll.py LoopPumps).

Queues (multi-queue TAPs, `[daemon] queues`): `set_queues(n)` (grow only, 1..QUEUES_MAX) gives
the Dataplane n queues; queue q of a network reads and writes the TAP fd `set_tap_queue(net,
q, fd)` gave it (queue 0: the one of add_network / set_tap), queue q of an endpoint receives
on the socket `set_endpoint_queue(ep, q, fd)` gave it (a SO_REUSEPORT sibling of the first).
`pump_tap(net, now, q)` / `pump_endpoint(ep, now, q)` pump one queue; in the C backend the
queues' pumps may run at once in different threads (csrc/internal.h "queues" says how they
share the tables). Whatever the queue, every rule above holds and the counters are the
network's and endpoint's own, summed over queues. `set_tap(net, -1)` (the TAP is gone) drops
every queue's fd.

Neighbour suppression (vxlan_dp/wire/neigh.py has the message rules, core/neigh.py the
table's, csrc/neigh.c the same in C): each network may hold an IP -> MAC table
(`neigh_set` / `neigh_remove`: static entries; snooping adds learned ones).
`neigh_mode(net, suppress=, snoop=, max_learned=)` turns the egress step on. It runs for every
wire frame read from the TAP right after the drop_too_big check: with `snoop`, an announcement
(ARP reply, gratuitous ARP, NA with a target link-layer option) teaches the table; with
`suppress`, a request that may be answered (wire/neigh.py is_request) for a known address
whose MAC is not the requester's own is answered by one frame written to the TAP (after an
all-zero virtio-net header on a vnet TAP) and goes no further: no FDB lookup, no flood, no tx
counter. Everything else continues as without suppression. Counters: NEIGH_COUNTERS, read by
`neigh_counters(net)`; the net counters do not move for answers. Learned entries age with the
network's `ageing` in `age(now)` (counted `aged`, not in age()'s return value).
`neigh_answer(net, frame)` says what would be answered, whatever the mode, counting nothing.

Encrypted networks (`set_esp`; wire format and keys: vxlan_dp/wire/esp.py, core/keys.py):
a vxlan / gre-udp network that is the only one on its endpoint (adding another network to that
endpoint, or encrypting a network that shares one, is EBUSY). Egress: each outer packet is
sealed after it is built (every copy of a flooded frame gets its own sequence number); a
frame whose sealed packet could exceed the 16-bit IP length (worst-case ESP_EXTRA) is
drop_too_big; a super-frame's segments, each sealed with its own sequence number, leave in
UDP_SEGMENT sends of their ESP payloads as plain ones do (equal segments seal to equal
datagrams; the limit per send counts ESP_EXTRA per datagram). Ingress order on such an endpoint,
before everything above: ep rx_datagrams/bytes; shorter than 8 -> ep drop_esp_too_short; key
id (SPI byte 1) 0 -> ep drop_esp_plaintext; shorter than ESP_MIN_LEN -> drop_esp_too_short;
source not a peer (unless allow_unknown_sources) -> net drop_unknown_source; key id not
installed -> ep drop_esp_unknown_key; sequence number invalid, seen, or left of the window ->
ep drop_esp_replay; ICV fails -> ep drop_esp_auth; (the window moves, the SA is created or
refreshed) bad trailer, next header not UDP or inner UDP length wrong -> ep drop_malformed;
then the decrypted payload after the inner UDP header goes through the ingress order above
(net rx_bytes counts that payload). `set_esp` again replaces the key set (reload, rotation);
cipher and boot id are fixed by the first call.

Times are float seconds from any monotonic origin, passed in by the caller.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence

from ..core.fdbtable import FdbTable
from ..linux import (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6, UDP_MAX_SEGMENTS,
                     UIO_MAXIOV)
from ..wire import ENCAPS, encap_overhead, is_multicast, mac_to_bytes
from ..wire import offload as _w

__all__ = ["NetworkParams", "FdbRow", "NeighRow", "Dataplane", "NEIGH_LEARN_MAX", "OFFLOAD_STATS", "TAP_CSUM",
           "TAP_TSO4", "TAP_TSO6", "TAP_USO", "gro_types", "FRAME_MAX", "SUPER_MAX", "BATCH_MAX", "GSO_SEGS",
           "GSO_SOCKS", "GSO_RETRY_S", "GSO_REPROBE", "QUEUES_MAX", "SPIN_HEAVY_BYTES", "SPIN_QUIET_NS",
           "POLL_STATS", "spin_next", "check_batch", "check_queue", "shared_with_c", "check_shared_with_c"]

# TUN_F_* of linux/if_tun.h, as TUNSETOFFLOAD takes them; USO is TUN_F_USO4 | TUN_F_USO6
TAP_CSUM, TAP_TSO4, TAP_TSO6, TAP_USO = TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4 | TUN_F_USO6

# Limits both backends keep. Their home is csrc/fastpath.h (the cdef); these are the Python
# reference's own copies, which it needs where no C is built. `shared_with_c()` pairs each
# with its VXDP_* name, and fastpath/_c.py refuses to import a build where any differs.
FRAME_MAX = 65535           # largest frame or datagram one read returns
SUPER_MAX = 65600           # largest frame a virtio-net-header TAP read returns: 64 KiB of GSO
BATCH_MAX = UIO_MAXIOV      # the most messages one sendmmsg / recvmmsg takes
GSO_SEGS = UDP_MAX_SEGMENTS  # datagrams per UDP_SEGMENT send
GSO_SOCKS = 64              # UDP_SEGMENT send sockets a Dataplane keeps open at most
GSO_RETRY_S = 10            # seconds before a send socket whose bind failed is tried again
GSO_REPROBE = 10            # seconds before UDP_SEGMENT is tried again on a path that refused it
QUEUES_MAX = 16             # queues (TAP queues, pump threads) a Dataplane serves at most
SPIN_HEAVY_BYTES = 16384    # poll = "adaptive": a round that moved this much is bulk (spin_next)
SPIN_QUIET_NS = 1_000_000   # ... and no spin window opens within this long of one

# struct vxdp_poll_stats (csrc/fastpath.h), in order: one queue's pump thread or loop
POLL_STATS = ("moved_bytes", "wakeups", "spin_windows", "spin_polls")


def spin_next(last_heavy_ns: list[int], now_ns: int, moved: int, spin_ns: int) -> int:
    """poll = "adaptive" after a round that moved `moved` bytes at `now_ns`: keep polling
    until the time returned, or block (0). No window after bulk: a round of SPIN_HEAVY_BYTES
    paid for its wake-up many times over, and the CPU a spin burns between such rounds is the
    applications' and the kernel's (csrc/poll.c vxdp_spin_next, the same rule; last_heavy_ns
    is the caller's state, [0] at first)."""
    if moved >= SPIN_HEAVY_BYTES:
        last_heavy_ns[0] = now_ns
    if last_heavy_ns[0] and now_ns - last_heavy_ns[0] < SPIN_QUIET_NS:
        return 0
    return now_ns + spin_ns


# struct vxdp_offload_stats (csrc/fastpath.h), in order
OFFLOAD_STATS = (
    "tso_frames", "tso_segments", "csum_filled", "vnet_malformed",
    "gso_sends", "gso_datagrams", "gro_messages", "gro_datagrams",
    "coalesced_frames", "coalesced_segments",
    "tx_gso_fallbacks", "tap_gso_fallbacks", "rx_super_frames", "rx_super_segments",
    "tx_gso_errno", "tap_gso_errno",
)


def gro_types(offload: int) -> int:
    """The TAP_* kinds writes to a TAP granted `offload` may coalesce into: TCP where it took
    TSO, UDP where it took both USO bits, nothing without TAP_CSUM (GSO frames are partial)."""
    if not offload & TAP_CSUM:
        return 0
    t = offload & (TAP_TSO4 | TAP_TSO6)
    if offload & TAP_USO == TAP_USO:
        t |= TAP_USO
    return t


@dataclass(frozen=True)
class NetworkParams:
    vni: int
    encap: str                      # "vxlan" | "gre" | "gre-udp"
    local: str                      # underlay source address, IPv4 or IPv6 text
    port: int = 4789                # outer UDP destination port (vxlan, gre-udp)
    sport_min: int = 49152
    sport_max: int = 65535
    mtu: int = 1450                 # L3 MTU of the inner network: max frame = mtu + 14 (+4 VLAN)
    learning: bool = True
    allow_unknown_sources: bool = False
    ageing: float = 300.0
    max_fdb_entries: int = 65536
    nvgre: bool = False             # gre/gre-udp: key = VSID << 8 | FlowID (RFC 7637)
    strict: bool = False            # vxlan: drop reserved bits set

    def __post_init__(self) -> None:
        """API misuse fails here, in both backends alike, never per packet on the wire.

        Out-of-range values would otherwise be masked by the encoders (VNI 2**24+42 would go
        out as 42, into another network) or break the per-packet arithmetic.
        """
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"NetworkParams.{what}")
        need(self.encap in ENCAPS, f"encap {self.encap!r} is not one of {ENCAPS}")
        need(0 <= self.vni <= 0xFFFFFF, f"vni {self.vni} is out of range 0..16777215")
        need(self.encap == "gre" or 1 <= self.port <= 65535, f"port {self.port} is out of range 1..65535")
        need(1 <= self.sport_min <= self.sport_max <= 65535,
             f"source ports {self.sport_min}..{self.sport_max} are not a range within 1..65535")
        need(68 <= self.mtu <= 65535, f"mtu {self.mtu} is out of range 68..65535")
        need(self.ageing > 0, f"ageing {self.ageing} must be positive")
        need(1 <= self.max_fdb_entries <= 1 << 24, f"max_fdb_entries {self.max_fdb_entries} is out of range")


class FdbRow(NamedTuple):
    mac: str
    remote: str
    static: bool
    age: float


class NeighRow(NamedTuple):
    ip: str             # compressed text
    mac: str
    static: bool
    age: float


NEIGH_LEARN_MAX = 4096  # default max_learned: snooped entries one network keeps at most


class Dataplane(Protocol):
    backend: str
    batch: int

    def set_tx_socket(self, family: int, fd: int) -> None: ...
    def add_endpoint(self, kind: str, fd: int, *, ipv4_header: bool = False, gro: bool = False) -> int: ...
    def remove_endpoint(self, ep: int) -> None: ...
    def add_network(self, params: NetworkParams, endpoint: int, tap_fd: int = -1, *,
                    vnet_hdr: bool = False, offload: int = 0) -> int: ...
    def remove_network(self, net: int) -> None: ...
    def set_tap(self, net: int, fd: int, *, vnet_hdr: bool = False, offload: int = 0) -> None: ...
    def set_esp(self, net: int, cipher: str, keys: dict[int, bytes], send_id: int,
                boot_id: int) -> None: ...
    def tap_offload(self, net: int) -> int: ...
    def set_tx_gso(self, family: int, on: bool) -> None: ...
    def tx_gso(self, family: int) -> bool: ...
    def inject_gso_error(self, err: int, count: int) -> None: ...
    def offload_stats(self) -> dict[str, int]: ...
    def set_peers(self, net: int, peers: Sequence[str]) -> None: ...
    def peers(self, net: int) -> list[str]: ...
    def fdb_add(self, net: int, mac: str, remote: str) -> None: ...
    def fdb_load(self, net: int, table: FdbTable) -> None: ...
    def fdb_remove(self, net: int, mac: str) -> bool: ...
    def fdb_update(self, net: int, table: FdbTable, remove: bytes = b"", *, replace: bool = False) -> int: ...
    def fdb_statics(self, net: int) -> int: ...
    def fdb_get(self, net: int, mac: str, now: float) -> FdbRow | None: ...
    def fdb_dump(self, net: int, now: float) -> list[FdbRow]: ...
    def fdb_size(self, net: int) -> int: ...
    def age(self, now: float) -> int: ...
    def local_macs(self, net: int, now: float) -> list[tuple[str, float]]: ...
    def neigh_mode(self, net: int, *, suppress: bool, snoop: bool = False,
                   max_learned: int = NEIGH_LEARN_MAX) -> None: ...
    def neigh_set(self, net: int, ip: str, mac: str) -> None: ...
    def neigh_remove(self, net: int, ip: str) -> bool: ...
    def neigh_dump(self, net: int, now: float) -> list[NeighRow]: ...
    def neigh_size(self, net: int) -> int: ...
    def neigh_counters(self, net: int) -> dict[str, int]: ...
    def neigh_answer(self, net: int, frame: bytes) -> bytes | None: ...
    def encap(self, net: int, frames: Sequence[bytes], now: float, *,
              vnet_hdr: bool = False) -> list[tuple[str, bytes]]: ...
    def decap(self, ep: int, datagrams: Sequence[tuple[str, bytes]], now: float) -> list[tuple[int, bytes]]: ...
    def pump_tap(self, net: int, now: float, queue: int = 0) -> int: ...
    def pump_endpoint(self, ep: int, now: float, queue: int = 0) -> int: ...
    @property
    def queues(self) -> int: ...
    def set_queues(self, n: int) -> None: ...
    def set_tap_queue(self, net: int, queue: int, fd: int) -> None: ...
    def set_endpoint_queue(self, ep: int, queue: int, fd: int) -> None: ...
    def poll_stats(self, queue: int = 0) -> dict[str, int]: ...
    def counters(self, net: int) -> dict[str, int]: ...
    def csum_peer(self, net: int) -> str | None: ...
    def endpoint_counters(self, ep: int) -> dict[str, int]: ...


# --- argument checks shared by both backends: API misuse fails the same way in each ---------

def check_batch(batch: int) -> None:
    if not 1 <= batch <= BATCH_MAX:
        raise ValueError(f"batch must be 1..{BATCH_MAX}")


def check_queue(queue: int, queues: int) -> None:
    if not 0 <= queue < queues:
        raise ValueError(f"queue {queue} is not one of this Dataplane's 0..{queues - 1}")


def shared_with_c() -> dict[str, int]:
    """Every number the C fast path and the Python reference must agree on: cdef name ->
    the Python side's value (limits, the virtio-net header of wire/offload.py, TAP_*)."""
    return {
        "VXDP_FRAME_MAX": FRAME_MAX, "VXDP_SUPER_MAX": SUPER_MAX, "VXDP_BATCH_MAX": BATCH_MAX,
        "VXDP_GSO_SEGS": GSO_SEGS, "VXDP_GSO_SOCKS": GSO_SOCKS, "VXDP_GSO_RETRY_S": GSO_RETRY_S, "VXDP_GSO_REPROBE": GSO_REPROBE,
        "VXDP_QUEUES_MAX": QUEUES_MAX,
        "VXDP_SPIN_HEAVY_BYTES": SPIN_HEAVY_BYTES, "VXDP_SPIN_QUIET_NS": SPIN_QUIET_NS,
        "VXDP_HDR_MAX": max(encap_overhead(e, True) for e in ENCAPS),
        "VXDP_VNET_HDR_LEN": _w.VNET_HDR_LEN, "VXDP_VNET_F_NEEDS_CSUM": _w.F_NEEDS_CSUM,
        "VXDP_VNET_F_DATA_VALID": _w.F_DATA_VALID, "VXDP_GSO_NONE": _w.GSO_NONE,
        "VXDP_GSO_TCPV4": _w.GSO_TCPV4, "VXDP_GSO_UDP": _w.GSO_UDP, "VXDP_GSO_TCPV6": _w.GSO_TCPV6,
        "VXDP_GSO_UDP_L4": _w.GSO_UDP_L4, "VXDP_GSO_ECN": _w.GSO_ECN,
        "VXDP_GRO_MAX_SEGS": _w.COALESCE_MAX_SEGS, "VXDP_GRO_MAX_FRAME": _w.COALESCE_MAX_FRAME,
        "VXDP_TAP_CSUM": TAP_CSUM, "VXDP_TAP_TSO4": TAP_TSO4, "VXDP_TAP_TSO6": TAP_TSO6,
        "VXDP_TAP_USO": TAP_USO,
    }


def check_shared_with_c(lib: object) -> None:
    """ImportError naming every shared number on which `lib` (the compiled module's) and the
    Python reference differ, or that `lib` lacks: a build that would not behave like _pure."""
    bad = [f"{name} is {getattr(lib, name, 'missing')} in C, {want} in Python"
           for name, want in shared_with_c().items() if getattr(lib, name, None) != want]
    if bad:
        raise ImportError("C fast path and the Python reference disagree: " + "; ".join(bad)
                          + " (csrc/fastpath.h is the home of these numbers; fix the other side and rebuild)")


def check_family(family: int) -> None:
    if family not in (4, 6):
        raise ValueError("family must be 4 or 6")


def check_endpoint_args(kind: str, ipv4_header: bool, gro: bool) -> None:
    if kind not in ENCAPS:
        raise ValueError(f"unknown endpoint kind {kind!r}")
    if ipv4_header and kind != "gre":
        raise ValueError("ipv4_header is for raw IPv4 GRE sockets only")
    if gro and kind == "gre":
        raise ValueError("gro is for UDP endpoints (vxlan, gre-udp) only")


def check_tap_args(vnet_hdr: bool, offload: int) -> None:
    if offload and not vnet_hdr:
        raise ValueError("TAP offloads need vnet_hdr: GSO frames come with a virtio-net header")
    if not 0 <= offload <= 0xFF:
        raise ValueError(f"offload {offload:#x} is not a set of TUN_F_* flags")


def check_network_args(params: NetworkParams, endpoint_kind: str, vnet_hdr: bool, offload: int) -> None:
    """add_network's own checks, before either backend touches its tables."""
    check_tap_args(vnet_hdr, offload)
    if params.encap != endpoint_kind:
        raise ValueError(f"network encap {params.encap} on a {endpoint_kind} endpoint")


def check_fdb_table(table: FdbTable, family: int) -> None:
    """A packed table for a network of `family`: unicast MACs, remotes of that family."""
    for r in table.remotes:
        if ipaddress.ip_address(r).version != family:
            raise ValueError(f"remote {r} is not of the network's address family")
    first = table.macs[::6]
    if any(b & 1 for b in first):
        i = 6 * next(k for k, b in enumerate(first) if b & 1)
        raise ValueError(f"{table.macs[i:i + 6].hex(':')} is a group address, not a station")


def check_mac_list(macs: bytes) -> None:
    """MACs packed 6 bytes each (fdb_update's removals)."""
    if len(macs) % 6:
        raise ValueError(f"a packed MAC list is 6 bytes per MAC, not {len(macs)} bytes")


def check_neigh_entry(ip: str, mac: str) -> tuple[int, bytes, bytes]:
    """(family, packed ip, mac bytes) of a neighbour entry; ValueError naming what is wrong."""
    a = check_neigh_ip(ip)
    m = mac_to_bytes(mac)
    if is_multicast(m):
        raise ValueError(f"neighbour MAC {mac} is a group address, not a station")
    return a.version, a.packed, m


def check_neigh_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    a = ipaddress.ip_address(ip)
    if a.is_multicast or a.is_unspecified:
        raise ValueError(f"neighbour address {ip} is not a unicast address")
    return a


def check_neigh_mode(max_learned: int) -> None:
    if not 0 <= max_learned <= 1 << 24:
        raise ValueError(f"max_learned {max_learned} is out of range 0..16777216")


def check_esp_args(cipher: str, keys: dict[int, bytes], send_id: int, boot_id: int) -> None:
    from ..wire.esp import CIPHERS
    if cipher not in CIPHERS:
        raise ValueError(f"cipher {cipher!r} is not one of {sorted(CIPHERS)}")
    if not keys or any(not 1 <= k <= 255 or len(v) != 32 for k, v in keys.items()):
        raise ValueError("keys: ids 1..255, 32 bytes each, at least one")
    if send_id not in keys:
        raise ValueError("send_id must be one of the keys")
    if not 0 <= boot_id <= 0xFFFFFF:
        raise ValueError("boot_id is 24 bits")
