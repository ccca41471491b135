"""tshark as an independent judge of our outer packets: VXLAN, GRE, GRE-in-UDP and NVGRE.

One pcap (Ethernet link type, our outer IP packets behind a dummy underlay Ethernet header)
is dissected twice: `-T fields` for the values (VNI, key, inner Ethernet/IP, checksum status)
and `-V` to prove nothing is Malformed or flagged as an error. Checksum validation is switched
on so tshark also verifies our IPv4 header and IPv6 UDP checksums.

tshark is optional on a developer machine (the module skips), mandatory under CI=true.
"""

from __future__ import annotations

import ipaddress
import subprocess
from typing import NamedTuple

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from helpers import need_tool
from vxlan_dp.wire import encapsulate, flow_hash

TSHARK = need_tool("tshark", "tshark", module=True)

V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:db8::1", "2001:db8::2")
MAC_A = "02:42:c0:a8:00:02"
MAC_B = "02:42:c0:a8:00:03"
CUSTOM_VXLAN_PORT = 8472
CUSTOM_GRE_UDP_PORT = 6000

INNER = {
    "tcp4": (Ether(src=MAC_A, dst=MAC_B) / IP(src="192.168.0.2", dst="192.168.0.3")
             / TCP(sport=40000, dport=8080, flags="PA") / Raw(b"payload"), "192.168.0.2", "ip:tcp"),
    "udp6": (Ether(src=MAC_A, dst=MAC_B) / IPv6(src="fd00::2", dst="fd00::3")
             / UDP(sport=5000, dport=5001) / Raw(b"v6 payload"), "fd00::2", "ipv6:udp:data"),
    "arp": (Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff")
            / ARP(hwsrc=MAC_A, psrc="192.168.0.2", pdst="192.168.0.3"), None, "arp"),
    "vlan": (Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=300) / IP(src="192.168.7.2", dst="192.168.7.3")
             / UDP(sport=7, dport=7) / Raw(b"echo"), "192.168.7.2", "vlan:ethertype:ip:udp:echo"),
}


class Case(NamedTuple):
    name: str
    encap: str
    outer: tuple[str, str]
    key: int
    inner: str
    port: int = 0
    nvgre: bool = False

    @property
    def frame(self) -> bytes:
        return bytes(INNER[self.inner][0])

    def packet(self) -> bytes:
        return encapsulate(self.encap, *(ipaddress.ip_address(a).packed for a in self.outer),
                           self.key, self.frame, dport=self.port, nvgre=self.nvgre)

    def wire_key(self) -> int:
        return (self.key << 8) | (flow_hash(self.frame) & 0xFF) if self.nvgre else self.key


CASES = [
    Case("vxlan4", "vxlan", V4, 42, "tcp4", 4789),
    Case("vxlan6", "vxlan", V6, (1 << 24) - 1, "udp6", 4789),
    Case("vxlan4-8472-vni0", "vxlan", V4, 0, "arp", CUSTOM_VXLAN_PORT),
    Case("vxlan6-vlan", "vxlan", V6, 1, "vlan", 4789),
    Case("gre4", "gre", V4, 42, "tcp4"),
    Case("gre6", "gre", V6, 0xFFFFFFFF, "udp6"),
    Case("gre4-arp", "gre", V4, 7, "arp"),
    Case("greudp4", "gre-udp", V4, 4242, "udp6", 4754),
    Case("greudp6", "gre-udp", V6, 99, "tcp4", 4754),
    Case("greudp4-custom-port", "gre-udp", V4, 5, "vlan", CUSTOM_GRE_UDP_PORT),
    Case("nvgre4", "gre", V4, 0xABCDEF, "tcp4", nvgre=True),
    Case("nvgre-udp6", "gre-udp", V6, 0x000101, "arp", 4754, nvgre=True),
]

FIELDS = ["frame.protocols", "vxlan.flags", "vxlan.vni", "gre.key", "gre.proto", "udp.dstport",
          "eth.src", "eth.dst", "ip.src", "ipv6.src", "ip.checksum.status", "udp.checksum.status"]
