"""Encrypted networks between two daemons in the namespace lab, on both backends.

One lab per backend does it all, to keep the suite short: ping and TCP across an encrypted
VXLAN network on port 5555; a tshark capture of the underlay shows only ESP in UDP on that
port, not one plaintext inner header, and no (sender, SPI, IV) twice; hostile datagrams made
from captured ones (replays, bit flips, truncation, an unknown key id, plaintext VXLAN) are
sent to host 2 while host 1's daemon is down, and none reaches the TAP while each is counted
under its reason; host 1's daemon then comes back (a new boot id: a new SPI and key) and
traffic resumes within 2 s, still without a repeated (SPI, IV) across the whole capture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from helpers import need_tool
from vxlan_dp.lab import Lab, netns
from vxlan_dp.wire import encapsulate
from vxlan_dp.wire.esp import ESP_EXTRA

TSHARK = shutil.which("tshark")
PORT = 5555
KEY_LINE = "7 " + "5a" * 32 + "\n"


def _key_file(lab: Lab, name: str = "blue.key", text: str = KEY_LINE) -> str:
    """Written whole and renamed into place, as an operator's tooling would: a reload never
    reads half a file."""
    path = os.path.join(lab.workdir, name)
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path + ".new", 0o600)
    os.rename(path + ".new", path)
    return path


def _toml(lab: Lab, h: Any, key_file: str, cipher: str, extra: str = "") -> str:
    return lab.network_toml(h, port=PORT, extra=f'encrypt = true\nkey_file = "{key_file}"\n'
                                                f'cipher = "{cipher}"\n{extra}')


def _capture(ns: str, pcap: str) -> subprocess.Popen[str]:
    assert TSHARK is not None
    p = netns.popen(ns, [TSHARK, "-n", "-i", "ul0", "-f", "udp", "-a", "duration:90", "-c", "200000",
                         "-w", pcap], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    seen = []
    for line in p.stderr:
        seen.append(line)
        if "Capture started" in line:
            return p
    pytest.fail("tshark did not start capturing:\n" + "".join(seen))


def _stop_capture(p: subprocess.Popen[str]) -> None:
    time.sleep(1.0)             # dumpcap retires its ring block every 250 ms
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def _esp_rows(pcap: str) -> list[tuple[str, str, int, int, str]]:
    """(ip src, ip dst, udp dport, spi, iv) of every UDP packet, as tshark dissects them."""
    assert TSHARK is not None
    fields = ["ip.src", "ip.dst", "udp.dstport", "esp.spi", "udp.srcport", "data.data"]
    r = subprocess.run([TSHARK, "-n", "-r", pcap, "-d", f"udp.port=={PORT},udpencap", "-T", "fields",
                        "-E", "separator=\t"] + [a for f in fields for a in ("-e", f)],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = []
    for line in r.stdout.splitlines():
        src, dst, dport, spi, sport, data = (line.split("\t") + [""] * 6)[:6]
        if int(sport or 0) == HOSTILE_SPORT:
            continue            # the test's own hostile datagrams
        rows.append((src, dst, int(dport or 0), int(spi, 0) if spi else -1, data))
    return rows


def _raw_udp_payloads(pcap: str) -> list[tuple[str, bytes]]:
    """(source, UDP payload) of the daemons' datagrams to the encrypted port: Ethernet, IPv4
    (RFC 791: IHL, total length, fragment offset) and UDP (RFC 768: length) read by hand from
    the capture's raw records. Scapy's full dissection of every packet took most of the test's
    time; only these header fields are needed."""
    from scapy.utils import RawPcapNgReader
    out = []
    with RawPcapNgReader(pcap) as reader:
        for data, _meta in reader:
            if len(data) < 34 or data[12:14] != b"\x08\x00" or data[14] >> 4 != 4 or data[23] != 17:
                continue                    # not IPv4 / UDP
            ihl = (data[14] & 0x0F) * 4
            (total,), (frag,) = struct.unpack_from("!H", data, 16), struct.unpack_from("!H", data, 20)
            if frag & 0x1FFF:
                continue                    # a later fragment carries no UDP header
            ip = data[14:14 + total]
            if len(ip) < ihl + 8:
                continue
            sport, dport, ulen = struct.unpack_from("!HHH", ip, ihl)
            if dport == PORT and sport != HOSTILE_SPORT:
                out.append((socket.inet_ntoa(ip[12:16]), bytes(ip[ihl + 8:ihl + ulen])))
    return out


HOSTILE_SPORT = 40000       # below the daemons' source-port range (49152..65535): tells ours apart

SENDER = f"""
import socket, sys
HOSTILE_SPORT = {HOSTILE_SPORT}
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, HOSTILE_SPORT))
for line in sys.stdin:
    s.sendto(bytes.fromhex(line.strip()), (dst, port))
