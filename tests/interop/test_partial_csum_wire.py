"""Partial inner checksums, crafted by Scapy and judged at the TAP and by the receiving stack.

1. GRE-in-UDP and GRE between two vxlan-dp daemons (the kernel here has no GRE module, so the
   partial case is crafted): from the peer host's namespace, three UDP datagrams for a container
   behind the other daemon, one with its checksum left partial (the folded pseudo-header sum,
   as a Linux sender leaves it), one complete, one corrupt. The container's UDP socket receives
   the partial and the complete one, the corrupt one is dropped by its stack (UdpInCsumErrors),
   and the daemon counted exactly one completion, naming the sender.
2. A tshark capture on the receiving daemon's TAP while a kernel vxlan peer on default offloads
   runs TCP both ways and the same three datagrams are crafted: every inner TCP/UDP checksum
   that reaches the TAP verifies (a GSO frame written with NEEDS_CSUM carries the partial sum
   by design: checked to be exactly that), and the corrupt datagram arrives corrupt.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import time
from typing import Any

import pytest
from pyroute2 import netns as pnetns
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from helpers import need_tool, tshark_capture, lab_with_daemons, ones_sum
from vxlan_dp.lab import Lab
from vxlan_dp.lab.lab import Container, Host

CSUM_GOOD, CSUM_BAD = 1, 0          # epan/proto.h PROTO_CHECKSUM_E_*
PEER_MAC = "02:42:c0:a8:00:63"      # the crafted sender "behind" the peer host
PEER_IP = "192.168.0.99"
DPORT = 9000


_fold = ones_sum  # the shared model (tests/helpers.py)


def _datagrams(dst: Container) -> dict[str, bytes]:
    """Three inner frames for `dst`: UDP with a partial, a complete and a corrupt checksum."""
    out = {}
    for kind in ("partial", "complete", "corrupt"):
        full = bytes(Ether(src=PEER_MAC, dst=dst.mac) / IP(src=PEER_IP, dst=dst.ip, ttl=64)
                     / UDP(sport=7000, dport=DPORT) / Raw(f"{kind}-datagram".encode() * 8))
        b = bytearray(full)
        at = 14 + 20 + 6
        if kind == "partial":
            length = len(full) - 34
            pseudo = (ipaddress.ip_address(PEER_IP).packed + ipaddress.ip_address(dst.ip).packed
                      + struct.pack("!BBH", 0, 17, length))
            b[at:at + 2] = struct.pack("!H", _fold(pseudo))
        elif kind == "corrupt":
            b[at] ^= 0x5A           # neither the complete nor the partial value
        out[kind] = bytes(b)
    return out


def _encap(encap: str, vni: int, frame: bytes) -> bytes:
    if encap == "vxlan":
        return struct.pack("!II", 0x08000000, vni << 8) + frame
    return struct.pack("!HHI", 0x2000, 0x6558, vni) + frame          # GRE, K bit, key = VNI


def _send(lab: Lab, src: Host, dst: Host, encap: str, port: int, vni: int, frames: list[bytes]) -> None:
    """From `src`'s namespace, as its vxlan-dp or kernel would: UDP to the port, or raw GRE."""
    if encap == "gre":
        s = pnetns.create_socket(src.ns, socket.AF_INET, socket.SOCK_RAW, 47)
    else:
        s = pnetns.create_socket(src.ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for f in frames:
            s.sendto(_encap(encap, vni, f), (dst.ip4, 0 if encap == "gre" else port))
            time.sleep(0.05)
    finally:
        s.close()


def _receiver(c: Container) -> socket.socket:
    s = pnetns.create_socket(c.ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((c.ip, DPORT))
    s.settimeout(0.5)
    return s


def _received(s: socket.socket) -> set[str]:
    got = set()
    while True:
        try:
            data = s.recv(2048)
        except TimeoutError:
            return got
        got.add(data.split(b"-")[0].decode())


def _csum_errors(lab: Lab, c: Container) -> int:
    """UdpInCsumErrors of the container's stack (/proc/net/snmp, read inside its namespace)."""
    lines = [ln.split() for ln in lab.run(c.ns, ["cat", "/proc/net/snmp"]).stdout.splitlines() if ln.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1]))["InCsumErrors"])


