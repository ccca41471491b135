"""Flow hash -> outer UDP source port (RFC 7348 sec. 5, RFC 8086 sec. 3).

The hash is specified in vxlan_dp/wire/flowhash.py (FNV-1a 32 over chosen header fields, then
folded) because the C fast path must reproduce it bit for bit. `_reference` below re-derives it
from that specification using Scapy's field parsing, not byte offsets, so an offset slip in
either implementation shows up here.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP, ICMP, IPOption_NOP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from vxlan_dp.wire import SPORT_MAX, SPORT_MIN, encapsulate, flow_hash, source_port

MAC_A = "02:42:c0:a8:00:02"
MAC_B = "02:42:c0:a8:00:03"
L4_WITH_PORTS = (6, 17, 132)  # TCP, UDP, SCTP


def _fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) % (1 << 32)
    return h


def _fold(h: int) -> int:
    return h ^ (h >> 16)


def _mac(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def _reference(pkt: Ether) -> int:
    """The specified hash of a complete (untruncated) frame, from Scapy's parsed fields."""
    data = _mac(pkt.dst) + _mac(pkt.src) + struct.pack("!H", pkt.type)
    if pkt.type == 0x0800:
        ip = pkt[IP]
        data += bytes([ip.proto]) + ipaddress.ip_address(ip.src).packed + ipaddress.ip_address(ip.dst).packed
        if ip.proto in L4_WITH_PORTS and ip.frag == 0:
            data += struct.pack("!HH", ip.payload.sport, ip.payload.dport)
    elif pkt.type == 0x86DD:
        ip6 = pkt[IPv6]
        data += bytes([ip6.nh]) + ipaddress.ip_address(ip6.src).packed + ipaddress.ip_address(ip6.dst).packed
        if ip6.nh in L4_WITH_PORTS:
            data += struct.pack("!HH", ip6.payload.sport, ip6.payload.dport)
    return _fold(_fnv1a32(data))


def _v4(proto_layer, src="192.168.0.2", dst="192.168.0.3", **ip) -> Ether:
    return Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst, **ip) / proto_layer


def _v6(proto_layer, src="fd00::2", dst="fd00::3") -> Ether:
    return Ether(src=MAC_A, dst=MAC_B) / IPv6(src=src, dst=dst) / proto_layer


def test_fnv_helper_matches_published_vectors():
    # FNV-1a 32 test vectors (draft-eastlake-fnv): guards the reference used below.
    assert _fnv1a32(b"") == 0x811C9DC5
    assert _fnv1a32(b"a") == 0xE40C292C
    assert _fnv1a32(b"foobar") == 0xBF9CF968


@pytest.mark.parametrize("data", [b"", b"a", b"foobar", bytes(13)])
def test_runt_frames_hash_all_their_bytes(data):
    assert flow_hash(data) == _fold(_fnv1a32(data))


FRAMES = {
    "ipv4-tcp": _v4(TCP(sport=40000, dport=443) / Raw(b"x" * 20)),
    "ipv4-udp": _v4(UDP(sport=5353, dport=53) / Raw(b"q")),
    "ipv4-sctp": _v4(SCTP(sport=3868, dport=3868)),
    "ipv4-icmp": _v4(ICMP() / Raw(b"ping")),
    "ipv4-options-tcp": _v4(TCP(sport=1, dport=2), options=[IPOption_NOP()] * 8),
    "ipv6-tcp": _v6(TCP(sport=40000, dport=22)),
    "ipv6-udp": _v6(UDP(sport=546, dport=547) / Raw(b"dhcp")),
    "ipv6-sctp": _v6(SCTP(sport=9, dport=10)),
    "ipv6-hop-by-hop-udp": _v6(IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2)),
    "arp": Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.168.0.2", pdst="192.168.0.3"),
    "vlan-ipv4-tcp": Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=7) / IP() / TCP(),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_hash_matches_the_specification(name):
    pkt = FRAMES[name]
    assert flow_hash(bytes(pkt)) == _reference(pkt)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_hash_is_stable(name):
    frame = bytes(FRAMES[name])
    assert flow_hash(frame) == flow_hash(bytearray(frame)) == flow_hash(frame[:])
    assert 0 <= flow_hash(frame) < 1 << 32


