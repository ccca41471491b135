"""Two and three hosts with vxlan-dp daemons: containers reach each other across the overlay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from helpers import lab_with_daemons
from vxlan_dp.lab import Lab, netns


def _lab_with_daemons(make_lab, backend: str, hosts: int = 2, *, ipv6: bool = False, port: int | None = None,
                      encap: str = "vxlan", poll: str | None = None) -> Lab:
    # a poll mode on the first host only: two busy daemons would hold both of a 2-core
    # machine's cores and starve the very test traffic (documented: busy holds a core)
    def daemon(i: int) -> str:
        return '[daemon]\nmetrics = ""\n' + (f'poll = "{poll}"\n' if poll and i == 0 else "")
    return lab_with_daemons(make_lab, backend, hosts, encap=encap, ipv6=ipv6, daemon_toml=daemon, port=port)


def _neigh_mac(ns: str, ip: str) -> str | None:
    with netns.ipr(ns) as ipr:
        for n in ipr.get_neighbours():
            if n.get("NDA_DST") == ip:
                return n.get("NDA_LLADDR")
    return None


def test_containers_ping_both_directions_and_arp_resolves(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    assert lab.ping(a, b.ip).ok
    assert lab.ping(b, a.ip).ok
    # ARP went through the overlay: each container knows the other's real MAC
    assert _neigh_mac(a.ns, b.ip) == b.mac
    assert _neigh_mac(b.ns, a.ip) == a.mac
    st = lab.status(lab.hosts[0])
    assert st["backend"] == backend
    net = st["networks"]["blue"]
    assert {r["mac"]: r["remote"] for r in net["fdb"]}[b.mac] == lab.hosts[1].ip4
    assert net["counters"]["flood_frames"] >= 1          # the ARP request was flooded
    assert net["counters"]["rx_packets"] >= 4 and net["counters"]["tx_packets"] >= 4


def test_iperf3_tcp_carries_data(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    res = lab.iperf3(a, b, seconds=2)
    assert "error" not in res, res.get("error")
    assert res["end"]["sum_received"]["bytes"] > 1_000_000


@pytest.mark.parametrize("poll", ["interrupt", "busy"])   # adaptive is the default: every other test
def test_every_poll_mode_carries_arp_ping_and_tcp(make_lab, backend, poll):
    lab = _lab_with_daemons(make_lab, backend, poll=poll)
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    assert lab.ping(a, b.ip).ok and lab.ping(b, a.ip).ok
    assert _neigh_mac(a.ns, b.ip) == b.mac and _neigh_mac(b.ns, a.ip) == a.mac
    for reverse in (False, True):
        res = lab.iperf3(a, b, seconds=1, reverse=reverse)
        assert "error" not in res, res.get("error")
        assert res["end"]["sum_received"]["bytes"] > 1_000_000
    net = lab.status(lab.hosts[0])["networks"]["blue"]["counters"]
    assert net["drop_malformed"] == net["drop_socket_error"] == 0, net


def test_ipv6_underlay(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend, ipv6=True)
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    assert lab.ping(a, b.ip).ok and lab.ping(b, a.ip).ok
    fdb = {r["mac"]: r["remote"] for r in lab.status(lab.hosts[0])["networks"]["blue"]["fdb"]}
    assert fdb[b.mac] == lab.hosts[1].ip6


def test_custom_port_is_used_on_the_wire(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend, port=8472)
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    assert lab.ping(a, b.ip).ok
    eps = lab.status(lab.hosts[1])["endpoints"]
    assert [(e["encap"], e["port"]) for e in eps] == [("vxlan", 8472)]
    assert eps[0]["counters"]["rx_datagrams"] >= 3


def test_third_host_joins_by_reload(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    h3 = lab.add_host()
    c3 = lab.add_container(h3)
    lab.settle()
    lab.start_daemon(h3, lab.network_toml(h3), backend=backend)
    for h in lab.hosts[:2]:  # the operator adds the new peer and reloads
        with open(h.config_path, "w") as f:
            f.write('[daemon]\nmetrics = ""\n' + lab.network_toml(h))
        h.proc.send_signal(signal.SIGHUP)
    for h in lab.hosts[:2]:
        for _ in range(50):
            if h3.ip4 in lab.status(h)["networks"]["blue"]["peers"]:
                break
            __import__("time").sleep(0.1)
    for h in lab.hosts[:2]:
        assert lab.ping(h.containers[0], c3.ip).ok
        assert lab.ping(c3, h.containers[0].ip).ok


def test_isolation_between_vnis_on_one_port(make_lab, backend):
    """Two networks share the UDP socket; a frame of one never appears in the other."""
    lab = make_lab(2)
    h1, h2 = lab.hosts
    a1 = lab.add_container(h1, "br-blue")
    b2 = lab.add_container(h2, "br-red")    # same subnet, other network: must stay unreachable
    a2 = lab.add_container(h2, "br-blue")
    lab.settle()
    for h in (h1, h2):
        lab.start_daemon(h, lab.network_toml(h) + lab.network_toml(h, name="red", vni=43, tap="vxdp-red",
                                                                     bridge="br-red"), backend=backend)
    assert lab.ping(a1, a2.ip).ok
    assert lab.ping(a1, b2.ip, count=2).received == 0
    red = lab.status(h2)["networks"]["red"]
    assert red["counters"]["tap_tx_frames"] == 0 or a1.mac not in {r["mac"] for r in red["fdb"]}
    assert a1.mac not in {r["mac"] for r in red["fdb"]}


def test_packets_from_non_peers_are_dropped_and_counted(make_lab, backend):
    lab = make_lab(3)
    for h in lab.hosts:
        lab.add_container(h)
    lab.settle()
    h1, h2, h3 = lab.hosts
    lab.start_daemon(h1, lab.network_toml(h1, peers=[h2]), backend=backend)
    lab.start_daemon(h2, lab.network_toml(h2, peers=[h1]), backend=backend)
    lab.start_daemon(h3, lab.network_toml(h3, peers=[h1, h2]), backend=backend)  # h3 is nobody's peer
    assert lab.ping(h3.containers[0], h1.containers[0].ip, count=2).received == 0
    c = lab.status(h1)["networks"]["blue"]["counters"]
    assert c["drop_unknown_source"] >= 1
    assert h3.containers[0].mac not in {r["mac"] for r in lab.status(h1)["networks"]["blue"]["fdb"]}
    assert lab.ping(h1.containers[0], h2.containers[0].ip).ok


def test_sigterm_stops_cleanly_and_removes_the_tap(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    h = lab.hosts[0]
    assert lab.stop_daemon(h) == 0
    with netns.ipr(h.ns) as ipr:
        assert not ipr.link_lookup(ifname="vxdp-blue")
        assert ipr.link_lookup(ifname="br-blue")  # the lab's bridge is not ours to remove
    assert not os.path.exists(h.socket_path)


def test_bad_config_exits_2_and_creates_nothing(make_lab, tmp_path):
    lab = make_lab(1)
    h = lab.hosts[0]
    bad = tmp_path / "bad.toml"
    bad.write_text(lab.network_toml(h, vni=16777216))
    r = netns.run(h.ns, [sys.executable, "-m", "vxlan_dp", "run", "-c", str(bad)], timeout=30)
    assert r.returncode == 2
    assert "network[0].vni: 16777216 is out of range 0..16777215" in r.stderr
    with netns.ipr(h.ns) as ipr:
        assert not ipr.link_lookup(ifname="vxdp-blue")
    assert subprocess.run([sys.executable, "-m", "vxlan_dp", "check", "-c", str(bad)],
                          check=False, capture_output=True).returncode == 2
