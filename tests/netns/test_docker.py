"""Docker users' view, with real dockerds: `docker network create -d vxlan-dp` on every host,
busybox containers pinging and streaming across hosts on a non-4789 port, networks isolated,
connect/disconnect live, restarts of vxlan-dp and of dockerd under a running ping, and
`docker network rm` leaving nothing behind. Static control here (each host its slice of the
subnet); test_docker_etcd.py has the store-backed IPAM.

One lab of three hosts per backend serves the whole module (dockerd and busybox image made
once); each test makes its own networks and removes them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import require

PORT = 4790
HOSTS = 3
pytestmark = pytest.mark.xdist_group("docker")   # one worker builds the module's labs, once


def gate(backend: str, *, etcd: bool = False) -> None:
    """Fail (CI=true) or skip unless root, netns, Docker (and etcd) and the backend are here."""
    import shutil

    from vxlan_dp.fastpath import backends
    from vxlan_dp.lab.docker import DockerError, docker_binaries

    # checked here, not left to conftest's per-test gate: the module's lab is built before it
    require("needs root" if os.geteuid() != 0 else None if os.path.exists("/dev/net/tun") else "no /dev/net/tun")
    try:
        docker_binaries()
    except DockerError as e:
        require(str(e))
    require("etcd is missing (apt-get install etcd-server)" if etcd and shutil.which("etcd") is None else None)
    require(None if backend in backends() else f"the {backend} backend is not built (pip install -e .)")


class DockerLab:
    """The module's lab: hosts with dockerd and vxlan-dp, and what a test asks of them."""

    def __init__(self, lab: Any, backend: str) -> None:
        self.lab, self.backend = lab, backend
        self.hosts = lab.hosts
        self.d = [lab.dockerds[h.name] for h in lab.hosts]

    def create(self, name: str, subnet: str, *opts: str, hosts: list[int] | None = None) -> None:
        for i in hosts or range(len(self.hosts)):
            self.d[i].check("network", "create", "-d", "vxlan-dp", "--ipam-driver", "vxlan-dp", "--subnet", subnet,
                            *[x for o in opts for x in ("-o", o)], name)

    def remove(self, name: str) -> None:
        for d in self.d:
            if d.docker("network", "inspect", name).returncode == 0:
                for c in d.inspect("network", name)["Containers"].values():
                    d.docker("rm", "-f", c["Name"])
                d.check("network", "rm", name)

    def run(self, i: int, name: str, network: str, *extra: str) -> str:
        """A busybox container on host i; its address on `network`."""
        self.d[i].check("run", "-d", "--name", name, "--network", network, *extra, "vxdp-busybox", "sleep", "3600")
        return self.ip(i, name, network)

    def ip(self, i: int, name: str, network: str) -> str:
        return str(self.d[i].inspect("container", name)["NetworkSettings"]["Networks"][network]["IPAddress"])

    def ping(self, i: int, name: str, dst: str, count: int = 3) -> bool:
        """busybox ping in the container: all `count` answered (a lost one fails it within 3 s)."""
        r = self.d[i].docker("exec", name, "ping", "-c", str(count), "-i", "0.2", "-W", "1", "-w", "3", dst)
        return f"{count} packets received" in r.stdout

    def netns_of(self, i: int, name: str) -> str:
        return f"/proc/{self.d[i].container_pid(name)}/ns/net"

    def neigh(self, i: int, network: str) -> list[dict[str, Any]]:
        """Host i's daemon's ARP / ND suppression table of `network`, as `vxlan-dp fdb --neigh` shows it."""
        from vxlan_dp.rpc import request

        rows: list[dict[str, Any]] = request(self.hosts[i].socket_path, {"cmd": "fdb", "network": network,
                                                                          "neigh": True})["neigh"]
        return rows

    def host_links(self, i: int) -> list[str]:
        from vxlan_dp.lab import netns

        with netns.ipr(self.hosts[i].ns) as ipr:
            return sorted(str(link.get("IFLA_IFNAME")) for link in ipr.get_links())

    def restart_vxlan_dp(self, i: int) -> None:
        h = self.hosts[i]
        self.lab.stop_daemon(h)
        with open(h.config_path) as f:
            toml = f.read()
        self.lab.start_daemon(h, "", daemon_toml=toml, backend=self.backend)