# Same 5-tuple, different everything else: one flow, one port, so the underlay keeps order.
SAME_FLOW = [
    _v4(TCP(sport=40000, dport=443, seq=1, flags="S")),
    _v4(TCP(sport=40000, dport=443, seq=99999, flags="A") / Raw(b"y" * 1000)),
    _v4(TCP(sport=40000, dport=443, flags="PA") / Raw(b"z"), ttl=3, id=777, tos=0x10),
    _v4(TCP(sport=40000, dport=443, flags="F"), flags="DF"),
]


def test_same_flow_same_port():
    hashes = {flow_hash(bytes(p)) for p in SAME_FLOW}
    assert len(hashes) == 1
    ports = {source_port(h) for h in hashes}
    assert len(ports) == 1


@pytest.mark.parametrize("change", [
    dict(sport=40001), dict(dport=444), dict(src="192.168.0.9"), dict(dst="192.168.0.9"), dict(proto="udp"),
])
def test_one_field_changes_the_hash(change):
    base = dict(src="192.168.0.2", dst="192.168.0.3", sport=40000, dport=443, proto="tcp")
    def build(f):
        l4 = (TCP if f["proto"] == "tcp" else UDP)(sport=f["sport"], dport=f["dport"])
        return bytes(_v4(l4, src=f["src"], dst=f["dst"]))
    assert flow_hash(build(base)) != flow_hash(build({**base, **change}))


def test_icmp_hashes_without_ports():
    # ICMP carries no ports: the type/code/checksum bytes must not split one host pair.
    a = bytes(_v4(ICMP(type=8, id=1, seq=1)))
    b = bytes(_v4(ICMP(type=0, id=2, seq=2)))
    assert flow_hash(a) == flow_hash(b)


def test_non_ip_hashes_l2_only():
    a = bytes(Ether(src=MAC_A, dst=MAC_B) / ARP(op=1, psrc="192.168.0.2"))
    b = bytes(Ether(src=MAC_A, dst=MAC_B) / ARP(op=2, psrc="192.168.0.7"))
    assert flow_hash(a) == flow_hash(b) == _fold(_fnv1a32(a[:14]))


# --- fragments: only the first carries the ports ----------------------------------------------

def test_non_first_fragments_hash_without_ports():
    # Two non-first fragments whose first payload bytes (where ports would be) differ.
    a = _v4(Raw(struct.pack("!HH", 1111, 2222) + b"a" * 16), proto=17, frag=185)
    b = _v4(Raw(struct.pack("!HH", 3333, 4444) + b"b" * 16), proto=17, frag=185, flags="MF")
    no_ports = _fold(_fnv1a32(bytes(a)[:14] + bytes([17]) + bytes(a)[26:34]))
    assert flow_hash(bytes(a)) == flow_hash(bytes(b)) == no_ports


def test_fragmented_datagram():
    big = _v4(UDP(sport=7000, dport=8000) / Raw(b"F" * 3000))
    frags = [Ether(src=MAC_A, dst=MAC_B) / f for f in fragment(big[IP], fragsize=1000)]
    assert len(frags) >= 3
    first, rest = frags[0], frags[1:]
    assert first[IP].frag == 0 and first[IP].flags.MF
    assert flow_hash(bytes(first)) == _reference(big)  # the first fragment has the ports
    tail = {flow_hash(bytes(f)) for f in rest}
    assert len(tail) == 1
    assert tail == {_fold(_fnv1a32(bytes(first)[:14] + bytes([17]) + bytes(first)[26:34]))}


def test_first_fragment_ports_count():
    a = _v4(UDP(sport=1, dport=2) / Raw(b"x" * 8), flags="MF")
    b = _v4(UDP(sport=3, dport=2) / Raw(b"x" * 8), flags="MF")
    assert flow_hash(bytes(a)) != flow_hash(bytes(b))


# --- truncation: a frame too short for a layer is hashed up to the previous layer -------------

