"""Hostile input at scale and adversarial isolation, against running daemons in the lab.

1. A million malformed packets. h1 runs three networks (vxlan blue 42 on :4789, gre-udp green
   43 on :4754, gre red 44); h2, its legitimate peer, runs the same three with a container in
   each, and pings h1's containers across all three for the whole run; h3 is the attacker, a
   configured peer of h1 without a daemon (so its packets get past the source check and reach
   the deep validation) that can also forge its IP source. From h3 a sender fires at least
   1,000,000 datagrams at h1's VXLAN port, GRE-in-UDP port and GRE socket: random bytes, empty
   and truncated headers, wrong flags, versions and protocols, bad GRE checksums, unknown VNIs
   and the other encapsulation's VNIs, IP options (a 60-byte IP header), forged non-peer
   sources, inner frames shorter than an Ethernet header or with a group source, jumbo inner
   frames (fragmented on the wire), and IP fragments of its own: complete pairs, out of order,
   and lone fragments that never complete. (The Python backend gets 100,000 of them: the same
   checks at its per-packet cost.)
   Every template's fate is decided beforehand by the reference backend (PureDataplane), and
   the sender counts what it sent of each, so the test knows exactly how much every drop
   counter must move. It checks: the daemon stays up, with no traceback; legitimate pings lose
   nothing; no hostile frame reaches a TAP (h1 delivered exactly what h2 sent it); and h1's
   drop counters, by reason, equal the expected figures exactly, with the kernel accounted
   for: complete fragment sets counted by reassembly (Ip ReasmOKs), lone fragments held by it,
   and nothing lost to a full socket buffer (Udp RcvbufErrors, raw socket drops) or on the
   veth path (tx_dropped).

2. Isolation: six networks on h1 sharing sockets (two VXLAN VNIs on one port, GRE-in-UDP and
   GRE keys that are VNIs of VXLAN networks elsewhere, an NVGRE VSID beside plain GRE keys, a
   network that accepts unknown sources) receive crafted packets from a peer, a non-peer and a
   forged IP source: VNIs of other networks and other endpoints, one encapsulation's bytes on
   the other's port, values in the reserved bytes, a VXLAN packet for network B nested inside
   a frame of A, a VLAN tag, B's station MAC as a source in A. Packet sockets on every TAP
   record which network each tagged frame reached: each lands in exactly the network the rules
   name, or nowhere, every counter moves as the rules say, and no FDB learns a foreign MAC.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest
from pyroute2 import netns as pr_netns

from helpers import SCRIPTS
from vxlan_dp.fastpath import NetworkParams, PureDataplane
from vxlan_dp.lab import Lab, netns
from vxlan_dp.linux import ETH_P_ALL
from vxlan_dp.wire import encode_ipv4, internet_checksum

PORT_VXLAN, PORT_GRE_UDP = 4789, 4754
NETS = [("blue", "vxlan", 42, PORT_VXLAN, "vxdp-blue", "br-blue"),
        ("green", "gre-udp", 43, PORT_GRE_UDP, "vxdp-green", "br-green"),
        ("red", "gre", 44, None, "vxdp-red", "br-red")]
FORGED = ["198.18.0.77", "198.18.0.78", "198.18.0.79", "198.18.0.80"]   # on-link, nobody's
MAC_ATTACK = bytes.fromhex("026600000001")
MAC_DST = bytes.fromhex("0242c0a8000b")
HOSTILE_TOTAL = {"c": 1_000_000, "python": 100_000}
RATE = {"c": 150_000, "python": 25_000}      # datagrams/s: what h1 drains without a full buffer


# --- packet building ---------------------------------------------------------------------

def inner(size: int = 60, src: bytes = MAC_ATTACK, dst: bytes = MAC_DST, tag: bytes = b"hostile") -> bytes:
    head = dst + src + b"\x88\xb5" + tag
    return (head + bytes(max(0, size - len(head))))[:size]


def vxlan(vni: int, frame: bytes, flags: int = 0x08) -> bytes:
    return bytes([flags, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0" + frame


def gre(key: int | None, frame: bytes, *, flags: int = 0x2000, proto: int = 0x6558,
        csum: str | None = None, seq: bool = False) -> bytes:
    """GRE (RFC 2784/2890); csum "good" or "bad" sets C and fills the checksum."""
    if key is None:
        flags &= ~0x2000
    if csum:
        flags |= 0x8000
    if seq:
        flags |= 0x1000
    hdr = struct.pack("!HH", flags, proto) + (bytes(4) if flags & 0x8000 else b"")
    hdr += struct.pack("!I", key) if flags & 0x2000 and key is not None else b""
    hdr += struct.pack("!I", 9) if flags & 0x1000 else b""
    pkt = bytearray(hdr + frame)
    if flags & 0x8000:
        c = internet_checksum(bytes(pkt))
        struct.pack_into("!H", pkt, 4, c if csum == "good" else c ^ 0x5A5A)
    return bytes(pkt)


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 0, frag: int = 0,
         options: bytes = b"") -> bytes:
    """An IPv4 packet for an IP_HDRINCL socket; `frag` is the raw flags+offset field."""
    ihl = 5 + len(options) // 4
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), ident, frag, 64,
                                proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + options)
    struct.pack_into("!H", hdr, 10, internet_checksum(bytes(hdr)))
    return bytes(hdr) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload   # IPv4: checksum 0 allowed


def fragments(packet: bytes, cut: int) -> list[bytes]:
    """Split an option-less IPv4 packet in two at payload offset `cut` (a multiple of 8)."""
    hdr, data = packet[:20], packet[20:]
    ident = struct.unpack_from("!H", hdr, 4)[0]
    src, dst, proto = socket.inet_ntoa(hdr[12:16]), socket.inet_ntoa(hdr[16:20]), hdr[9]
    return [ipv4(src, dst, proto, data[:cut], ident=ident, frag=0x2000),
            ipv4(src, dst, proto, data[cut:], ident=ident, frag=cut // 8)]


# --- the sender: runs in the attacker's namespace -------------------------------------------
# Streams of precomputed templates leave by sendmmsg(2) (ctypes), paced to a total rate; the
# sender counts exactly how many copies of each template the kernel accepted. "once" packets
# (the fragments, each with its own IP ID) go one by one through the IP_HDRINCL socket.



# --- the kernel's side of the accounting ------------------------------------------------------

def snmp(pid: int) -> dict[str, int]:
    """/proc/PID/net/snmp of the daemon: the counters of its network namespace, "Proto.Field"."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/net/snmp") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto = names.split(":")[0]
        for k, v in zip(names.split()[1:], values.split()[1:]):
            out[f"{proto}.{k}"] = int(v)
    return out


