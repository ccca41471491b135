"""Hostile bytes against the decoders and both fastpath backends: invariants, not examples.

Anyone who reaches the daemon's port can send it anything. For arbitrary datagrams (random
bytes, valid packets truncated, bit-flipped, with every GRE flag and version, keys of other
networks, spoofed IP-header sources, runt and jumbo inner frames), on both backends:
- the wire decoders return or raise `WireError` with a drop reason, nothing else;
- `decap` never raises, and delivers exactly what the oracle below allows: a frame only to the
  network whose VNI / key (or NVGRE VSID) is in the packet, only from a peer (unless
  allow_unknown_sources), only a whole Ethernet frame with a unicast source within the MTU,
  byte for byte the packet's tail; and whatever those rules accept, it delivers;
- every datagram fed moves exactly one counter among the drops and rx_packets;
- `encap` never raises, and every outer packet it builds is a well-formed IP packet from the
  network's local address to a peer or FDB remote that carries the frame, byte for byte,
  under the network's own VNI; every frame read is accounted for by the counters;
- the C batch functions, given each datagram in a buffer of exactly its size, read and write
  only inside it (run under AddressSanitizer by .ci/sanitize);
- the endpoint pump, on a real UDP socket (loopback, no root) with a datagram socketpair
  standing in for the TAP, writes exactly the frames the invariants allow.

The oracle below decodes packets straight from the RFCs (7348 sec. 5, 2784, 2890, 7637),
independently of vxlan_dp.wire and csrc/wire.c. VXDP_FUZZ_EXAMPLES=N runs N examples per
property instead of 300 (a longer campaign needs nothing else).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import c_backend
from vxlan_dp.core.counters import EP_DROP_REASONS
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.wire import (ENCAPS, WireError, decapsulate, decode_ethernet, decode_gre, decode_ipv4,
                           decode_vxlan, encode_ipv4, flow_hash, internet_checksum)

c_backend(module=True, elsewhere="run")      # elsewhere the Python backend alone is fuzzed
BACKENDS = backends()
BACKEND_NAMES = sorted(BACKENDS)

SETTINGS = settings(max_examples=int(os.environ.get("VXDP_FUZZ_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

LOCAL = {4: "198.18.0.1", 6: "2001:2::1"}
PEERS = {4: ["198.18.0.2", "198.18.0.3", "198.18.0.4"], 6: ["2001:2::2", "2001:2::3", "2001:2::4"]}
STRANGERS = {4: ["198.18.0.66", "198.19.255.1"], 6: ["2001:2::66", "2001:2:1::2"]}
VNIS = [0, 1, 42, 43, 0xABCD, 0xFFFFFF]
UNICAST = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 5)]
GROUP = [b"\xff" * 6, bytes.fromhex("01005e000001")]
MTUS = [68, 1450, 9000]
# What arrives may be up to a whole UDP datagram; the strategies stay below it for speed,
# and one explicit case per test goes to the limit.
JUMBO = 9000 + 14 + 1

NET_INGRESS_DROPS = ("drop_unknown_source", "drop_malformed", "drop_too_big")
# (encrypted endpoints' esp_* reasons: tests/unit/test_esp_fastpath.py has their generators)
EP_DROPS = tuple("drop_" + r for r in EP_DROP_REASONS
                 if r != "socket_error" and not r.startswith("esp_"))


# --- the oracle: decoding straight from the RFCs -------------------------------------------

def ones_sum_ok(data: bytes) -> bool:
    """RFC 1071: a buffer carrying its own checksum sums to 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@dataclass
class Parsed:
    key: int
    offset: int             # where the inner frame starts in the payload
    hdr_src: str | None     # the IPv4 header's source (raw GRE sockets), else None