@pytest.mark.parametrize("encap", ["gre-udp", "gre"])
def test_crafted_partial_checksum_between_daemons(make_lab, backend, encap):
    lab: Lab = lab_with_daemons(make_lab, backend, encap=encap, vni=42)
    h1, h2 = lab.hosts
    a = h1.containers[0]
    rx = _receiver(a)
    errors0 = _csum_errors(lab, a)
    try:
        frames = _datagrams(a)
        _send(lab, h2, h1, encap, 4754, 42, list(frames.values()))
        got = _received(rx)
    finally:
        rx.close()
    assert got == {"partial", "complete"}, got
    assert _csum_errors(lab, a) == errors0 + 1, "the corrupt datagram reached the stack and was dropped there"
    n = lab.status(h1)["networks"]["blue"]
    assert n["counters"]["csum_completed"] == 1, n["counters"]


def _capture(tshark: str, ns: str, ifname: str, pcap: str, traffic: Any) -> None:
    with tshark_capture(ns, ifname, "tcp or udp", pcap, duration=30, count=100000):
        traffic()


FIELDS = ["frame.len", "ip.src", "ip.dst", "ip.len", "ip.hdr_len", "tcp.checksum", "tcp.checksum.status",
          "udp.checksum", "udp.checksum.status"]


def _gso_partial(r: dict[str, str]) -> bool:
    """A GSO frame written to the TAP with NEEDS_CSUM: its TCP field holds the pseudo-header
    sum over its whole TCP segment (what the TAP's kernel finishes, or trusts)."""
    length = int(r["ip.len"]) - int(r["ip.hdr_len"])
    pseudo = (ipaddress.ip_address(r["ip.src"]).packed + ipaddress.ip_address(r["ip.dst"]).packed
              + struct.pack("!BBH", 0, 6, length))
    return int(r["tcp.checksum"], 16) == _fold(pseudo)


def test_tap_capture_every_checksum_verifies_but_the_corrupt_one(make_lab, backend, tmp_path):
    tshark = need_tool("tshark", "tshark")
    lab: Lab = make_lab(2)              # the kernel's default offloads: its checksums come partial
    h1, h2 = lab.hosts
    for h in lab.hosts:
        lab.add_container(h)
    lab.add_kernel_vxlan(h2, vni=42, port=4789)
    lab.settle()
    lab.start_daemon(h1, lab.network_toml(h1, port=4789), backend=backend)
    a, b = h1.containers[0], h2.containers[0]
    assert lab.ping(a, b.ip).ok
    pcap = str(tmp_path / "tap.pcapng")
    rx = _receiver(a)
    errors0 = _csum_errors(lab, a)
    moved: list[int] = []
    crafted = _datagrams(a)
    corrupt_field = int.from_bytes(crafted["corrupt"][40:42], "big")

    def traffic() -> None:
        _send(lab, h2, h1, "vxlan", 4789, 42, list(crafted.values()))
        for reverse in (False, True):       # paced: every packet fits the bounded capture
            r = lab.iperf3(a, b, seconds=1, reverse=reverse, bitrate="50M")
            moved.append(int(r.get("end", {}).get("sum_received", {}).get("bytes", 0)))

    try:
        _capture(tshark, h1.ns, "vxdp-blue", pcap, traffic)
        got = _received(rx)
    finally:
        rx.close()
    assert all(m > 1_000_000 for m in moved), moved
    assert got == {"partial", "complete"}, got
    assert _csum_errors(lab, a) == errors0 + 1
    r = subprocess.run([tshark, "-n", "-r", pcap, "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                        "-T", "fields", "-E", "separator=\t"] + [x for f in FIELDS for x in ("-e", f)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    # what vxlan-dp wrote to the TAP: from the overlay's side (the other direction is the
    # TAP's kernel handing us frames, partial by design: the vnet header says NEEDS_CSUM)
    rows = [x for x in (dict(zip(FIELDS, line.split("\t"))) for line in r.stdout.splitlines())
            if x["ip.src"] in (b.ip, PEER_IP)]
    tcp = [x for x in rows if x["tcp.checksum.status"]]
    udp = [x for x in rows if x["udp.checksum.status"]]
    assert len(tcp) > 100, len(rows)
    bad_tcp = [x for x in tcp if int(x["tcp.checksum.status"]) != CSUM_GOOD and not _gso_partial(x)]
    assert not bad_tcp, bad_tcp[:5]
    ours = [x for x in udp if x["ip.src"] == PEER_IP]
    assert len(ours) == 3, ours          # the crafted three, the partial one completed on the way
    for x in udp:
        want = CSUM_BAD if x["ip.src"] == PEER_IP and int(x["udp.checksum"], 16) == corrupt_field else CSUM_GOOD
        assert int(x["udp.checksum.status"]) == want, x
    assert sum(int(x["udp.checksum"], 16) == corrupt_field for x in ours) == 1
    c = lab.status(h1)["networks"]["blue"]["counters"]
    assert c["csum_completed"] > 0
