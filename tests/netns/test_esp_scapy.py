"""Scapy as the remote host of an encrypted network (tests/scripts/esp_scapy_peer.py).

Host 1 runs vxlan-dp; host 2 runs no vxlan-dp at all, only Scapy: it decrypts the daemon's
ESP with its own SecurityAssociation and answers ARP and ping with frames it encrypts itself.
The container's ping succeeding means both directions interoperate: Scapy read our ARP
request and echo requests, and our daemon accepted, decrypted and delivered to the TAP the
frames Scapy built. Both AEADs; AES-256-GCM over an IPv4 underlay, ChaCha20-Poly1305 over IPv6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import SCRIPTS
from vxlan_dp.lab import Lab, netns
from vxlan_dp.wire.esp import ESP_EXTRA

PORT = 5555
KEY = "41" * 32
FAKE_IP, FAKE_MAC = "192.168.0.99", "02:99:00:00:00:99"


@pytest.mark.parametrize("cipher, ipv6", [("aes-256-gcm", False), ("chacha20-poly1305", True)],
                         ids=["aes-ipv4", "chacha-ipv6"])
def test_scapy_peer_answers_arp_and_ping_through_esp(make_lab, backend, cipher, ipv6):
    lab: Lab = make_lab(2, ipv6=ipv6)
    h1, h2 = lab.hosts
    lab.add_container(h1, mtu=lab.overlay_mtu() - ESP_EXTRA)
    lab.settle()
    key_file = f"{lab.workdir}/k"
    with open(key_file, "w") as f:
        f.write(f"3 {KEY}\n")
    os.chmod(key_file, 0o600)
    lab.start_daemon(h1, lab.network_toml(h1, port=PORT, peers=[h2], extra=f'encrypt = true\nkey_file = '
                                          f'"{key_file}"\ncipher = "{cipher}"'), backend=backend)
    spec = {"key": KEY, "key_id": 3, "cipher": cipher, "me": h2.address(ipv6), "peer": h1.address(ipv6), "port": PORT,
            "ip": FAKE_IP, "mac": FAKE_MAC, "seconds": 8}
    peer = netns.popen(h2.ns, [sys.executable, str(SCRIPTS / "esp_scapy_peer.py"), json.dumps(spec)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    assert peer.stdout.readline().strip() == "ready", peer.stderr.read() if peer.stderr else ""
    a = h1.containers[0]
    res = lab.ping(a, FAKE_IP, count=3)
    out, err = peer.communicate(timeout=30)
    assert peer.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    st = lab.status(h1)
    assert res.ok, (res, stats, st["endpoints"])
    assert stats["arp_answered"] >= 1 and stats["echo_answered"] == 3 and stats["other"] == 0, stats
    c = st["networks"]["blue"]["counters"]
    assert c["rx_packets"] >= 4 and c["tap_tx_frames"] >= 4, c     # Scapy's frames reached the TAP
    eps = st["endpoints"][0]["counters"]
    assert not {k: v for k, v in eps.items() if k.startswith("drop_") and v}, eps