@pytest.fixture(scope="module", params=["c", "python"])
def dlab(request: pytest.FixtureRequest) -> Iterator[DockerLab]:
    from vxlan_dp.lab import Lab

    gate(request.param)
    lab = Lab(HOSTS)
    try:
        lab.build()
        for h in lab.hosts:
            lab.start_dockerd(h)
        for h in lab.hosts:
            lab.start_daemon(h, "", daemon_toml=lab.docker_toml(h), backend=request.param)
        yield DockerLab(lab, request.param)
    finally:
        lab.close()


def _iperf3(src_ns: str, dst_ns: str, dst_ip: str, seconds: int = 2) -> dict[str, Any]:
    """A bounded iperf3 TCP run from one container's namespace to another's (iperf3 JSON)."""
    import json

    srv = subprocess.Popen(["nsenter", f"--net={dst_ns}", "iperf3", "-s", "-1", "-B", dst_ip],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and srv.poll() is None:
            ss = subprocess.run(["nsenter", f"--net={dst_ns}", "ss", "-Hltn", f"src {dst_ip}:5201"],
                                capture_output=True, text=True, timeout=10, check=False)
            if ss.stdout.strip():
                break
            time.sleep(0.05)
        r = subprocess.run(["nsenter", f"--net={src_ns}", "iperf3", "-c", dst_ip, "-t", str(seconds), "-J",
                            "--connect-timeout", "3000"], capture_output=True, text=True, timeout=seconds + 20,
                           check=False)
        try:
            return json.loads(r.stdout)  # type: ignore[no-any-return]
        except ValueError:
            return {"error": r.stdout + r.stderr}
    finally:
        if srv.poll() is None:
            srv.terminate()
        out, _ = srv.communicate(timeout=5)
        if srv.returncode not in (0, -signal.SIGTERM):
            print(f"iperf3 server: {out}")


def test_cross_host_ping_and_iperf3_on_a_non_4789_port(dlab: DockerLab) -> None:
    dlab.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}", "encap=vxlan")
    try:
        ips = [dlab.run(i, f"b{i + 1}", "blue") for i in range(HOSTS)]
        # the container's interface has the network's MTU, derived as for any network
        link = dlab.d[0].check("exec", "b1", "cat", "/sys/class/net/eth0/mtu")
        assert int(link) == dlab.lab.overlay_mtu("vxlan") == 1450
        for i in range(HOSTS):
            for j in range(HOSTS):
                if i != j:
                    assert dlab.ping(i, f"b{i + 1}", ips[j]), f"b{i + 1} -> b{j + 1} ({ips[j]})"
        # the traffic went over UDP 4790 between the hosts' underlay addresses
        st = dlab.lab.status(dlab.hosts[0])
        assert st["networks"]["docker-42"]["counters"]["tx_packets"] > 0
        assert [e["port"] for e in st["endpoints"]] == [PORT]
        # what a user sees: `vxlan-dp status` names the Docker network behind docker-42
        import sys
        out = subprocess.run([sys.executable, "-m", "vxlan_dp", "status", "--socket", dlab.hosts[0].socket_path],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        net_id = dlab.d[0].inspect("network", "blue")["Id"][:12]
        assert f"docker-42 = {net_id} (1 containers)" in out, out
        for a, b in ((0, 1), (0, 2)):
            res = _iperf3(dlab.netns_of(a, f"b{a + 1}"), dlab.netns_of(b, f"b{b + 1}"), ips[b])
            assert "error" not in res, res.get("error")
            bps = res["end"]["sum_received"]["bits_per_second"]
            assert bps > 10e6, f"b{a + 1} -> b{b + 1}: {bps / 1e6:.1f} Mbit/s"
    finally:
        dlab.remove("blue")


def test_encrypted_option_with_static_control(dlab: DockerLab) -> None:
    """`docker network create -o encrypted=true` (Docker's overlay option): host 1's plugin makes
    the key file and says where; the user copies it to host 2 and creates the network there; the
    containers ping across ESP in UDP. One backend: ESP's C == Python is test_esp_fastpath's."""
    if dlab.backend != "c":
        pytest.skip("the encrypted Docker network runs once, on the C backend")
    import shutil

    dlab.create("sealed", "192.168.61.0/24", "vni=43", "port=4791", "encrypted=true", hosts=[0])
    try:
        made = os.path.join(dlab.d[0].root, "keys", "docker-43.key")
        assert "Copy it to the same path on every other host" in dlab.lab.log_tail(dlab.hosts[0], 50)
        assert os.stat(made).st_mode & 0o777 == 0o600
        there = os.path.join(dlab.d[1].root, "keys")
        os.makedirs(there, mode=0o700, exist_ok=True)
        shutil.copy2(made, there)
        dlab.create("sealed", "192.168.61.0/24", "vni=43", "port=4791", "encrypted=true", hosts=[1])
        a, b = dlab.run(0, "s1", "sealed"), dlab.run(1, "s2", "sealed")
        assert dlab.ping(0, "s1", b) and dlab.ping(1, "s2", a)
        for h in dlab.hosts[:2]:
            net = dlab.lab.status(h)["networks"]["docker-43"]
            assert net["encryption"] == {"cipher": "aes-256-gcm", "key_ids": [1], "send_key": 1}, net
            assert net["counters"]["rx_packets"] > 0
        key = open(made).read().split()[1]
        assert key[:16] not in dlab.lab.log_tail(dlab.hosts[0], 200)
    finally:
        dlab.remove("sealed")


def test_addresses_unique_across_hosts(dlab: DockerLab) -> None:
    import ipaddress

    dlab.create("uniq", "192.168.62.0/24", "vni=44", f"port={PORT}")
    try:
        seen: dict[str, str] = {}
        for i in range(HOSTS):
            for k in range(3):
                name = f"u{i + 1}-{k}"
                ip = dlab.run(i, name, "uniq")
                assert ip not in seen, f"{ip} given to {seen.get(ip)} and {name}"
                seen[ip] = name
                # host i takes the i-th third of the subnet (static control: [docker] slice)
                off = int(ipaddress.ip_address(ip)) - int(ipaddress.ip_address("192.168.62.0"))
                assert 2 + i * 84 <= off < 2 + (i + 1) * 84, (name, ip)
        assert "192.168.62.1" not in seen  # the gateway address is nobody's
    finally:
        dlab.remove("uniq")


def test_dual_stack_container_addresses(dlab: DockerLab) -> None:
    """--ipv6 with an IPv6 subnet beside the IPv4 one: each container gets one of each, unique
    across hosts (the slices apply to both), and both reach the other host."""
    import ipaddress

    for i in range(2):
        dlab.d[i].check("network", "create", "-d", "vxlan-dp", "--ipam-driver", "vxlan-dp", "--ipv6",
                        "--subnet", "192.168.65.0/24", "--subnet", "fd00:65::/64", "-o", "vni=46",
                        "-o", f"port={PORT}", "dual")
    try:
        addrs = []
        for i in range(2):
            dlab.run(i, f"d{i + 1}", "dual")
            n = dlab.d[i].inspect("container", f"d{i + 1}")["NetworkSettings"]["Networks"]["dual"]
            addrs.append((n["IPAddress"], n["GlobalIPv6Address"]))
        assert all(ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:65::/64") for _, v6 in addrs)
        assert len({a for pair in addrs for a in pair}) == 4
        assert dlab.ping(0, "d1", addrs[1][0]) and dlab.ping(0, "d1", addrs[1][1])
    finally:
        dlab.remove("dual")


def test_two_networks_isolated(dlab: DockerLab) -> None:
    dlab.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}")
    dlab.create("red", "192.168.61.0/24", "vni=43", f"port={PORT}")  # the same UDP port: VNI tells
    try:
        b2 = dlab.run(1, "ib2", "blue")
        r2 = dlab.run(1, "ir2", "red")
        dlab.run(0, "ir1", "red", "--cap-add", "NET_ADMIN")
        assert dlab.ping(0, "ir1", r2)
        # give the red container an address in blue's subnet: still nothing reaches blue
        dlab.d[0].check("exec", "ir1", "ip", "addr", "add", "192.168.60.250/24", "dev", "eth0")
        assert not dlab.ping(0, "ir1", b2, count=2)
        assert dlab.ping(0, "ir1", r2)
    finally:
        dlab.remove("blue")
        dlab.remove("red")


def test_connect_and_disconnect_live(dlab: DockerLab) -> None:
    dlab.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}")
    dlab.create("red", "192.168.61.0/24", "vni=43", f"port={PORT}")
    try:
        dlab.run(0, "cb1", "blue")
        r2 = dlab.run(1, "cr2", "red")
        pid = dlab.d[0].container_pid("cb1")
        assert not dlab.ping(0, "cb1", r2, count=1)
        dlab.d[0].check("network", "connect", "red", "cb1")
        assert dlab.ping(0, "cb1", r2)
        assert "eth1" in dlab.d[0].check("exec", "cb1", "ls", "/sys/class/net")
        red = dlab.d[0].inspect("container", "cb1")["NetworkSettings"]["Networks"]["red"]
        # the plugin told ARP / ND suppression where cb1 is on red (vxlan-dp fdb docker-43 --neigh)
        assert {(r["ip"], r["mac"], r["source"]) for r in dlab.neigh(0, "docker-43")} == {
            (red["IPAddress"], red["MacAddress"], "api")}
        ep = dlab.d[0].inspect("network", "red")["Containers"]
        veth = "vxv" + next(iter(ep.values()))["EndpointID"][:10]
        assert veth in dlab.host_links(0)
        dlab.d[0].check("network", "disconnect", "red", "cb1")
        assert dlab.neigh(0, "docker-43") == []
        assert not dlab.ping(0, "cb1", r2, count=1)
        assert veth not in dlab.host_links(0)
        assert dlab.d[0].check("exec", "cb1", "ls", "/sys/class/net").split() == ["eth0", "lo"]
        assert dlab.d[0].container_pid("cb1") == pid  # the same container all along
    finally:
        dlab.remove("blue")
        dlab.remove("red")