def oracle(kind: str, ipv4_header: bool, p: bytes) -> Parsed | None:
    """What a receiver may accept at all; None: it must be dropped before any network."""
    if kind == "vxlan":                         # RFC 7348 sec. 5: I flag, VNI in bytes 4..6
        if len(p) < 8 or not p[0] & 0x08:
            return None
        return Parsed(int.from_bytes(p[4:7], "big"), 8, None)
    base, src = 0, None
    if ipv4_header:                             # raw(7): IPv4 sockets deliver the header
        if len(p) < 20 or p[0] >> 4 != 4:
            return None
        ihl = (p[0] & 0x0F) * 4
        if ihl < 20 or len(p) < ihl or p[9] != 47:
            return None
        base, src = ihl, socket.inet_ntoa(p[12:16])
    g = p[base:]
    if len(g) < 4:
        return None
    flags, proto = struct.unpack_from("!HH", g)
    # RFC 2784: version 0; routing (RFC 1701 R) refused; RFC 2890: K carries our VNI
    if flags & 0x0007 or flags & 0x4000 or not flags & 0x2000 or proto != 0x6558:
        return None
    off = 4 + (4 if flags & 0x8000 else 0)
    key_off = off
    off += 4 + (4 if flags & 0x1000 else 0)
    if len(g) < off:
        return None
    if flags & 0x8000 and not ones_sum_ok(g):  # RFC 2784 sec. 2.5: header + payload
        return None
    return Parsed(struct.unpack_from("!I", g, key_off)[0], base + off, src)


def max_frame(mtu: int, frame: bytes) -> int:
    vlan = len(frame) >= 16 and frame[12:14] == b"\x81\x00"
    return mtu + 14 + (4 if vlan else 0)


# --- strategies ------------------------------------------------------------------------------

@st.composite
def inner_frames(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["runt", "random", "eth", "eth", "vlan", "sized"]))
    if shape == "runt":                         # shorter than an Ethernet header
        return draw(st.binary(max_size=13))
    if shape == "random":
        return draw(st.binary(max_size=80))
    eth = draw(st.sampled_from(UNICAST + GROUP)) + draw(st.sampled_from(UNICAST * 3 + GROUP))
    if shape == "eth":
        return eth + draw(st.binary(max_size=64))
    size = draw(st.sampled_from([14, 15, 16, 17, 60]
                                + [m + 14 + d for m in MTUS for d in (-1, 0, 1, 4, 5)] + [JUMBO]))
    head = eth + (b"\x81\x00\x00\x64\x08\x00" if shape == "vlan" else b"\x08\x00")
    return (head + bytes(max(0, size - len(head))))[:size]


def _gre(flags: int, proto: int, key: int, frame: bytes, *, good_csum: bool) -> bytes:
    hdr = struct.pack("!HH", flags, proto)
    if flags & 0x8000:
        hdr += bytes(4)
    hdr += struct.pack("!I", key & 0xFFFFFFFF)
    if flags & 0x1000:
        hdr += struct.pack("!I", 7)
    pkt = bytearray(hdr + frame)
    if flags & 0x8000:
        c = internet_checksum(bytes(pkt))
        struct.pack_into("!H", pkt, 4, c if good_csum else c ^ 0x0101)
    return bytes(pkt)


@dataclass
class World:
    kind: str
    family: int
    ipv4_header: bool
    params: list[NetworkParams]
    peers: list[list[str]]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    kind = draw(st.sampled_from(ENCAPS))
    family = draw(st.sampled_from([4, 6]))
    ipv4_header = kind == "gre" and family == 4 and draw(st.booleans())
    params: list[NetworkParams] = []
    taken: set[tuple[int, bool]] = set()
    for _ in range(draw(st.integers(1, 3))):
        nvgre = kind != "vxlan" and draw(st.booleans())
        vni = draw(st.sampled_from(VNIS))
        if (vni, nvgre) in taken:
            continue
        taken.add((vni, nvgre))
        params.append(NetworkParams(
            vni=vni, encap=kind, local=LOCAL[family], port=draw(st.sampled_from([4789, 4754, 8472])),
            mtu=draw(st.sampled_from(MTUS)), learning=draw(st.booleans()),
            allow_unknown_sources=draw(st.integers(0, 3)) == 0, max_fdb_entries=draw(st.integers(1, 4)),
            nvgre=nvgre, strict=draw(st.booleans())))  # strict GRE networks too: it must not matter
    peers = [draw(st.lists(st.sampled_from(PEERS[family]), max_size=3, unique=True)) for _ in params]
    return World(kind, family, ipv4_header, params, peers)


