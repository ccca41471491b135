"""Interop: vxlan-dp on one host, the Linux kernel's own vxlan device on the other.

The kernel is the reference VTEP: if it and we exchange pings and TCP both ways and each
learns the other's MACs, our VXLAN is on-the-wire compatible (RFC 7348) on that port.
"""

from __future__ import annotations

import pytest

from vxlan_dp.lab import Lab


def _mixed_lab(make_lab, backend: str, port: int, ipv6: bool = False, poll: str | None = None) -> Lab:
    lab = make_lab(2, ipv6=ipv6)
    h1, h2 = lab.hosts
    for h in lab.hosts:
        lab.add_container(h)
    lab.add_kernel_vxlan(h2, vni=42, port=port)
    lab.settle()
    daemon = '[daemon]\nmetrics = ""\n' + (f'poll = "{poll}"\n' if poll else "")
    lab.start_daemon(h1, lab.network_toml(h1, port=port), backend=backend, daemon_toml=daemon)
    return lab


@pytest.mark.parametrize("port", [4789, 8472])
def test_ping_and_learning_with_kernel_vxlan(make_lab, backend, port):
    lab = _mixed_lab(make_lab, backend, port)
    h1, h2 = lab.hosts
    ours, kern = h1.containers[0], h2.containers[0]
    assert lab.ping(ours, kern.ip).ok
    assert lab.ping(kern, ours.ip).ok
    fdb = {r["mac"]: r["remote"] for r in lab.status(h1)["networks"]["blue"]["fdb"]}
    assert fdb.get(kern.mac) == h2.ip4, "vxlan-dp learned the kernel side's MAC"
    assert lab.kernel_fdb(h2).get(ours.mac) == h1.ip4, "the kernel learned our MAC"


@pytest.mark.parametrize("port", [4789, 8472])
def test_iperf3_both_directions_with_kernel_vxlan(make_lab, backend, port):
    lab = _mixed_lab(make_lab, backend, port)
    ours, kern = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    for reverse in (False, True):
        res = lab.iperf3(ours, kern, seconds=1.5, reverse=reverse)
        assert "error" not in res, res.get("error")
        assert res["end"]["sum_received"]["bytes"] > 500_000


@pytest.mark.parametrize("poll", ["interrupt", "busy"])   # adaptive is the default: the tests above
def test_every_poll_mode_interoperates_with_kernel_vxlan(make_lab, backend, poll):
    lab = _mixed_lab(make_lab, backend, 4789, poll=poll)
    h1, h2 = lab.hosts
    ours, kern = h1.containers[0], h2.containers[0]
    assert lab.ping(ours, kern.ip).ok and lab.ping(kern, ours.ip).ok
    assert lab.kernel_fdb(h2).get(ours.mac) == h1.ip4
    for reverse in (False, True):
        res = lab.iperf3(ours, kern, seconds=1, reverse=reverse)
        assert "error" not in res, res.get("error")
        assert res["end"]["sum_received"]["bytes"] > 500_000


def test_ipv6_underlay_with_kernel_vxlan(make_lab, backend):
    lab = _mixed_lab(make_lab, backend, 4789, ipv6=True)
    ours, kern = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    assert lab.ping(ours, kern.ip).ok and lab.ping(kern, ours.ip).ok
    assert lab.kernel_fdb(lab.hosts[1]).get(ours.mac) == lab.hosts[0].ip6