def test_bad_vni_rejected_with_the_field_named(dlab: DockerLab) -> None:
    before = dlab.host_links(0)
    r = dlab.d[0].docker("network", "create", "-d", "vxlan-dp", "--ipam-driver", "vxlan-dp", "--subnet",
                         "192.168.63.0/24", "-o", "vni=16777216", "-o", f"port={PORT}", "bad")
    assert r.returncode != 0
    assert "-o vni: 16777216 is out of range 0..16777215" in r.stderr
    assert dlab.d[0].docker("network", "inspect", "bad").returncode != 0
    assert dlab.host_links(0) == before


def _replies(log: str) -> list[float]:
    """Timestamps (ping -D) of the echo replies in a ping log."""
    out = []
    with open(log) as f:
        for line in f:
            m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line)
            if m:
                out.append(float(m.group(1)))
    return out


def _wait_reply(log: str, since: float, until: float) -> None:
    while time.time() < until and not [t for t in _replies(log) if t > since]:
        time.sleep(0.1)


def test_restarts_under_a_running_ping(dlab: DockerLab, tmp_path: Any) -> None:
    """vxlan-dp restarted, then dockerd restarted, on host 1 while b1 pings b2: back within 5 s,
    the same containers (PID, start time) all along, no re-creation asked of anyone."""
    dlab.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}")
    try:
        dlab.run(0, "rb1", "blue")
        b2 = dlab.run(1, "rb2", "blue")
        before = [(dlab.d[i].container_pid(n), dlab.d[i].inspect("container", n)["State"]["StartedAt"])
                  for i, n in ((0, "rb1"), (1, "rb2"))]
        log = str(tmp_path / "ping.log")
        with open(log, "w") as out:
            ping = subprocess.Popen(["nsenter", f"--net={dlab.netns_of(0, 'rb1')}", "ping", "-D", "-n", "-i", "0.1",
                                     "-W", "1", "-w", "60", b2], stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)
            assert _replies(log), "no replies before the restarts"
            t0 = time.time()
            dlab.restart_vxlan_dp(0)
            ready = time.time()
            _wait_reply(log, t0, ready + 5.5)
            back = [t for t in _replies(log) if t > t0]
            assert back and back[0] - ready <= 5.0, f"vxlan-dp restart: first reply {back[:1]} vs ready {ready}"
            t1 = time.time()
            dlab.lab.stop_dockerd(dlab.hosts[0])
            dlab.lab.start_dockerd(dlab.hosts[0])
            ready = time.time()
            _wait_reply(log, t1, ready + 5.5)
            after = [t for t in _replies(log) if t > t1]
            assert after and after[0] - ready <= 5.0, f"dockerd restart: first reply {after[:1]} vs ready {ready}"
        finally:
            ping.send_signal(signal.SIGINT)
            ping.wait(10)
        assert [(dlab.d[i].container_pid(n), dlab.d[i].inspect("container", n)["State"]["StartedAt"])
                for i, n in ((0, "rb1"), (1, "rb2"))] == before
        assert dlab.ping(0, "rb1", b2)
        # and the restarted pair still manages the network: a new container joins and is reached
        b3 = dlab.run(1, "rb3", "blue")
        assert dlab.ping(0, "rb1", b3)
        # the container the restarted dockerd took over joins another network live (Docker
        # 20.10 forgot its eth0: the plugin names the new interface vx43-0, not a clashing eth1)
        dlab.create("red", "192.168.61.0/24", "vni=43", f"port={PORT}", hosts=[0, 1])
        r2 = dlab.run(1, "rr2", "red")
        dlab.d[0].check("network", "connect", "red", "rb1")
        assert dlab.ping(0, "rb1", r2)
        assert "vx43-0" in dlab.d[0].check("exec", "rb1", "ls", "/sys/class/net").split()
        dlab.d[0].check("network", "disconnect", "red", "rb1")
        assert not dlab.ping(0, "rb1", r2, count=1)
    finally:
        dlab.remove("blue")
        dlab.remove("red")


