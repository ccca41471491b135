"""Live wire check: what two vxlan-dp daemons put on the underlay, judged by tshark.

The kernel here has no GRE module, so tshark is the independent judge of GRE bytes: a capture
on a lab host's underlay interface `ul0` while containers ping across (small pings, and one
that fills the overlay MTU) must decode, every packet of it, as outer IP / GRE (or UDP / GRE,
or UDP / VXLAN) / Ethernet / inner packet with the network's key or VNI, protocol 0x6558, no
Malformed packet and no expert warning, the outer IPv4 header checksum verifying, and the UDP
checksum verifying where it is present (IPv6: always). Non-default ports are dissected with
`-d udp.port==P,...`: the point of vxlan-dp is that the port is ours to choose.
"""

from __future__ import annotations

import subprocess
from typing import NamedTuple

import pytest

from helpers import need_tool, tshark_capture, lab_with_daemons
from vxlan_dp.lab import Lab

TSHARK = need_tool("tshark", "tshark", module=True)

VNI = 5000          # 0x1388: a key whose bytes are all distinct from the header around it
EXPERT_WARN = 0x00600000  # PI_WARN (epan/proto.h); PI_ERROR is 0x00800000
CSUM_GOOD, CSUM_NOT_PRESENT = 1, 3  # epan/proto.h PROTO_CHECKSUM_E_{GOOD,NOT_PRESENT}

FIELDS = ["frame.protocols", "ip.src", "ip.dst", "ip.len", "ip.checksum.status", "ipv6.src", "ipv6.dst",
          "ipv6.plen", "udp.srcport", "udp.dstport", "udp.checksum.status", "gre.flags_and_version",
          "gre.proto", "gre.key", "vxlan.flags", "vxlan.vni", "eth.src", "eth.dst", "icmp.type",
          "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"]


class Wire(NamedTuple):
    encap: str
    port: int | None     # what the config says (None: the encapsulation's default)
    wire_port: int       # the outer UDP destination port expected on the wire (0: gre)
    ipv6: bool = False

    @property
    def bpf(self) -> str:
        if self.encap == "gre":
            return "ip6 proto 47" if self.ipv6 else "ip proto 47"
        return f"udp port {self.wire_port}"

    @property
    def decode_as(self) -> list[str]:
        if self.encap == "gre":
            return []
        return ["-d", f"udp.port=={self.wire_port},{'vxlan' if self.encap == 'vxlan' else 'gre'}"]

    @property
    def prefix(self) -> str:
        l3 = "eth:ethertype:ipv6:" if self.ipv6 else "eth:ethertype:ip:"
        return l3 + {"gre": "gre:", "gre-udp": "udp:gre:", "vxlan": "udp:vxlan:"}[self.encap] + "eth:ethertype:"



CASES = [
    pytest.param(Wire("gre", None, 0), id="gre-ipv4"),
    pytest.param(Wire("gre-udp", None, 4754), id="gre-udp-ipv4-4754"),
    pytest.param(Wire("gre-udp", 6000, 6000), id="gre-udp-ipv4-6000"),
    pytest.param(Wire("vxlan", 8472, 8472), id="vxlan-ipv4-8472"),
    pytest.param(Wire("gre", None, 0, ipv6=True), id="gre-ipv6"),
    pytest.param(Wire("gre-udp", None, 4754, ipv6=True), id="gre-udp-ipv6-4754"),
]


def _capture(lab: Lab, w: Wire, pcap: str, traffic) -> None:
    """Capture `w`'s packets on h1's ul0 while `traffic()` runs; bounded by -a duration."""
    with tshark_capture(lab.hosts[0].ns, "ul0", w.bpf, pcap, duration=30, check=True):
        traffic()


