"""Run by tests/netns/test_esp_scapy.py in a lab host's namespace: Scapy as the remote VTEP of an
encrypted network, with no vxlan-dp of its own.

Takes a JSON spec as its argument (key hex, cipher, its own and the daemon's underlay address, port,
the overlay IP and MAC it answers for, seconds to run). Every ESP-in-UDP datagram from the
daemon is decrypted with Scapy's SecurityAssociation (key derived as the README says, from the
SPI and the sender's address); an ARP request or ICMP echo request for its IP is answered with
a frame that Scapy itself encrypts (its own SPI and key) and sends back over UDP. Prints one
JSON line: what it decrypted and what it answered.
"""

import json
import socket
import struct
import sys
import time

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from vxlan_dp.core.keys import derive_keymat, make_spi

ALGO = {"aes-256-gcm": "AES-GCM", "chacha20-poly1305": "CHACHA20-POLY1305"}
spec = json.loads(sys.argv[1])
key = bytes.fromhex(spec["key"])
cipher, port, v6 = spec["cipher"], spec["port"], ":" in spec["me"]
me, peer = spec["me"], spec["peer"]
fam = socket.AF_INET6 if v6 else socket.AF_INET


def packed(addr: str) -> bytes:
    return socket.inet_pton(fam, addr)


IPL = IPv6 if v6 else IP

rx = socket.socket(fam, socket.SOCK_DGRAM)
rx.bind((me, port))
rx.settimeout(0.2)
tx = socket.socket(fam, socket.SOCK_DGRAM)
tx.bind((me, 50000))
my_spi = make_spi(spec["key_id"], 0x5CA9E)
out_sa = SecurityAssociation(ESP, spi=my_spi, crypt_algo=ALGO[cipher],
                             crypt_key=bytes(derive_keymat(cipher, key, my_spi, packed(me))),
                             nat_t_header=UDP(sport=50000, dport=port), esn_en=True, esn=0)
print("ready", flush=True)      # the test starts pinging only now
seq = 0
stats = {"decrypted": 0, "arp_answered": 0, "echo_answered": 0, "other": 0}


def send(frame: bytes) -> None:
    global seq
    seq += 1
    inner = IPL(src=me, dst=peer) / UDP(sport=50000, dport=port) / VXLAN(flags=0x08, vni=42) / Ether(frame)
    enc = out_sa.encrypt(IPL(bytes(inner)), seq_num=seq)
    tx.sendto(bytes(enc[UDP].payload), (peer, port))


deadline = time.monotonic() + spec["seconds"]
while time.monotonic() < deadline:
    try:
        data, (src, *_) = rx.recvfrom(65535)
    except socket.timeout:
        continue
    spi, lo = struct.unpack_from("!II", data)
    iv = struct.unpack_from("!Q", data, 8)[0]
    sa = SecurityAssociation(ESP, spi=spi, crypt_algo=ALGO[cipher],
                             crypt_key=bytes(derive_keymat(cipher, key, spi, packed(src))),
                             nat_t_header=UDP(sport=1, dport=port), esn_en=True, esn=iv >> 32)
    pkt = IPL(src=src, dst=me) / UDP(sport=1, dport=port) / ESP(data)
    try:
        plain = sa.decrypt(pkt)
    except Exception:  # noqa: BLE001 - count and go on
        stats["other"] += 1
        continue
    stats["decrypted"] += 1
    eth = VXLAN(bytes(plain[UDP].payload)).payload      # Scapy binds VXLAN to 4789 only
    if ARP in eth and eth[ARP].op == 1 and eth[ARP].pdst == spec["ip"]:
        send(bytes(Ether(src=spec["mac"], dst=eth.src) /
                   ARP(op=2, hwsrc=spec["mac"], psrc=spec["ip"], hwdst=eth.src, pdst=eth[ARP].psrc)))
        stats["arp_answered"] += 1
    elif ICMP in eth and eth[ICMP].type == 8 and eth[IP].dst == spec["ip"]:
        ip = eth[IP]
        send(bytes(Ether(src=spec["mac"], dst=eth.src) / IP(src=ip.dst, dst=ip.src) /
                   ICMP(type=0, id=ip[ICMP].id, seq=ip[ICMP].seq) / ip[ICMP].payload))
        stats["echo_answered"] += 1
print(json.dumps(stats))