def test_reload_keeps_docker_networks(dlab: DockerLab) -> None:
    """SIGHUP re-reads the file, whose networks Docker's are not: they must keep running."""
    dlab.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}", hosts=[0, 1])
    try:
        dlab.run(0, "hb1", "blue")
        b2 = dlab.run(1, "hb2", "blue")
        h = dlab.hosts[0]
        reloads = dlab.lab.status(h)["reloads"]
        assert h.proc is not None
        h.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while dlab.lab.status(h)["reloads"] == reloads and time.monotonic() < deadline:
            time.sleep(0.1)
        st = dlab.lab.status(h)
        assert st["reloads"] == reloads + 1 and st["last_reload_ok"]
        assert "docker-42" in st["networks"] and st["networks"]["docker-42"]["tap_up"]
        assert dlab.ping(0, "hb1", b2)
    finally:
        dlab.remove("blue")


def test_network_rm_leaves_nothing(dlab: DockerLab) -> None:
    before = [dlab.host_links(i) for i in range(HOSTS)]
    dlab.create("gone", "192.168.64.0/24", "vni=45", f"port={PORT}")
    for i in range(HOSTS):
        dlab.run(i, f"g{i + 1}", "gone")
    assert all("vxdp-45" in dlab.host_links(i) and "vxbr-45" in dlab.host_links(i) for i in range(HOSTS))
    dlab.d[0].check("network", "disconnect", "gone", "g1")
    dlab.remove("gone")
    for i in range(HOSTS):
        assert dlab.host_links(i) == before[i]
        assert "docker-45" not in dlab.lab.status(dlab.hosts[i])["networks"]
