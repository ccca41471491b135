"""GRE and GRE-in-UDP between vxlan-dp daemons in the namespace lab, on both backends.

The kernel here has no GRE module, so the peer of a vxlan-dp GRE daemon is another vxlan-dp
daemon (positive tests) or Scapy-built packets sent from a peer host's namespace (negative
tests: every malformed or foreign packet is dropped, counted under its reason, and never
reaches the TAP). Three networks of different encapsulations on the same two hosts prove the
VNIs and the encapsulations stay apart, with counters moving only where traffic was sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Raw
from scapy.utils import checksum

from helpers import SCRIPTS, lab_with_daemons
from vxlan_dp.lab import Lab, netns

ENCAPS = ["gre", "gre-udp"]


def _lab_with_daemons(make_lab, backend: str, encap: str, *, ipv6: bool = False) -> Lab:
    return lab_with_daemons(make_lab, backend, encap=encap, ipv6=ipv6)


def _drops(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if k.startswith("drop_") and v}


# --- 1. traffic between two daemons -------------------------------------------------------



@pytest.mark.parametrize("encap, ipv6", [
    ("gre", False), ("gre", True), ("gre-udp", False), ("gre-udp", True),
], ids=["gre-ipv4", "gre-ipv6", "gre-udp-ipv4", "gre-udp-ipv6"])
def test_ping_and_iperf3(make_lab, backend, encap, ipv6):
    lab = _lab_with_daemons(make_lab, backend, encap, ipv6=ipv6)
    h1, h2 = lab.hosts
    a, b = h1.containers[0], h2.containers[0]
    assert lab.ping(a, b.ip).ok
    assert lab.ping(b, a.ip).ok
    res = lab.iperf3(a, b, seconds=1.5)
    assert "error" not in res, res.get("error")
    assert res["end"]["sum_received"]["bytes"] > 500_000
    for h, other, peer in ((h1, h2, b), (h2, h1, a)):
        st = lab.status(h)
        assert st["backend"] == backend
        net = st["networks"]["blue"]
        assert net["encap"] == encap
        assert {r["mac"]: r["remote"] for r in net["fdb"]}[peer.mac] == other.address(ipv6)
        assert net["counters"]["rx_packets"] > 100 and net["counters"]["tap_tx_frames"] > 100
        assert not _drops(net["counters"]), (h.name, net["counters"])
        eps = st["endpoints"]
        assert [(e["encap"], e["port"]) for e in eps] == [(encap, 0 if encap == "gre" else 4754)]
        assert not _drops(eps[0]["counters"]), (h.name, eps[0]["counters"])


# --- 2. three networks, three encapsulations, one pair of hosts ---------------------------

# name, encapsulation, VNI, extra TOML (port), TAP, bridge
NETS = [("blue", "vxlan", 42, 8472, "vxdp-blue", "br-blue"),
        ("red", "gre", 43, None, "vxdp-red", "br-red"),
        ("green", "gre-udp", 44, None, "vxdp-green", "br-green")]


def _quiet(ns: str, bridges: dict[str, int] | None = None, *, container: bool = False) -> None:
    """No chatter of our own making, so that counters move only with our pings: IPv6 off (no
    DAD, RS, MLD); in a container one ARP request per failed resolution, not three a second
    apart that would outlive the ping, and no unicast ARP probe 5 s after a ping has used an
    entry learned from a request (the DELAY state of RFC 1122 sec. 2.3.2.1); bridges (name -> MTU) made up front without multicast
    snooping, which would have them join 224.0.0.106 (RFC 4286 multicast router discovery)
    and flood IGMP reports into every network as it comes up."""
    r = netns.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"]
                  + (["net.ipv4.neigh.eth0.mcast_solicit=1", "net.ipv4.neigh.eth0.delay_first_probe_time=120"] if container else []), timeout=10)
    assert r.returncode == 0, r.stderr
    with netns.ipr(ns) as ipr:
        for br, mtu in (bridges or {}).items():
            ipr.link("add", ifname=br, kind="bridge", br_mcast_snooping=0)
            ipr.link("set", index=ipr.link_lookup(ifname=br)[0], mtu=mtu, state="up")


def _snapshot(lab: Lab) -> dict[tuple[str, str], dict[str, int]]:
    """(host, network or "ep:" encap) -> counters, once nothing has moved for 0.4 s."""
    prev: dict[tuple[str, str], dict[str, int]] = {}
    deadline = time.monotonic() + 5
    while True:
        snap = {}
        for h in lab.hosts:
            st = lab.status(h)
            for name, n in st["networks"].items():
                snap[(h.name, name)] = n["counters"]
            for e in st["endpoints"]:
                snap[(h.name, "ep:" + e["encap"])] = e["counters"]
        if snap == prev or time.monotonic() > deadline:
            return snap
        prev = snap
        time.sleep(0.4)


def _moved(before: dict, after: dict) -> set[str]:
    return {k[1] for k in after if after[k] != before.get(k)}


def test_three_networks_three_encaps_stay_apart(make_lab, backend):
    lab = make_lab(2)
    h1, h2 = lab.hosts
    bridges = {bridge: lab.overlay_mtu(encap) for _n, encap, _v, _p, _t, bridge in NETS}
    for h in lab.hosts:
        _quiet(h.ns, bridges)
    members: dict[str, list[Any]] = {}
    for name, encap, _vni, _port, _tap, bridge in NETS:
        # every container is in 192.168.0.0/24: only the overlay's L2 separation keeps them apart
        members[name] = [lab.add_container(h, bridge, mtu=lab.overlay_mtu(encap)) for h in lab.hosts]
        for c in members[name]:
            _quiet(c.ns, container=True)
    lab.settle()
    for h in lab.hosts:
        toml = "".join(lab.network_toml(h, name=name, vni=vni, encap=encap, port=port, tap=tap, bridge=bridge)
                       for name, encap, vni, port, tap, bridge in NETS)
        lab.start_daemon(h, toml, backend=backend)
    st = lab.status(h1)
    assert sorted((e["encap"], e["port"], tuple(e["networks"])) for e in st["endpoints"]) == [
        ("gre", 0, ("red",)), ("gre-udp", 4754, ("green",)), ("vxlan", 8472, ("blue",))]

    encap_of = {name: encap for name, encap, *_ in NETS}
    before = _snapshot(lab)
    for name, (a, b) in members.items():
        assert lab.ping(a, b.ip).ok, f"{name}: {a.name} -> {b.name}"
        assert lab.ping(b, a.ip).ok, f"{name}: {b.name} -> {a.name}"
        after = _snapshot(lab)
        assert _moved(before, after) == {name, "ep:" + encap_of[name]}, name
        for h in (h1.name, h2.name):
            d = {k: after[(h, name)][k] - before[(h, name)][k] for k in after[(h, name)]}
            assert d["tx_packets"] >= 3 and d["rx_packets"] >= 3 and d["tap_tx_frames"] >= 3, (h, name, d)
        before = after

    # each network's container on h1 tries every other network's container on h2: nothing
    # crosses, and the other networks' counters do not move (the ARP floods stay in their VNI)
    for name, (a, _b) in members.items():
        targets = [m[1] for other, m in members.items() if other != name]
        with ThreadPoolExecutor(len(targets)) as pool:
            results = list(pool.map(lambda t, a=a: lab.ping(a, t.ip, count=2, wait=0.5), targets))
        assert [r.received for r in results] == [0] * len(targets), (name, results)
        after = _snapshot(lab)
        assert _moved(before, after) == {name, "ep:" + encap_of[name]}, name
        d = {k: after[(h2.name, name)][k] - before[(h2.name, name)][k] for k in after[(h2.name, name)]}
        assert d["tap_tx_frames"] >= len(targets), (name, d)  # the ARP requests did cross, in their VNI
        before = after

    foreign = {name: {c.mac for other, m in members.items() if other != name for c in m} for name in members}
    for h in lab.hosts:
        st = lab.status(h)
        for name, n in st["networks"].items():
            assert not foreign[name] & {r["mac"] for r in n["fdb"]}, (h.name, name, n["fdb"])
            assert not _drops(n["counters"]), (h.name, name, n["counters"])
        for e in st["endpoints"]:
            assert not _drops(e["counters"]), (h.name, e)


# --- 3. the demo ---------------------------------------------------------------------------

@pytest.mark.parametrize("encap, ipv6", [
    ("gre", False), ("gre-udp", False),
    ("gre", True),
    ("gre-udp", True),
], ids=["gre", "gre-udp", "gre-ipv6", "gre-udp-ipv6"])
def test_demo_passes(backend, encap, ipv6):
    argv = [sys.executable, "-m", "vxlan_dp", "demo", "--encap", encap, "--backend", backend]
    r = subprocess.run(argv + (["--ipv6"] if ipv6 else []), check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "PASS" in r.stdout and "FAIL" not in r.stdout, r.stdout
    assert f", {encap}" in r.stdout.splitlines()[0], r.stdout


# --- 4. crafted packets against a running daemon -------------------------------------------

N = 5  # copies of each crafted packet: every counter must move by exactly this much
KEY_GRE, KEY_UDP = 42, 43
INNER_SRC = "02:00:00:00:5e:01"
INNER = Ether(src=INNER_SRC, dst="02:00:00:00:5e:02", type=0x88B5) / Raw(b"vxlan-dp gre test".ljust(46, b"."))

# Sent from inside the peer host's namespace: plain sockets, so the kernel writes a correct
# outer IP (and UDP) header from the host's own underlay address; the GRE bytes are ours.


def _gre(key: int | None = KEY_GRE, *, proto: int = 0x6558, version: int = 0, csum: bool = False,
         seq: bool = False, frame: bytes | None = None) -> bytes:
    g = GRE(proto=proto, version=version, chksum_present=int(csum), seqnum_present=int(seq),
            key_present=int(key is not None), key=key, sequence_number=7 if seq else None)
    pkt = bytes(g / Raw(bytes(INNER) if frame is None else frame))
    if csum:
        assert checksum(pkt) == 0, "Scapy's GRE checksum verifies"
    return pkt


def _bad_checksum(key: int) -> bytes:
    pkt = bytearray(_gre(key, csum=True, seq=True))
    pkt[5] ^= 0x01  # off by one in the checksum field: can never verify
    return bytes(pkt)


def _routing(key: int) -> bytes:
    pkt = bytearray(_gre(key))
    pkt[0] |= 0x40  # R bit (RFC 1701 routing, deprecated by RFC 2784)
    return bytes(pkt)


def _cases(key: int, other_key: int) -> list[tuple[str, bytes, tuple[str, str] | None]]:
    """(case, GRE bytes, ("ep" or "net", drop counter) or None when the frame must be delivered)."""
    group_src = bytes(Ether(src="01:00:5e:00:00:01", dst="02:00:00:00:5e:02", type=0x88B5) / Raw(b"." * 46))
    return [
        ("unknown key", _gre(4242), ("ep", "drop_unknown_vni")),
        ("key of the other endpoint's network", _gre(other_key), ("ep", "drop_unknown_vni")),
        ("C bit, bad checksum", _bad_checksum(key), ("ep", "drop_bad_checksum")),
        ("version 1", _gre(key, version=1), ("ep", "drop_bad_version")),
        ("protocol 0x0800", _gre(key, proto=0x0800), ("ep", "drop_bad_protocol")),
        ("protocol 0x88be (ERSPAN)", _gre(key, proto=0x88BE), ("ep", "drop_bad_protocol")),
        ("no K bit", _gre(None), ("ep", "drop_bad_flags")),
        ("R bit", _routing(key), ("ep", "drop_bad_flags")),
        ("truncated inside the key", _gre(key)[:6], ("ep", "drop_malformed")),
        ("truncated inside the base header", _gre(key)[:3], ("ep", "drop_malformed")),
        ("inner frame of 10 bytes", _gre(key, frame=b"0123456789"), ("net", "drop_malformed")),
        ("inner group source MAC", _gre(key, frame=group_src), ("net", "drop_malformed")),
        ("C and S bits, good checksum", _gre(key, csum=True, seq=True), None),
        ("K only", _gre(key), None),
    ]


def _send(lab: Lab, kind: str, packets: list[bytes]) -> None:
    src, dst = lab.hosts[1], lab.hosts[0]
    spec = {"kind": kind, "dst": dst.address(lab.ipv6), "port": 4754, "packets": [p.hex() for p in packets]}
    r = netns.run(src.ns, [sys.executable, str(SCRIPTS / "gre_sender.py")], input=json.dumps(spec), timeout=20)
    assert r.returncode == 0, r.stderr


INGRESS_NET = ("rx_packets", "rx_bytes", "tap_tx_frames", "tap_tx_bytes", "fdb_learned", "fdb_moved",
               "drop_unknown_source", "drop_malformed", "drop_too_big", "drop_tap_write_error")


def _ingress(lab: Lab) -> dict[str, dict[str, int]]:
    st = lab.status(lab.hosts[0])
    out = {"ep:" + e["encap"]: e["counters"] for e in st["endpoints"]}
    out.update({name: {k: n["counters"][k] for k in INGRESS_NET} for name, n in st["networks"].items()})
    return out


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_crafted_packets_are_dropped_and_counted(make_lab, backend, ipv6):
    """h1 runs a gre network (key 42) and a gre-udp network (key 43); h2, a configured peer
    without a daemon, sends N copies of each crafted packet to each endpoint in turn."""
    lab = make_lab(2, ipv6=ipv6)
    h1, h2 = lab.hosts
    lab.settle()
    lab.start_daemon(h1, lab.network_toml(h1, name="gre", vni=KEY_GRE, encap="gre", tap="vxdp-gre",
                                          bridge="br-gre")
                     + lab.network_toml(h1, name="udp", vni=KEY_UDP, encap="gre-udp", tap="vxdp-udp",
                                        bridge="br-udp"), backend=backend)
    failures = []
    for kind, net, key, other in (("gre", "gre", KEY_GRE, KEY_UDP), ("gre-udp", "udp", KEY_UDP, KEY_GRE)):
        ep = "ep:" + kind
        for case, pkt, reason in _cases(key, other):
            before = _ingress(lab)
            _send(lab, kind, [pkt] * N)
            deadline = time.monotonic() + 5
            while True:
                after = _ingress(lab)
                if after[ep]["rx_datagrams"] - before[ep]["rx_datagrams"] >= N or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            delta = {(where, k): after[where][k] - before[where][k]
                     for where in after for k in after[where] if after[where][k] != before[where][k]}
            delta.pop((ep, "rx_bytes"), None)   # what a datagram's bytes are differs by socket type
            delta.pop((ep, "rx_batches"), None)  # how the N datagrams were batched is not ours to know
            want: dict[tuple[str, str], int] = {(ep, "rx_datagrams"): N}
            if reason:
                want[(ep if reason[0] == "ep" else net, reason[1])] = N
            else:
                want.update({(net, "rx_packets"): N, (net, "tap_tx_frames"): N,
                             (net, "tap_tx_bytes"): N * len(INNER)})
                delta.pop((net, "fdb_learned"), None)  # the first delivered frame teaches INNER_SRC
                if delta.pop((net, "rx_bytes"), 0) < N * len(pkt):  # with or without the IPv4 header
                    failures.append(f"{kind} {case!r}: {net} rx_bytes moved by less than {N * len(pkt)}")
            if delta != want:
                failures.append(f"{kind} {case!r} ({pkt[:16].hex()}...): counters moved {delta}, expected {want}")
    st = lab.status(h1)
    for name in ("gre", "udp"):
        fdb = {r["mac"]: r["remote"] for r in st["networks"][name]["fdb"]}
        if fdb.get(INNER_SRC) != h2.address(ipv6):
            failures.append(f"{name}: {INNER_SRC} not learned from {h2.address(ipv6)}: {fdb}")
    assert not failures, "\n".join(failures)