OPTIONS = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-d", f"udp.port=={CUSTOM_VXLAN_PORT},vxlan", "-d", f"udp.port=={CUSTOM_GRE_UDP_PORT},gre"]
UNDERLAY_SRC, UNDERLAY_DST = "02:00:5e:00:00:01", "02:00:5e:00:00:02"


def _tshark(*args: str) -> str:
    r = subprocess.run([TSHARK, *args], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    path = tmp_path_factory.mktemp("pcap") / "encaps.pcap"
    wrpcap(str(path), [Ether(src=UNDERLAY_SRC, dst=UNDERLAY_DST, type=0x86DD if c.outer is V6 else 0x0800)
                       / Raw(c.packet()) for c in CASES])
    return path


@pytest.fixture(scope="module")
def dissected(pcap) -> dict[str, dict[str, list[str]]]:
    args = ["-r", str(pcap), *OPTIONS, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
            "-E", "aggregator=|"]
    for f in FIELDS:
        args += ["-e", f]
    rows = _tshark(*args).splitlines()
    assert len(rows) == len(CASES)
    out = {}
    for case, row in zip(CASES, rows):
        cols = row.split("\t")
        out[case.name] = {f: (v.split("|") if v else []) for f, v in zip(FIELDS, cols)}
    return out


@pytest.fixture(scope="module")
def verbose(pcap) -> str:
    return _tshark("-r", str(pcap), *OPTIONS, "-V")


def _outer_protocols(c: Case) -> str:
    ip = "ipv6" if c.outer is V6 else "ip"
    return {"vxlan": f"eth:ethertype:{ip}:udp:vxlan", "gre": f"eth:ethertype:{ip}:gre",
            "gre-udp": f"eth:ethertype:{ip}:udp:gre"}[c.encap]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tshark_sees_the_whole_stack(dissected, case):
    d = dissected[case.name]
    _, inner_src, inner_protos = INNER[case.inner]
    assert d["frame.protocols"] == [f"{_outer_protocols(case)}:eth:ethertype:{inner_protos}"]
    # inner Ethernet: the last occurrence of eth.src/dst is the tunnelled frame
    assert d["eth.src"] == [UNDERLAY_SRC, MAC_A]
    assert d["eth.dst"][-1] == INNER[case.inner][0].dst
    if inner_src is not None:
        assert inner_src in d["ipv6.src" if ":" in inner_src else "ip.src"]


@pytest.mark.parametrize("case", [c for c in CASES if c.encap == "vxlan"], ids=lambda c: c.name)
def test_tshark_decodes_vxlan_vni(dissected, case):
    d = dissected[case.name]
    assert d["vxlan.vni"] == [str(case.key)]
    assert int(d["vxlan.flags"][0], 16) == 0x0800  # I flag only, reserved bits zero
    assert d["udp.dstport"][0] == str(case.port)


@pytest.mark.parametrize("case", [c for c in CASES if c.encap != "vxlan"], ids=lambda c: c.name)
def test_tshark_decodes_gre_key(dissected, case):
    d = dissected[case.name]
    assert [int(k, 16) for k in d["gre.key"]] == [case.wire_key()]
    assert [int(p, 16) for p in d["gre.proto"]] == [0x6558]
    if case.encap == "gre-udp":
        assert d["udp.dstport"][0] == str(case.port)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tshark_verifies_outer_checksums(dissected, case):
    d = dissected[case.name]
    good, not_present = "1", "3"
    if case.outer is V4:
        assert d["ip.checksum.status"] and set(d["ip.checksum.status"]) == {good}
    if case.encap != "gre":
        # IPv4 outer UDP checksum may be zero (RFC 7348 sec. 5); over IPv6 it must verify
        assert d["udp.checksum.status"][0] == (good if case.outer is V6 else not_present)


def test_nothing_malformed(verbose):
    assert verbose.count("Frame ") >= len(CASES)
    assert "Malformed" not in verbose
    assert "Expert Info (Error" not in verbose
    assert "Expert Info (Warning" not in verbose
