"""Partial inner checksums (vxlan_dp/wire/csum.py, csrc/csum.c): table tests on both
implementations, Scapy as the independent judge, and hypothesis for C == Python byte for byte,
alone and through both backends' decap (counters and the sending peer included).

A "partial" frame here is what a Linux sender's vxlan device puts on a virtual link with TX
checksum offload: the L4 checksum field holds the folded pseudo-header sum, computed in this
file from the RFCs (RFC 793 sec. 3.1, RFC 768, RFC 8200 sec. 8.1), not by the code under test.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from helpers import both_impls, c_backend, ones_sum
from vxlan_dp.fastpath import NetworkParams, PureDataplane
from vxlan_dp.wire import csum as W
from vxlan_dp.wire import ENCAPS, encapsulate

_C: Any = None
if c_backend(module=True, elsewhere="run") is not None:
    from vxlan_dp.fastpath import _c as _C

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


impl = both_impls(W)    # the table tests run on the reference and on the C module


# --- an independent model of the sender ------------------------------------------------------

_sum = ones_sum  # the shared model (tests/helpers.py)


def _l4(frame: bytes) -> tuple[int, int, int, bytes, bytes]:
    """(offset of the L4 header, its length per the IP header, proto, src, dst) via Scapy."""
    p = Ether(frame)
    ip = p[IP] if IP in p else p[IPv6]
    l4 = p[TCP] if TCP in p else p[UDP]
    start = len(bytes(p)) - len(bytes(l4))
    length = ip.len - ip.ihl * 4 if IP in p else ip.plen - (start - (len(bytes(p)) - len(bytes(ip))) - 40)
    src, dst = ipaddress.ip_address(ip.src).packed, ipaddress.ip_address(ip.dst).packed
    return start, length, 6 if TCP in p else 17, src, dst


def make_partial(frame: bytes) -> bytes:
    """`frame` (complete) as the sender left it: checksum field = folded pseudo-header sum."""
    start, length, proto, src, dst = _l4(frame)
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, length)
    else:
        pseudo = src + dst + struct.pack("!IxxxB", length, proto)
    at = start + (16 if proto == 6 else 6)
    b = bytearray(frame)
    b[at:at + 2] = struct.pack("!H", _sum(pseudo))
    return bytes(b)


def field_at(frame: bytes) -> int:
    start, _, proto, _, _ = _l4(frame)
    return start + (16 if proto == 6 else 6)


def verifies(frame: bytes) -> bool:
    """Scapy recomputes the L4 checksum; True if it equals the one the frame carries."""
    p = Ether(frame)
    q = Ether(frame)
    lay = TCP if TCP in q else UDP
    del q[lay].chksum
    return bool(p[lay].chksum == Ether(bytes(q))[lay].chksum)


# --- frames ----------------------------------------------------------------------------------

def _pay(n: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed) & 0xFF for i in range(n))


def build(proto: str = "tcp", v6: bool = False, *, n: int = 100, ipopts: bool = False,
          ext: tuple[str, ...] = (), vlan: int = 0, seed: int = 0) -> bytes:
    l4 = TCP(sport=40000, dport=5201, seq=1, ack=2, flags="PA") if proto == "tcp" \
        else UDP(sport=40000, dport=5201)
    if v6:
        l3: Any = IPv6(src="fd00::1", dst="fd00::2")
        for e in ext:
            l3 = l3 / {"hbh": IPv6ExtHdrHopByHop(), "dst": IPv6ExtHdrDestOpt(),
                       "rt0": IPv6ExtHdrRouting(addresses=["fd00::9"], segleft=0),
                       "rt1": IPv6ExtHdrRouting(addresses=["fd00::9"], segleft=1),
                       "frag": IPv6ExtHdrFragment(offset=0, m=0, id=7)}[e]
    else:
        l3 = IP(src="192.168.0.11", dst="192.168.0.21", flags="DF",
                options=[b"\x94\x04\x00\x00", b"\x01\x01\x01\x00"] if ipopts else [])
    eth: Any = Ether(src=A, dst=B)
    if vlan >= 1:
        eth = eth / Dot1Q(vlan=7) if vlan == 1 else eth / Dot1AD(vlan=8) / Dot1Q(vlan=7)
    return bytes(eth / l3 / l4 / Raw(_pay(n, seed)))


SHAPES: list[tuple[str, Callable[[str, bool], bytes]]] = [
    ("plain", lambda p, v6: build(p, v6)),
    ("empty", lambda p, v6: build(p, v6, n=0)),
    ("odd", lambda p, v6: build(p, v6, n=1401)),
    ("big", lambda p, v6: build(p, v6, n=8900)),
    ("vlan", lambda p, v6: build(p, v6, vlan=1)),
    ("qinq", lambda p, v6: build(p, v6, vlan=2)),
    ("opts", lambda p, v6: build(p, v6, ipopts=True) if not v6 else build(p, v6, ext=("hbh", "dst"))),
    ("route", lambda p, v6: build(p, v6, ext=("hbh", "rt0", "dst"))),
]


@pytest.mark.parametrize("shape", [s[0] for s in SHAPES])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_partial_is_completed_to_what_scapy_computes(impl: Any, shape: str, proto: str, v6: bool) -> None:
    full = dict(SHAPES)[shape](proto, v6)
    part = make_partial(full)
    assert part != full and not verifies(part)
    assert impl.complete_partial(part) == full
    assert verifies(full)


@pytest.mark.parametrize("shape", [s[0] for s in SHAPES])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_full_checksum_is_left_alone(impl: Any, shape: str, proto: str, v6: bool) -> None:
    assert impl.complete_partial(dict(SHAPES)[shape](proto, v6)) is None


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_corrupt_checksums_arrive_as_they_came(impl: Any, proto: str, v6: bool) -> None:
    full = build(proto, v6)
    at = field_at(full)
    part = make_partial(full)
    wrong = bytearray(part)                 # neither the full nor the partial value
    wrong[at + 1] ^= 0x01
    flipped = bytearray(full)               # a full checksum, payload damaged on the way
    flipped[-5] ^= 0x40
    damaged_partial = bytearray(part)       # partial, and a port damaged on the way
    damaged_partial[at - (16 if proto == "tcp" else 6) + 0] ^= 0x01
    for frame in (bytes(wrong), bytes(flipped)):
        assert not verifies(frame)
        assert impl.complete_partial(frame) is None
    # a damaged payload under a partial field still matches the rule: the field is the
    # partial value and nothing verifies; completing it is what the sender's device would do
    assert impl.complete_partial(bytes(damaged_partial)) is not None


def test_udp_checksum_zero_means_none(impl: Any) -> None:
    full = build("udp", False)
    at = field_at(full)
    zero = full[:at] + b"\0\0" + full[at + 2:]
    assert impl.complete_partial(zero) is None


def test_udp_result_zero_is_sent_as_ffff(impl: Any) -> None:
    """Tune one payload word so that the complete UDP checksum computes to 0: RFC 768 says
    it goes out as 0xFFFF (0 would mean "no checksum")."""
    b = bytearray(build("udp", False, n=64))
    start, length, _, src, dst = _l4(bytes(b))
    at = start + 6
    b[at:at + 2] = b"\0\0"
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    total = _sum(pseudo + bytes(b[start:start + length]))
    adj = struct.unpack("!H", b[-2:])[0] + (0xFFFF - total)
    b[-2:] = struct.pack("!H", (adj & 0xFFFF) + (adj >> 16))
    assert _sum(pseudo + bytes(b[start:start + length])) == 0xFFFF
    full = bytearray(b)
    full[at:at + 2] = b"\xff\xff"
    assert verifies(bytes(full))
    assert impl.complete_partial(make_partial(bytes(full))) == bytes(full)


def test_full_checksum_equal_to_the_partial_value_is_left_alone(impl: Any) -> None:
    """The one ambiguity of the rule: a correct checksum that happens to be the partial value.
    Tune one payload word so that the partial frame verifies: it must stay untouched."""
    part = bytearray(make_partial(build("tcp", False, n=64)))
    start, length, _, src, dst = _l4(bytes(part))
    pseudo = src + dst + struct.pack("!BBH", 0, 6, length)
    total = _sum(pseudo + bytes(part[start:start + length]))
    word = struct.unpack("!H", part[-2:])[0]
    adj = word + (0xFFFF - total)
    part[-2:] = struct.pack("!H", (adj & 0xFFFF) + (adj >> 16))
    assert verifies(bytes(part))
    assert impl.complete_partial(bytes(part)) is None


def _ip_frag() -> bytes:
    return bytes(Ether(src=A, dst=B) / IP(src="192.168.0.1", dst="192.168.0.2", flags="MF")
                 / UDP(sport=1, dport=2) / Raw(_pay(64)))


@pytest.mark.parametrize("name,frame", [
    ("ipv4 fragment", make_partial(_ip_frag())),
    ("ipv6 fragment header", make_partial(build("udp", True, ext=("frag",)))),
    ("ipv6 routing, segments left", make_partial(build("tcp", True, ext=("rt1",)))),
    ("icmp", bytes(Ether(src=A, dst=B) / IP(src="192.168.0.1", dst="192.168.0.2") / Raw(b"\x08" * 40))),
    ("truncated ip", make_partial(build("tcp", False))[:60]),
    ("arp", bytes(Ether(src=A, dst=B, type=0x0806) / Raw(_pay(28)))),
], ids=lambda v: v.replace(" ", "-") if isinstance(v, str) else "")
def test_not_recognised_is_left_alone(impl: Any, name: str, frame: bytes) -> None:
    assert impl.complete_partial(frame) is None


def test_ethernet_padding_is_not_summed(impl: Any) -> None:
    full = build("tcp", False, n=0)             # 54 bytes: a sender's NIC pads it to 60
    part = make_partial(full) + b"\xaa" * 6
    assert impl.complete_partial(part) == full + b"\xaa" * 6


def test_udp_length_disagreeing_with_ip_is_left_alone(impl: Any) -> None:
    part = bytearray(make_partial(build("udp", False)))
    start, _, _, _, _ = _l4(bytes(part))
    part[start + 5] ^= 0x02
    assert impl.complete_partial(bytes(part)) is None


# --- C == Python ---------------------------------------------------------------------------

@st.composite
def frames(draw: st.DrawFn) -> bytes:
    proto = draw(st.sampled_from(["tcp", "udp"]))
    v6 = draw(st.booleans())
    ext = tuple(draw(st.lists(st.sampled_from(["hbh", "dst", "rt0", "rt1", "frag"]), max_size=3))) if v6 else ()
    full = build(proto, v6, n=draw(st.integers(0, 300)), ipopts=draw(st.booleans()) and not v6,
                 ext=ext, vlan=draw(st.integers(0, 2)), seed=draw(st.integers(0, 255)))
    kind = draw(st.sampled_from(["partial", "partial", "full", "zero", "random"]))
    try:
        b = bytearray(make_partial(full) if kind == "partial" else full)
        at = field_at(full)
    except (IndexError, AttributeError, TypeError):
        return full
    if kind == "zero":
        b[at:at + 2] = b"\0\0"
    elif kind == "random":
        b[at:at + 2] = draw(st.binary(min_size=2, max_size=2))
    for _ in range(draw(st.integers(0, 2))):     # damage anywhere, headers included
        i = draw(st.integers(0, len(b) - 1))
        b[i] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from([len(b), len(b), len(b) - 1, draw(st.integers(0, len(b)))]))
    return bytes(b[:cut]) + draw(st.sampled_from([b"", b"\0" * 5]))


@SETTINGS
@given(frames())
def test_c_equals_python_byte_for_byte(frame: bytes) -> None:
    if _C is None:
        pytest.skip("C fast path not built")
    got = W.complete_partial(frame)
    assert _C.complete_partial(frame) == got
    if got is not None:                 # whatever is completed, Scapy agrees it now verifies
        assert verifies(got) and len(got) == len(frame)


PEERS = {4: ["198.18.0.2", "198.18.0.3"], 6: ["2001:2::2", "2001:2::3"]}
LOCAL = {4: "198.18.0.1", 6: "2001:2::1"}


@settings(SETTINGS, max_examples=150)
@given(st.sampled_from(ENCAPS), st.sampled_from([4, 6]),
       st.lists(st.tuples(st.integers(0, 1), frames()), min_size=1, max_size=8))
def test_decap_completes_and_counts_alike(encap: str, fam: int, items: list[tuple[int, bytes]]) -> None:
    """Both backends' decap: the same frames out, csum_completed and csum_peer alike."""
    if _C is None:
        pytest.skip("C fast path not built")
    dps = [PureDataplane(), _C.Dataplane()]
    nets = []
    for dp in dps:
        ep = dp.add_endpoint(encap, -1)
        net = dp.add_network(NetworkParams(vni=42, encap=encap, local=LOCAL[fam], mtu=9000), ep)
        dp.set_peers(net, PEERS[fam])
        nets.append((ep, net))
    lo, hi = (LOCAL[fam], PEERS[fam])
    dgrams = []
    for who, raw in items:
        if len(raw) < 14:
            continue
        f = raw[:6] + bytes.fromhex("020000000001") + raw[12:]      # a unicast source MAC
        pkt = encapsulate(encap, ipaddress.ip_address(hi[who]).packed, ipaddress.ip_address(lo).packed,
                          42, f, dport=4789)
        hl = 20 if fam == 4 else 40
        dgrams.append((hi[who], pkt[hl + (8 if encap != "gre" else 0):]))
    outs = [dp.decap(ep, dgrams, 1.0) for dp, (ep, _) in zip(dps, nets)]
    assert outs[0] == outs[1]
    cs = [dp.counters(net) for dp, (_, net) in zip(dps, nets)]
    assert cs[0] == cs[1]
    peers = [dp.csum_peer(net) for dp, (_, net) in zip(dps, nets)]
    assert peers[0] == peers[1]
    done = [src for src, d in dgrams if W.complete_partial(d[8:]) is not None]   # 8: encap header
    assert cs[0]["csum_completed"] == len(done)
    assert peers[0] == (done[-1] if done else None)