@st.composite
def hostile(draw: st.DrawFn, w: World) -> tuple[str, bytes]:
    """(socket source address, payload as the endpoint's socket returns it)."""
    fam = w.family
    src = draw(st.sampled_from(PEERS[fam] + STRANGERS[fam]))
    frame = draw(inner_frames())
    p = draw(st.sampled_from(w.params))
    key = draw(st.sampled_from([p.vni, p.vni, (p.vni << 8) | draw(st.integers(0, 255)), p.vni + 1,
                                draw(st.sampled_from(VNIS)), draw(st.integers(0, 0xFFFFFFFF))]))
    if w.kind == "vxlan":
        flags = draw(st.sampled_from([0x08, 0x08, 0x08, 0x00, 0x0C, 0x88, 0xFF]))
        rsv = draw(st.sampled_from([b"\0\0\0", b"\0\0\0", b"\0\x01\0", b"\xff\xff\xff"]))
        tail = draw(st.sampled_from([0, 0, 0, 1, 0xFF]))
        payload = bytes([flags]) + rsv + (key & 0xFFFFFF).to_bytes(3, "big") + bytes([tail]) + frame
    else:
        flags = draw(st.sampled_from([0x2000] * 4 + [0xA000, 0x3000, 0xB000, 0x0000, 0x6000,
                                                     0x2001, 0x2007, 0x2100]))
        proto = draw(st.sampled_from([0x6558] * 4 + [0x0800, 0x88BE, 0x86DD]))
        payload = _gre(flags, proto, key, frame, good_csum=draw(st.integers(0, 3)) > 0)
        if w.ipv4_header:
            hsrc = draw(st.sampled_from([src] * 3 + PEERS[4] + STRANGERS[4]))  # spoofed or not
            ip = bytearray(encode_ipv4(socket.inet_aton(hsrc), socket.inet_aton(LOCAL[4]), 47,
                                       len(payload)))
            shape = draw(st.sampled_from(["ok"] * 4 + ["ihl", "version", "proto", "options"]))
            if shape == "ihl":
                ip[0] = 0x40 | draw(st.sampled_from([0, 4, 6, 15]))
            elif shape == "version":
                ip[0] = draw(st.sampled_from([0x65, 0x05, 0xF5]))
            elif shape == "proto":
                ip[9] = draw(st.sampled_from([4, 17, 41]))
            elif shape == "options":          # IHL 6: one word of options before the GRE header
                ip = bytearray([0x46]) + ip[1:] + b"\x01\x01\x01\x00"
            payload = bytes(ip) + payload
    mutation = draw(st.sampled_from(["none"] * 5 + ["truncate", "flip", "random", "append"]))
    if mutation == "truncate":
        payload = payload[:draw(st.integers(0, min(len(payload), 80)))]
    elif mutation == "flip" and payload:
        b = bytearray(payload)
        for _ in range(draw(st.integers(1, 3))):
            b[draw(st.integers(0, min(len(b), 64) - 1))] ^= 1 << draw(st.integers(0, 7))
        payload = bytes(b)
    elif mutation == "random":
        payload = draw(st.binary(max_size=120))
    elif mutation == "append":
        payload += draw(st.binary(min_size=1, max_size=16))
    return src, payload


def build(name: str, w: World, fd: int = -1, batch: int = 16):
    dp = BACKENDS[name](batch=batch)
    ep = dp.add_endpoint(w.kind, fd, ipv4_header=w.ipv4_header)
    nets = [dp.add_network(p, ep) for p in w.params]
    for net, peers in zip(nets, w.peers):
        dp.set_peers(net, peers)
    return dp, ep, nets


def totals(dp, ep, nets) -> dict[str, int]:
    """The counters ingress accounting rests on, summed over the endpoint and its networks."""
    ec = dp.endpoint_counters(ep)
    out = {"rx_datagrams": ec["rx_datagrams"], "ep_drops": sum(ec[k] for k in EP_DROPS),
           "net_drops": 0, "rx_packets": 0}
    for net in nets:
        c = dp.counters(net)
        out["net_drops"] += sum(c[k] for k in NET_INGRESS_DROPS)
        out["rx_packets"] += c["rx_packets"]
    return out