def socket_drops(pid: int) -> int:
    """Datagrams the kernel dropped at the daemon's UDP and raw sockets (their `drops` column)."""
    total = 0
    for table in ("udp", "raw"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.read().splitlines()[1:]:
                total += int(line.split()[-1])
    return total


def tx_dropped(ns: str, ifname: str) -> int:
    with netns.ipr(ns) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
        return int((link.get("IFLA_STATS64") or {}).get("tx_dropped", 0))


def path_drops(lab: Lab, attacker, victim) -> int:
    """Packets dropped on the veth path attacker -> underlay bridge -> victim."""
    return tx_dropped(attacker.ns, "ul0") + tx_dropped(lab.ul_ns, victim.name)


def counters(lab: Lab, h) -> dict[tuple[str, str], int]:
    st = lab.status(h)
    out = {}
    for e in st["endpoints"]:
        for k, v in e["counters"].items():
            out[("ep:" + e["encap"], k)] = v
    for name, n in st["networks"].items():
        for k, v in n["counters"].items():
            out[(name, k)] = v
    return out


def settled(lab: Lab, hosts: list, quiet: float = 0.6, timeout: float = 30.0) -> list[dict]:
    """Counters of `hosts` once nothing moves for `quiet` seconds."""
    prev: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        snap = [counters(lab, h) for h in hosts]
        if snap == prev or time.monotonic() > deadline:
            return snap
        prev = snap
        time.sleep(quiet)


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def tracebacks(lab: Lab, h) -> int:
    try:
        with open(h.log_path, errors="replace") as f:
            return f.read().count("Traceback")
    except OSError:
        return 0


# --- 1. a million hostile packets -----------------------------------------------------------

class Model:
    """h1's data plane as the reference backend sees it: decides each template's fate."""

    def __init__(self, lab: Lab, h1, peers: list[str]) -> None:
        self.dp = PureDataplane(batch=64)
        self.eps = {}
        self.nets = {}
        for name, encap, vni, port, _tap, _br in NETS:
            ep = self.dp.add_endpoint(encap, -1, ipv4_header=encap == "gre")
            self.eps[encap] = ep
            net = self.dp.add_network(NetworkParams(vni=vni, encap=encap, local=h1.ip4, port=port or 0,
                                                    mtu=lab.overlay_mtu(encap)), ep)
            self.dp.set_peers(net, peers)
            self.nets[name] = net

    def fate(self, encap: str, src: str, payload: bytes) -> tuple[str, str]:
        """The one counter a datagram moves at h1: ("ep:<encap>" or network, drop counter)."""
        before = self.snapshot()
        got = self.dp.decap(self.eps[encap], [(src, payload)], 0.0)
        assert not got, f"template would be delivered: {encap} from {src}: {payload[:32].hex()}"
        moved = [k for k, v in delta(self.snapshot(), before).items() if k[1].startswith("drop_")]
        assert len(moved) == 1, moved
        return moved[0]

    def snapshot(self) -> dict[tuple[str, str], int]:
        out = {}
        for encap, ep in self.eps.items():
            out.update({("ep:" + encap, k): v for k, v in self.dp.endpoint_counters(ep).items()})
        for name, net in self.nets.items():
            out.update({(name, k): v for k, v in self.dp.counters(net).items()})
        return out


def hostile_templates(h1ip: str, attacker: str, mtu: dict[str, int]) -> dict[str, list[tuple[str, bytes, int]]]:
    """Per stream: (case, payload, weight). Payloads are what the sender's socket sends."""
    rng = random.Random(1234)
    ok = inner()
    group = inner(src=bytes.fromhex("01005e000001"))
    big = {e: inner(mtu[e] + 15) for e in mtu}                        # one byte over the MTU
    big_vlan = {e: (MAC_DST + MAC_ATTACK + b"\x81\x00\x00\x64\x88\xb5"
                    + bytes(mtu[e] + 19 - 18)) for e in mtu}         # tagged: one over MTU + 4
    jumbo = inner(9000)
    rand = [rng.randbytes(n) for n in (1, 3, 7, 8, 9, 16, 64, 200, 1400)]

    vx = [("empty", b"", 2), ("truncated 1", vxlan(42, ok)[:1], 2), ("truncated 7", vxlan(42, ok)[:7], 2),
          ("header only", vxlan(42, b""), 2),
          ("no I flag", vxlan(42, ok, flags=0x00), 6), ("flags 0xf7", vxlan(42, ok, flags=0xF7), 4),
          ("gre bytes on the vxlan port", gre(42, ok), 4),
          ("unknown VNI", vxlan(4242, ok), 6), ("green's VNI", vxlan(43, ok), 4), ("red's VNI", vxlan(44, ok), 4),
          ("VNI 42 << 8", vxlan(42 << 8, ok), 2),
          ("inner 1 byte", vxlan(42, ok[:1]), 3),
          ("inner 13 bytes", vxlan(42, ok[:13]), 6), ("inner group source", vxlan(42, group), 6),
          ("inner over the MTU", vxlan(42, big["vxlan"]), 1), ("inner tagged over", vxlan(42, big_vlan["vxlan"]), 1),
          ("jumbo inner 9000", vxlan(42, jumbo), 1)]
    vx += [(f"random {len(r)}", bytes([r[0] & 0xF7]) + r[1:], 3) for r in rand]     # no I flag: never valid

    def gre_cases(key: int, other: int, e: str) -> list[tuple[str, bytes, int]]:
        return [("empty", b"", 2), ("truncated 3", gre(key, ok)[:3], 2), ("truncated 7", gre(key, ok)[:7], 2),
                ("C+K truncated 10", gre(key, ok, csum="good")[:10], 2),
                ("C+K+S header, runt inner", gre(key, ok[:5], csum="good", seq=True), 3),
                *[(f"version {v}", gre(key, ok, flags=0x2000 | v), 1) for v in range(1, 8)],
                ("no K", gre(None, ok), 4), ("R bit", gre(key, ok, flags=0x6000), 4),
                ("protocol IPv4", gre(key, ok, proto=0x0800), 3), ("protocol ERSPAN", gre(key, ok, proto=0x88BE), 3),
                ("bad checksum", gre(key, ok, csum="bad"), 4),
                ("unknown key", gre(4242, ok), 6), ("other network's key", gre(other, ok), 4),
                ("blue's VNI", gre(42, ok), 4), ("NVGRE-style key", gre(key << 8 | 5, ok), 2),
                ("vxlan bytes on a gre socket", vxlan(key, ok), 4),
                ("inner 13 bytes", gre(key, ok[:13]), 6), ("inner group source", gre(key, group), 6),
                ("inner over the MTU", gre(key, big[e]), 1), ("jumbo inner 9000", gre(key, jumbo), 1),
                *[(f"random {len(r)}", bytes([r[0] & 0xDF]) + r[1:], 3) for r in rand]]  # no K: never valid

    opts15 = b"\x01" * 39 + b"\x00"                                   # IHL 15: 60-byte IP header
    forged = [
        ("forged source, vxlan", ipv4(FORGED[0], h1ip, 17, udp(40000, PORT_VXLAN, vxlan(42, ok))), 4),
        ("forged source, gre-udp", ipv4(FORGED[1], h1ip, 17, udp(40001, PORT_GRE_UDP, gre(43, ok))), 4),
        ("forged source, gre", ipv4(FORGED[2], h1ip, 47, gre(44, ok)), 4),
        ("IP header of 60 bytes, runt inner", ipv4(attacker, h1ip, 47, gre(44, ok[:9]), options=opts15), 3),
        ("IP header of 24 bytes, unknown key", ipv4(attacker, h1ip, 47, gre(4242, ok), options=b"\x01\x01\x01\x00"), 3),
    ]
    return {"vxlan": vx, "gre-udp": gre_cases(43, 44, "gre-udp"), "gre": gre_cases(44, 43, "gre"),
            "forged": forged}


def fragment_sets(h1ip: str, attacker: str, n_pairs: int, n_lone: int) -> tuple[list[bytes], list[tuple[str, str, bytes]]]:
    """IP fragments: complete pairs (half of them out of order) and lone halves that never
    complete. Returns the packets and, per complete pair, what the daemon then sees."""
    ok = inner(200)
    packets: list[bytes] = []
    seen: list[tuple[str, str, bytes]] = []
    ident = 1
    for i in range(n_pairs):
        kind = i % 3
        if kind == 0:      # forged non-peer source, a valid VXLAN packet: unknown_source
            payload = vxlan(42, ok)
            full = ipv4(FORGED[3], h1ip, 17, udp(40002, PORT_VXLAN, payload), ident=ident)
            seen.append(("vxlan", FORGED[3], payload))
        elif kind == 1:    # the attacker's own address, GRE-in-UDP with an unknown key
            payload = gre(4343, ok)
            full = ipv4(attacker, h1ip, 17, udp(40003, PORT_GRE_UDP, payload), ident=ident)
            seen.append(("gre-udp", attacker, payload))
        else:              # GRE with a bad checksum
            payload = gre(44, ok, csum="bad")
            full = ipv4(attacker, h1ip, 47, payload, ident=ident)
            seen.append(("gre", attacker, full))
        pair = fragments(full, 64)
        packets += pair if i % 2 else pair[::-1]
        ident += 1
    for i in range(n_lone):
        full = ipv4(attacker, h1ip, 17, udp(40004, PORT_VXLAN, vxlan(42, ok)), ident=ident)
        packets.append(fragments(full, 64)[i % 2])                     # first or last half alone
        ident += 1
    return packets, seen


def _quiet_ns(ns: str) -> None:
    """No IPv6 chatter (RS, MLD, DAD) of a container's own making during the measurement."""
    netns.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                   "net.ipv6.conf.default.disable_ipv6=1"], timeout=10)