# --- super-frames: a peer's TSO segment, whole ------------------------------------------------

def _super(v6: bool = False, n: int = 2796, *, flags: str = "A", opts: bool = True, vlan: bool = False,
           proto: str = "tcp") -> bytes:
    l3: Any = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="192.168.0.11", dst="192.168.0.21", flags="DF")
    l4: Any = TCP(sport=5201, dport=40000, seq=7, ack=9, flags=flags,
                  options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))] if opts else []) \
        if proto == "tcp" else UDP(sport=5201, dport=40000)
    eth: Any = Ether(src=A, dst=B) / Dot1Q(vlan=7) if vlan else Ether(src=A, dst=B)
    return make_partial(bytes(eth / l3 / l4 / Raw(_pay(n))))


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("vlan", [False, True], ids=["untagged", "vlan"])
def test_tcp_super_frame_is_described_for_tso(impl: Any, v6: bool, vlan: bool) -> None:
    f = _super(v6, vlan=vlan)
    l3 = 18 if vlan else 14
    l4 = l3 + (40 if v6 else 20)
    got = impl.super_frame(f, 1450)
    assert got is not None
    hdr, nseg = got
    assert hdr.gso_size == 1450 - (l4 - l3) - 32            # 1398 (v4) / 1378 (v6): the MSS
    assert (hdr.csum_start, hdr.csum_offset, hdr.hdr_len) == (l4, 16, l4 + 32)
    assert nseg == -(-2796 // hdr.gso_size)
    # the segments a NIC would make from it all fit the MTU, and Scapy verifies every one
    from vxlan_dp.wire.offload import split
    segs = split(hdr, f)
    assert len(segs) == nseg and all(len(s) <= l3 + 1450 for s in segs)
    assert all(verifies(s) for s in segs)


@pytest.mark.parametrize("name,frame", [
    ("udp super-frame", _super(proto="udp")),
    ("fits the mtu", _super(n=1000)),
    ("ip length disagrees", _super()[:-1]),
    ("ipv6 extension header", make_partial(bytes(Ether(src=A, dst=B) / IPv6(src="fd00::1", dst="fd00::2")
                                                 / IPv6ExtHdrDestOpt() / TCP() / Raw(_pay(3000))))),
    ("ipv4 fragment", make_partial(bytes(Ether(src=A, dst=B) / IP(src="192.168.0.1", dst="192.168.0.2",
                                                                  flags="MF") / TCP() / Raw(_pay(3000))))),
], ids=lambda v: v.replace(" ", "-") if isinstance(v, str) else "")
def test_not_a_super_frame(impl: Any, name: str, frame: bytes) -> None:
    assert impl.super_frame(frame, 1450) is None


def test_cwr_asks_for_ecn_segmentation(impl: Any) -> None:
    got = impl.super_frame(_super(flags="AC"), 1450)
    assert got is not None and got[0].gso_type == 0x81


def test_super_partial_is_the_pseudo_header_sum() -> None:
    full = bytes(Ether(src=A, dst=B) / IP(src="192.168.0.11", dst="192.168.0.21") / TCP() / Raw(_pay(3000)))
    got = W.super_frame(full, 1450)
    assert got is not None
    assert W.super_partial(full, got[0]) == make_partial(full)


@SETTINGS
@given(st.booleans(), st.integers(0, 9000), st.sampled_from([68, 576, 1280, 1450, 1500, 9000]),
       st.binary(max_size=4), st.integers(0, 3))
def test_super_frame_c_equals_python(v6: bool, n: int, mtu: int, junk: bytes, cut: int) -> None:
    if _C is None:
        pytest.skip("C fast path not built")
    f = _super(v6, n)
    f = f[:len(f) - cut] + junk if cut or junk else f
    assert _C.super_frame(f, mtu) == W.super_frame(f, mtu)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_decap_passes_super_frames_and_drops_udp_ones(v6: bool) -> None:
    """Both backends' decap: a TCP super-frame is delivered whole (rx_super_frames), not
    completed; a UDP one is too big (drop_too_big), as before."""
    if _C is None:
        pytest.skip("C fast path not built")
    fam = 6 if v6 else 4
    tcp_sf, udp_sf = _super(v6), _super(v6, proto="udp")
    results = []
    for dp in (PureDataplane(), _C.Dataplane()):
        ep = dp.add_endpoint("vxlan", -1)
        net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local=LOCAL[fam]), ep)
        dp.set_peers(net, PEERS[fam])
        vx = bytes([8, 0, 0, 0, 0, 0, 42, 0])
        out = dp.decap(ep, [(PEERS[fam][0], vx + tcp_sf), (PEERS[fam][0], vx + udp_sf)], 1.0)
        c = dp.counters(net)
        st_ = dp.offload_stats()
        results.append((out, c, st_["rx_super_frames"]))
        assert out == [(net, tcp_sf)]
        assert c["drop_too_big"] == 1 and c["csum_completed"] == 0 and st_["rx_super_frames"] == 1
    assert results[0] == results[1]


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_completed_segments_coalesce_like_complete_ones(v6: bool) -> None:
    """The TAP write stage coalesces what decap hands it: partial segments, once completed,
    join one GSO run exactly as segments that came complete do (no per-packet fallback)."""
    from vxlan_dp.wire.offload import coalesce
    if _C is None:
        pytest.skip("C fast path not built")
    fam = 6 if v6 else 4
    segs = []
    for i in range(4):
        l3: Any = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="192.168.0.11", dst="192.168.0.21",
                                                                     flags="DF", id=100 + i)
        segs.append(bytes(Ether(src=A, dst=B) / l3 / TCP(sport=5201, dport=40000, seq=1 + 1000 * i, ack=9,
                                                           flags="A") / Raw(_pay(1000, i))))
    vx = bytes([8, 0, 0, 0, 0, 0, 42, 0])
    for dp in (PureDataplane(), _C.Dataplane()):
        ep = dp.add_endpoint("vxlan", -1)
        net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local=LOCAL[fam]), ep)
        dp.set_peers(net, PEERS[fam])
        out = [f for _, f in dp.decap(ep, [(PEERS[fam][0], vx + make_partial(s)) for s in segs], 1.0)]
        assert out == segs and dp.counters(net)["csum_completed"] == 4
        for impl_coalesce in (coalesce, _C.coalesce):
            items = impl_coalesce(out)
            assert len(items) == 1 and items[0][0].gso_type in (1, 4), items
            # left partial they would not have: GRO takes only segments whose checksum verifies
            assert len(impl_coalesce([make_partial(s) for s in segs])) == 4