def expected_network(w: World, src: str, payload: bytes) -> tuple[int, int] | None:
    """(index into w.params, inner frame offset) where the rules deliver a datagram, or None."""
    parsed = oracle(w.kind, w.ipv4_header, payload)
    if parsed is None:
        return None
    # plain networks match the whole key first, NVGRE ones the VSID (RFC 7637 sec. 3.2)
    idx = next((i for i, q in enumerate(w.params) if not q.nvgre and q.vni == parsed.key), None)
    if idx is None:
        idx = next((i for i, q in enumerate(w.params) if q.nvgre and q.vni == parsed.key >> 8), None)
    if idx is None:
        return None
    p = w.params[idx]
    if p.strict and w.kind == "vxlan" and (payload[0] != 0x08 or payload[1:4] != b"\0\0\0" or payload[7]):
        return None                             # RFC 7348 sec. 5 reserved bits, strict only
    if not p.allow_unknown_sources and (parsed.hdr_src or src) not in w.peers[idx]:
        return None
    frame = payload[parsed.offset:]
    if len(frame) < 14 or frame[6] & 1 or len(frame) > max_frame(p.mtu, frame):
        return None                             # a runt, a group source, over the MTU
    return idx, parsed.offset


def check_delivery(w: World, nets: list[int], src: str, payload: bytes,
                   delivered: list[tuple[int, bytes]]) -> None:
    """One datagram is delivered exactly where the rules say, as the packet's tail, or nowhere."""
    want = expected_network(w, src, payload)
    expect = [] if want is None else [(nets[want[0]], payload[want[1]:])]
    assert delivered == expect, (f"{w.kind} from {src}: {payload[:32].hex()}: delivered to "
                                 f"{[nets.index(n) for n, _ in delivered]}, the rules say "
                                 f"{None if want is None else want[0]}")


# --- 1. the wire decoders on arbitrary bytes ------------------------------------------------

ANY_BYTES = st.one_of(st.binary(max_size=96), st.binary(min_size=0, max_size=8).map(lambda b: b * 40))


@SETTINGS
@given(ANY_BYTES, st.sampled_from(ENCAPS), st.booleans(), st.booleans())
def test_decoders_raise_only_wire_errors(data, kind, ipv4_header, strict):
    for fn in (lambda: decode_vxlan(data, strict), lambda: decode_gre(data), lambda: decode_ipv4(data),
               lambda: decode_ethernet(data),
               lambda: decapsulate(kind, data, ipv4_header=ipv4_header and kind == "gre")):
        try:
            r = fn()
        except WireError as e:
            assert e.reason in EP_DROP_REASONS, e.reason
            continue
        if hasattr(r, "offset"):
            assert 0 <= r.offset <= len(data)
        if hasattr(r, "header_len"):
            assert 4 <= r.header_len <= len(data)


@SETTINGS
@given(st.data())
def test_decapsulate_agrees_with_the_rfc_oracle(data):
    w = data.draw(worlds())
    _src, payload = data.draw(hostile(w))
    parsed = oracle(w.kind, w.ipv4_header, payload)
    try:
        d = decapsulate(w.kind, payload, ipv4_header=w.ipv4_header)
    except WireError:
        assert parsed is None, f"dropped a packet the RFCs accept: {payload[:24].hex()}"
        return
    assert parsed is not None and (d.key, d.offset) == (parsed.key, parsed.offset)


# --- 2. decap on both backends ---------------------------------------------------------------

@SETTINGS
@given(st.data())
def test_decap_delivers_only_what_the_invariants_allow(data):
    w = data.draw(worlds())
    batch = data.draw(st.lists(hostile(w), min_size=1, max_size=12))
    results = {}
    for name in BACKEND_NAMES:
        dp, ep, nets = build(name, w)
        one_by_one = []
        for i, (src, payload) in enumerate(batch):
            before = totals(dp, ep, nets)
            got = dp.decap(ep, [(src, payload)], float(i))
            after = totals(dp, ep, nets)
            check_delivery(w, nets, src, payload, got)
            moved = {k: after[k] - before[k] for k in after}
            # exactly one outcome per datagram: a drop (by reason) or a delivery
            assert moved["rx_datagrams"] == 1, moved
            assert moved["ep_drops"] + moved["net_drops"] + moved["rx_packets"] == 1, (name, moved)
            assert moved["rx_packets"] == len(got), (name, moved)
            one_by_one += got
        # a whole batch in one call gives the same deliveries as one call per datagram
        dp2, ep2, nets2 = build(name, w)
        whole = dp2.decap(ep2, batch, 0.0)
        assert [(nets2.index(n), f) for n, f in whole] == [(nets.index(n), f) for n, f in one_by_one]
        t = totals(dp2, ep2, nets2)
        assert t["rx_datagrams"] == len(batch) == t["ep_drops"] + t["net_drops"] + t["rx_packets"]
        results[name] = (whole, t)
    assert len({repr(r) for r in results.values()}) == 1, "the backends disagree"