def _ping_start(c, ip: str) -> subprocess.Popen[str]:
    return netns.popen(c.ns, ["ping", "-n", "-q", "-i", "0.02", "-W", "1", ip],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ping_stop(p: subprocess.Popen[str]) -> tuple[int, int]:
    time.sleep(1.0)                         # replies to earlier requests come home
    p.send_signal(2)
    out, _ = p.communicate(timeout=10)
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.mark.alone     # nothing may be lost to a full socket buffer: no other test's load beside it
def test_a_million_hostile_packets_are_all_dropped_and_counted(make_lab, backend):
    lab: Lab = make_lab(3)
    h1, h2, h3 = lab.hosts
    pairs: dict[str, tuple[Any, Any]] = {}
    for h in (h1, h2):
        _quiet_ns(h.ns)
    for name, encap, _vni, _port, _tap, bridge in NETS:
        pairs[name] = tuple(lab.add_container(h, bridge, mtu=lab.overlay_mtu(encap)) for h in (h1, h2))
        for c in pairs[name]:
            _quiet_ns(c.ns)
    lab.settle()
    for h, peers in ((h1, [h2, h3]), (h2, [h1])):
        toml = "".join(lab.network_toml(h, name=n, vni=v, encap=e, port=p, tap=t, bridge=b, peers=peers)
                       for n, e, v, p, t, b in NETS)
        lab.start_daemon(h, toml, backend=backend, daemon_toml='[daemon]\nmetrics = ""\nlog_level = "info"\n')
    for name, (a, b) in pairs.items():      # warm up: ARP resolved, MACs learned both ways
        assert lab.ping(a, b.ip, count=2).ok, name

    # every template's fate, decided by the reference backend
    mtu = {e: lab.overlay_mtu(e) for _n, e, *_ in NETS}
    model = Model(lab, h1, [h2.ip4, h3.ip4])
    tpl = hostile_templates(h1.ip4, h3.ip4, mtu)
    fates: dict[str, list[tuple[str, str]]] = {}
    for encap in ("vxlan", "gre-udp", "gre"):
        src = h3.ip4
        fates[encap] = [model.fate(encap, src, encode_ipv4(socket.inet_aton(src), socket.inet_aton(h1.ip4), 47,
                                                          len(p)) + p if encap == "gre" else p)
                        for _case, p, _w in tpl[encap]]
    fates["forged"] = []
    for _case, pkt, _w in tpl["forged"]:
        ihl = (pkt[0] & 0x0F) * 4
        src = socket.inet_ntoa(pkt[12:16])
        if pkt[9] == 47:
            fates["forged"].append(model.fate("gre", src, pkt))
        else:
            port = struct.unpack_from("!H", pkt, ihl + 2)[0]
            fates["forged"].append(model.fate("vxlan" if port == PORT_VXLAN else "gre-udp", src, pkt[ihl + 8:]))
    n_pairs, n_lone = 1200, 300
    frag_packets, frag_seen = fragment_sets(h1.ip4, h3.ip4, n_pairs, n_lone)
    frag_fates = [model.fate(e, s, p) for e, s, p in frag_seen]

    total = HOSTILE_TOTAL[backend]
    weights = {k: sum(w for *_x, w in v) for k, v in tpl.items()}
    share = {k: total * w // sum(weights.values()) for k, w in weights.items()}
    share["vxlan"] += total - sum(share.values())
    spec = {"rate": RATE[backend], "once_dst": h1.ip4, "once": [p.hex() for p in frag_packets], "streams": [
        {"kind": "udp", "bind": h3.ip4, "dst": h1.ip4, "port": PORT_VXLAN, "total": share["vxlan"],
         "templates": [p.hex() for _c, p, _w in tpl["vxlan"]], "weights": [w for *_x, w in tpl["vxlan"]]},
        {"kind": "udp", "bind": h3.ip4, "dst": h1.ip4, "port": PORT_GRE_UDP, "total": share["gre-udp"],
         "templates": [p.hex() for _c, p, _w in tpl["gre-udp"]], "weights": [w for *_x, w in tpl["gre-udp"]]},
        {"kind": "gre", "bind": h3.ip4, "dst": h1.ip4, "total": share["gre"],
         "templates": [p.hex() for _c, p, _w in tpl["gre"]], "weights": [w for *_x, w in tpl["gre"]]},
        {"kind": "raw", "bind": None, "dst": h1.ip4, "total": share["forged"],
         "templates": [p.hex() for _c, p, _w in tpl["forged"]], "weights": [w for *_x, w in tpl["forged"]]},
    ]}

    before_c = settled(lab, [h1, h2])
    before_k = snmp(h1.proc.pid)
    before_sock, before_path = socket_drops(h1.proc.pid), path_drops(lab, h3, h1)
    pings = {name: _ping_start(a, b.ip) for name, (a, b) in pairs.items()}
    t0 = time.monotonic()
    try:
        r = netns.run(h3.ns, [sys.executable, str(SCRIPTS / "hostile_sender.py")], input=json.dumps(spec), timeout=240)
    finally:
        ping_res = {name: _ping_stop(p) for name, p in pings.items()}
    assert r.returncode == 0, r.stderr[-3000:]
    sent = json.loads(r.stdout)
    seconds = time.monotonic() - t0
    after_c = settled(lab, [h1, h2])
    after_k = snmp(h1.proc.pid)
    k = {key: after_k[key] - before_k[key] for key in after_k}
    sock_lost = socket_drops(h1.proc.pid) - before_sock
    path_lost = path_drops(lab, h3, h1) - before_path

    # what the sender sent, and what every drop counter must therefore show
    expected: dict[tuple[str, str], int] = {}
    messages = 0
    jumbo_msgs = 0
    for i, (key, ip_overhead) in enumerate((("vxlan", 28), ("gre-udp", 28), ("gre", 20), ("forged", 0))):
        for (_case, payload, _w), fate, n in zip(tpl[key], fates[key], sent["counts"][i]):
            expected[fate] = expected.get(fate, 0) + n
            messages += n
            if len(payload) + ip_overhead > 1500:      # fragmented by the sender's kernel
                jumbo_msgs += n
    for fate in frag_fates:
        expected[fate] = expected.get(fate, 0) + 1
    assert sent["once"] == len(frag_packets)
    assert messages == total, (messages, total)

    d1 = delta(after_c[0], before_c[0])
    d2 = delta(after_c[1], before_c[1])
    drops = {key: v for key, v in d1.items() if key[1].startswith("drop_") and key[1] != "drop_socket_error"}
    legit_in = sum(v for key, v in d2.items() if key[1] == "tx_packets")     # h2's only peer is h1
    rx_datagrams = sum(v for key, v in d1.items() if key[1] == "rx_datagrams")
    rx_packets = sum(v for key, v in d1.items() if key[1] == "rx_packets")
    tap_tx = sum(v for key, v in d1.items() if key[1] == "tap_tx_frames")
    reaching = messages + n_pairs                   # every message, and one datagram per complete pair
    figures = {"backend": backend, "messages": messages, "fragment packets": len(frag_packets),
               "complete fragment pairs": n_pairs, "lone fragments": n_lone, "jumbo messages": jumbo_msgs,
               "seconds": round(seconds, 1), "sender seconds": round(sent["seconds"], 1),
               "rate": round(messages / sent["seconds"]), "sender errors": sent["errors"],
               "h1 rx_datagrams": rx_datagrams, "legit from h2": legit_in, "h1 rx_packets": rx_packets,
               "h1 tap_tx_frames": tap_tx, "h1 drops": sum(drops.values()),
               "Ip.ReasmOKs": k["Ip.ReasmOKs"], "Ip.ReasmReqds": k["Ip.ReasmReqds"],
               "Ip.ReasmFails": k["Ip.ReasmFails"], "Udp.RcvbufErrors": k["Udp.RcvbufErrors"],
               "Udp.InErrors": k["Udp.InErrors"], "socket drops": sock_lost, "veth drops": path_lost,
               "pings": ping_res}
    print("hostile flood:", json.dumps(figures))

    assert h1.proc.poll() is None, f"the daemon died:\n{lab.log_tail(h1)}"
    assert tracebacks(lab, h1) == 0, lab.log_tail(h1, 60)
    # the kernel's part: nothing lost before the daemon; fragments as sent
    assert (sock_lost, path_lost, k["Udp.RcvbufErrors"], k["Udp.InErrors"]) == (0, 0, 0, 0), figures
    assert k["Ip.ReasmOKs"] == n_pairs + jumbo_msgs, figures
    # every datagram that reached h1's sockets is h2's or the attacker's, and each is counted once
    assert rx_datagrams == reaching + legit_in, figures
    # nothing hostile reached a TAP: h1 delivered exactly what h2 sent, and wrote all of it
    assert rx_packets == legit_in == tap_tx, figures
    # every hostile datagram moved exactly the drop counter the reference backend names
    assert drops == expected, {"unexpected": {k_: v for k_, v in drops.items() if expected.get(k_) != v},
                               "expected": {k_: v for k_, v in expected.items() if drops.get(k_) != v}}
    for name, (tx, rx) in ping_res.items():
        # SIGINT stops ping with its newest request (20 ms ago at most) possibly still in
        # flight: ping counts that one as lost. Any other missing reply is a real loss.
        assert tx >= 20 and rx >= tx - 1, (name, ping_res)
    assert not {key: v for key, v in d2.items() if key[1].startswith("drop_")}, d2
    for name, (a, b) in pairs.items():     # and it still forwards
        assert lab.ping(a, b.ip, count=2).ok, name
    fdb = {r["mac"] for n in lab.status(h1)["networks"].values() for r in n["fdb"]}
    assert ":".join(f"{x:02x}" for x in MAC_ATTACK) not in fdb


# --- 2. isolation ------------------------------------------------------------------------------

# name, encap, VNI (GRE: key; NVGRE: VSID), peers of h1 among (h2, h3), extra TOML
ISO_NETS = [("a", "vxlan", 100, ("h2",), ""), ("b", "vxlan", 200, ("h3",), ""),
            ("c", "gre-udp", 300, ("h2",), ""), ("d", "gre", 400, ("h2",), ""),
            ("e", "gre", 5, ("h2",), "nvgre = true"),
            ("g", "vxlan", 600, ("h2",), "allow_unknown_sources = true")]
MAC_B_STATION = bytes.fromhex("02bb00000001")


def _tagged(i: int, src: bytes | None = None, vlan: int | None = None) -> bytes:
    tag = b"ISO-TAG-%02d." % i
    if vlan is not None:
        return MAC_DST + (src or bytes([2, 0xAA, 0, 0, 0, i])) + struct.pack("!HH", 0x8100, vlan) + b"\x88\xb5" + tag + bytes(30)
    return inner(64, src=src or bytes([2, 0xAA, 0, 0, 0, i]), tag=tag)


def _vxlan_in_vxlan(i: int, h1ip: str, vni: int) -> bytes:
    """An inner frame that is itself a VXLAN packet for another network (IPv4/UDP 4789)."""
    nested = vxlan(vni, _tagged(i))
    ip = ipv4("198.18.0.2", h1ip, 17, udp(40000, PORT_VXLAN, nested), ident=1)
    return MAC_DST + bytes([2, 0xAA, 0, 0, 1, i]) + b"\x08\x00" + ip


def isolation_cases(h1ip: str, h2ip: str, h3ip: str) -> list[tuple[str, str, str, bytes, str | None, tuple[str, str] | None]]:
    """(case, sender host, channel, payload, network it must reach or None, counter it moves).

    Channels: "vxlan"/"gre-udp" (UDP to that port), "gre" (raw protocol 47), "forged" (a whole
    IPv4 packet through IP_HDRINCL). A tag in each inner frame tells the TAPs' records apart;
    case i's tag is ISO-TAG-i, and for "vxlan in vxlan" the tag is inside the nested packet.
    """
    c: list[Any] = []

    def add(name, host, chan, payload, to, counter):
        c.append((name, host, chan, payload, to, counter))
    i = len
    add("VNI 100 from A's peer", "h2", "vxlan", vxlan(100, _tagged(i(c))), "a", ("a", "rx_packets"))
    add("VNI 200 from A's peer, not B's", "h2", "vxlan", vxlan(200, _tagged(i(c))), None, ("b", "drop_unknown_source"))
    add("VNI 100 with 200 in the reserved bytes", "h2", "vxlan",
        b"\x08\x00\x00\xc8" + (100).to_bytes(3, "big") + b"\xc8" + _tagged(i(c)), "a", ("a", "rx_packets"))
    add("VNI 200 << 8", "h2", "vxlan", vxlan(200 << 8, _tagged(i(c))), None, ("ep:vxlan", "drop_unknown_vni"))
    add("C's VNI on the VXLAN port", "h2", "vxlan", vxlan(300, _tagged(i(c))), None, ("ep:vxlan", "drop_unknown_vni"))
    add("D's key on the VXLAN port", "h2", "vxlan", vxlan(400, _tagged(i(c))), None, ("ep:vxlan", "drop_unknown_vni"))
    add("GRE bytes for VNI 100 on the VXLAN port", "h2", "vxlan", gre(100 << 8, _tagged(i(c))), None,
        ("ep:vxlan", "drop_bad_flags"))
    add("key 300 on the GRE-in-UDP port", "h2", "gre-udp", gre(300, _tagged(i(c))), "c", ("c", "rx_packets"))
    add("A's VNI on the GRE-in-UDP port", "h2", "gre-udp", gre(100, _tagged(i(c))), None,
        ("ep:gre-udp", "drop_unknown_vni"))
    add("VXLAN bytes for 300 on the GRE-in-UDP port", "h2", "gre-udp", vxlan(300, _tagged(i(c))), None,
        ("ep:gre-udp", "drop_bad_flags"))
    add("key 400 on GRE", "h2", "gre", gre(400, _tagged(i(c))), "d", ("d", "rx_packets"))
    add("key 0x5ab: NVGRE VSID 5", "h2", "gre", gre(0x5AB, _tagged(i(c))), "e", ("e", "rx_packets"))
    add("key 5: the VSID as a plain key", "h2", "gre", gre(5, _tagged(i(c))), None, ("ep:gre", "drop_unknown_vni"))
    add("C's key on GRE", "h2", "gre", gre(300, _tagged(i(c))), None, ("ep:gre", "drop_unknown_vni"))
    add("key 400 with a forged non-peer IP source", "h2", "forged",
        ipv4(h3ip, h1ip, 47, gre(400, _tagged(i(c)))), None, ("d", "drop_unknown_source"))
    add("VXLAN for B nested in A's frame", "h2", "vxlan", vxlan(100, _vxlan_in_vxlan(i(c), h1ip, 200)), "a",
        ("a", "rx_packets"))
    add("802.1Q VLAN 200 inside VNI 100", "h2", "vxlan", vxlan(100, _tagged(i(c), vlan=200)), "a", ("a", "rx_packets"))
    add("B's station MAC as source in A", "h2", "vxlan", vxlan(100, _tagged(i(c), src=MAC_B_STATION)), "a",
        ("a", "rx_packets"))
    add("VNI 600 from a peer", "h2", "vxlan", vxlan(600, _tagged(i(c))), "g", ("g", "rx_packets"))
    add("VNI 200 from B's peer", "h3", "vxlan", vxlan(200, _tagged(i(c))), "b", ("b", "rx_packets"))
    add("VNI 100 from a non-peer", "h3", "vxlan", vxlan(100, _tagged(i(c))), None, ("a", "drop_unknown_source"))
    add("VNI 600 from a non-peer, allow_unknown_sources", "h3", "vxlan", vxlan(600, _tagged(i(c))), "g",
        ("g", "rx_packets"))
    add("key 300 from a non-peer", "h3", "gre-udp", gre(300, _tagged(i(c))), None, ("c", "drop_unknown_source"))
    add("key 400 from a non-peer", "h3", "gre", gre(400, _tagged(i(c))), None, ("d", "drop_unknown_source"))
    add("NVGRE key from a non-peer", "h3", "gre", gre(0x501, _tagged(i(c))), None, ("e", "drop_unknown_source"))
    return c




def _tap_sniffers(ns: str, taps: dict[str, str]) -> dict[str, socket.socket]:
    out = {}
    for name, ifname in taps.items():
        s = pr_netns.create_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
        out[name] = s
    return out


def _sniffed(socks: dict[str, socket.socket]) -> dict[str, list[bytes]]:
    """Frames the daemon wrote into each TAP (the kernel sees them arrive on it)."""
    out: dict[str, list[bytes]] = {name: [] for name in socks}
    for name, s in socks.items():
        while True:
            try:
                data, addr = s.recvfrom(70000)
            except BlockingIOError:
                break
            if addr[2] != socket.PACKET_OUTGOING:
                out[name].append(data)
    return out


def test_no_frame_crosses_from_one_network_into_another(make_lab, backend):
    lab: Lab = make_lab(3)
    h1, h2, h3 = lab.hosts
    _quiet_ns(h1.ns)
    lab.settle()
    by_name = {"h2": h2, "h3": h3}
    toml = "".join(lab.network_toml(h1, name=n, vni=v, encap=e, tap=f"vxdp-{n}", bridge=f"br-{n}",
                                    peers=[by_name[p] for p in peers], extra=extra)
                   for n, e, v, peers, extra in ISO_NETS)
    lab.start_daemon(h1, toml, backend=backend)
    socks = _tap_sniffers(h1.ns, {n: f"vxdp-{n}" for n, *_ in ISO_NETS})
    try:
        # B learns its station's MAC from B's peer first: A's later frame with that source
        # must not move it
        teach = vxlan(200, inner(64, src=MAC_B_STATION, tag=b"teach"))
        before = settled(lab, [h1])[0]
        cases = isolation_cases(h1.ip4, h2.ip4, h3.ip4)
        N = 2
        for host in ("h3", "h2"):
            packets = ([("vxlan", PORT_VXLAN, teach.hex())] if host == "h3" else []) + [
                (chan, PORT_VXLAN if chan == "vxlan" else PORT_GRE_UDP, p.hex())
                for _n, hh, chan, p, _to, _c in cases if hh == host for _ in range(N)]
            spec = {"src": by_name[host].ip4, "dst": h1.ip4, "packets": packets}
            r = netns.run(by_name[host].ns, [sys.executable, str(SCRIPTS / "iso_sender.py")], input=json.dumps(spec), timeout=30)
            assert r.returncode == 0, r.stderr
        after = settled(lab, [h1])[0]
        seen = _sniffed(socks)
    finally:
        for s in socks.values():
            s.close()

    failures = []
    for i, (name, _host, _chan, _p, to, _counter) in enumerate(cases):
        tag = b"ISO-TAG-%02d." % i
        where = {net: sum(tag in f for f in frames) for net, frames in seen.items()}
        want = {net: (N if net == to else 0) for net in seen}
        if where != want:
            failures.append(f"case {i} {name!r}: reached {where}, expected {want}")
    moved = delta(after, before)
    want_moves: dict[tuple[str, str], int] = {("b", "rx_packets"): 1, ("b", "tap_tx_frames"): 1}   # `teach`
    for _name, _host, _chan, _p, to, counter in cases:
        want_moves[counter] = want_moves.get(counter, 0) + N
        if to:
            want_moves[(to, "tap_tx_frames")] = want_moves.get((to, "tap_tx_frames"), 0) + N
    got_moves = {k: v for k, v in moved.items() if k[1].startswith("drop_") or k[1] in ("rx_packets", "tap_tx_frames")}
    if got_moves != want_moves:
        failures.append(f"counters moved {got_moves}, expected {want_moves}")
    fdb = {n: {r["mac"]: r["remote"] for r in net["fdb"]} for n, net in lab.status(h1)["networks"].items()}
    station = ":".join(f"{x:02x}" for x in MAC_B_STATION)
    if fdb["b"].get(station) != h3.ip4 or fdb["a"].get(station) != h2.ip4:
        failures.append(f"{station}: B's entry must stay on {h3.ip4}, A's is its own: {fdb}")
    for n in ("c", "d", "e", "g"):
        if station in fdb[n]:
            failures.append(f"{station} leaked into {n}'s FDB")
    assert not failures, "\n".join(failures)
    assert h1.proc.poll() is None and tracebacks(lab, h1) == 0
