"""Kernel peers and checksum offload (issue 11): the interop matrix, on the links users have.

A kernel vxlan peer on a virtual link with TX checksum offload (veth here, virtio-net between
VMs) sends its inner TCP/UDP checksums partial and its TSO segments whole; vxlan-dp must
complete the first and split the second, and count what it completed. Rows: backend x underlay
offloads (the kernel's default / `tx off`, the lab's labelled option) x IPv4 / IPv6 underlay.
Cells (one network each, side by side in one lab per row; their iperf3 runs go at the same
time, as processes, to keep the row short): ports 4789, 8472 and 4790, with the kernel's outer checksum settings varied across
them (IPv4: noudpcsum / udpcsum; IPv6: default / udp6zerocsumtx+rx / udp6zerocsumrx). Every
cell: ping both ways, a 1400-byte DF ping both ways, iperf3 TCP both ways and iperf3 UDP from
the kernel side, then the counter: csum_completed > 0 where the kernel sent partial
checksums (default offloads), 0 where it did not (tx off). The same matrix runs between two
vxlan-dp daemons (a C one and a Python one, so both backends send and receive in every row),
where nothing is ever partial: csum_completed stays 0.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from helpers import c_backend
from vxlan_dp.lab import Lab, netns
from vxlan_dp.lab.lab import Container, parse_ping

PORTS = (4789, 8472, 4790)
# the kernel vxlan's outer UDP checksum settings, cell by cell (ip-link(8) vxlan options)
KERNEL_CSUM: dict[bool, list[dict[str, bool]]] = {
    False: [{"udpcsum": False}, {"udpcsum": True}, {"udpcsum": False}],
    True: [{}, {"zerocsum6_tx": True, "zerocsum6_rx": True}, {"zerocsum6_rx": True}],
}


def _row(make_lab: Any, ipv6: bool, tx_csum_off: bool) -> tuple[Lab, list[tuple[int, Container, Container]]]:
    lab: Lab = make_lab(2, ipv6=ipv6, tx_csum_off=tx_csum_off)
    h1, h2 = lab.hosts
    mtu = lab.overlay_mtu("vxlan")
    cells = []
    for i in range(len(PORTS)):
        a = lab.add_container(h1, f"br{i}", mtu=mtu, subnet=i + 1)
        b = lab.add_container(h2, f"br{i}", mtu=mtu, subnet=i + 1)
        cells.append((i, a, b))
    lab.settle()
    return lab, cells


def _networks(lab: Lab, host: Any) -> str:
    return "".join(lab.network_toml(host, name=f"n{i}", vni=100 + i, port=port, tap=f"vxdp{i}",
                                    bridge=f"br{i}") for i, port in enumerate(PORTS))


def _df_ping(lab: Lab, src: Container, dst: Container) -> bool:
    r = lab.run(src.ns, ["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-s", "1400", "-M", "do", dst.ip],
                timeout=15)
    return parse_ping(src.name, dst.ip, r.stdout).ok


def _iperf3_all(lab: Lab, cells: list[tuple[int, Container, Container]], *, reverse: bool = False,
                udp_rate: str | None = None) -> list[dict[str, Any]]:
    """One bounded iperf3 run per cell, all at once: processes started from this one thread
    (no thread pool: subprocess's preexec_fn, which enters the namespace, is not fork-safe
    beside other threads)."""
    servers = [netns.popen(b.ns, ["iperf3", "-s", "-1", "-B", b.ip], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) for _, _, b in cells]
    try:
        for (_, _, b), srv in zip(cells, servers):
            lab._wait_listening(b.ns, 5201, srv)
        clients = []
        for _, a, b in cells:
            argv = ["iperf3", "-c", b.ip, "-t", "1", "-J", "--connect-timeout", "3000"]
            argv += (["-u", "-b", udp_rate] if udp_rate else []) + (["-R"] if reverse else [])
            clients.append(netns.popen(a.ns, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        out = []
        for c in clients:
            try:
                text, _ = c.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                c.kill()
                text, _ = c.communicate()
            try:
                out.append(dict(json.loads(text)))
            except ValueError:
                out.append({"error": text})
        return out
    finally:
        for srv in servers:
            if srv.poll() is None:
                srv.terminate()
            srv.wait(5)


def _run_cells(lab: Lab, cells: list[tuple[int, Container, Container]]) -> dict[int, list[str]]:
    """Every check of every cell; what failed, by cell (empty: the cell works)."""
    bad: dict[int, list[str]] = {i: [] for i, _, _ in cells}
    for i, a, b in cells:
        for x, y in ((a, b), (b, a)):
            if not lab.ping(x, y.ip, count=2).ok:
                bad[i].append(f"ping {x.name}->{y.name}")
            if not _df_ping(lab, x, y):
                bad[i].append(f"1400-byte DF ping {x.name}->{y.name}")
    for reverse in (False, True):
        for (i, _, b), r in zip(cells, _iperf3_all(lab, cells, reverse=reverse)):
            got = r.get("end", {}).get("sum_received", {}).get("bytes", 0)
            if "error" in r or got < 300_000:
                bad[i].append(f"iperf3 TCP {'from' if reverse else 'to'} {b.name}: {r.get('error') or got}")
    for (i, _, b), r in zip(cells, _iperf3_all(lab, cells, udp_rate="20M", reverse=True)):  # UDP from b's side
        s = r.get("end", {}).get("sum", {})
        if "error" in r or not s.get("packets") or s.get("lost_percent", 100) > 20:
            bad[i].append(f"iperf3 UDP from {b.name}: {r.get('error') or s}")
    return bad


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("tx_csum_off", [False, True], ids=["offloads-default", "tx-off"])
def test_kernel_vxlan_matrix(make_lab, backend, ipv6, tx_csum_off):
    lab, cells = _row(make_lab, ipv6, tx_csum_off)
    h1, h2 = lab.hosts
    for i, port in enumerate(PORTS):
        lab.add_kernel_vxlan(h2, vni=100 + i, port=port, bridge=f"br{i}", ifname=f"vxk{i}",
                             **KERNEL_CSUM[ipv6][i])
    lab.start_daemon(h1, _networks(lab, h1), backend=backend)
    failed = _run_cells(lab, cells)
    nets = lab.status(h1)["networks"]
    report = []
    for i, port in enumerate(PORTS):
        c = nets[f"n{i}"]["counters"]
        where = f"port {port} {KERNEL_CSUM[ipv6][i] or 'defaults'}"
        report += [f"{where}: {f}" for f in failed[i]]
        # the kernel sent partial checksums exactly when its veth kept TX checksum offload
        if (c["csum_completed"] > 0) == tx_csum_off:
            report.append(f"{where}: csum_completed {c['csum_completed']} with tx_csum_off={tx_csum_off}")
        if c["drop_too_big"] or c["drop_malformed"]:
            report.append(f"{where}: drops {c}")
        if not tx_csum_off and nets[f"n{i}"]["csum_peer"] != h2.address(ipv6):
            report.append(f"{where}: status names {nets[f'n{i}']['csum_peer']} as the sender")
    # the operator is told once per network, with the peer and the likely cause
    time.sleep(1.2)                 # the daemon looks at the counters every second
    with open(h1.log_path) as f:
        told = [ln for ln in f if "left partial" in ln]
    if not tx_csum_off:
        for i in range(len(PORTS)):
            mine = [ln for ln in told if f"network n{i}:" in ln]
            if len(mine) != 1 or h2.address(ipv6) not in mine[0] or "TX checksum offload" not in mine[0]:
                report.append(f"n{i}: log lines {mine}")
    elif told:
        report.append(f"log lines without partial checksums: {told}")
    assert not report, "\n".join(report)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("tx_csum_off", [False, True], ids=["offloads-default", "tx-off"])
def test_daemon_pair_matrix(make_lab, ipv6, tx_csum_off):
    """The same cells between two daemons: h1 on the C backend, h2 on the Python one."""
    c_backend()
    lab, cells = _row(make_lab, ipv6, tx_csum_off)
    h1, h2 = lab.hosts
    lab.start_daemon(h1, _networks(lab, h1), backend="c")
    lab.start_daemon(h2, _networks(lab, h2), backend="python")
    failed = _run_cells(lab, cells)
    report = [f"port {PORTS[i]}: {f}" for i in failed for f in failed[i]]
    for h in (h1, h2):
        for name, n in lab.status(h)["networks"].items():
            c = n["counters"]
            if c["csum_completed"] or c["drop_too_big"] or c["drop_malformed"]:
                report.append(f"{h.name} {name}: {c}")   # vxlan-dp never sends a partial checksum
    assert not report, "\n".join(report)