def test_decap_of_maximal_and_empty_datagrams():
    """A 65535-byte datagram (the largest a read returns) and an empty one, on each backend."""
    inner = UNICAST[0] + UNICAST[1] + b"\x08\x00" + bytes(65535 - 8 - 14)
    for kind in ("vxlan", "gre-udp"):
        w = World(kind, 4, False, [NetworkParams(vni=42, encap=kind, local=LOCAL[4], mtu=65535)],
                  [[PEERS[4][0]]])
        hdr = struct.pack("!II", 0x08000000, 42 << 8) if kind == "vxlan" else struct.pack("!HHI", 0x2000, 0x6558, 42)
        for name in BACKEND_NAMES:
            dp, ep, nets = build(name, w)
            got = dp.decap(ep, [(PEERS[4][0], hdr + inner), (PEERS[4][0], b""), (PEERS[4][0], hdr)], 0.0)
            assert [len(f) for _, f in got] == [len(inner)]
            assert dp.endpoint_counters(ep)["drop_malformed"] == 1      # the empty datagram
            assert dp.counters(nets[0])["drop_malformed"] == 1          # the header alone
            assert dp.counters(nets[0])["drop_too_big"] == 0


# --- 3. encap on both backends ---------------------------------------------------------------

def parse_outer(pkt: bytes, family: int) -> tuple[str, str, int, bytes]:
    """(src, dst, IP protocol, IP payload) of an outer packet, checking its IP header."""
    if family == 4:
        assert pkt[0] == 0x45, "IPv4 without options"
        assert struct.unpack_from("!H", pkt, 2)[0] == len(pkt), "IPv4 total length"
        assert ones_sum_ok(pkt[:20]), "IPv4 header checksum"
        assert pkt[6] & 0x3F == 0 and pkt[7] == 0, "never a fragment"
        return socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20]), pkt[9], pkt[20:]
    assert pkt[0] >> 4 == 6
    assert struct.unpack_from("!H", pkt, 4)[0] == len(pkt) - 40, "IPv6 payload length"
    src, dst = (ipaddress.ip_address(pkt[a:a + 16]).compressed for a in (8, 24))
    return src, dst, pkt[6], pkt[40:]


def check_outer(p: NetworkParams, family: int, remote: str, pkt: bytes, frame: bytes) -> None:
    src, dst, proto, l4 = parse_outer(pkt, family)
    assert (src, dst) == (LOCAL[family], remote)
    if p.encap == "gre":
        assert proto == 47
        g = l4
    else:
        assert proto == 17
        sport, dport, ulen, csum = struct.unpack_from("!HHHH", l4)
        assert dport == p.port and p.sport_min <= sport <= p.sport_max and ulen == len(l4)
        if family == 6:                         # RFC 8200 sec. 8.1: mandatory, verifies
            pseudo = (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
                      + struct.pack("!IxxxB", len(l4), 17))
            assert csum and ones_sum_ok(pseudo + l4)
        g = l4[8:]
    if p.encap == "vxlan":
        assert g[:4] == b"\x08\0\0\0" and g[4:7] == p.vni.to_bytes(3, "big") and g[7] == 0
    else:
        flags, gproto, key = struct.unpack_from("!HHI", g)
        assert (flags, gproto) == (0x2000, 0x6558)
        assert (key >> 8 if p.nvgre else key) == p.vni
    assert g[8:] == frame, "the outer packet does not carry the frame byte for byte"


