"""Many networks on one host: started in one batch, all removed at stop (issue 16).

20 networks whose TAPs and bridges the daemon creates, plus one on a bridge the lab made:
READY means every TAP is up and enslaved with its MTU; SIGTERM removes every TAP and every
bridge the daemon made (in one batch), and leaves the lab's bridge alone.
"""

from __future__ import annotations

from vxlan_dp.bench.scale import config_text
from vxlan_dp.lab import netns


def test_twenty_networks_come_up_together_and_leave_nothing_behind(make_lab, backend):
    lab = make_lab(1)
    h = lab.hosts[0]
    c = lab.add_container(h)        # makes the lab's own br-blue
    lab.settle()
    text = config_text(20, 3, h.ip4).split("\n", 4)[4]     # the [[network]] tables only
    lab.start_daemon(h, text + lab.network_toml(h, peers=[]), backend=backend)
    st = lab.status(h)
    assert len(st["networks"]) == 21 and all(n["tap_up"] for n in st["networks"].values())
    assert sum(len(n["fdb"]) for n in st["networks"].values()) == 60
    with netns.ipr(h.ns) as ipr:
        links = {str(link.get("IFLA_IFNAME")): link for link in ipr.get_links()}
        for i in range(20):
            tap, br = links[f"vxdp-n{i}"], links[f"br-n{i}"]
            assert tap.get("IFLA_OPERSTATE") == "UP" and tap.get("IFLA_MTU") == 1450
            assert tap.get("IFLA_MASTER") == br["index"]
    assert lab.stop_daemon(h) == 0
    with netns.ipr(h.ns) as ipr:
        names = {str(link.get("IFLA_IFNAME")) for link in ipr.get_links()}
    assert not {n for n in names if n.startswith(("vxdp-", "br-n"))}, names
    assert "br-blue" in names and f"v{c.name}" in names