@pytest.mark.parametrize("cut,kept", [
    (14, "l2"), (33, "l2"),        # IPv4 header incomplete
    (34, "l3"), (37, "l3"),        # IPv4 header complete, ports incomplete
    (38, "l4"),
])
def test_truncated_ipv4(cut, kept):
    frame = bytes(_v4(TCP(sport=40000, dport=443)))
    fields = {"l2": frame[:14], "l3": frame[:14] + frame[23:24] + frame[26:34]}
    fields["l4"] = fields["l3"] + frame[34:38]
    assert flow_hash(frame[:cut]) == _fold(_fnv1a32(fields[kept]))


@pytest.mark.parametrize("cut,kept", [(53, "l2"), (54, "l3"), (57, "l3"), (58, "l4")])
def test_truncated_ipv6(cut, kept):
    frame = bytes(_v6(UDP(sport=546, dport=547)))
    fields = {"l2": frame[:14], "l3": frame[:14] + frame[20:21] + frame[22:54]}
    fields["l4"] = fields["l3"] + frame[54:58]
    assert flow_hash(frame[:cut]) == _fold(_fnv1a32(fields[kept]))


def test_bogus_ihl_does_not_read_ports():
    frame = bytearray(bytes(_v4(TCP(sport=1, dport=2))))
    frame[14] = 0x44  # IHL 4 (< 5): no transport header can be located
    assert flow_hash(bytes(frame)) == _fold(_fnv1a32(bytes(frame[:14] + frame[23:24] + frame[26:34])))


# --- spreading over the source-port range -----------------------------------------------------

def test_flows_spread_over_default_range():
    ports = {source_port(flow_hash(bytes(_v4(TCP(sport=10000 + i, dport=443))))) for i in range(1000)}
    assert len(ports) > 900
    assert all(SPORT_MIN <= p <= SPORT_MAX for p in ports)


def test_hosts_spread_over_default_range():
    ports = {source_port(flow_hash(bytes(_v4(UDP(sport=53, dport=53), src=f"10.{i >> 8}.{i & 255}.1"))))
             for i in range(1000)}
    assert len(ports) > 900


def test_flows_cover_a_narrow_range():
    ports = [source_port(flow_hash(bytes(_v6(TCP(sport=20000 + i, dport=80)))), 5000, 5015) for i in range(1000)]
    assert set(ports) == set(range(5000, 5016))
    # and no port is starved: each of 16 gets at least a third of its fair share
    assert min(ports.count(p) for p in set(ports)) > 1000 / 16 / 3


def test_default_range_is_rfc7348_dynamic_range():
    assert (SPORT_MIN, SPORT_MAX) == (49152, 65535)
    assert source_port(0) == 49152
    assert source_port(16383) == 65535
    assert source_port(16384) == 49152


# --- properties ---------------------------------------------------------------------------------

port_ranges = st.integers(1, 65535).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, 65535)))


@settings(max_examples=300, deadline=None)
@given(frame=st.binary(max_size=128), rng=port_ranges)
def test_sport_always_within_range(frame, rng):
    lo, hi = rng
    h = flow_hash(frame)
    assert 0 <= h < 1 << 32
    assert lo <= source_port(h, lo, hi) <= hi


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=64), rng=port_ranges, sport=st.integers(0, 65535))
def test_outer_udp_sport_within_range(payload, rng, sport):
    frame = bytes(_v4(UDP(sport=sport, dport=53) / Raw(payload)))
    pkt = encapsulate("vxlan", bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]), 1, frame,
                      dport=4789, sport_range=rng)
    outer_sport = int.from_bytes(pkt[20:22], "big")
    assert rng[0] <= outer_sport <= rng[1]


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=64), ttl=st.integers(1, 255), ident=st.integers(0, 65535))
def test_payload_ttl_and_id_never_move_a_flow(payload, ttl, ident):
    base = flow_hash(bytes(_v4(UDP(sport=1000, dport=2000))))
    assert flow_hash(bytes(_v4(UDP(sport=1000, dport=2000) / Raw(payload), ttl=ttl, id=ident))) == base