@SETTINGS
@given(st.data())
def test_encap_builds_only_well_formed_packets_to_peers(data):
    w = data.draw(worlds())
    frames = data.draw(st.lists(st.one_of(inner_frames(), st.binary(max_size=40)), min_size=1, max_size=10))
    statics = data.draw(st.lists(st.tuples(st.sampled_from(UNICAST), st.sampled_from(PEERS[w.family])),
                                 max_size=2))
    results = {}
    for name in BACKEND_NAMES:
        dp, ep, nets = build(name, w)
        net, p, peers = nets[0], w.params[0], w.peers[0]
        fdb = {}
        for mac, remote in statics:
            dp.fdb_add(net, ":".join(f"{x:02x}" for x in mac), remote)
            fdb[mac] = remote
        out_all = []
        for i, frame in enumerate(frames):
            before = dp.counters(net)
            out = dp.encap(net, [frame], float(i))
            c = {k: v - before[k] for k, v in dp.counters(net).items()}
            assert c["tap_rx_frames"] == 1 and c["tap_rx_bytes"] == len(frame)
            drops = c["drop_malformed"] + c["drop_too_big"] + c["drop_no_peers"]
            if len(frame) < 14:
                assert (out, c["drop_malformed"]) == ([], 1)
                continue
            if len(frame) > max_frame(p.mtu, frame):
                assert (out, c["drop_too_big"]) == ([], 1)
                continue
            unicast = not frame[0] & 1
            if unicast and frame[:6] in fdb:    # a known destination: one copy, to it
                assert [r for r, _ in out] == [fdb[frame[:6]]] and drops == 0
            else:                               # flood: one copy per peer, in order
                assert [r for r, _ in out] == peers
                assert (c["flood_frames"], c["flood_copies"], c["drop_no_peers"]) == \
                    ((1, len(peers), 0) if peers else (0, 0, 1))
            for remote, pkt in out:
                check_outer(p, w.family, remote, pkt, frame)
            out_all += out
        cc = dp.counters(net)
        # accounting over the whole run: frames read = dropped + sent once + flooded
        unicast_sent = len(out_all) - cc["flood_copies"]
        assert cc["tap_rx_frames"] == len(frames) == (cc["drop_malformed"] + cc["drop_too_big"]
                                                      + cc["drop_no_peers"] + unicast_sent + cc["flood_frames"])
        results[name] = out_all
    assert len({repr(r) for r in results.values()}) == 1, "the backends disagree"


# --- 4. the C batch functions, each datagram in a buffer of exactly its size ---------------
# Under .ci/sanitize (PYTHONMALLOC=malloc), an ffi.new array ends where its malloc block
# ends, so a read or write one byte past a datagram or frame hits ASan's redzone.

if "c" in BACKENDS:
    from vxlan_dp.fastpath._c import _fill_addr, _parse, ffi, lib


def _exact(data: bytes, headroom: int = 0):
    buf = ffi.new("uint8_t[]", headroom + len(data))
    ffi.memmove(buf + headroom, data, len(data))
    return buf


needs_c = pytest.mark.skipif("c" not in BACKENDS, reason="C fast path not built")


@needs_c
@SETTINGS
@given(st.data())
def test_c_decap_stays_inside_each_datagram(data):
    w = data.draw(worlds())
    dp, ep, nets = build("c", w)
    for src, payload in data.draw(st.lists(hostile(w), min_size=1, max_size=6)):
        buf = _exact(payload)
        offs, lens = ffi.new("size_t[1]", [0]), ffi.new("uint32_t[1]", [len(payload)])
        srcs = ffi.new("struct vxdp_addr[1]")
        fam, packed, _ = _parse(src)
        _fill_addr(srcs[0], fam, packed)
        oi, on, oo = ffi.new("int32_t[1]"), ffi.new("int32_t[1]"), ffi.new("uint32_t[1]")
        ol = ffi.new("uint32_t[1]")
        got = lib.vxdp_decap(dp._dp, ep, buf, len(payload), offs, lens, srcs, 1, 0.0, oi, on, oo, ol)
        assert got in (0, 1)
        if got:
            assert oo[0] <= len(payload) and oo[0] + ol[0] <= len(payload)


@needs_c
@SETTINGS
@given(st.data())
def test_c_encap_stays_inside_each_frame_and_its_output(data):
    w = data.draw(worlds())
    dp, ep, nets = build("c", w)
    peers = max(1, len(w.peers[0]))
    for frame in data.draw(st.lists(st.one_of(inner_frames(), st.binary(max_size=40)), min_size=1, max_size=6)):
        head = lib.VXDP_HEADROOM
        buf = _exact(frame, head)
        offs, lens = ffi.new("size_t[1]", [head]), ffi.new("uint32_t[1]", [len(frame)])
        cap = peers * (lib.VXDP_HDR_MAX + len(frame))
        out = ffi.new("uint8_t[]", cap)
        out_lens = ffi.new("uint32_t[]", peers)
        got = lib.vxdp_encap(dp._dp, nets[0], buf, head + len(frame), offs, lens, 1, 0.0, out, cap,
                             out_lens, peers)
        assert 0 <= got <= peers
        assert sum(out_lens[i] for i in range(got)) <= cap
        # and a buffer too small for the copies is refused, never overrun
        if got:
            small = ffi.new("uint8_t[]", out_lens[0] - 1)
            assert lib.vxdp_encap(dp._dp, nets[0], buf, head + len(frame), offs, lens, 1, 0.0, small,
                                  out_lens[0] - 1, out_lens, peers) == -errno.ENOBUFS


