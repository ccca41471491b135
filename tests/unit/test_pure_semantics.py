"""The fastpath API's semantics, driven through every built backend without I/O.

`encap` (frames from the TAP -> outer packets) and `decap` (received payloads -> frames for the
TAP) carry every forwarding decision; the pumps only add the fds. Each test states what a
user would check: where the packets went, the frame that came out, or the counter that moved
(api.py lists the order of checks and the counter for each drop).
"""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN

from helpers import eth_frame, vxlan_payload
from vxlan_dp.core import EP_COUNTERS, NET_COUNTERS
from vxlan_dp.fastpath import NetworkParams, PureDataplane, backends
from vxlan_dp.wire import encode_gre, encode_vxlan

Dataplane: type = PureDataplane


@pytest.fixture(autouse=True, params=sorted(backends()))
def _each_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test here on the Python reference and on the C backend when it is built."""
    monkeypatch.setitem(globals(), "Dataplane", backends()[request.param])

A, B, C, D = "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"
A6, B6, C6 = "2001:db8::1", "2001:db8::2", "2001:db8::3"
STRANGER = "203.0.113.66"
MAC_A = "02:42:c0:a8:00:0a"
MAC_B = "02:42:c0:a8:00:0b"
MAC_X = "02:42:c0:a8:00:99"
BROADCAST = "ff:ff:ff:ff:ff:ff"
VNI = 42
NOW = 1000.0


def frame(dst: str = MAC_B, src: str = MAC_A, size: int = 64, vlan: bool = False) -> bytes:
    """An Ethernet frame of exactly `size` bytes (IPv4 ethertype, or 802.1Q-tagged IPv4)."""
    return eth_frame(dst, src, size, vlan=vlan)


def make(kind: str = "vxlan", local: str = A, peers=(B, C, D), *, ipv4_header: bool = False,
         vni: int = VNI, **params):
    dp = Dataplane()
    ep = dp.add_endpoint(kind, -1, ipv4_header=ipv4_header)
    net = dp.add_network(NetworkParams(vni=vni, encap=kind, local=local, **params), ep)
    dp.set_peers(net, list(peers))
    return dp, ep, net


def outer_vni(pkt: bytes) -> int:
    p = IPv6(pkt) if pkt[0] >> 4 == 6 else IP(pkt)
    return p[VXLAN].vni


# --- egress: where frames go ----------------------------------------------------------------

def test_known_unicast_goes_to_one_remote():
    dp, _, net = make()
    dp.fdb_add(net, MAC_B, C)
    out = dp.encap(net, [frame(MAC_B)], NOW)
    assert [r for r, _ in out] == [C]
    pkt = IP(out[0][1])
    assert (pkt.src, pkt.dst) == (A, C)
    assert pkt[VXLAN].vni == VNI and bytes(pkt[VXLAN].payload) == frame(MAC_B)
    c = dp.counters(net)
    assert (c["tap_rx_frames"], c["tap_rx_bytes"], c["flood_frames"], c["flood_copies"]) == (1, 64, 0, 0)


@pytest.mark.parametrize("dst", [BROADCAST, "01:00:5e:00:00:fb", "33:33:00:00:00:01", MAC_X],
                         ids=["broadcast", "ipv4-multicast", "ipv6-multicast", "unknown-unicast"])
def test_flood_to_every_peer_in_order(dst):
    dp, _, net = make(peers=(D, B, C))
    f = frame(dst)
    out = dp.encap(net, [f], NOW)
    assert [r for r, _ in out] == [D, B, C]
    for remote, pkt in out:
        p = IP(pkt)
        assert p.dst == remote and p[VXLAN].vni == VNI and bytes(p[VXLAN].payload) == f
    c = dp.counters(net)
    assert (c["flood_frames"], c["flood_copies"]) == (1, 3)


def test_flood_counters_accumulate_over_a_batch():
    dp, _, net = make(peers=(B, C))
    dp.fdb_add(net, MAC_B, B)
    frames = [frame(BROADCAST), frame(MAC_B), frame(MAC_X), frame("01:00:5e:00:00:01")]
    out = dp.encap(net, frames, NOW)
    assert [r for r, _ in out] == [B, C, B, B, C, B, C]
    c = dp.counters(net)
    assert (c["tap_rx_frames"], c["flood_frames"], c["flood_copies"]) == (4, 3, 6)


def test_group_destination_floods_even_with_an_fdb_entry():
    dp, _, net = make(peers=(B, C))
    dp.fdb_add(net, "01:00:5e:00:00:fb", C)
    assert [r for r, _ in dp.encap(net, [frame("01:00:5e:00:00:fb")], NOW)] == [B, C]


@pytest.mark.parametrize("dst", [BROADCAST, MAC_X])
def test_no_peers_drops(dst):
    dp, _, net = make(peers=())
    assert dp.encap(net, [frame(dst)], NOW) == []
    c = dp.counters(net)
    assert (c["drop_no_peers"], c["flood_frames"], c["flood_copies"]) == (1, 0, 0)


def test_known_unicast_needs_no_peers():
    dp, _, net = make(peers=())
    dp.fdb_add(net, MAC_B, B)
    assert [r for r, _ in dp.encap(net, [frame(MAC_B)], NOW)] == [B]
    assert dp.counters(net)["drop_no_peers"] == 0


@pytest.mark.parametrize("mtu,size,vlan,sent", [
    (1450, 1464, False, True), (1450, 1465, False, False),
    (1450, 1468, True, True), (1450, 1469, True, False),
    (1500, 1514, False, True), (1500, 1515, False, False),
    (1500, 1518, True, True), (1500, 1519, True, False),
    (1450, 1468, False, False),  # the VLAN allowance is only for tagged frames
])
def test_egress_too_big(mtu, size, vlan, sent):
    dp, _, net = make(peers=(B,), mtu=mtu)
    out = dp.encap(net, [frame(BROADCAST, size=size, vlan=vlan)], NOW)
    assert len(out) == (1 if sent else 0)
    c = dp.counters(net)
    assert c["drop_too_big"] == (0 if sent else 1)
    assert c["tap_rx_frames"] == 1 and c["tap_rx_bytes"] == size


@pytest.mark.parametrize("size,sent", [(0, False), (1, False), (13, False), (14, True)])
def test_egress_runt(size, sent):
    dp, _, net = make(peers=(B,))
    out = dp.encap(net, [frame(BROADCAST, size=64)[:size]], NOW)
    assert len(out) == (1 if sent else 0)
    assert dp.counters(net)["drop_malformed"] == (0 if sent else 1)


def test_every_drop_is_counted_once_per_frame():
    dp, _, net = make(peers=(), mtu=100)
    frames = [b"", frame(size=200), frame(MAC_X)]
    assert dp.encap(net, frames, NOW) == []
    c = dp.counters(net)
    assert (c["drop_malformed"], c["drop_too_big"], c["drop_no_peers"]) == (1, 1, 1)
    assert c["tap_rx_frames"] == 3


def test_outer_headers_follow_network_params():
    dp, _, net = make(peers=(B,), vni=0xABCDEF, port=8472, sport_min=30000, sport_max=30009)
    (remote, pkt), = dp.encap(net, [frame(BROADCAST)], NOW)
    p = IP(pkt)
    assert p[UDP].dport == 8472 and 30000 <= p[UDP].sport <= 30009
    assert p[VXLAN].vni == 0xABCDEF


# --- ingress: what reaches the TAP ------------------------------------------------------------

def test_ingress_delivers_and_learns():
    dp, ep, net = make()
    f = frame(MAC_A, MAC_X)
    payload = vxlan_payload(VNI, f)
    assert dp.decap(ep, [(B, payload)], NOW) == [(net, f)]
    c = dp.counters(net)
    assert (c["rx_packets"], c["rx_bytes"], c["fdb_learned"]) == (1, len(payload), 1)
    e = dp.endpoint_counters(ep)
    assert (e["rx_datagrams"], e["rx_bytes"]) == (1, len(payload))
    assert [(r.mac, r.remote, r.static) for r in dp.fdb_dump(net, NOW)] == [(MAC_X, B, False)]
    # the reply is now unicast to where the MAC was learned
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], NOW)] == [B]


def test_ingress_move_and_refresh_counters():
    dp, ep, net = make()
    f = frame(MAC_A, MAC_X)
    dp.decap(ep, [(B, vxlan_payload(VNI, f)), (B, vxlan_payload(VNI, f)), (C, vxlan_payload(VNI, f))], NOW)
    c = dp.counters(net)
    assert (c["fdb_learned"], c["fdb_moved"], c["rx_packets"]) == (1, 1, 3)
    assert dp.fdb_dump(net, NOW)[0].remote == C


def test_learning_disabled():
    dp, ep, net = make(learning=False)
    assert len(dp.decap(ep, [(B, vxlan_payload(VNI, frame(MAC_A, MAC_X)))], NOW)) == 1
    assert dp.fdb_dump(net, NOW) == []
    assert dp.counters(net)["fdb_learned"] == 0


def test_fdb_full_is_counted():
    dp, ep, net = make(max_fdb_entries=1)
    src_macs = [MAC_X, "02:42:c0:a8:00:98", "02:42:c0:a8:00:97"]
    out = dp.decap(ep, [(B, vxlan_payload(VNI, frame(MAC_A, m))) for m in src_macs], NOW)
    assert len(out) == 3  # a full table refuses to learn, never to deliver
    c = dp.counters(net)
    assert (c["fdb_learned"], c["fdb_full"]) == (1, 2)
    assert len(dp.fdb_dump(net, NOW)) == 1


def test_unknown_source_dropped():
    dp, ep, net = make(peers=(B, C))
    assert dp.decap(ep, [(STRANGER, vxlan_payload(VNI, frame(MAC_A, MAC_X)))], NOW) == []
    c = dp.counters(net)
    assert (c["drop_unknown_source"], c["rx_packets"], c["fdb_learned"]) == (1, 0, 0)
    assert dp.fdb_dump(net, NOW) == []
    assert dp.endpoint_counters(ep)["rx_datagrams"] == 1


def test_unknown_source_allowed_when_configured():
    dp, ep, net = make(peers=(B,), allow_unknown_sources=True)
    f = frame(MAC_A, MAC_X)
    assert dp.decap(ep, [(STRANGER, vxlan_payload(VNI, f))], NOW) == [(net, f)]
    assert dp.counters(net)["drop_unknown_source"] == 0
    assert dp.fdb_dump(net, NOW)[0].remote == STRANGER
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], NOW)] == [STRANGER]


def test_unknown_vni_dropped_on_the_endpoint():
    dp, ep, net = make()
    assert dp.decap(ep, [(B, vxlan_payload(VNI + 1, frame(MAC_A, MAC_X)))], NOW) == []
    e = dp.endpoint_counters(ep)
    assert (e["rx_datagrams"], e["drop_unknown_vni"]) == (1, 1)
    assert dp.counters(net)["rx_packets"] == 0


def test_two_networks_on_one_endpoint_are_isolated():
    dp = Dataplane()
    ep = dp.add_endpoint("vxlan", -1)
    blue = dp.add_network(NetworkParams(vni=100, encap="vxlan", local=A), ep)
    red = dp.add_network(NetworkParams(vni=200, encap="vxlan", local=A), ep)
    dp.set_peers(blue, [B])
    dp.set_peers(red, [B])
    f_blue, f_red = frame(BROADCAST, "02:00:00:00:01:00"), frame(BROADCAST, "02:00:00:00:02:00")

    got = dp.decap(ep, [(B, vxlan_payload(100, f_blue)), (B, vxlan_payload(200, f_red)),
                        (B, vxlan_payload(100, f_blue))], NOW)
    assert got == [(blue, f_blue), (red, f_red), (blue, f_blue)]
    assert dp.counters(blue)["rx_packets"] == 2 and dp.counters(red)["rx_packets"] == 1
    assert [r.mac for r in dp.fdb_dump(blue, NOW)] == ["02:00:00:00:01:00"]
    assert [r.mac for r in dp.fdb_dump(red, NOW)] == ["02:00:00:00:02:00"]
    # egress: each network stamps its own VNI
    assert [outer_vni(p) for _, p in dp.encap(blue, [f_blue], NOW)] == [100]
    assert [outer_vni(p) for _, p in dp.encap(red, [f_red], NOW)] == [200]
    # a MAC learned in blue does not steer red's traffic
    assert [r for r, _ in dp.encap(red, [frame("02:00:00:00:01:00")], NOW)] == [B]
    assert dp.counters(red)["flood_frames"] == 2


def test_peers_are_per_network():
    dp = Dataplane()
    ep = dp.add_endpoint("vxlan", -1)
    blue = dp.add_network(NetworkParams(vni=100, encap="vxlan", local=A), ep)
    red = dp.add_network(NetworkParams(vni=200, encap="vxlan", local=A), ep)
    dp.set_peers(blue, [B])
    dp.set_peers(red, [C])
    assert dp.decap(ep, [(C, vxlan_payload(100, frame(BROADCAST, MAC_X)))], NOW) == []
    assert dp.counters(blue)["drop_unknown_source"] == 1
    assert len(dp.decap(ep, [(C, vxlan_payload(200, frame(BROADCAST, MAC_X)))], NOW)) == 1


@pytest.mark.parametrize("src", [BROADCAST, "01:00:5e:00:00:01", "33:33:00:00:00:01", "03:00:00:00:00:00"])
def test_group_source_mac_dropped(src):
    dp, ep, net = make()
    assert dp.decap(ep, [(B, vxlan_payload(VNI, frame(MAC_A, src)))], NOW) == []
    c = dp.counters(net)
    assert (c["drop_malformed"], c["fdb_learned"], c["rx_packets"]) == (1, 0, 0)
    assert dp.fdb_dump(net, NOW) == []


@pytest.mark.parametrize("size", [0, 13])
def test_ingress_runt_inner_frame(size):
    dp, ep, net = make()
    assert dp.decap(ep, [(B, vxlan_payload(VNI, frame(MAC_A, MAC_X)[:size]))], NOW) == []
    assert dp.counters(net)["drop_malformed"] == 1


@pytest.mark.parametrize("size,vlan,ok", [(1464, False, True), (1465, False, False),
                                          (1468, True, True), (1469, True, False)])
def test_ingress_too_big(size, vlan, ok):
    dp, ep, net = make(mtu=1450)
    out = dp.decap(ep, [(B, vxlan_payload(VNI, frame(MAC_A, MAC_X, size=size, vlan=vlan)))], NOW)
    assert len(out) == (1 if ok else 0)
    assert dp.counters(net)["drop_too_big"] == (0 if ok else 1)
    assert dp.counters(net)["fdb_learned"] == (1 if ok else 0)


# (endpoint kind, ipv4_header, payload, endpoint drop counter)
_F = frame(MAC_A, MAC_X)
_IPV4 = bytes(IP(src=B, dst=A, proto=47))
BAD_PAYLOADS = {
    "vxlan-short": ("vxlan", False, encode_vxlan(VNI)[:7], "drop_malformed"),
    "vxlan-no-I": ("vxlan", False, struct.pack("!II", 0, VNI << 8) + _F, "drop_bad_flags"),
    "gre-no-key": ("gre-udp", False, struct.pack("!HH", 0, 0x6558) + _F, "drop_bad_flags"),
    "gre-version": ("gre-udp", False, struct.pack("!HHI", 0x2001, 0x6558, VNI) + _F, "drop_bad_version"),
    "gre-protocol": ("gre-udp", False, struct.pack("!HHI", 0x2000, 0x0800, VNI) + _F, "drop_bad_protocol"),
    "gre-checksum": ("gre-udp", False, struct.pack("!HHHHI", 0xA000, 0x6558, 0x1234, 0, VNI) + _F,
                     "drop_bad_checksum"),
    "gre-truncated": ("gre", False, encode_gre(VNI)[:6], "drop_malformed"),
    "gre-raw-v4-not-gre": ("gre", True, bytes(IP(src=B, dst=A, proto=17)) + encode_gre(VNI) + _F,
                           "drop_malformed"),
    "gre-raw-v4-short-ip": ("gre", True, _IPV4[:19], "drop_malformed"),
}


@pytest.mark.parametrize("kind,ipv4_header,payload,counter", list(BAD_PAYLOADS.values()), ids=list(BAD_PAYLOADS))
def test_ingress_decapsulation_errors_counted_by_reason(kind, ipv4_header, payload, counter):
    dp, ep, net = make(kind, ipv4_header=ipv4_header)
    assert dp.decap(ep, [(B, payload)], NOW) == []
    e = dp.endpoint_counters(ep)
    assert e[counter] == 1 and e["rx_datagrams"] == 1
    assert sum(v for k, v in e.items() if k.startswith("drop_")) == 1
    assert dp.counters(net)["rx_packets"] == 0


def test_a_bad_datagram_does_not_stop_the_batch():
    dp, ep, net = make()
    good = vxlan_payload(VNI, frame(MAC_A, MAC_X))
    out = dp.decap(ep, [(B, b"junk"), (B, good), (STRANGER, good), (B, good)], NOW)
    assert len(out) == 2
    assert dp.endpoint_counters(ep)["drop_malformed"] == 1
    assert dp.counters(net)["drop_unknown_source"] == 1


def test_strict_network_drops_reserved_bits():
    dp, ep, net = make(strict=True)
    payload = struct.pack("!II", 0x08000000, (VNI << 8) | 0x01) + frame(MAC_A, MAC_X)
    assert dp.decap(ep, [(B, payload)], NOW) == []
    assert dp.endpoint_counters(ep)["drop_bad_flags"] == 1


def test_non_strict_network_accepts_reserved_bits():
    dp, ep, net = make()
    payload = struct.pack("!II", 0x0C000001, (VNI << 8) | 0x01) + frame(MAC_A, MAC_X)
    assert len(dp.decap(ep, [(B, payload)], NOW)) == 1


# --- FDB: ageing and static entries -------------------------------------------------------

def test_learned_entries_age_out():
    dp, ep, net = make(ageing=30.0, peers=(B, C))
    dp.decap(ep, [(C, vxlan_payload(VNI, frame(MAC_A, MAC_X)))], 100.0)
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], 110.0)] == [C]
    assert dp.fdb_dump(net, 110.0)[0].age == 10.0
    assert dp.age(129.9) == 0
    assert dp.age(130.0) == 1
    assert dp.fdb_dump(net, 130.0) == []
    assert dp.counters(net)["fdb_aged"] == 1
    # forgotten: unknown unicast floods again
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], 131.0)] == [B, C]


def test_age_sweeps_every_network():
    dp = Dataplane()
    ep = dp.add_endpoint("vxlan", -1)
    nets = [dp.add_network(NetworkParams(vni=v, encap="vxlan", local=A, ageing=10.0), ep) for v in (1, 2)]
    for n in nets:
        dp.set_peers(n, [B])
    dp.decap(ep, [(B, vxlan_payload(1, frame(MAC_A, MAC_X))), (B, vxlan_payload(2, frame(MAC_A, MAC_X)))], 0.0)
    assert dp.age(10.0) == 2
    assert [dp.counters(n)["fdb_aged"] for n in nets] == [1, 1]


def test_static_entry_beats_learning():
    dp, ep, net = make(ageing=5.0, peers=(B, C))
    dp.fdb_add(net, MAC_X, B)
    assert len(dp.decap(ep, [(C, vxlan_payload(VNI, frame(MAC_A, MAC_X)))], NOW)) == 1
    assert dp.fdb_dump(net, NOW) == [(MAC_X, B, True, 0.0)]
    c = dp.counters(net)
    assert (c["fdb_moved"], c["fdb_learned"]) == (0, 0)
    assert dp.age(NOW + 1e6) == 0
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], NOW + 1e6)] == [B]


def test_fdb_add_and_remove_through_the_api():
    dp, _, net = make(peers=(B, C))
    dp.fdb_add(net, MAC_X, C)
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], NOW)] == [C]
    assert dp.fdb_remove(net, MAC_X) is True
    assert dp.fdb_remove(net, MAC_X) is False
    assert [r for r, _ in dp.encap(net, [frame(MAC_X)], NOW)] == [B, C]


# --- NVGRE networks match the VSID (key >> 8); plain networks the whole key, plain first ---------

def test_nvgre_and_plain_networks_share_a_gre_endpoint():
    dp = Dataplane()
    ep = dp.add_endpoint("gre-udp", -1)
    nv = dp.add_network(NetworkParams(vni=0x000100, encap="gre-udp", local=A, port=4754, nvgre=True), ep)
    plain = dp.add_network(NetworkParams(vni=0x00010077, encap="gre-udp", local=A, port=4754), ep)
    for n in (nv, plain):
        dp.set_peers(n, [B])
    f = frame(MAC_A, MAC_X)
    got = dp.decap(ep, [(B, encode_gre(0x00010005) + f),    # VSID 0x100, flow id 5 -> NVGRE
                        (B, encode_gre(0x00010077) + f),    # a plain network owns this key
                        (B, encode_gre(0x00020005) + f)],   # neither
                   NOW)
    assert [n for n, _ in got] == [nv, plain]
    assert dp.endpoint_counters(ep)["drop_unknown_vni"] == 1
    (_, pkt), = dp.encap(nv, [frame(BROADCAST)], NOW)
    assert IP(pkt)[GRE].key >> 8 == 0x000100


# --- management errors fail fast ---------------------------------------------------------------

def test_management_misuse_raises():
    dp, ep, net = make()
    with pytest.raises(ValueError):
        dp.add_network(NetworkParams(vni=VNI, encap="vxlan", local=A), ep)  # duplicate VNI
    with pytest.raises(ValueError):
        dp.add_network(NetworkParams(vni=7, encap="gre", local=A), ep)  # wrong endpoint kind
    with pytest.raises(ValueError):
        dp.set_peers(net, [B6])  # wrong family
    with pytest.raises(ValueError):
        dp.fdb_add(net, MAC_X, B6)
    with pytest.raises(ValueError):
        dp.fdb_add(net, "not-a-mac", B)
    with pytest.raises(ValueError):
        dp.add_endpoint("geneve", -1)
    with pytest.raises(ValueError):
        dp.remove_endpoint(ep)  # still has a network
    dp.remove_network(net)
    dp.remove_endpoint(ep)


@pytest.mark.parametrize("params", [
    pytest.param(dict(vni=(1 << 24) + VNI, encap="vxlan"), id="vxlan-vni-25-bits"),
    pytest.param(dict(vni=-1, encap="vxlan"), id="vxlan-vni-negative"),
    pytest.param(dict(vni=1 << 24, encap="gre", nvgre=True), id="nvgre-vsid-25-bits"),
    pytest.param(dict(vni=1, encap="vxlan", sport_min=50000, sport_max=49999), id="sport-range-empty"),
])
def test_add_network_rejects_out_of_range_params(params):
    dp = Dataplane()
    ep = dp.add_endpoint(params["encap"], -1)
    with pytest.raises(ValueError):
        dp.add_network(NetworkParams(local=A, **params), ep)


def test_peers_are_normalised_and_deduplicated():
    dp, ep, net = make("vxlan", local=A6, peers=("2001:DB8:0:0::2", B6, "2001:db8::3"))
    assert dp.peers(net) == [B6, C6]
    assert [r for r, _ in dp.encap(net, [frame(BROADCAST)], NOW)] == [B6, C6]
    assert len(dp.decap(ep, [(B6, vxlan_payload(VNI, frame(MAC_A, MAC_X)))], NOW)) == 1


def test_counter_names_are_the_shared_ones():
    dp, ep, net = make()
    assert tuple(dp.counters(net)) == NET_COUNTERS
    assert tuple(dp.endpoint_counters(ep)) == EP_COUNTERS
    assert set(dp.counters(net).values()) == {0}


# --- round trips: A.encap -> what B's socket receives -> B.decap --------------------------------

def _received(kind: str, ipv6: bool, pkt: bytes) -> bytes:
    """What the receiving socket hands up: UDP payload, or for raw GRE the IPv4 packet / GRE alone."""
    ip_len = 40 if ipv6 else 20
    if kind == "gre":
        return pkt[ip_len:] if ipv6 else pkt  # IPv4 raw sockets keep the IP header
    return pkt[ip_len + 8:]


ROUND_TRIP_FRAMES = [
    frame(MAC_B, MAC_A, size=14),
    frame(MAC_B, MAC_A, size=60),
    frame(BROADCAST, MAC_A, size=342),
    frame(MAC_B, MAC_A, size=1464),
    frame(MAC_B, MAC_A, size=1468, vlan=True),
    bytes(Ether(src=MAC_A, dst=MAC_B) / IPv6(src="fd00::a", dst="fd00::b") / UDP(sport=1, dport=2) / b"hi"),
]


@pytest.mark.parametrize("kind,nvgre", [("vxlan", False), ("gre", False), ("gre-udp", False),
                                         ("gre", True), ("gre-udp", True)],
                         ids=["vxlan", "gre", "gre-udp", "nvgre", "nvgre-udp"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_round_trip(kind, family, nvgre):
    ipv6 = family == "ipv6"
    a_local, b_local = (A6, B6) if ipv6 else (A, B)
    port = 4754 if kind == "gre-udp" else 4789
    raw_v4 = kind == "gre" and not ipv6
    a, _, a_net = make(kind, a_local, [b_local], port=port, nvgre=nvgre)
    b, b_ep, b_net = make(kind, b_local, [a_local], port=port, nvgre=nvgre, ipv4_header=raw_v4)

    outer = a.encap(a_net, ROUND_TRIP_FRAMES, NOW)
    assert [r for r, _ in outer] == [b_local] * len(ROUND_TRIP_FRAMES)
    # raw IPv4 sockets report the source in the header; pass a wrong one to prove it is used
    src = "0.0.0.0" if raw_v4 else a_local
    got = b.decap(b_ep, [(src, _received(kind, ipv6, pkt)) for _, pkt in outer], NOW)
    assert got == [(b_net, f) for f in ROUND_TRIP_FRAMES]

    c = b.counters(b_net)
    assert c["rx_packets"] == len(ROUND_TRIP_FRAMES) and c["fdb_learned"] == 1
    assert b.fdb_dump(b_net, NOW) == [(MAC_A, a_local, False, 0.0)]
    # and the reply goes straight back, unicast
    assert [r for r, _ in b.encap(b_net, [frame(MAC_A, MAC_B)], NOW)] == [a_local]


# --- edges where the backends once disagreed -------------------------------------------------

def test_strict_applies_to_vxlan_only_a_strict_gre_network_still_carries_traffic():
    dp, ep, net = make("gre-udp", strict=True, port=4754)
    payload = encode_gre(VNI) + frame(MAC_A, MAC_X)
    assert len(dp.decap(ep, [(B, payload)], NOW)) == 1
    assert dp.endpoint_counters(ep)["drop_bad_flags"] == 0


def test_frame_beyond_what_one_outer_packet_carries_is_too_big_not_an_exception():
    dp, ep, net = make(mtu=65535)
    dp.fdb_add(net, MAC_B, B)
    assert dp.encap(net, [frame(MAC_B, size=65535 - 20)], NOW) == []
    assert dp.counters(net)["drop_too_big"] == 1


def test_ipv4_header_is_for_gre_endpoints_only():
    dp = Dataplane()
    with pytest.raises(ValueError):
        dp.add_endpoint("vxlan", -1, ipv4_header=True)


def test_fdb_size_counts_static_and_learned_entries():
    dp, ep, net = make()
    dp.fdb_add(net, MAC_X, B)
    dp.decap(ep, [(C, vxlan_payload(VNI, frame(MAC_X, MAC_A)))], NOW)
    assert dp.fdb_size(net) == len(dp.fdb_dump(net, NOW)) == 2
