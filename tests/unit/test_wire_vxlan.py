"""VXLAN on the wire (RFC 7348 sec. 5): our bytes against Scapy-built reference packets.

Scapy is the independent judge: every outer packet we build must be byte-for-byte what Scapy
builds from the same fields, and Scapy must parse ours back to the same VNI and inner frame.
Scapy's VXLAN() defaults differ from RFC 7348 when stacked on Ether, so the reference always
says flags=0x08 explicitly (docs/ARCHITECTURE.md, wire rules).
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP, ICMP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from vxlan_dp.wire import (VNI_MAX, VXLAN_PORT, WireError, decapsulate, decode_vxlan,
                           encap_overhead, encapsulate, encode_vxlan, flow_hash, source_port)
from vxlan_dp.fastpath import NetworkParams, backends

V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:db8::1", "2001:db8::2")
MAC_A = "02:42:c0:a8:00:02"
MAC_B = "02:42:c0:a8:00:03"

INNER = {
    "ipv4-tcp": Ether(src=MAC_A, dst=MAC_B) / IP(src="192.168.0.2", dst="192.168.0.3")
    / TCP(sport=40000, dport=80) / Raw(b"GET / HTTP/1.0\r\n\r\n"),
    "ipv6-udp": Ether(src=MAC_A, dst=MAC_B) / IPv6(src="fd00::2", dst="fd00::3")
    / UDP(sport=5353, dport=53) / Raw(b"q" * 40),
    "arp-broadcast": Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff")
    / ARP(hwsrc=MAC_A, psrc="192.168.0.2", pdst="192.168.0.3"),
    "vlan-icmp": Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=100)
    / IP(src="192.168.0.2", dst="192.168.0.3") / ICMP() / Raw(b"ping" * 8),
}
FRAMES = {name: bytes(pkt) for name, pkt in INNER.items()}


def _packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def _ours(outer: tuple[str, str], vni: int, frame: bytes, port: int, **kw) -> bytes:
    return encapsulate("vxlan", _packed(outer[0]), _packed(outer[1]), vni, frame, dport=port, **kw)


def _scapy_reference(outer: tuple[str, str], vni: int, frame: bytes, port: int, sport: int,
                     ident: int = 0) -> bytes:
    payload = VXLAN(flags=0x08, vni=vni) / Ether(frame)
    if ":" in outer[0]:
        # IPv6: the UDP checksum is mandatory (RFC 8200 sec. 8.1); Scapy computes it.
        return bytes(IPv6(src=outer[0], dst=outer[1], hlim=64) / UDP(sport=sport, dport=port) / payload)
    return bytes(IP(src=outer[0], dst=outer[1], id=ident, flags=0, ttl=64)
                 / UDP(sport=sport, dport=port, chksum=0) / payload)


def _parse_outer(data: bytes):
    return IPv6(data) if data[0] >> 4 == 6 else IP(data)


@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("vni", [0, 1, 42, VNI_MAX])
@pytest.mark.parametrize("port", [VXLAN_PORT, 8472, 5555], ids=["iana", "linux", "custom"])
def test_encapsulate_equals_scapy_reference(outer, vni, port):
    frame = FRAMES["ipv4-tcp"]
    expected_sport = source_port(flow_hash(frame))
    ours = _ours(outer, vni, frame, port)
    assert ours == _scapy_reference(outer, vni, frame, port, expected_sport)


@pytest.mark.parametrize("name", sorted(FRAMES))
@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
def test_every_inner_frame_kind_equals_scapy_reference(outer, name):
    frame = FRAMES[name]
    ours = _ours(outer, 4242, frame, VXLAN_PORT)
    assert ours == _scapy_reference(outer, 4242, frame, VXLAN_PORT, source_port(flow_hash(frame)))


@pytest.mark.parametrize("ident", [0, 1, 0xBEEF, 0xFFFF])
def test_ipv4_identification_is_the_one_asked_for(ident):
    frame = FRAMES["ipv6-udp"]
    ours = _ours(V4, 7, frame, VXLAN_PORT, ident=ident)
    assert IP(ours).id == ident
    assert ours == _scapy_reference(V4, 7, frame, VXLAN_PORT, source_port(flow_hash(frame)), ident)


@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("vni", [0, 1, 42, VNI_MAX])
@pytest.mark.parametrize("port", [VXLAN_PORT, 8472, 5555], ids=["iana", "linux", "custom"])
def test_scapy_parses_our_bytes_back(outer, vni, port):
    frame = FRAMES["vlan-icmp"]
    pkt = _parse_outer(_ours(outer, vni, frame, port))
    udp = pkt[UDP]
    assert (pkt.src, pkt.dst) == outer
    assert udp.dport == port
    assert 49152 <= udp.sport <= 65535
    # Scapy binds VXLAN to 4789 and 8472 only; a custom port is decoded explicitly.
    vx = udp[VXLAN] if VXLAN in udp else VXLAN(bytes(udp.payload))
    assert int(vx.flags) == 0x08
    assert vx.vni == vni
    assert vx.reserved1 == 0 and vx.reserved2 == 0
    assert bytes(vx.payload) == frame
    assert vx[Ether].src == MAC_A and vx[Dot1Q].vlan == 100


def test_ipv4_outer_udp_checksum_is_zero_and_ip_checksum_verifies():
    pkt = IP(_ours(V4, 42, FRAMES["ipv4-tcp"], VXLAN_PORT))
    assert pkt[UDP].chksum == 0  # allowed over IPv4 (RFC 7348 sec. 5)
    assert pkt.flags == 0 and pkt.frag == 0 and pkt.ttl == 64  # DF clear, like kernel `df unset`
    stored = pkt.chksum
    del pkt.chksum
    assert IP(bytes(pkt)).chksum == stored


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_ipv6_outer_udp_checksum_verifies(name):
    pkt = IPv6(_ours(V6, 42, FRAMES[name], VXLAN_PORT))
    stored = pkt[UDP].chksum
    assert stored != 0
    del pkt[UDP].chksum
    assert IPv6(bytes(pkt))[UDP].chksum == stored


@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_lengths_match_encap_overhead(outer, name):
    frame = FRAMES[name]
    ours = _ours(outer, 1, frame, VXLAN_PORT)
    ipv6 = outer is V6
    assert len(ours) - len(frame) == encap_overhead("vxlan", ipv6) == (56 if ipv6 else 36)
    pkt = _parse_outer(ours)
    assert pkt[UDP].len == 8 + 8 + len(frame)
    assert (pkt.plen if ipv6 else pkt.len) == len(ours) - (40 if ipv6 else 0)


@pytest.mark.parametrize("sport_range", [(49152, 65535), (10000, 10000), (4000, 4015)])
def test_source_port_honours_the_configured_range(sport_range):
    frame = FRAMES["ipv4-tcp"]
    sport = IP(_ours(V4, 1, frame, VXLAN_PORT, sport_range=sport_range))[UDP].sport
    assert sport_range[0] <= sport <= sport_range[1]
    assert sport == source_port(flow_hash(frame), *sport_range)


def test_explicit_flow_hash_overrides_computed_one():
    frame = FRAMES["ipv4-tcp"]
    sport = IP(_ours(V4, 1, frame, VXLAN_PORT, fhash=5))[UDP].sport
    assert sport == 49152 + 5


@pytest.mark.parametrize("vni", [0, 1, 42, 0x123456, VNI_MAX])
def test_encode_vxlan_bytes(vni):
    assert encode_vxlan(vni) == bytes(VXLAN(flags=0x08, vni=vni))
    assert encode_vxlan(vni) == struct.pack("!II", 0x08000000, vni << 8)


# --- decoding -----------------------------------------------------------------------------

@pytest.mark.parametrize("vni", [0, 1, 42, VNI_MAX])
def test_decode_scapy_built_header(vni):
    buf = bytes(VXLAN(flags=0x08, vni=vni) / Ether(FRAMES["arp-broadcast"]))
    hdr = decode_vxlan(buf)
    assert (hdr.flags, hdr.vni) == (0x08, vni)
    d = decapsulate("vxlan", buf)
    assert d.key == vni
    assert buf[d.offset:] == FRAMES["arp-broadcast"]


@pytest.mark.parametrize("length", range(8))
def test_decode_rejects_short_buffers(length):
    buf = encode_vxlan(42)[:length]
    for strict in (False, True):
        with pytest.raises(WireError) as e:
            decode_vxlan(buf, strict)
        assert e.value.reason == "malformed"
    with pytest.raises(WireError) as e:
        decapsulate("vxlan", buf)
    assert e.value.reason == "malformed"


def test_header_alone_is_a_valid_decode():
    assert decode_vxlan(encode_vxlan(9)).vni == 9


@pytest.mark.parametrize("flags", [0x00, 0x80, 0x04, 0x01, 0xF7])
def test_decode_rejects_missing_i_flag(flags):
    buf = struct.pack("!II", flags << 24, 42 << 8) + FRAMES["ipv4-tcp"]
    for strict in (False, True):
        with pytest.raises(WireError) as e:
            decode_vxlan(buf, strict)
        assert e.value.reason == "bad_flags"


# (word 0, word 1): I flag set plus a reserved bit somewhere; VNI 42 in every case.
RESERVED_SET = {
    "flag-bit-R": (0x88000000, 42 << 8),
    "all-flags": (0xFF000000, 42 << 8),
    "reserved-24": (0x08ABCDEF, 42 << 8),
    "reserved-low-byte": (0x08000000, (42 << 8) | 0x5A),
    "gpe-style": (0x0C000003, 42 << 8),
}


@pytest.mark.parametrize("w0,w1", list(RESERVED_SET.values()), ids=list(RESERVED_SET))
def test_reserved_bits_ignored_unless_strict(w0, w1, backend):
    buf = struct.pack("!II", w0, w1) + FRAMES["ipv4-tcp"]
    assert decode_vxlan(buf).vni == 42
    assert decapsulate("vxlan", buf).key == 42
    with pytest.raises(WireError) as e:
        decode_vxlan(buf, strict=True)
    assert e.value.reason == "bad_flags"
    # `strict` is a network's option, so the check that counts is the data plane's, on both
    # backends: a strict network drops the datagram (counted), a lenient one delivers it.
    for strict in (False, True):
        dp = backends()[backend](batch=8)
        ep = dp.add_endpoint("vxlan", -1)
        net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1", strict=strict), ep)
        dp.set_peers(net, ["198.18.0.2"])
        out = dp.decap(ep, [("198.18.0.2", buf)], 0.0)
        assert out == ([] if strict else [(net, FRAMES["ipv4-tcp"])]), strict
        assert dp.endpoint_counters(ep)["drop_bad_flags"] == int(strict)


def test_strict_accepts_a_clean_header():
    assert decode_vxlan(encode_vxlan(VNI_MAX), strict=True).vni == VNI_MAX


def test_scapy_gpe_header_decodes_only_when_not_strict():
    # Scapy's VXLAN()/Ether() defaults to GPE flags (0x0C, next protocol Ethernet).
    buf = bytes(VXLAN(vni=77) / Ether(FRAMES["ipv4-tcp"]))
    assert buf[0] == 0x0C
    assert decode_vxlan(buf).vni == 77
    with pytest.raises(WireError):
        decode_vxlan(buf, strict=True)