@needs_c
@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=1, max_size=5),
       st.integers(0, 256))
def test_c_batch_calls_refuse_spans_outside_the_buffer(spans, buflen):
    """Offsets and lengths come from Python: any span outside the buffer is -EINVAL, untouched."""
    w = World("vxlan", 4, False, [NetworkParams(vni=42, encap="vxlan", local=LOCAL[4])], [[PEERS[4][0]]])
    dp, ep, nets = build("c", w)
    n = len(spans)
    buf = ffi.new("uint8_t[]", buflen)
    offs = ffi.new("size_t[]", [o for o, _ in spans])
    lens = ffi.new("uint32_t[]", [ln for _, ln in spans])
    srcs = ffi.new("struct vxdp_addr[]", n)
    oi, on, oo = ffi.new("int32_t[]", n), ffi.new("int32_t[]", n), ffi.new("uint32_t[]", n)
    ol = ffi.new("uint32_t[]", n)
    inside = all(o <= buflen and ln <= buflen - o for o, ln in spans)
    r = lib.vxdp_decap(dp._dp, ep, buf, buflen, offs, lens, srcs, n, 0.0, oi, on, oo, ol)
    assert (r >= 0) if inside else (r == -errno.EINVAL)
    out = ffi.new("uint8_t[]", 4096)
    out_lens = ffi.new("uint32_t[]", n)
    r = lib.vxdp_encap(dp._dp, nets[0], buf, buflen, offs, lens, n, 0.0, out, 4096, out_lens, n)
    inside = inside and all(o >= lib.VXDP_HEADROOM for o, _ in spans)
    assert (r >= 0 or r == -errno.ENOBUFS) if inside else (r == -errno.EINVAL)


@needs_c
@SETTINGS
@given(st.one_of(inner_frames(), st.binary(max_size=120)))
def test_c_flow_hash_and_checksum_stay_inside_the_frame(frame):
    buf = _exact(frame)
    assert lib.vxdp_flow_hash(buf, len(frame)) == flow_hash(frame)
    assert lib.vxdp_checksum(buf, len(frame)) == internet_checksum(frame)


# --- 5. the endpoint pump on a real socket --------------------------------------------------

