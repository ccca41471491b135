"""ARP / ND suppression with real daemons: three hosts, containers, tshark as the judge.

Each host's config publishes the other hosts' containers (`fdb` entries with their `ip`), as
an orchestrator would. What a user checks:
- an ARP request or IPv6 NS for a published address is answered on the host: the ping works
  and tshark on the underlay sees no ARP request / NS for it leaving the host;
- an unknown address still floods (tshark sees the request, once per peer);
- the NA the daemon writes is correct (tshark in the container validates its ICMPv6 checksum
  and reads the right link-layer address);
- a MAC move (the config changes, SIGHUP) changes the answer;
- with suppression off everything still works, by flooding.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any


from helpers import flush_neighbours, need_tool, tshark_capture
from vxlan_dp.linux import IFA_F_NODAD
from vxlan_dp.lab import Lab, netns

TSHARK = shutil.which("tshark")


def _need_tshark() -> None:
    need_tool("tshark", "tshark")


def _v6(c: Any) -> str:
    return f"fd00::{c.ip.rsplit('.', 1)[1]}"


def _published(lab: Lab, host: Any, extra: str = "") -> str:
    """host's network, with every other host's containers published (MAC, remote, both IPs)."""
    items = [f'{{ mac = "{c.mac}", remote = "{h.ip4}", ip = ["{c.ip}", "{_v6(c)}"] }}'
             for h in lab.hosts if h is not host for c in h.containers]
    return lab.network_toml(host, extra="fdb = [" + ", ".join(items) + "]" + (f"\n{extra}" if extra else ""))


def _lab(make_lab: Callable[..., Lab], backend: str, hosts: int = 3, extra: str = "") -> Lab:
    lab = make_lab(hosts)
    for h in lab.hosts:
        c = lab.add_container(h)
        with netns.ipr(c.ns) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="eth0")[0], address=_v6(c), prefixlen=64,
                     flags=IFA_F_NODAD)
    lab.settle()
    for h in lab.hosts:
        lab.start_daemon(h, _published(lab, h, extra), backend=backend)
    return lab


def _capture(ns: str, ifname: str, bpf: str, pcap: str) -> Any:
    """tshark on `ifname` in `ns` for the duration of the block (bounded: 60 s, 5000 packets)."""
    return tshark_capture(ns, ifname, bpf, pcap, duration=60, count=5000)


def _fields(pcap: str, fields: list[str], *, vxlan: bool = False, where: str = "") -> list[list[str]]:
    assert TSHARK is not None
    argv = [TSHARK, "-n", "-r", pcap, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
            "-E", "aggregator=,"] + [a for f in fields for a in ("-e", f)]
    if vxlan:
        argv += ["-d", "udp.port==4789,vxlan"]
    if where:
        argv += ["-Y", where]
    r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines()]


def _neigh(lab: Lab, host: Any) -> dict[str, Any]:
    return lab.status(host)["networks"]["blue"]["neigh"]  # type: ignore[no-any-return]


def _neigh_mac(ns: str, ip: str) -> str | None:
    with netns.ipr(ns) as ipr:
        for n in ipr.get_neighbours():
            if n.get("NDA_DST") == ip:
                return n.get("NDA_LLADDR")  # type: ignore[no-any-return]
    return None


def test_published_addresses_answered_locally_unknown_ones_flood(make_lab, backend, tmp_path):
    _need_tshark()
    lab = _lab(make_lab, backend)
    h1 = lab.hosts[0]
    c1, c2, c3 = (h.containers[0] for h in lab.hosts)
    under, inside = str(tmp_path / "ul0.pcapng"), str(tmp_path / "c1.pcapng")
    with _capture(h1.ns, "ul0", "udp port 4789", under), _capture(c1.ns, "eth0", "icmp6 or arp", inside):
        assert lab.ping(c1, c2.ip).ok                       # ARP for c2: answered on h1
        assert lab.ping(c1, _v6(c3)).ok                     # NS for c3: answered on h1
        assert lab.ping(c1, "192.168.0.99", count=1).received == 0      # unknown: flooded
        assert lab.ping(c1, "fd00::99", count=1).received == 0
    arp = _fields(under, ["arp.dst.proto_ipv4"], vxlan=True, where="arp.opcode == 1")
    targets = [row[0] for row in arp]
    assert c2.ip not in targets, targets
    assert targets.count("192.168.0.99") >= 2, targets  # one copy per peer at least
    ns = [row[0] for row in _fields(under, ["icmpv6.nd.ns.target_address"], vxlan=True,
                                    where="icmpv6.type == 135")]
    assert _v6(c3) not in ns and "fd00::99" in ns, ns
    # the NA c1 received from h1's daemon: tshark validates its checksum and reads the MAC
    na = _fields(inside, ["icmpv6.checksum.status", "icmpv6.nd.na.target_address", "icmpv6.opt.linkaddr",
                          "icmpv6.nd.na.flag.s", "ipv6.hlim"], where="icmpv6.type == 136")
    ours = [row for row in na if row[1] == _v6(c3)]
    assert ours, na
    assert all(r[0] == "1" and r[2] == c3.mac and r[3] in ("1", "True") and r[4] == "255" for r in ours), ours
    st = _neigh(lab, h1)
    c = st["counters"]
    assert st["suppress_arp"] and st["entries"] == 4
    assert c["arp_suppressed"] >= 1 and c["nd_suppressed"] >= 1 and c["unknown_flooded"] >= 2, c
    assert c["replies_sent"] == c["arp_suppressed"] + c["nd_suppressed"] and c["reply_errors"] == 0, c
    assert _neigh_mac(c1.ns, c2.ip) == c2.mac
    out = lab.run(h1.ns, ["python3", "-m", "vxlan_dp", "fdb", "blue", "--neigh", "--socket", h1.socket_path])
    assert c2.ip in out.stdout and c2.mac in out.stdout and "control" in out.stdout, out.stdout + out.stderr


def test_mac_move_changes_the_answer(make_lab, backend):
    lab = _lab(make_lab, backend, hosts=2)
    h1, h2 = lab.hosts
    c1, c2 = h1.containers[0], h2.containers[0]
    assert lab.ping(c1, c2.ip).ok and _neigh_mac(c1.ns, c2.ip) == c2.mac
    new = "02:42:c0:a8:00:7e"
    with netns.ipr(c2.ns) as ipr:      # the container comes back with another MAC
        ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], address=new)
    c2.mac = new
    with open(h1.config_path, "w") as f:     # the orchestrator publishes it; h1 reloads
        f.write('[daemon]\nmetrics = ""\n' + _published(lab, h1))
    h1.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    for _ in range(50):
        ans = lab.run(h1.ns, ["python3", "-m", "vxlan_dp", "fdb", "blue", "--neigh", "--json",
                              "--socket", h1.socket_path])
        if new in ans.stdout:
            break
        time.sleep(0.1)
    assert new in ans.stdout, ans.stdout + ans.stderr
    flush_neighbours(c1.ns)
    assert lab.ping(c1, c2.ip).ok
    assert _neigh_mac(c1.ns, c2.ip) == new


def test_suppression_on_and_off_give_the_same_connectivity(make_lab, backend):
    lab = _lab(make_lab, backend)
    assert all(r.ok for r in lab.ping_all()), lab.ping_all()
    before = {h.name: _neigh(lab, h)["counters"]["arp_suppressed"] for h in lab.hosts}
    assert all(v >= 1 for v in before.values()), before
    for h in lab.hosts:
        with open(h.config_path, "w") as f:
            f.write('[daemon]\nmetrics = ""\n' + _published(lab, h, "suppress_arp = false"))
        h.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    for h in lab.hosts:
        for _ in range(50):
            if not _neigh(lab, h)["suppress_arp"]:
                break
            time.sleep(0.1)
        assert not _neigh(lab, h)["suppress_arp"]
        for c in h.containers:
            flush_neighbours(c.ns)
    flooded = {h.name: lab.status(h)["networks"]["blue"]["counters"]["flood_frames"] for h in lab.hosts}
    assert all(r.ok for r in lab.ping_all())
    after = {h.name: _neigh(lab, h)["counters"]["arp_suppressed"] for h in lab.hosts}
    assert after == before                              # nothing answered locally any more ...
    now = {h.name: lab.status(h)["networks"]["blue"]["counters"]["flood_frames"] for h in lab.hosts}
    # ... the ARP requests were flooded instead: each of the 3 pairs needed at least one (the
    # other side learns from the request, so which host floods depends on who asks first)
    assert sum(now.values()) - sum(flooded.values()) >= 3, (flooded, now)