def _dissect(w: Wire, pcap: str) -> list[dict[str, str]]:
    r = subprocess.run([TSHARK, "-n", "-r", pcap, "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                        *w.decode_as, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
                        "-E", "aggregator=,"] + [a for f in FIELDS for a in ("-e", f)],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [dict(zip(FIELDS, line.split("\t"))) for line in r.stdout.splitlines()]


def _ints(v: str) -> list[int]:
    return [int(x, 0) for x in v.split(",") if x]


@pytest.mark.parametrize("w", CASES)
def test_underlay_packets_decode_cleanly(make_lab, backend, tmp_path, w):
    lab = lab_with_daemons(make_lab, backend, encap=w.encap, ipv6=w.ipv6, port=w.port, vni=VNI)
    h1, h2 = lab.hosts
    mtu = lab.overlay_mtu(w.encap)
    a, b = h1.containers[0], h2.containers[0]
    pcap = str(tmp_path / "ul0.pcapng")

    def traffic() -> None:
        assert lab.ping(a, b.ip, count=4).ok
        # one echo that fills the overlay MTU exactly (DF set): the outer packet is 1500 bytes
        r = lab.run(a.ns, ["ping", "-n", "-q", "-c", "1", "-W", "2", "-M", "do", "-s", str(mtu - 28), b.ip])
        assert r.returncode == 0, r.stdout + r.stderr

    _capture(lab, w, pcap, traffic)
    rows = _dissect(w, pcap)
    assert len(rows) >= 10, rows  # 5 echo requests + 5 replies at least (and ARP, and IPv6 chatter)

    ours = {h1.address(w.ipv6), h2.address(w.ipv6)}
    bad = []
    for n, r in enumerate(rows, 1):
        why = []
        if not r["frame.protocols"].startswith(w.prefix):
            why.append(f"layers {r['frame.protocols']}, expected {w.prefix}...")
        if r["_ws.malformed"]:
            why.append("malformed")
        expert = [s for s in _ints(r["_ws.expert.severity"]) if s >= EXPERT_WARN]
        if expert:
            why.append(f"expert {r['_ws.expert.message']}")
        src, dst = ((r["ipv6.src"], r["ipv6.dst"]) if w.ipv6 else (r["ip.src"], r["ip.dst"]))
        if {src.split(",")[0], dst.split(",")[0]} != ours:
            why.append(f"outer {src} -> {dst}")
        if not w.ipv6 and _ints(r["ip.checksum.status"])[:1] != [CSUM_GOOD]:
            why.append(f"outer IPv4 checksum status {r['ip.checksum.status']}")
        if any(s != CSUM_GOOD for s in _ints(r["ip.checksum.status"])[1:]):
            why.append(f"inner IPv4 checksum status {r['ip.checksum.status']}")
        if w.encap == "vxlan":
            if (_ints(r["vxlan.vni"]), _ints(r["vxlan.flags"])) != ([VNI], [0x0800]):
                why.append(f"vxlan vni {r['vxlan.vni']} flags {r['vxlan.flags']}")
        else:
            got = (_ints(r["gre.flags_and_version"]), _ints(r["gre.proto"]), _ints(r["gre.key"]))
            if got != ([0x2000], [0x6558], [VNI]):
                why.append(f"gre flags {r['gre.flags_and_version']} proto {r['gre.proto']} key {r['gre.key']}")
        if w.encap != "gre":
            sport, dport = _ints(r["udp.srcport"])[0], _ints(r["udp.dstport"])[0]
            if dport != w.wire_port or not 49152 <= sport <= 65535:
                why.append(f"udp {sport} -> {dport}")
            csum = _ints(r["udp.checksum.status"])[:1]
            if csum != [CSUM_GOOD] and (w.ipv6 or csum != [CSUM_NOT_PRESENT]):
                why.append(f"udp checksum status {r['udp.checksum.status']}")
        if why:
            bad.append(f"#{n}: " + "; ".join(why))
    assert not bad, "\n".join(bad)

    def echo(t: int, src, dst) -> list[dict[str, str]]:
        return [r for r in rows if _ints(r["icmp.type"]) == [t]
                and r["eth.src"].split(",")[1:] == [src.mac] and r["eth.dst"].split(",")[1:] == [dst.mac]
                and r["ip.src"].split(",")[-1] == src.ip and r["ip.dst"].split(",")[-1] == dst.ip]

    assert len(echo(8, a, b)) >= 5 and len(echo(0, b, a)) >= 5, "inner ICMP echo a -> b and back"
    outer_len = [_ints(r["ipv6.plen"])[0] + 40 if w.ipv6 else _ints(r["ip.len"])[0] for r in rows]
    assert max(outer_len) == 1500, "a full overlay-MTU frame travels in one 1500-byte outer packet"