def _udp(addr: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    return s


def _loopback_world(draw: st.DrawFn) -> World:
    """A vxlan / gre-udp endpoint on 127.0.0.1 whose peer is 127.0.0.2; 127.0.0.3 is not one."""
    kind = draw(st.sampled_from(["vxlan", "gre-udp"]))
    params, taken = [], set()
    for _ in range(draw(st.integers(1, 3))):
        nvgre = kind != "vxlan" and draw(st.booleans())
        vni = draw(st.sampled_from(VNIS))
        if (vni, nvgre) not in taken:
            taken.add((vni, nvgre))
            params.append(NetworkParams(vni=vni, encap=kind, local="127.0.0.1", mtu=draw(st.sampled_from(MTUS)),
                                        allow_unknown_sources=draw(st.integers(0, 3)) == 0, nvgre=nvgre))
    return World(kind, 4, False, params, [["127.0.0.2"] for _ in params])


@pytest.mark.parametrize("name", BACKEND_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_pump_endpoint_on_a_real_socket_writes_only_allowed_frames(name, data):
    w = _loopback_world(data.draw)
    wl = World(w.kind, 4, False, w.params, [[PEERS[4][0]] for _ in w.params])  # strategy's view
    sent = data.draw(st.lists(hostile(wl), min_size=1, max_size=8))
    # the strategy speaks lab addresses: the peer becomes 127.0.0.2, a stranger 127.0.0.3
    sent = [("127.0.0.2" if src == PEERS[4][0] else "127.0.0.3", p) for src, p in sent]
    rx = _udp("127.0.0.1")
    rx.setblocking(False)
    senders = {a: _udp(a) for a in ("127.0.0.2", "127.0.0.3")}
    taps = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in w.params]
    try:
        for ours, _ in taps:
            ours.setblocking(False)
        dp = BACKENDS[name](batch=8)
        ep = dp.add_endpoint(w.kind, rx.fileno())
        nets = [dp.add_network(p, ep, ours.fileno()) for p, (ours, _) in zip(w.params, taps)]
        for net in nets:
            dp.set_peers(net, ["127.0.0.2"])
        for src, payload in sent:
            senders[src].sendto(payload, rx.getsockname())
        deadline = time.monotonic() + 5
        while dp.endpoint_counters(ep)["rx_datagrams"] < len(sent) and time.monotonic() < deadline:
            assert dp.pump_endpoint(ep, 0.0) >= 0
        ec = dp.endpoint_counters(ep)
        assert ec["rx_datagrams"] == len(sent)
        written: list[tuple[int, bytes]] = []
        for i, (_ours, theirs) in enumerate(taps):
            theirs.setblocking(False)
            while True:
                try:
                    written.append((i, theirs.recv(70000)))
                except BlockingIOError:
                    break
        # what reached each "TAP" is exactly what one-datagram-at-a-time decap allows
        expect = []
        ref, rep, rnets = build(name, w)
        for src, payload in sent:
            got = ref.decap(rep, [(src, payload)], 0.0)
            check_delivery(w, rnets, src, payload, got)
            expect += [(rnets.index(n), f) for n, f in got]
        # per TAP, in arrival order (the TAPs are read one after the other)
        assert written == sorted(expect, key=lambda x: x[0])
        tap_tx = sum(dp.counters(n)["tap_tx_frames"] for n in nets)
        t = totals(dp, ep, nets)
        assert tap_tx == len(written) == t["rx_packets"]
        assert t["ep_drops"] + t["net_drops"] + t["rx_packets"] == len(sent)
        assert ec["drop_socket_error"] == 0
    finally:
        rx.close()
        for s in senders.values():
            s.close()
        for a, b in taps:
            a.close()
            b.close()


# --- 6. a divergence this fuzzing found ------------------------------------------------------

@pytest.mark.skipif("c" not in BACKENDS, reason="C fast path not built")
@pytest.mark.parametrize("kind", ["gre", "gre-udp"])
def test_strict_on_a_gre_network_means_the_same_on_both_backends(kind):
    """`strict` (RFC 7348 sec. 5 reserved bits) is a VXLAN option the config also accepts for
    GRE networks; _pure once applied the VXLAN check to GRE headers and dropped every packet."""
    w = World(kind, 4, False, [NetworkParams(vni=42, encap=kind, local=LOCAL[4], strict=True)],
              [[PEERS[4][0]]])
    pkt = struct.pack("!HHI", 0x2000, 0x6558, 42) + UNICAST[0] + UNICAST[1] + b"\x08\x00" + bytes(46)
    got = {}
    for name in BACKEND_NAMES:
        dp, ep, nets = build(name, w)
        got[name] = (dp.decap(ep, [(PEERS[4][0], pkt)], 0.0), dp.endpoint_counters(ep))
        assert len(got[name][0]) == 1, (name, got[name][1])
    assert got["c"] == got["python"]


def test_strategies_reach_every_ingress_outcome():
    """Guards the generator: invariants over paths never taken prove nothing."""
    seen: dict[str, int] = {}

    # 1000, not 400: Hypothesis draws on constants it finds in loaded modules, so a derandomized
    # run still differs with what else the process imported; some outcomes need the margin
    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data):
        w = data.draw(worlds())
        dp, ep, nets = build("python", w)
        dp.decap(ep, data.draw(st.lists(hostile(w), min_size=1, max_size=12)), 0.0)
        for k, v in dp.endpoint_counters(ep).items():
            seen["ep." + k] = seen.get("ep." + k, 0) + v
        for net in nets:
            for k, v in dp.counters(net).items():
                seen[k] = seen.get(k, 0) + v

    run()
    want = ["ep." + k for k in EP_DROPS] + list(NET_INGRESS_DROPS) + ["rx_packets", "fdb_learned"]
    assert [k for k in want if not seen.get(k)] == [], seen