"""


def _send(ns: str, src: str, dst: str, datagrams: list[bytes]) -> None:
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, src, dst, str(PORT)],
                       input="".join(d.hex() + "\n" for d in datagrams), text=True, capture_output=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ep(lab: Lab, h: Any) -> dict[str, int]:
    eps = lab.status(h)["endpoints"]
    assert len(eps) == 1
    return dict(eps[0]["counters"])


def test_encrypted_overlay_end_to_end(make_lab, backend, tmp_path):
    cipher = "aes-256-gcm"      # ChaCha20-Poly1305 runs live in the rotation test below
    need_tool("tshark", "tshark")
    lab: Lab = make_lab(2)
    h1, h2 = lab.hosts
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu() - ESP_EXTRA)
    lab.settle()
    key = _key_file(lab)
    for h in lab.hosts:
        lab.start_daemon(h, _toml(lab, h, key, cipher), backend=backend)
    a, b = h1.containers[0], h2.containers[0]
    pcap = str(tmp_path / "ul0.pcapng")
    cap = _capture(h1.ns, pcap)
    try:
        assert lab.ping(a, b.ip).ok and lab.ping(b, a.ip).ok
        res = lab.iperf3(a, b, seconds=1.0)
        assert "error" not in res, res.get("error")
        assert res["end"]["sum_received"]["bytes"] > 200_000
        st = lab.status(h2)["networks"]["blue"]
        assert st["counters"]["rx_packets"] > 50

        # --- hostile traffic, host 1's daemon down: nothing authentic comes from it ---------
        lab.stop_daemon(h1)
        time.sleep(0.3)
        captured = [d for s, d in _raw_udp_payloads_now(cap, pcap, tmp_path) if s == h1.address(False)]
        assert len(captured) > 20
        sample = captured[-20:]
        flips = []              # bit flips in every part; the seq / IV made fresh where the
        for i, d in enumerate(sample):  # original would be caught as a replay first
            pos = [0, 2, 3, 5, 9, 13, 16, 24, len(d) // 2, len(d) - 1][i % 10]
            bad = bytearray(d)
            if pos >= 4:
                fresh = 1_000_000 + i
                bad[4:8] = fresh.to_bytes(4, "big")
                bad[8:16] = fresh.to_bytes(8, "big")
            bad[pos] ^= 0x04
            flips.append(bytes(bad))
        wrong_key = [d[:1] + b"\x09" + d[2:] for d in sample[:5]]
        short = [d[:n] for d, n in zip(sample[:5], (0, 3, 7, 20, 33))]
        plain = [encapsulate("vxlan", bytes(4), bytes(4), 42, _mac(b.mac) + _mac(a.mac) + b"\x08\x00"
                             + bytes(46), dport=PORT)[28:] for _ in range(5)]
        before_ep, before_net = _ep(lab, h2), dict(lab.status(h2)["networks"]["blue"]["counters"])
        _send(h1.ns, h1.address(False), h2.address(False), sample + flips + wrong_key + short + plain)
        time.sleep(0.5)
        after_ep, after_net = _ep(lab, h2), lab.status(h2)["networks"]["blue"]["counters"]
        moved = {k: after_ep[k] - before_ep[k] for k in after_ep
                 if k.startswith("drop_") and after_ep[k] != before_ep[k]}
        assert moved == {"drop_esp_replay": 20, "drop_esp_auth": 20, "drop_esp_unknown_key": 5,
                         "drop_esp_too_short": 5, "drop_esp_plaintext": 5}, moved
        assert after_ep["rx_datagrams"] - before_ep["rx_datagrams"] == 55
        assert after_net["rx_packets"] == before_net["rx_packets"]          # nothing delivered
        assert after_net["tap_tx_frames"] == before_net["tap_tx_frames"]    # nothing on the TAP

        # --- restart of host 1 under load: back within 2 s, new SPI ---------------------------
        pinger = netns.popen(a.ns, ["ping", "-n", "-i", "0.05", "-W", "1", b.ip], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()
        lab.start_daemon(h1, _toml(lab, h1, key, cipher), backend=backend)
        ready = time.monotonic() - t0
        time.sleep(2.5)
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
        replies = [float(line.split("time=")[0].split("icmp_seq=")[1].split()[0])
                   for line in out.splitlines() if "bytes from" in line]
        assert replies, out
        first = min(replies) * 0.05     # seq n was sent at about n * 50 ms after the start
        assert first - ready < 2.0, (first, ready, out[-400:])
    finally:
        _stop_capture(cap)
    rows = _esp_rows(pcap)
    ours = [r for r in rows if r[2] == PORT]
    assert ours and all(r[3] > 0 for r in ours), "a datagram on the encrypted port is not ESP"
    spis = {r[3] for r in ours if r[0] == h1.address(False)}
    assert len(spis) >= 2, "the restarted daemon must use a new SPI (new boot id, new key)"
    datagrams = _raw_udp_payloads(pcap)
    payloads = [d for _, d in datagrams]
    for mac in (_mac(a.mac), _mac(b.mac)):      # not one inner Ethernet header in the clear
        assert not any(mac in d for d in payloads)
    sent = [(s, d[:4], d[8:16]) for s, d in datagrams
            if len(d) >= 34 and d[1] != 0 and s in (h1.address(False), h2.address(False))]
    dup = [k for k, n in Counter(sent).items() if n > 1]
    assert dup == [], f"(sender, SPI, IV) repeated: {dup[:5]}"
    assert len(sent) > 100


def _raw_udp_payloads_now(cap: subprocess.Popen[str], pcap: str, tmp_path: Any) -> list[tuple[str, bytes]]:
    """What the running capture holds so far (dumpcap writes blocks every 250 ms)."""
    time.sleep(0.6)
    snap = str(tmp_path / "snap.pcapng")
    shutil.copy(pcap, snap)
    try:
        return _raw_udp_payloads(snap)
    except Exception:       # noqa: BLE001 - a block half-written at the end: read what is whole
        subprocess.run([TSHARK or "tshark", "-r", snap, "-w", snap + ".2"], capture_output=True, timeout=60,
                       check=False)
        return _raw_udp_payloads(snap + ".2")


def test_rotation_under_load_loses_nothing(make_lab, backend):
    """400 pings at 10 ms while `vxlan-dp keys rotate` adds key 8 to the hosts' key file,
    reloads both daemons, waits for both to send with it (rekey_delay later) and retires
    key 7: 0 lost, and afterwards both hold and send with key 8 only."""
    lab: Lab = make_lab(2)
    h1, h2 = lab.hosts
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu() - ESP_EXTRA)
    lab.settle()
    key = _key_file(lab)        # one file for both hosts: what copying it everywhere gives
    for h in lab.hosts:
        lab.start_daemon(h, _toml(lab, h, key, "chacha20-poly1305", "rekey_delay = 1.5"), backend=backend)
    a, b = h1.containers[0], h2.containers[0]
    assert lab.ping(a, b.ip, count=2).ok
    pinger = netns.popen(a.ns, ["ping", "-n", "-q", "-c", "400", "-i", "0.01", "-W", "2", b.ip],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    r = subprocess.run([sys.executable, "-m", "vxlan_dp", "keys", "rotate", "blue", "-c", h1.config_path,
                        "--socket", h1.socket_path, "--socket", h2.socket_path, "--grace", "10"],
                       capture_output=True, text=True, timeout=60, check=False)
    out, _ = pinger.communicate(timeout=30)
    assert r.returncode == 0, r.stderr
    assert "key 8 added" in r.stdout and "keys 7 retired" in r.stdout, r.stdout
    assert "400 packets transmitted, 400 received" in out, out
    assert open(key).read().split()[0] == "8" and len(open(key).read().split()) == 2
    for h in (h1, h2):
        enc = lab.status(h)["networks"]["blue"]["encryption"]
        assert enc == {"cipher": "chacha20-poly1305", "key_ids": [8], "send_key": 8}, enc
        log = open(h.log_path, errors="replace").read()
        assert "sending with key 8" in log, lab.log_tail(h)
        assert "5a5a5a5a" not in log and open(key).read().split()[1][:16] not in log + r.stdout + r.stderr
        drops = {k: v for k, v in _ep(lab, h).items() if k.startswith("drop_") and v}
        assert drops == {}, (h.name, drops)
        assert lab.status(h)["networks"]["blue"]["counters"]["drop_unknown_source"] == 0


def test_demo_encrypt_over_an_ipv6_underlay(backend):
    """`vxlan-dp demo --encrypt` as a user runs it: every pair pings across ESP in UDP."""
    r = subprocess.run([sys.executable, "-m", "vxlan_dp", "demo", "--encrypt", "--ipv6", "--containers", "1",
                        "--backend", backend], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "encrypted (ESP in UDP, AES-256-GCM" in r.stdout and "2/2 container pairs" in r.stdout, r.stdout
    assert "aes-256-gcm  1     1         0" in r.stdout, r.stdout
