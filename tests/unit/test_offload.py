"""TSO/USO split and GRO coalescing: tables over Scapy-built packets, invariants, C == Python.

`vxlan_dp.wire.offload` is the reference; `vxlan_dp.fastpath._c.split / coalesce` run
csrc/offload.c on the same inputs. Every table runs on both (the `impl` fixture); hypothesis
then checks invariants (every checksum verifies, bytes are neither lost nor reordered within a
flow, re-splitting a coalesced frame gives back the segments) and that the two agree byte for
byte, also on mutated garbage. Finally the egress path that uses split (`encap(vnet_hdr=True)`)
must give the same outer packets and counters on both backends.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from helpers import both_impls, c_backend
from vxlan_dp.fastpath import NetworkParams, PureDataplane, backends
from vxlan_dp.fastpath.api import OFFLOAD_STATS
from vxlan_dp.wire import WireError
from vxlan_dp.wire import offload as W
from vxlan_dp.wire.offload import (F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP,
                                   GSO_UDP_L4, VnetHdr)

_C = None
if c_backend(module=True, elsewhere="run") is not None:     # elsewhere the C cases skip one by one
    from vxlan_dp.fastpath import _c as _C

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


impl = both_impls(W)    # the table tests run on the reference and on the C module


# --- building packets -----------------------------------------------------------------------

def _payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def tcp(payload: bytes, *, v6: bool = False, seq: int = 1000, flags: str = "A", ack: int = 77,
        ident: int = 100, df: bool = True, window: int = 502, sport: int = 40000,
        dport: int = 5201, opts: list[Any] | None = None, src: str = "", dst: str = "",
        ttl: int = 64, ipopts: bool = False, vlan: bool = False, tos: int = 0) -> bytes:
    seq, ident = seq & 0xFFFFFFFF, ident & 0xFFFF
    l4 = TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
             options=opts or [])
    if v6:
        l3 = IPv6(src=src or "fd00::1", dst=dst or "fd00::2", hlim=ttl, tc=tos)
    else:
        l3 = IP(src=src or "192.168.0.11", dst=dst or "192.168.0.21", id=ident,
                flags="DF" if df else 0, ttl=ttl, tos=tos,
                options=[b"\x94\x04\x00\x00"] if ipopts else [])      # router alert
    eth = Ether(src=A, dst=B) / Dot1Q(vlan=7) if vlan else Ether(src=A, dst=B)
    return bytes(eth / l3 / l4 / Raw(payload))


def udp(payload: bytes, *, v6: bool = False, ident: int = 100, sport: int = 40000,
        dport: int = 5201, df: bool = False) -> bytes:
    l3 = IPv6(src="fd00::1", dst="fd00::2") if v6 else \
        IP(src="192.168.0.11", dst="192.168.0.21", id=ident & 0xFFFF, flags="DF" if df else 0)
    return bytes(Ether(src=A, dst=B) / l3 / UDP(sport=sport, dport=dport) / Raw(payload))


def partial(frame: bytes, proto: str) -> tuple[VnetHdr, bytes]:
    """`frame` as the stack hands a CHECKSUM_PARTIAL skb over: L4 checksum = pseudo-header sum."""
    p = Ether(frame)
    ip = p[IP] if IP in p else p[IPv6]
    l4 = p[TCP] if proto == "tcp" else p[UDP]
    start = len(frame) - len(bytes(l4))
    off = 16 if proto == "tcp" else 6
    l4len = len(bytes(l4))
    if IP in p:
        pseudo = W._pseudo(4, bytes(map(int, ip.src.split("."))), bytes(map(int, ip.dst.split("."))),
                           6 if proto == "tcp" else 17, l4len)
    else:
        import ipaddress
        pseudo = W._pseudo(6, ipaddress.ip_address(ip.src).packed, ipaddress.ip_address(ip.dst).packed,
                           6 if proto == "tcp" else 17, l4len)
    b = bytearray(frame)
    b[start + off:start + off + 2] = W._fold(pseudo).to_bytes(2, "big")
    return VnetHdr(F_NEEDS_CSUM, GSO_NONE, 0, 0, start, off), bytes(b)


def gso_hdr(frame: bytes, gso_type: int, gso_size: int) -> VnetHdr:
    """The header the kernel puts on a TSO/USO read (hdr_len is unreliable: any value)."""
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    start = len(frame) - len(bytes(l4))
    return VnetHdr(F_NEEDS_CSUM, gso_type, 12345, gso_size, start, 16 if TCP in p else 6)


def verified(frame: bytes) -> bool:
    """Scapy recomputes every checksum of the frame; True if all equal the ones it carries."""
    p = Ether(frame)
    q = Ether(frame)
    for layer in (IP, TCP, UDP):
        if layer in q:
            del q[layer].chksum
    if IP in q:
        del q[IP].len
    if UDP in q:
        del q[UDP].len
    r = Ether(bytes(q))
    return all(p[lay].chksum == r[lay].chksum for lay in (IP, TCP, UDP) if lay in p)


def payload_of(frame: bytes) -> bytes:
    p = Ether(frame)
    l4 = p[TCP] if TCP in p else p[UDP]
    return bytes(l4.payload)


# --- split: tables -------------------------------------------------------------------------

SPLIT_CASES = [
    # name, frame, gso type, gso size, expected segment payload sizes
    ("tcp4 three segments", tcp(_payload(4000), flags="PA"), GSO_TCPV4, 1448, [1448, 1448, 1104]),
    ("tcp4 exact multiple", tcp(_payload(2896)), GSO_TCPV4, 1448, [1448, 1448]),
    ("tcp4 timestamps", tcp(_payload(3000), opts=[("NOP", None), ("NOP", None), ("Timestamp", (5, 6))]),
     GSO_TCPV4, 1436, [1436, 1436, 128]),
    ("tcp4 ip options", tcp(_payload(3000), ipopts=True), GSO_TCPV4, 1400, [1400, 1400, 200]),
    ("tcp4 fin last", tcp(_payload(3000), flags="FPA"), GSO_TCPV4, 1448, [1448, 1448, 104]),
    ("tcp4 cwr ecn", tcp(_payload(3000), flags="CA"), GSO_TCPV4 | GSO_ECN, 1448, [1448, 1448, 104]),
    ("tcp4 df clear", tcp(_payload(2000), df=False), GSO_TCPV4, 1000, [1000, 1000]),
    ("tcp4 vlan", tcp(_payload(3000), vlan=True), GSO_TCPV4, 1448, [1448, 1448, 104]),
    ("tcp4 odd mss", tcp(_payload(1001)), GSO_TCPV4, 333, [333, 333, 333, 2]),
    ("tcp4 seq wraps", tcp(_payload(3000), seq=0xFFFFFF00), GSO_TCPV4, 1448, [1448, 1448, 104]),
    ("tcp4 one segment", tcp(_payload(500)), GSO_TCPV4, 1448, [500]),
    ("tcp6 sack timestamps", tcp(_payload(5000), v6=True, flags="PA",
                                 opts=[("SAckOK", b""), ("Timestamp", (1, 2))]), GSO_TCPV6, 1420,
     [1420, 1420, 1420, 740]),
    ("udp4 uso", udp(_payload(3000)), GSO_UDP_L4, 1400, [1400, 1400, 200]),
    ("udp6 uso", udp(_payload(4200), v6=True), GSO_UDP_L4, 1400, [1400, 1400, 1400]),
]


@pytest.mark.parametrize("name,frame,gso_type,size,sizes", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_table(impl: Any, name: str, frame: bytes, gso_type: int, size: int, sizes: list[int]) -> None:
    segs = impl.split(gso_hdr(frame, gso_type, size), frame)
    assert [len(payload_of(s)) for s in segs] == sizes
    assert b"".join(payload_of(s) for s in segs) == payload_of(frame)
    orig = Ether(frame)
    for i, s in enumerate(segs):
        assert verified(s), f"segment {i} checksums"
        p = Ether(s)
        last = i == len(segs) - 1
        if IP in orig:
            assert p[IP].id == (orig[IP].id + i) & 0xFFFF
            assert p[IP].len == len(s) - (18 if Dot1Q in orig else 14)
            assert p[IP].flags == orig[IP].flags and p[IP].options == orig[IP].options
        else:
            assert p[IPv6].plen == len(s) - 54
        if TCP in orig:
            assert p[TCP].seq == (orig[TCP].seq + i * size) & 0xFFFFFFFF
            assert p[TCP].options == orig[TCP].options
            want = int(orig[TCP].flags)
            if not last:
                want &= ~0x09               # FIN, PSH only on the last
            if i:
                want &= ~0x80               # CWR only on the first
            assert int(p[TCP].flags) == want
        else:
            assert p[UDP].len == len(payload_of(s)) + 8
        assert s[:12] == frame[:12]


@pytest.mark.parametrize("proto,v6", [("tcp", False), ("tcp", True), ("udp", False), ("udp", True)])
def test_split_fills_partial_checksum(impl: Any, proto: str, v6: bool) -> None:
    good = tcp(_payload(300), v6=v6, flags="PA") if proto == "tcp" else udp(_payload(300), v6=v6)
    hdr, frame = partial(good, proto)
    assert frame != good
    assert impl.split(hdr, frame) == [good]


def test_split_leaves_complete_frames_alone(impl: Any) -> None:
    f = tcp(_payload(100))
    assert impl.split(VnetHdr(), f) == [f]
    assert impl.split(VnetHdr(), b"\x01\x02") == [b"\x01\x02"]


def test_udp_checksum_zero_goes_out_as_ffff(impl: Any) -> None:
    # a payload word equal to the checksum of the zero payload makes the sum 0xffff: the
    # checksum computes to 0, which RFC 768 sends as 0xffff
    k = Ether(udp(b"\x00\x00"))[UDP].chksum
    f = udp(k.to_bytes(2, "big"))
    assert Ether(f)[UDP].chksum == 0xFFFF
    hdr, frame = partial(f, "udp")
    out = impl.split(hdr, frame)[0]
    assert out[40:42] == b"\xff\xff" and verified(out)


def test_tcp_checksum_zero_stays_zero(impl: Any) -> None:
    # found live: a pure ACK whose checksum computes to 0 left as 0xffff, which tshark calls
    # bad (RFC 1624 sec. 3: 0xffff is UDP's spelling of zero, never TCP's)
    k = Ether(tcp(b"\x00\x00", flags="A"))[TCP].chksum
    f = tcp(k.to_bytes(2, "big"), flags="A")
    assert Ether(f)[TCP].chksum == 0
    hdr, frame = partial(f, "tcp")
    out = impl.split(hdr, frame)[0]
    assert out == f and out[50:52] == b"\x00\x00"


MALFORMED = [
    ("ufo", VnetHdr(F_NEEDS_CSUM, GSO_UDP, 0, 1400, 34, 6), udp(_payload(3000))),
    ("unknown gso", VnetHdr(0, 9, 0, 1400, 0, 0), tcp(_payload(3000))),
    ("gso size 0", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 0, 34, 16), tcp(_payload(3000))),
    ("tcpv4 on ipv6", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 1400, 54, 16), tcp(_payload(3000), v6=True)),
    ("tcpv6 on ipv4", VnetHdr(F_NEEDS_CSUM, GSO_TCPV6, 0, 1400, 34, 16), tcp(_payload(3000))),
    ("tso on udp", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 1400, 34, 16), udp(_payload(3000))),
    ("uso on tcp", VnetHdr(F_NEEDS_CSUM, GSO_UDP_L4, 0, 1400, 34, 6), tcp(_payload(3000))),
    ("not ip", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 1400, 34, 16), bytes(14) + _payload(3000)),
    ("truncated tcp", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 1400, 34, 16), tcp(b"")[:50]),
    ("bad data offset", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 1400, 34, 16),
     tcp(b"")[:46] + bytes([0x10]) + tcp(b"")[47:] + _payload(2000)),
    ("fragment", VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 0, 1400, 34, 16),
     tcp(_payload(3000))[:20] + b"\x20\x00" + tcp(_payload(3000))[22:]),
    ("csum beyond the frame", VnetHdr(F_NEEDS_CSUM, GSO_NONE, 0, 0, 60, 16), tcp(b"x")),
    ("csum start at the end", VnetHdr(F_NEEDS_CSUM, GSO_NONE, 0, 0, 55, 0), tcp(b"x")),
]


@pytest.mark.parametrize("name,hdr,frame", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_split_refuses_malformed(impl: Any, name: str, hdr: VnetHdr, frame: bytes) -> None:
    with pytest.raises(WireError) as e:
        impl.split(hdr, frame)
    assert e.value.reason == "malformed"


# --- coalesce: tables ----------------------------------------------------------------------

def segs4(n: int, size: int = 1448, *, seq: int = 1000, ident: int = 100, **kw: Any) -> list[bytes]:
    return [tcp(_payload(size, i), seq=seq + i * size, ident=ident + i, **kw) for i in range(n)]


def shape(items: list[tuple[VnetHdr, bytes]]) -> list[int]:
    """Segments per output item (1: passed through)."""
    return [-(-(len(f) - h.hdr_len) // h.gso_size) if h.gso_type else 1 for h, f in items]


def check_items(impl: Any, frames: list[bytes], items: list[tuple[VnetHdr, bytes]]) -> None:
    """Every item is a frame passed through unchanged or a GSO frame that splits back into a
    run of the inputs; together they hold every input exactly once."""
    expanded = []
    for h, f in items:
        if h.gso_type == GSO_NONE:
            assert h == VnetHdr()
            expanded.append(f)
            continue
        assert h.flags == F_NEEDS_CSUM and h.hdr_len > h.csum_start
        assert len(f) <= W.COALESCE_MAX_FRAME
        expanded.extend(W.split(h, f))
    assert sorted(expanded) == sorted(frames)


def test_in_order_run_becomes_one_frame(impl: Any) -> None:
    frames = segs4(5)
    frames[-1] = tcp(_payload(1448, 4), seq=1000 + 4 * 1448, ident=104, flags="PA")
    items = impl.coalesce(frames)
    assert shape(items) == [5]
    h, f = items[0]
    assert h == VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16)
    p = Ether(f)
    assert p[IP].len == len(f) - 14 and p[IP].id == 100 and str(p[TCP].flags) == "PA"
    assert payload_of(f) == b"".join(payload_of(x) for x in frames)
    assert W.split(h, f) == frames
    check_items(impl, frames, items)


@pytest.mark.parametrize("v6", [False, True])
def test_coalesced_frame_checksum_is_partial_and_completes(impl: Any, v6: bool) -> None:
    frames = [tcp(_payload(1000, i), v6=v6, seq=1 + 1000 * i, ident=i) for i in range(3)]
    (h, f), = impl.coalesce(frames)
    assert h.gso_type == (GSO_TCPV6 if v6 else GSO_TCPV4)
    whole = tcp(b"".join(payload_of(x) for x in frames), v6=v6, seq=1, ident=0)
    assert W.fill_partial_checksum(f, h.csum_start, h.csum_offset) == whole


COALESCE_CASES: list[tuple[str, Callable[[], list[bytes]], dict[str, bool], list[int]]] = [
    ("psh ends the run", lambda: segs4(2) + [tcp(_payload(1448, 2), seq=1000 + 2 * 1448, ident=102,
                                                 flags="PA")] + segs4(2, seq=1000 + 3 * 1448, ident=103),
     {}, [3, 2]),
    ("fin passes through and ends the run",
     lambda: segs4(2) + [tcp(_payload(100), seq=1000 + 2 * 1448, ident=102, flags="FA")]
     + segs4(2, seq=1000 + 2 * 1448 + 100, ident=103), {}, [2, 1, 2]),
    ("out of order", lambda: [segs4(3)[i] for i in (0, 2, 1)], {}, [1, 1, 1]),
    ("gap", lambda: segs4(2) + segs4(2, seq=1000 + 5 * 1448, ident=102), {}, [2, 2]),
    ("retransmission", lambda: segs4(2) + segs4(1), {}, [2, 1]),
    ("mixed flows interleave",
     lambda: [x for pair in zip(segs4(3), segs4(3, sport=40001, seq=9)) for x in pair], {}, [3, 3]),
    ("shorter segment ends the run", lambda: segs4(2) + [tcp(_payload(500), seq=1000 + 2 * 1448, ident=102)]
     + segs4(1, seq=1000 + 2 * 1448 + 500, ident=103), {}, [3, 1]),
    ("longer segment starts a new run",
     lambda: segs4(2, 1000) + segs4(2, 1448, seq=3000, ident=102), {}, [2, 2]),
    ("bad checksum passes through",
     lambda: segs4(1) + [segs4(2)[1][:-1] + b"\x00"] + segs4(1, seq=1000 + 2 * 1448, ident=102), {},
     [1, 1, 1]),
    ("ack differs", lambda: segs4(1) + segs4(1, seq=1000 + 1448, ident=101, ack=78), {}, [1, 1]),
    ("window differs", lambda: segs4(1) + segs4(1, seq=1000 + 1448, ident=101, window=9), {}, [1, 1]),
    ("ttl differs", lambda: segs4(1) + segs4(1, seq=1000 + 1448, ident=101, ttl=9), {}, [1, 1]),
    ("tos differs", lambda: segs4(1) + segs4(1, seq=1000 + 1448, ident=101, tos=4), {}, [1, 1]),
    ("timestamps differ",
     lambda: segs4(1, opts=[("Timestamp", (1, 2))]) + segs4(1, seq=1000 + 1448, ident=101,
                                                             opts=[("Timestamp", (2, 2))]), {}, [1, 1]),
    ("same timestamps join",
     lambda: segs4(3, 1436, opts=[("NOP", None), ("NOP", None), ("Timestamp", (7, 8))]), {}, [3]),
    ("ip id jumps", lambda: segs4(1) + segs4(1, seq=1000 + 1448, ident=5000), {}, [1, 1]),
    ("ip id jumps without df", lambda: segs4(1, df=False) + segs4(1, seq=1000 + 1448, ident=5000, df=False),
     {}, [1, 1]),
    ("ip options never join", lambda: segs4(3, ipopts=True), {}, [1, 1, 1]),
    ("vlan never joins", lambda: segs4(3, vlan=True), {}, [1, 1, 1]),
    ("syn never joins", lambda: segs4(1, flags="S") + segs4(1, seq=1000 + 1448, ident=101, flags="S"), {},
     [1, 1]),
    ("cwr never joins", lambda: segs4(1) + segs4(1, seq=1000 + 1448, ident=101, flags="CA"), {}, [1, 1]),
    ("pure acks pass through", lambda: [tcp(b"", ident=i) for i in range(3)], {}, [1, 1, 1]),
    ("ethernet padding passes through", lambda: [f + b"\x00" * 4 for f in segs4(2, 10)], {}, [1, 1]),
    ("64 segments at most", lambda: segs4(70, 100), {}, [64, 6]),
    ("64 KiB at most", lambda: segs4(50), {}, [45, 5]),
    ("tcp4 off", lambda: segs4(3), {"tcp4": False}, [1, 1, 1]),
    ("tcp6 run", lambda: [tcp(_payload(1400, i), v6=True, seq=1 + 1400 * i) for i in range(4)], {}, [4]),
    ("tcp6 off", lambda: [tcp(_payload(1400, i), v6=True, seq=1 + 1400 * i) for i in range(4)],
     {"tcp6": False}, [1, 1, 1, 1]),
    ("udp only when asked", lambda: [udp(_payload(1000, i), ident=i) for i in range(3)], {}, [1, 1, 1]),
    ("udp4 run", lambda: [udp(_payload(1000, i), ident=i) for i in range(3)], {"udp": True}, [3]),
    ("udp6 run", lambda: [udp(_payload(1000, i), v6=True) for i in range(3)], {"udp": True}, [3]),
    ("udp ports differ", lambda: [udp(_payload(1000, i), ident=i, sport=1 + i) for i in range(3)],
     {"udp": True}, [1, 1, 1]),
    ("udp zero checksum never joins",
     lambda: [f[:40] + b"\x00\x00" + f[42:] for f in (udp(_payload(1000, i), ident=i) for i in range(3))],
     {"udp": True}, [1, 1, 1]),
    ("not ip passes through", lambda: [bytes(14) + b"junk", b"\x01"], {}, [1, 1]),
]


@pytest.mark.parametrize("name,build,kw,want", COALESCE_CASES, ids=[c[0] for c in COALESCE_CASES])
def test_coalesce_table(impl: Any, name: str, build: Callable[[], list[bytes]], kw: dict[str, bool],
                        want: list[int]) -> None:
    frames = build()
    items = impl.coalesce(frames, **kw)
    assert shape(items) == want
    check_items(impl, frames, items)


def test_frames_of_one_flow_keep_their_order_around_a_run(impl: Any) -> None:
    a = segs4(4)
    frames = [a[0], a[1], tcp(b"", ident=7), a[2], a[3]]   # a pure ACK of the same flow between
    items = impl.coalesce(frames)
    assert shape(items) == [2, 1, 2]
    assert [W.split(h, f) if h.gso_type else [f] for h, f in items] == [a[:2], [frames[2]], a[2:]]


# --- invariants under hypothesis ----------------------------------------------------------

@st.composite
def super_frames(draw: st.DrawFn) -> tuple[VnetHdr, bytes]:
    kind = draw(st.sampled_from(["tcp4", "tcp6", "udp4", "udp6"]))
    size = draw(st.one_of(st.integers(0, 200), st.integers(1000, 9000)))
    data = _payload(size, draw(st.integers(0, 255)))
    v6 = kind.endswith("6")
    if kind.startswith("tcp"):
        opts = draw(st.sampled_from([[], [("Timestamp", (1, 2))], [("NOP", None), ("MSS", 1400)]]))
        f = tcp(data, v6=v6, seq=draw(st.integers(0, 2**32 - 1)), flags=draw(st.sampled_from(["A", "PA", "FA", "CA"])),
                opts=opts, ident=draw(st.integers(0, 65535)), ipopts=not v6 and draw(st.booleans()),
                vlan=draw(st.booleans()))
        gso_type = GSO_TCPV6 if v6 else GSO_TCPV4
    else:
        f = udp(data, v6=v6, ident=draw(st.integers(0, 65535)))
        gso_type = GSO_UDP_L4
    return gso_hdr(f, gso_type, draw(st.one_of(st.integers(1, 40), st.integers(500, 2000)))), f


@SETTINGS
@given(super_frames())
def test_split_invariants(sf: tuple[VnetHdr, bytes]) -> None:
    hdr, frame = sf
    segs = W.split(hdr, frame)
    assert b"".join(payload_of(s) for s in segs) == payload_of(frame)
    assert len(segs) == max(1, -(-len(payload_of(frame)) // hdr.gso_size))
    for i, s in enumerate(segs):
        assert len(payload_of(s)) <= hdr.gso_size
        assert Dot1Q in Ether(s) or W.l4_checksum_ok(s)
        if i in (0, len(segs) - 1):     # Scapy is slow: it judges the first and the last
            assert verified(s)
    if _C is not None:
        assert _C.split(hdr, frame) == segs


@st.composite
def gro_batches(draw: st.DrawFn) -> list[bytes]:
    """Segments of up to three flows, mostly in order, with the things that break runs."""
    flows = draw(st.integers(1, 3))
    state = [[1000 * (k + 1), 10 * k] for k in range(flows)]     # next seq, next IP ID
    out = []
    for _ in range(draw(st.integers(0, 40))):
        k = draw(st.integers(0, flows - 1))
        v6 = k == 2
        ev = draw(st.sampled_from(["seg"] * 8 + ["short", "psh", "ack", "fin", "gap", "dup", "bad", "udp"]))
        size = {"short": 300, "ack": 0}.get(ev, 1200)
        seq, ident = state[k]
        if ev == "gap":
            seq += 5000
        if ev == "dup":
            seq = (seq - 1200) & 0xFFFFFFFF
        if ev == "udp":
            out.append(udp(_payload(500, len(out)), v6=v6, sport=40000 + k, ident=ident))
            continue
        f = tcp(_payload(size, len(out)), v6=v6, seq=seq, ident=ident, sport=40000 + k,
                flags={"psh": "PA", "fin": "FA"}.get(ev, "A"))
        if ev == "bad":
            f = f[:-1] + bytes([f[-1] ^ 1])
        out.append(f)
        state[k] = [seq + size, ident + 1]
    return out


def _flow(frame: bytes) -> Any:
    p = Ether(frame)
    return (p[TCP].sport if TCP in p else ("udp", p[UDP].sport))


@SETTINGS
@given(gro_batches(), st.booleans())
def test_coalesce_invariants(frames: list[bytes], with_udp: bool) -> None:
    items = W.coalesce(frames, udp=with_udp)
    expanded: list[bytes] = []
    for h, f in items:
        if h.gso_type:
            assert len(f) <= W.COALESCE_MAX_FRAME
            assert W.fill_partial_checksum(f, h.csum_start, h.csum_offset) is not None
            parts = W.split(h, f)
            assert 2 <= len(parts) <= W.COALESCE_MAX_SEGS
            expanded.extend(parts)
        else:
            expanded.append(f)
    # nothing lost, nothing invented, and every flow's frames in their order
    assert sorted(expanded) == sorted(frames)
    for fl in {_flow(f) for f in frames}:
        assert [f for f in expanded if _flow(f) == fl] == [f for f in frames if _flow(f) == fl]
    if _C is not None:
        assert _C.coalesce(frames, udp=with_udp) == items


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    frames = draw(gro_batches())
    out = []
    for f in frames:
        b = bytearray(f)
        for _ in range(draw(st.integers(0, 3))):
            if b:
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        out.append(bytes(b[:draw(st.integers(0, len(b)))]) if draw(st.booleans()) else bytes(b))
    return out


@pytest.mark.skipif(_C is None, reason="C fast path not built")
@SETTINGS
@given(mutated(), st.booleans())
def test_c_coalesce_equals_python_on_garbage(frames: list[bytes], with_udp: bool) -> None:
    assert _C.coalesce(frames, udp=with_udp) == W.coalesce(frames, udp=with_udp)


@pytest.mark.skipif(_C is None, reason="C fast path not built")
@SETTINGS
@given(super_frames(), st.binary(min_size=10, max_size=10), st.integers(0, 8), st.integers(0, 255),
       st.integers(0, 200))
def test_c_split_equals_python_on_garbage(sf: tuple[VnetHdr, bytes], raw_hdr: bytes, flips: int,
                                         value: int, cut: int) -> None:
    hdr, frame = sf
    if flips:       # a random header, and damaged bytes where the parsers look
        hdr = W.decode_vnet_hdr(raw_hdr)._replace(gso_size=hdr.gso_size or 1) if flips > 4 else hdr
        b = bytearray(frame)
        for i in range(flips):
            b[(i * 13 + value) % min(len(b), 80)] = (value * (i + 3)) & 0xFF
        frame = bytes(b[:len(b) - cut])

    def run(fn: Callable[[VnetHdr, bytes], list[bytes]]) -> Any:
        try:
            return fn(hdr, frame)
        except WireError as e:
            return e.reason
    assert run(_C.split) == run(W.split)


# --- the egress path that uses split: both backends, same packets and counters ---------------

PARAMS = [NetworkParams(vni=42, encap="vxlan", local="198.18.0.1", mtu=1450),
          NetworkParams(vni=7, encap="gre-udp", local="2001:2::1", port=4754, mtu=1400),
          NetworkParams(vni=9, encap="gre", local="198.18.0.1", mtu=1450, nvgre=True)]


@st.composite
def vnet_reads(draw: st.DrawFn) -> list[bytes]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        hdr, frame = draw(super_frames())
        pick = draw(st.sampled_from(["gso", "gso", "partial", "plain", "short", "garbage"]))
        if pick == "partial":
            small = tcp(_payload(draw(st.integers(0, 1400))), flags="PA")
            hdr, frame = partial(small, "tcp")
        elif pick == "plain":
            hdr = VnetHdr()
        elif pick == "short":
            out.append(draw(st.binary(max_size=9)))
            continue
        elif pick == "garbage":
            hdr = W.decode_vnet_hdr(draw(st.binary(min_size=10, max_size=10)))
        out.append(W.encode_vnet_hdr(hdr) + frame)
    return out


@pytest.mark.skipif(_C is None, reason="C fast path not built")
@SETTINGS
@given(st.sampled_from(PARAMS), vnet_reads(), st.booleans())
def test_encap_vnet_c_equals_python(params: NetworkParams, reads: list[bytes], flood: bool) -> None:
    peers = ["2001:2::2", "2001:2::3"] if ":" in params.local else ["198.18.0.2", "198.18.0.3"]
    results = []
    for cls in (PureDataplane, backends()["c"]):
        dp = cls(batch=8)
        ep = dp.add_endpoint(params.encap, -1)
        net = dp.add_network(params, ep, -1)
        dp.set_peers(net, peers if flood else peers[:1])
        dp.fdb_add(net, B, peers[0])
        out = dp.encap(net, reads, 1.0, vnet_hdr=True)
        results.append((out, dp.counters(net), dp.offload_stats()))
    assert results[0] == results[1]


def test_encap_vnet_counts_wire_frames(backend_cls: Any) -> None:
    dp = backend_cls(batch=8)
    ep = dp.add_endpoint("vxlan", -1)
    net = dp.add_network(PARAMS[0], ep, -1)
    dp.fdb_add(net, B, "198.18.0.2")
    frame = tcp(_payload(4000), flags="PA")
    out = dp.encap(net, [W.encode_vnet_hdr(gso_hdr(frame, GSO_TCPV4, 1398)) + frame], 1.0, vnet_hdr=True)
    segs = W.split(gso_hdr(frame, GSO_TCPV4, 1398), frame)
    assert [pkt[36:] for _, pkt in out] == segs      # IPv4 20 + UDP 8 + VXLAN 8
    c = dp.counters(net)
    assert c["tap_rx_frames"] == 3 and c["tap_rx_bytes"] == sum(len(s) for s in segs)
    st_ = dp.offload_stats()
    assert st_["tso_frames"] == 1 and st_["tso_segments"] == 3


@pytest.fixture(params=["python", "c"])
def backend_cls(request: pytest.FixtureRequest) -> Any:
    if request.param not in backends():
        pytest.skip("C fast path not built")
    return backends()[request.param]


def test_tap_offload_arguments(backend_cls: Any) -> None:
    dp = backend_cls(batch=8)
    ep = dp.add_endpoint("vxlan", -1)
    net = dp.add_network(PARAMS[0], ep, -1)
    with pytest.raises(ValueError):
        dp.set_tap(net, -1, offload=0x03)            # offloads without the header
    dp.set_tap(net, -1, vnet_hdr=True, offload=0x01 | 0x02 | 0x04 | 0x20)
    assert dp.tap_offload(net) == 0x06               # USO needs both bits
    dp.set_tap(net, -1, vnet_hdr=True, offload=0x02 | 0x04)
    assert dp.tap_offload(net) == 0                  # no TUN_F_CSUM: no GSO frames at all
    dp.set_tap(net, -1, vnet_hdr=True, offload=0x67)
    assert dp.tap_offload(net) == 0x66
    assert not dp.tx_gso(4)
    dp.set_tx_gso(4, True)
    assert dp.tx_gso(4) and not dp.tx_gso(6)
    with pytest.raises(ValueError):
        dp.add_endpoint("gre", -1, gro=True)
    assert tuple(dp.offload_stats()) == OFFLOAD_STATS


def test_struct_sizes_match_the_kernel() -> None:
    if _C is None:
        pytest.skip("C fast path not built")
    assert _C.ffi.sizeof("struct vxdp_vnet_hdr") == W.VNET_HDR_LEN == len(W.encode_vnet_hdr(VnetHdr()))
    h = VnetHdr(1, 4, 0x1234, 1448, 54, 16)
    assert bytes(_C.ffi.buffer(_C.ffi.new("struct vxdp_vnet_hdr *", h._asdict()))) == W.encode_vnet_hdr(h)
    assert struct.calcsize("=BBHHHH") == 10


# --- the pumps with offloads, over loopback sockets and fake TAPs (no root) --------------------
#
# A unix datagram socketpair stands in for the TAP (one frame per read / write, like tun), an
# eventfd for a TAP that refuses every write with EINVAL, and UDP sockets on 127.0.0.1 for the
# underlay: loopback carries a UDP_SEGMENT send to a UDP_GRO socket as ONE message, so both the
# GSO send and the GRO receive run for real.

import errno as _errno
import select
import socket

from vxlan_dp.linux import SOL_UDP, UDP_GRO, UDP_SEGMENT
from vxlan_dp.wire import encode_vxlan

ALL = 0x67                  # TUN_F_CSUM | TSO4 | TSO6 | USO4 | USO6


class Rig:
    """One network on 127.0.0.1 with a fake TAP; `rx` is the endpoint socket."""

    def __init__(self, cls: Any, *, gro: bool = False, tap_fd: int | None = None) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        if gro:
            self.rx.setsockopt(SOL_UDP, UDP_GRO, 1)
        self.rx.setblocking(False)
        self.port = self.rx.getsockname()[1]
        self.tap, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tap.setblocking(False)
        self.peer.settimeout(2)
        self.dp = cls(batch=16)
        self.ep = self.dp.add_endpoint("vxlan", self.rx.fileno(), gro=gro)
        params = NetworkParams(vni=42, encap="vxlan", local="127.0.0.1", port=self.port, mtu=1500,
                               sport_min=51000, sport_max=51999)
        fd = self.tap.fileno() if tap_fd is None else tap_fd
        self.net = self.dp.add_network(params, self.ep, fd, vnet_hdr=True, offload=ALL)
        self.dp.set_peers(self.net, ["127.0.0.1"])

    def close(self) -> None:
        self.dp.set_tx_gso(4, False)
        self.dp.remove_network(self.net)
        self.dp.remove_endpoint(self.ep)
        for s in (self.rx, self.tap, self.peer):
            s.close()

    def pump_in(self) -> int:
        select.select([self.rx], [], [], 2)
        return self.dp.pump_endpoint(self.ep, 1.0)


def test_pump_tap_sends_a_super_frame_in_one_udp_segment_send(backend_cls: Any) -> None:
    r = Rig(backend_cls)
    try:
        r.dp.fdb_add(r.net, B, "127.0.0.1")
        r.dp.set_tx_gso(4, True)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        frame = tcp(_payload(4000), flags="PA")
        hdr = gso_hdr(frame, GSO_TCPV4, 1398)
        r.peer.send(W.encode_vnet_hdr(hdr) + frame)
        assert r.dp.pump_tap(r.net, 1.0) == 1
        segs = W.split(hdr, frame)
        select.select([r.rx], [], [], 2)
        got = [r.rx.recv(65535) for _ in segs]      # the kernel cut the send apart again
        assert got == [encode_vxlan(42) + s for s in segs]
        c, st_ = r.dp.counters(r.net), r.dp.offload_stats()
        assert (c["tap_rx_frames"], c["tx_packets"], c["drop_socket_error"]) == (3, 3, 0)
        assert c["tx_bytes"] == sum(36 + len(s) for s in segs)
        assert (st_["tso_frames"], st_["tso_segments"], st_["gso_sends"], st_["gso_datagrams"]) == (1, 3, 1, 3)
        sink.close()
    finally:
        r.close()


def _send_super(r: Rig, now: float) -> list[bytes]:
    """One 3-segment TSO super-frame through the TAP pump at `now`; its segments."""
    frame = tcp(_payload(4000), flags="PA")
    hdr = gso_hdr(frame, GSO_TCPV4, 1398)
    r.peer.send(W.encode_vnet_hdr(hdr) + frame)
    assert r.dp.pump_tap(r.net, now) == 1
    return W.split(hdr, frame)


def _received(r: Rig, n: int) -> list[bytes]:
    select.select([r.rx], [], [], 2)
    return [r.rx.recv(65535) for _ in range(n)]


def test_a_udp_segment_send_that_does_not_fit_goes_raw_and_gso_stays_on(backend_cls: Any) -> None:
    """EINVAL / EMSGSIZE refuse one send (a segment over the path MTU): that send's datagrams
    take the raw socket (none here: counted as refused), the next super-frame uses UDP_SEGMENT."""
    r = Rig(backend_cls)
    try:
        r.dp.fdb_add(r.net, B, "127.0.0.1")
        r.dp.set_tx_gso(4, True)
        for err in (_errno.EINVAL, _errno.EMSGSIZE):
            r.dp.inject_gso_error(err, 1)
            _send_super(r, 1.0)
            st_ = r.dp.offload_stats()
            assert (st_["tx_gso_errno"], st_["gso_sends"]) == (err, 0)
            assert r.dp.tx_gso(4)
        assert st_["tx_gso_fallbacks"] == 2
        assert r.dp.counters(r.net)["drop_socket_error"] == 6     # 2 x 3 segments, raw, no socket
        segs = _send_super(r, 1.5)
        assert _received(r, len(segs)) == [encode_vxlan(42) + s for s in segs]
        assert r.dp.offload_stats()["gso_sends"] == 1
    finally:
        r.close()


def test_a_path_without_udp_segment_turns_it_off_until_the_reprobe(backend_cls: Any) -> None:
    """EIO (the device cannot checksum): off for the family, raw meanwhile; the first
    super-frame GSO_REPROBE seconds later tries UDP_SEGMENT again, and it works."""
    from vxlan_dp.fastpath.api import GSO_REPROBE
    r = Rig(backend_cls)
    try:
        r.dp.fdb_add(r.net, B, "127.0.0.1")
        r.dp.set_tx_gso(4, True)
        r.dp.inject_gso_error(_errno.EIO, 1)
        _send_super(r, 100.0)
        st_ = r.dp.offload_stats()
        assert (st_["tx_gso_fallbacks"], st_["tx_gso_errno"], st_["gso_sends"]) == (1, _errno.EIO, 0)
        assert not r.dp.tx_gso(4)
        _send_super(r, 100.0 + GSO_REPROBE / 2)                  # still off: raw, refused here
        assert not r.dp.tx_gso(4) and r.dp.offload_stats()["gso_sends"] == 0
        assert r.dp.counters(r.net)["drop_socket_error"] == 6
        segs = _send_super(r, 100.0 + GSO_REPROBE)               # re-probed
        assert r.dp.tx_gso(4) and r.dp.offload_stats()["gso_sends"] == 1
        assert _received(r, len(segs)) == [encode_vxlan(42) + s for s in segs]
        r.dp.set_tx_gso(4, False)                                # the caller's word wins
        r.dp.inject_gso_error(_errno.EIO, 0)
        assert not r.dp.tx_gso(4)
    finally:
        r.close()


def test_inject_gso_error_rejects_nonsense(backend_cls: Any) -> None:
    dp = backend_cls(batch=4)
    for err, count in ((0, 1), (_errno.EIO, -1)):
        with pytest.raises(OSError):
            dp.inject_gso_error(err, count)


def test_pump_endpoint_splits_a_gro_message_and_coalesces_the_run(backend_cls: Any) -> None:
    r = Rig(backend_cls, gro=True)
    try:
        segs = segs4(5, flags="A")
        dgrams = [encode_vxlan(42) + s for s in segs]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendmsg([b"".join(dgrams)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(dgrams[0])))], 0,
                       ("127.0.0.1", r.port))
        assert r.pump_in() == 1                      # one message ...
        ep = r.dp.endpoint_counters(r.ep)
        assert (ep["rx_datagrams"], ep["rx_batches"]) == (5, 1)    # ... of five datagrams
        out = r.peer.recv(70000)
        (want_hdr, want), = W.coalesce(segs)
        assert W.decode_vnet_hdr(out) == want_hdr and out[W.VNET_HDR_LEN:] == want
        c, st_ = r.dp.counters(r.net), r.dp.offload_stats()
        assert (c["rx_packets"], c["tap_tx_frames"], c["tap_tx_bytes"]) == (5, 5, sum(map(len, segs)))
        assert (st_["gro_messages"], st_["gro_datagrams"]) == (1, 5)
        assert (st_["coalesced_frames"], st_["coalesced_segments"]) == (1, 5)
    finally:
        r.close()


def test_frames_that_do_not_coalesce_go_to_the_tap_with_an_empty_header(backend_cls: Any) -> None:
    r = Rig(backend_cls)
    try:
        frames = [tcp(b"", ident=1), tcp(_payload(10), flags="PA", ident=2)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for f in frames:
                tx.sendto(encode_vxlan(42) + f, ("127.0.0.1", r.port))
        while r.dp.counters(r.net)["rx_packets"] < 2:
            r.pump_in()
        assert [r.peer.recv(70000) for _ in frames] == [W.encode_vnet_hdr(VnetHdr()) + f for f in frames]
    finally:
        r.close()


def test_a_tap_refusing_gso_writes_turns_coalescing_off(backend_cls: Any) -> None:
    efd = os.eventfd(0, os.EFD_NONBLOCK)    # any write that is not 8 bytes: EINVAL
    r = Rig(backend_cls, tap_fd=efd)
    try:
        assert r.dp.tap_offload(r.net) == 0x66
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for s in segs4(3):
                tx.sendto(encode_vxlan(42) + s, ("127.0.0.1", r.port))
        while r.dp.endpoint_counters(r.ep)["rx_datagrams"] < 3:
            r.pump_in()
        st_ = r.dp.offload_stats()
        assert (st_["tap_gso_fallbacks"], st_["tap_gso_errno"], st_["coalesced_frames"]) == (1, _errno.EINVAL, 0)
        assert r.dp.tap_offload(r.net) == 0
        assert r.dp.counters(r.net)["drop_tap_write_error"] == 3   # then tried one by one
    finally:
        r.close()
        os.close(efd)


def test_udp_segment_socket_is_send_only() -> None:
    """The pool socket bound to a source port must not queue what is sent to that port (the
    BPF filter); the pure backend builds the same socket as csrc/gsosock.c."""
    from vxlan_dp.fastpath._pure_gso import _open_socket as _open_gso_socket
    s = _open_gso_socket("127.0.0.1", 4, 0)
    assert s is not None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"hello", s.getsockname())
        assert select.select([s], [], [], 0.2)[0] == []
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64
    finally:
        s.close()
