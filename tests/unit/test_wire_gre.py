"""GRE (RFC 2784/2890, Linux gretap), GRE-in-UDP (RFC 8086) and NVGRE (RFC 7637) on the wire.

Scapy is the independent judge of our bytes; decode_gre is fed Scapy-built headers with the
optional C and S fields, and hand-made broken ones for every drop reason.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, GRE, Ether
from scapy.packet import Raw, bind_layers, split_layers

from vxlan_dp.wire import (GRE_UDP_PORT, WireError, decapsulate, decode_gre, encap_overhead,
                           encapsulate, encode_gre, flow_hash, nvgre_key, source_port)

V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:db8::1", "2001:db8::2")
MAC_A = "02:42:c0:a8:00:02"
MAC_B = "02:42:c0:a8:00:03"
FRAME = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="192.168.0.2", dst="192.168.0.3")
              / TCP(sport=40000, dport=443) / Raw(b"hello overlay"))
ARP_FRAME = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.168.0.2", pdst="192.168.0.3"))
KEYS = [0, 1, 42, (1 << 24) - 1, 0xFFFFFFFF]


@pytest.fixture(autouse=True, scope="module")
def gre_in_udp_binding():
    """Make Scapy dissect UDP/4754 as GRE (RFC 8086), undoing only what we added."""
    already = any(v is GRE and k == {"dport": GRE_UDP_PORT} for k, v in UDP.payload_guess)
    if not already:
        bind_layers(UDP, GRE, dport=GRE_UDP_PORT)
    yield
    if not already:
        split_layers(UDP, GRE, dport=GRE_UDP_PORT)


def _packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def _ours(encap: str, outer, key: int, frame: bytes = FRAME, **kw) -> bytes:
    return encapsulate(encap, _packed(outer[0]), _packed(outer[1]), key, frame, **kw)


def _outer_ip(outer, ident: int = 0):
    if ":" in outer[0]:
        return IPv6(src=outer[0], dst=outer[1], hlim=64)
    return IP(src=outer[0], dst=outer[1], id=ident, flags=0, ttl=64)


def _gre(key: int, frame: bytes = FRAME):
    return GRE(key_present=1, key=key, proto=0x6558) / Ether(frame)


def _parse(data: bytes):
    return IPv6(data) if data[0] >> 4 == 6 else IP(data)


# --- GRE (IP protocol 47) --------------------------------------------------------------------

@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("key", KEYS)
def test_gre_equals_scapy_reference(outer, key):
    assert _ours("gre", outer, key) == bytes(_outer_ip(outer) / _gre(key))


@pytest.mark.parametrize("ident", [0, 0x1234])
def test_gre_ipv4_identification(ident):
    assert _ours("gre", V4, 42, ident=ident) == bytes(_outer_ip(V4, ident) / _gre(42))


@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("frame", [FRAME, ARP_FRAME], ids=["tcp", "arp"])
def test_scapy_parses_our_gre(outer, frame):
    pkt = _parse(_ours("gre", outer, 0xC0FFEE, frame))
    assert (pkt.proto if outer is V4 else pkt.nh) == 47
    g = pkt[GRE]
    assert (g.chksum_present, g.routing_present, g.key_present, g.seqnum_present) == (0, 0, 1, 0)
    assert g.version == 0 and g.proto == 0x6558
    assert g.key == 0xC0FFEE
    assert bytes(g.payload) == frame
    assert g[Ether].src == MAC_A


def test_encode_gre_is_the_gretap_header():
    # K set, version 0, Transparent Ethernet Bridging, 32-bit key (`ip link add type gretap key N`)
    assert encode_gre(0x01020304) == bytes.fromhex("2000 6558 01020304")
    assert encode_gre(42) == bytes(GRE(key_present=1, key=42, proto=0x6558))


@pytest.mark.parametrize("encap,ipv6,expected", [
    ("gre", False, 28), ("gre", True, 48), ("gre-udp", False, 36), ("gre-udp", True, 56),
])
def test_overhead(encap, ipv6, expected):
    outer = V6 if ipv6 else V4
    assert encap_overhead(encap, ipv6) == expected
    assert len(_ours(encap, outer, 1, dport=GRE_UDP_PORT)) - len(FRAME) == expected


# --- GRE-in-UDP (RFC 8086) -------------------------------------------------------------------

@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("port", [GRE_UDP_PORT, 6000])
def test_gre_udp_equals_scapy_reference(outer, key, port):
    sport = source_port(flow_hash(FRAME))
    udp = UDP(sport=sport, dport=port) if outer is V6 else UDP(sport=sport, dport=port, chksum=0)
    assert _ours("gre-udp", outer, key, dport=port) == bytes(_outer_ip(outer) / udp / _gre(key))


@pytest.mark.parametrize("outer", [V4, V6], ids=["ipv4", "ipv6"])
def test_scapy_parses_our_gre_udp(outer):
    pkt = _parse(_ours("gre-udp", outer, 42, dport=GRE_UDP_PORT))
    assert pkt[UDP].dport == GRE_UDP_PORT
    assert 49152 <= pkt[UDP].sport <= 65535
    assert pkt[GRE].key == 42 and pkt[GRE].proto == 0x6558
    assert bytes(pkt[GRE].payload) == FRAME
    if outer is V6:  # mandatory over IPv6: check that Scapy computes the same value
        stored = pkt[UDP].chksum
        del pkt[UDP].chksum
        assert stored != 0 and IPv6(bytes(pkt))[UDP].chksum == stored
    else:
        assert pkt[UDP].chksum == 0


def test_gre_udp_payload_decapsulates():
    pkt = IP(_ours("gre-udp", V4, 99, dport=GRE_UDP_PORT))
    payload = bytes(pkt[UDP].payload)
    d = decapsulate("gre-udp", payload)
    assert d.key == 99
    assert payload[d.offset:] == FRAME


# --- NVGRE (RFC 7637 sec. 3.2): key = VSID << 8 | FlowID -------------------------------------

@pytest.mark.parametrize("vsid,flow_id,key", [
    (0, 0, 0),
    (1, 0, 0x100),
    (0x123456, 0xAB, 0x123456AB),
    (0xFFFFFF, 0xFF, 0xFFFFFFFF),
    (0x1123456, 0x1AB, 0x123456AB),  # out-of-range inputs are masked to their fields
])
def test_nvgre_key(vsid, flow_id, key):
    assert nvgre_key(vsid, flow_id) == key


@pytest.mark.parametrize("encap", ["gre", "gre-udp"])
@pytest.mark.parametrize("frame", [FRAME, ARP_FRAME], ids=["tcp", "arp"])
def test_nvgre_flow_id_comes_from_the_flow_hash(encap, frame):
    vsid = 0x00BEEF
    pkt = IP(_ours(encap, V4, vsid, frame, nvgre=True, dport=GRE_UDP_PORT))
    assert pkt[GRE].key == (vsid << 8) | (flow_hash(frame) & 0xFF)
    assert pkt[GRE].key >> 8 == vsid
    assert bytes(pkt[GRE].payload) == frame


def test_nvgre_with_explicit_hash():
    pkt = IP(_ours("gre", V4, 0x10, nvgre=True, fhash=0x1234_5678))
    assert pkt[GRE].key == 0x1078


# --- decode_gre --------------------------------------------------------------------------------

@pytest.mark.parametrize("key", KEYS)
def test_decode_plain(key):
    buf = bytes(_gre(key))
    h = decode_gre(buf)
    assert (h.key, h.protocol, h.seq, h.header_len) == (key, 0x6558, None, 8)
    assert buf[h.header_len:] == FRAME


# (Scapy GRE fields, expected header length, expected sequence number)
OPTIONAL_FIELDS = {
    "checksum": (dict(chksum_present=1), 12, None),
    "sequence": (dict(seqnum_present=1, sequence_number=7), 12, 7),
    "checksum+sequence": (dict(chksum_present=1, seqnum_present=1, sequence_number=0xFFFFFFFF), 16, 0xFFFFFFFF),
}


@pytest.mark.parametrize("fields,hlen,seq", list(OPTIONAL_FIELDS.values()), ids=list(OPTIONAL_FIELDS))
@pytest.mark.parametrize("frame", [FRAME, FRAME + b"\x00", ARP_FRAME], ids=["even", "odd", "arp"])
def test_decode_accepts_c_and_s_bits(fields, hlen, seq, frame):
    buf = bytes(GRE(key_present=1, key=0xABCD, proto=0x6558, **fields) / Raw(frame))
    h = decode_gre(buf)
    assert (h.key, h.seq, h.header_len) == (0xABCD, seq, hlen)
    assert buf[h.header_len:] == frame
    d = decapsulate("gre", buf)
    assert (d.key, d.offset) == (0xABCD, hlen)


def _with_checksum(frame: bytes = FRAME) -> bytes:
    return bytes(GRE(chksum_present=1, key_present=1, key=5, proto=0x6558) / Raw(frame))


def _flip(buf: bytes, index: int) -> bytes:
    return buf[:index] + bytes([buf[index] ^ 0x01]) + buf[index + 1:]


@pytest.mark.parametrize("index", [4, 5, 9, 12, 20, -1], ids=["csum-hi", "csum-lo", "key", "dst-mac", "payload", "last"])
def test_decode_rejects_bad_checksum(index):
    buf = _with_checksum()
    decode_gre(buf)  # the untouched packet verifies
    with pytest.raises(WireError) as e:
        decode_gre(_flip(buf, index % len(buf)))
    assert e.value.reason == "bad_checksum"


def _raw_gre(flags: int, proto: int = 0x6558, rest: bytes = b"\x00\x00\x00\x2a") -> bytes:
    return struct.pack("!HH", flags, proto) + rest + FRAME


# name -> (buffer, reason)
REJECTS = {
    "version-1": (bytes(GRE(key_present=1, key=1, proto=0x6558, version=1) / Raw(FRAME)), "bad_version"),
    "version-7": (_raw_gre(0x2007), "bad_version"),
    "proto-ipv4": (bytes(GRE(key_present=1, key=1, proto=0x0800) / Raw(FRAME)), "bad_protocol"),
    "proto-zero": (_raw_gre(0x2000, proto=0), "bad_protocol"),
    "no-key": (bytes(GRE(proto=0x6558) / Raw(FRAME)), "bad_flags"),
    "no-key-seq-only": (bytes(GRE(seqnum_present=1, sequence_number=1, proto=0x6558) / Raw(FRAME)), "bad_flags"),
    "routing": (_raw_gre(0x6000), "bad_flags"),
    "routing-scapy": (bytes(GRE(routing_present=1, key_present=1, key=1, proto=0x6558) / Raw(FRAME)), "bad_flags"),
    "empty": (b"", "malformed"),
    "3-bytes": (bytes(_gre(1))[:3], "malformed"),
    "no-room-for-key": (bytes(_gre(1))[:7], "malformed"),
    "c-no-room-for-key": (_with_checksum()[:11], "malformed"),
    "cks-no-room-for-seq": (bytes(GRE(chksum_present=1, seqnum_present=1, key_present=1, key=1,
                                      proto=0x6558))[:15], "malformed"),
}


@pytest.mark.parametrize("buf,reason", list(REJECTS.values()), ids=list(REJECTS))
def test_decode_rejects(buf, reason):
    with pytest.raises(WireError) as e:
        decode_gre(buf)
    assert e.value.reason == reason
    with pytest.raises(WireError) as e:
        decapsulate("gre-udp", buf)
    assert e.value.reason == reason


def test_header_only_is_accepted():
    assert decode_gre(encode_gre(3)).header_len == 8


# --- decapsulate("gre", ipv4_header=True): what an IPv4 raw socket hands us ---------------------

@pytest.mark.parametrize("key", KEYS)
def test_decapsulate_ipv4_raw_socket_form(key):
    pkt = _ours("gre", V4, key)
    d = decapsulate("gre", pkt, ipv4_header=True)
    assert (d.key, d.offset) == (key, 28)
    assert pkt[d.offset:] == FRAME


def test_decapsulate_ipv4_header_with_options_and_checksum():
    pkt = bytes(IP(src=V4[0], dst=V4[1], options=[IPOption_NOP()] * 4)
                / GRE(chksum_present=1, key_present=1, key=77, proto=0x6558) / Raw(FRAME))
    d = decapsulate("gre", pkt, ipv4_header=True)
    assert (d.key, d.offset) == (77, 24 + 12)
    assert pkt[d.offset:] == FRAME


@pytest.mark.parametrize("buf", [
    bytes(IP(src=V4[0], dst=V4[1], proto=17) / Raw(bytes(_gre(1)))),  # not GRE
    bytes(IP(src=V4[0], dst=V4[1]) / _gre(1))[:19],                    # IPv4 header truncated
    bytes(IPv6(src=V6[0], dst=V6[1]) / _gre(1)),                        # not IPv4
    b"\x44" + bytes(IP(src=V4[0], dst=V4[1]) / _gre(1))[1:],            # IHL 4 < 5
], ids=["udp", "short", "ipv6", "ihl-4"])
def test_decapsulate_ipv4_form_rejects_bad_ip(buf):
    with pytest.raises(WireError) as e:
        decapsulate("gre", buf, ipv4_header=True)
    assert e.value.reason == "malformed"


def test_decapsulate_ipv4_form_reports_gre_errors():
    pkt = bytes(IP(src=V4[0], dst=V4[1]) / GRE(key_present=1, key=1, proto=0x0800) / Raw(FRAME))
    with pytest.raises(WireError) as e:
        decapsulate("gre", pkt, ipv4_header=True)
    assert e.value.reason == "bad_protocol"


def test_ipv6_raw_socket_form_is_gre_alone():
    pkt = _ours("gre", V6, 42)
    gre = pkt[40:]  # IPv6 raw sockets do not return the IPv6 header
    d = decapsulate("gre", gre)
    assert d.key == 42 and gre[d.offset:] == FRAME
