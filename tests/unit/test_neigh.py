"""ARP / ND suppression: the codec against Scapy, the step in both backends, and C == Python.

- Codec (vxlan_dp/wire/neigh.py): Scapy-built requests parse as expected; our ARP reply and
  NA are byte for byte what Scapy builds for the same fields (Scapy computes the checksum);
  what must never be answered (gratuitous ARP, probes, DAD, hop limit != 255, bad checksum,
  zero-length options) is not.
- The step, on each backend, with a datagram socketpair standing in for the TAP: a known
  address is answered on the TAP and not sent to the underlay; an unknown one floods;
  snooping learns, follows moves, ages out and is bounded.
- hypothesis: random tables, modes and frames give identical outer packets, identical
  answers written to the TAP, identical counters and identical table dumps in C and Python.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
                                IPv6)
from scapy.layers.l2 import ARP, Ether

from helpers import c_backend
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.wire import neigh as wn

REQ_MAC, OWNER_MAC, NEW_MAC = "02:00:00:00:00:01", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
REQ_IP, OWNER_IP = "192.168.0.1", "192.168.0.11"
REQ_IP6, OWNER_IP6 = "fd00::1", "fd00::b"
PEERS = ["198.18.0.2", "198.18.0.3"]


def arp_request(tpa: str = OWNER_IP, *, psrc: str = REQ_IP, hwsrc: str = REQ_MAC,
                dst: str = "ff:ff:ff:ff:ff:ff", op: int = 1) -> bytes:
    return bytes(Ether(dst=dst, src=hwsrc) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=tpa))


def ns(target: str = OWNER_IP6, *, src: str = REQ_IP6, mac: str = REQ_MAC, hlim: int = 255,
       opt: bool = True) -> bytes:
    t = bytes.fromhex("ff0200000000000000000001ff") + socket.inet_pton(socket.AF_INET6, target)[13:]
    dst = socket.inet_ntop(socket.AF_INET6, t)
    pkt = Ether(dst="33:33:" + ":".join(f"{b:02x}" for b in t[12:]), src=mac) \
        / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if opt:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=mac)
    return bytes(pkt)


def na(target: str, mac: str, *, src_mac: str | None = None) -> bytes:
    return bytes(Ether(dst="33:33:00:00:00:01", src=src_mac or mac) / IPv6(src=target, dst="ff02::1", hlim=255)
                 / ICMPv6ND_NA(tgt=target, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))


# --- the codec ------------------------------------------------------------------------------
def test_arp_reply_is_what_scapy_builds() -> None:
    m = wn.parse(arp_request())
    assert m is not None and m.kind == wn.ARP_REQUEST and wn.is_request(arp_request(), m)
    reply = wn.arp_reply(m, bytes.fromhex(OWNER_MAC.replace(":", "")))
    want = Ether(dst=REQ_MAC, src=OWNER_MAC) / ARP(op=2, hwsrc=OWNER_MAC, psrc=OWNER_IP, hwdst=REQ_MAC,
                                                   pdst=REQ_IP)
    assert reply == bytes(want)


def test_na_is_what_scapy_builds_with_a_valid_checksum() -> None:
    frame = ns()
    m = wn.parse(frame)
    assert m is not None and m.kind == wn.ND_NS and wn.is_request(frame, m)
    reply = wn.neighbor_advert(m, bytes.fromhex(OWNER_MAC.replace(":", "")))
    want = (Ether(dst=REQ_MAC, src=OWNER_MAC) / IPv6(src=OWNER_IP6, dst=REQ_IP6, hlim=255)
            / ICMPv6ND_NA(tgt=OWNER_IP6, R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=OWNER_MAC))
    assert reply == bytes(want)
    parsed = Ether(reply)
    cks = parsed[ICMPv6ND_NA].cksum
    del parsed[ICMPv6ND_NA].cksum
    assert Ether(bytes(parsed))[ICMPv6ND_NA].cksum == cks      # Scapy recomputes the same
    assert wn.parse(reply) is not None                          # and our parser validates it


@pytest.mark.parametrize("frame, why", [
    (arp_request(OWNER_IP, psrc=OWNER_IP), "gratuitous ARP"),
    (arp_request(OWNER_IP, psrc="0.0.0.0"), "ARP probe (RFC 5227)"),
    (arp_request(dst=OWNER_MAC), "unicast request: forwarded as it is"),
    (arp_request(op=2), "a reply"),
    (ns(src="::", opt=False), "DAD"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_never_answered(frame: bytes, why: str) -> None:
    m = wn.parse(frame)
    assert m is not None
    assert not wn.is_request(frame, m), why


@pytest.mark.parametrize("frame", [
    ns(hlim=64),                                            # forwarded by a router: invalid
    ns()[:-1] + bytes([ns()[-1] ^ 1]),                      # checksum no longer verifies
    ns()[:70] + b"\xff" + ns()[71:],                        # ... any byte changed
    arp_request()[:20] + b"\x00\x03" + arp_request()[22:],  # ARP op 3
    arp_request()[:41],                                     # short
    bytes(Ether(dst="33:33:ff:00:00:0b", src=REQ_MAC) / IPv6(src=REQ_IP6, dst="ff02::1:ff00:b", hlim=255)
          / ICMPv6ND_NS(tgt=OWNER_IP6) / (b"\x01\x00" + bytes(6))),  # zero-length option
], ids=["hlim", "csum-tail", "csum-mid", "arp-op", "arp-short", "zero-option"])
def test_invalid_messages_are_not_parsed(frame: bytes) -> None:
    if frame.endswith(b"\x01\x00" + bytes(6)):      # give it a right checksum first
        p = Ether(frame)
        del p[ICMPv6ND_NS].cksum
        frame = bytes(p)
    assert wn.parse(frame) is None


def test_announcements() -> None:
    m = wn.parse(arp_request(op=2))
    assert m is not None and wn.announcement(m) == (socket.inet_aton(REQ_IP), bytes.fromhex("020000000001"))
    m = wn.parse(arp_request(OWNER_IP, psrc=OWNER_IP, hwsrc=OWNER_MAC))
    assert m is not None and wn.announcement(m) == (socket.inet_aton(OWNER_IP), bytes.fromhex("02000000000b"))
    m = wn.parse(arp_request())
    assert m is not None and wn.announcement(m) is None     # a plain request teaches nothing
    m = wn.parse(na(OWNER_IP6, OWNER_MAC))
    assert m is not None and wn.announcement(m) == (socket.inet_pton(socket.AF_INET6, OWNER_IP6),
                                                    bytes.fromhex("02000000000b"))


# --- the step, on each backend --------------------------------------------------------------
@pytest.fixture(params=sorted(backends()))
def world(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    dp = backends()[request.param]()
    tap, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.setblocking(False)
    ep = dp.add_endpoint("vxlan", -1)
    net = dp.add_network(NetworkParams(vni=7, encap="vxlan", local="198.18.0.1", ageing=30.0), ep, tap.fileno())
    dp.set_peers(net, PEERS)
    yield dp, net, peer
    tap.close()
    peer.close()


def written(peer: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(peer.recv(65535))
        except BlockingIOError:
            return out


def test_known_address_answered_not_flooded(world) -> None:  # type: ignore[no-untyped-def]
    dp, net, peer = world
    dp.neigh_set(net, OWNER_IP, OWNER_MAC)
    dp.neigh_set(net, OWNER_IP6, OWNER_MAC)
    dp.neigh_mode(net, suppress=True)
    assert dp.encap(net, [arp_request(), ns()], 1.0) == []
    replies = written(peer)
    assert [Ether(r).haslayer(ARP) for r in replies] == [True, False]
    assert Ether(replies[0])[ARP].hwsrc == OWNER_MAC and Ether(replies[0])[ARP].op == 2
    assert Ether(replies[1])[ICMPv6ND_NA].tgt == OWNER_IP6
    c = dp.neigh_counters(net)
    assert (c["arp_suppressed"], c["nd_suppressed"], c["replies_sent"]) == (1, 1, 2)
    assert dp.counters(net)["flood_frames"] == 0 and dp.counters(net)["tap_rx_frames"] == 2


def test_unknown_gratuitous_dad_and_off_all_flood(world) -> None:  # type: ignore[no-untyped-def]
    dp, net, peer = world
    dp.neigh_set(net, OWNER_IP, OWNER_MAC)
    dp.neigh_mode(net, suppress=True)
    frames = [arp_request("192.168.0.99"), arp_request(OWNER_IP, psrc=OWNER_IP), ns(src="::", opt=False),
              ns("fd00::99")]
    out = dp.encap(net, frames, 1.0)
    assert len(out) == len(frames) * len(PEERS)
    assert dp.neigh_counters(net)["unknown_flooded"] == 2
    dp.neigh_mode(net, suppress=False)
    assert len(dp.encap(net, [arp_request()], 2.0)) == len(PEERS)   # off: the known one floods too
    assert written(peer) == []


def test_move_updates_the_answer(world) -> None:  # type: ignore[no-untyped-def]
    dp, net, peer = world
    dp.neigh_mode(net, suppress=True)
    dp.neigh_set(net, OWNER_IP, OWNER_MAC)
    assert Ether(dp.neigh_answer(net, arp_request()))[ARP].hwsrc == OWNER_MAC
    dp.neigh_set(net, OWNER_IP, NEW_MAC)
    dp.encap(net, [arp_request()], 1.0)
    assert Ether(written(peer)[0])[ARP].hwsrc == NEW_MAC
    assert dp.neigh_remove(net, OWNER_IP) and not dp.neigh_remove(net, OWNER_IP)
    assert len(dp.encap(net, [arp_request()], 2.0)) == len(PEERS)


def test_snooping_learns_moves_ages_and_is_bounded(world) -> None:  # type: ignore[no-untyped-def]
    dp, net, peer = world
    dp.neigh_mode(net, suppress=True, snoop=True, max_learned=2)
    dp.encap(net, [arp_request(OWNER_IP, psrc=OWNER_IP, hwsrc=OWNER_MAC), na(OWNER_IP6, OWNER_MAC)], 1.0)
    assert [(r.ip, r.mac, r.static) for r in dp.neigh_dump(net, 1.0)] == \
        [(OWNER_IP, OWNER_MAC, False), (OWNER_IP6, OWNER_MAC, False)]
    dp.encap(net, [arp_request("192.168.0.1", psrc="192.168.0.12", hwsrc=NEW_MAC, op=2)], 2.0)
    assert dp.neigh_counters(net)["snoop_full"] == 1
    dp.encap(net, [arp_request(REQ_IP, psrc=OWNER_IP, hwsrc=NEW_MAC, op=2)], 10.0)   # moved
    assert Ether(dp.neigh_answer(net, arp_request(psrc="192.168.0.5")))[ARP].hwsrc == NEW_MAC
    assert dp.neigh_counters(net)["snooped"] == 3
    dp.neigh_set(net, OWNER_IP6, "02:00:00:00:00:77")      # a static is never overwritten
    dp.encap(net, [na(OWNER_IP6, OWNER_MAC)], 11.0)
    assert dp.neigh_dump(net, 11.0)[1].mac == "02:00:00:00:00:77"
    dp.age(35.0)                                           # the learned v4 one: 25 s old, kept
    assert dp.neigh_size(net) == 2
    dp.age(40.0)
    assert [r.ip for r in dp.neigh_dump(net, 40.0)] == [OWNER_IP6]
    assert dp.neigh_counters(net)["aged"] == 1


def test_bad_entries_fail_with_the_reason(world) -> None:  # type: ignore[no-untyped-def]
    dp, net, _ = world
    for ip, mac, what in [("224.0.0.1", OWNER_MAC, "not a unicast"), ("0.0.0.0", OWNER_MAC, "not a unicast"),
                          (OWNER_IP, "01:00:5e:00:00:01", "group address"), ("nope", OWNER_MAC, "nope"),
                          (OWNER_IP, "zz", "not a MAC")]:
        with pytest.raises(ValueError, match=what):
            dp.neigh_set(net, ip, mac)
    with pytest.raises(ValueError, match="max_learned"):
        dp.neigh_mode(net, suppress=True, max_learned=-1)
    with pytest.raises(KeyError):
        dp.neigh_set(99, OWNER_IP, OWNER_MAC)


def test_vnet_tap_answer_has_a_virtio_header(world) -> None:  # type: ignore[no-untyped-def]
    dp, net, peer = world
    tap2, peer2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        dp.set_tap(net, tap2.fileno(), vnet_hdr=True)
        dp.neigh_set(net, OWNER_IP, OWNER_MAC)
        dp.neigh_mode(net, suppress=True)
        dp.encap(net, [bytes(10) + arp_request()], 1.0, vnet_hdr=True)
        got = peer2.recv(100)
        assert got[:10] == bytes(10) and Ether(got[10:])[ARP].op == 2
    finally:
        tap2.close()
        peer2.close()


# --- C == Python ------------------------------------------------------------------------------
CDataplane = backends().get("c")
IPS4 = ["192.168.0.1", "192.168.0.2", "192.168.0.3", "0.0.0.0"]
IPS6 = ["fd00::1", "fd00::2", "fe80::3", "::"]
MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"]


@st.composite
def neigh_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["arp", "ns", "na", "other"]))
    mac = draw(st.sampled_from(MACS))
    if kind == "arp":
        f = arp_request(draw(st.sampled_from(IPS4)), psrc=draw(st.sampled_from(IPS4)), hwsrc=mac,
                        op=draw(st.sampled_from([1, 1, 2])),
                        dst=draw(st.sampled_from(["ff:ff:ff:ff:ff:ff", MACS[0]])))
    elif kind == "ns":
        f = ns(draw(st.sampled_from(IPS6[:3])), src=draw(st.sampled_from(IPS6)), mac=mac,
               hlim=draw(st.sampled_from([255, 255, 1])), opt=draw(st.booleans()))
    elif kind == "na":
        f = na(draw(st.sampled_from(IPS6[:3])), mac)
    else:
        f = bytes.fromhex("ffffffffffff") + bytes.fromhex(mac.replace(":", "")) + b"\x08\x00" + bytes(30)
    cut = draw(st.sampled_from([None, None, None, 41, 60, 77]))
    f = f if cut is None else f[:cut]
    if draw(st.integers(0, 9)) == 0 and f:                  # one byte flipped now and then
        i = draw(st.integers(0, len(f) - 1))
        f = f[:i] + bytes([f[i] ^ draw(st.integers(1, 255))]) + f[i + 1:]
    return f


ops = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(IPS4[:3] + IPS6[:3]), st.sampled_from(MACS)),
    st.tuples(st.just("remove"), st.sampled_from(IPS4[:3] + IPS6[:3]), st.none()),
    st.tuples(st.just("mode"), st.booleans(), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("frames"), st.lists(neigh_frames(), min_size=1, max_size=6)),
    st.tuples(st.just("age"), st.floats(0, 40)),
), max_size=25)


def test_c_equals_python() -> None:
    c_backend()
    _c_equals_python()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def _c_equals_python(steps: list[tuple]) -> None:  # type: ignore[type-arg]  # hypothesis draws mixed tuples
    assert CDataplane is not None
    sides = []
    for cls in (backends()["python"], CDataplane):
        dp = cls()
        tap, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.setblocking(False)
        ep = dp.add_endpoint("vxlan", -1)
        net = dp.add_network(NetworkParams(vni=7, encap="vxlan", local="198.18.0.1", ageing=20.0), ep,
                             tap.fileno())
        dp.set_peers(net, PEERS)
        sides.append((dp, net, tap, peer))
    now = 0.0
    try:
        for step in steps:
            results = []
            for dp, net, _tap, peer in sides:
                if step[0] == "set":
                    dp.neigh_set(net, step[1], step[2])
                    r: object = None
                elif step[0] == "remove":
                    r = dp.neigh_remove(net, step[1])
                elif step[0] == "mode":
                    r = dp.neigh_mode(net, suppress=step[1], snoop=step[2], max_learned=step[3])
                elif step[0] == "frames":
                    r = (dp.encap(net, step[1], now), written(peer),
                         [dp.neigh_answer(net, f) for f in step[1]])
                else:
                    r = dp.age(now + step[1])
                results.append((r, dp.neigh_counters(net), dp.counters(net), dp.neigh_dump(net, now + 1)))
            if step[0] == "age":
                now += step[1]
            assert results[0] == results[1], step
    finally:
        for _dp, _net, tap, peer in sides:
            tap.close()
            peer.close()


def test_struct_sizes_match_the_wire() -> None:
    assert len(arp_request()) == wn.ARP_LEN
    assert struct.calcsize("!BBHB3x16sBB6s") == 32
