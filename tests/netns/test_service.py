"""Running as a service: Prometheus scrapes a daemon under traffic, sd_notify as systemd sees it,
SIGHUP reloads under load, `vxlan-dp status` and `vxlan-dp fdb` against a live daemon.

Everything talks to addresses inside the lab's namespaces only: the daemon's metrics endpoint
listens on 127.0.0.1 of its host namespace, so Prometheus runs (and is queried) in that same
namespace, on a free port there, with its TSDB in tmp, `timeout` as a bound on its life, and
is killed by PID at the end. Prometheus is optional on a developer machine (skip), mandatory
under CI=true (fail).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

import pytest
from pyroute2 import netns as pr_netns

from helpers import need_tool, wait_for
from vxlan_dp.lab import Lab, netns
from vxlan_dp.lab.lab import parse_ping



# --- helpers ------------------------------------------------------------------------------
def _ns_socket(ns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    return pr_netns.create_socket(ns, socket.AF_INET, kind)


def _free_port(ns: str) -> int:
    s = _ns_socket(ns)
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def _http_get(ns: str, port: int, target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP/1.0 GET to 127.0.0.1:port inside namespace `ns`: (status, body)."""
    s = _ns_socket(ns)
    try:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _metrics_toml(port: int) -> str:
    return f'[daemon]\nmetrics = "127.0.0.1:{port}"\n'


def _ifindex(ns: str, name: str) -> int | None:
    with netns.ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _vxlan_dp(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlan_dp", *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _prometheus() -> str:
    return need_tool("prometheus", "prometheus")


# --- Prometheus ---------------------------------------------------------------------------
def test_prometheus_scrapes_byte_rates_while_traffic_flows(make_lab, tmp_path):
    prom = _prometheus()
    lab: Lab = make_lab(2)
    for h in lab.hosts:
        lab.add_container(h)
    lab.settle()
    h1, h2 = lab.hosts
    mport, pport = _free_port(h1.ns), _free_port(h1.ns)
    while pport == mport:
        pport = _free_port(h1.ns)
    lab.start_daemon(h1, lab.network_toml(h1), daemon_toml=_metrics_toml(mport))
    lab.start_daemon(h2, lab.network_toml(h2))
    a, b = h1.containers[0], h2.containers[0]

    status, body = _http_get(h1.ns, mport, "/metrics")
    assert status == 200 and b'vxlan_dp_network_info{encap="vxlan",network="blue"' in body

    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: vxlan-dp\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{mport}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    # `timeout` bounds its life even if this test process dies; we still kill it by PID below
    server = netns.popen(h1.ns, ["timeout", "60", prom, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--storage.tsdb.retention.time=1h",
                                 f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
                         stdout=log, stderr=subprocess.STDOUT)
    log.close()
    ping = netns.popen(a.ns, ["ping", "-n", "-q", "-i", "0.02", "-c", "1000", "-s", "1000", b.ip],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(expr: str) -> list[dict[str, Any]]:
            try:
                code, body = _http_get(h1.ns, pport, "/api/v1/query?query=" + urllib.parse.quote(expr))
            except OSError:
                return []  # not listening yet
            if code == 503:
                return []  # listening, but its storage is not ready yet: a plain-text "Service Unavailable"
            ans = json.loads(body)
            assert code == 200 and ans["status"] == "success", body
            return list(ans["data"]["result"])

        expr = 'rate(vxlan_dp_tunnel_bytes_total{direction="egress"}[5s])'
        result = wait_for("Prometheus to compute a positive egress byte rate",
                       lambda: [r for r in query(expr) if float(r["value"][1]) > 0], timeout=30, step=0.5)
        assert [r["metric"]["network"] for r in result] == ["blue"]
        assert float(result[0]["value"][1]) > 1000             # pings of >1000 bytes, many a second
        ingress = query('rate(vxlan_dp_tap_bytes_total{network="blue",direction="ingress"}[5s])')
        assert ingress and float(ingress[0]["value"][1]) > 0  # the replies came back through the TAP
        up = query('up{job="vxlan-dp"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        for p in (ping, server):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    # the operator's view of the same daemon: rates, FDB, then JSON for scripts
    r = _vxlan_dp("status", "--socket", h1.socket_path, "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    assert "blue" in r.stdout and "TX pkt/s" in r.stdout and "metrics 127.0.0.1:" in r.stdout
    r = _vxlan_dp("status", "--socket", h1.socket_path, "--json", "--interval", "0")
    st = json.loads(r.stdout)
    assert st["networks"]["blue"]["counters"]["tx_packets"] >= 100
    r = _vxlan_dp("fdb", "blue", "--socket", h1.socket_path)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(b.mac))
    assert h2.ip4 in line and "learned" in line
    assert _vxlan_dp("fdb", "nope", "--socket", h1.socket_path).returncode == 1


def test_status_json_reports_rates_per_network(make_lab):
    lab: Lab = make_lab(2)
    for h in lab.hosts:
        lab.add_container(h)
    lab.settle()
    for h in lab.hosts:
        lab.start_daemon(h, lab.network_toml(h))
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    ping = netns.popen(a.ns, ["ping", "-n", "-q", "-i", "0.02", "-c", "150", b.ip],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = _vxlan_dp("status", "--socket", lab.hosts[0].socket_path, "--json", "--interval", "1")
    finally:
        ping.kill()
        ping.wait(5)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert 0.9 < st["interval"] < 2.0
    rates = st["networks"]["blue"]["rates"]
    assert 20 < rates["tx_packets"] < 100 and rates["tx_bytes"] > 0   # ~50 pings/s
    assert st["endpoints"][0]["rates"]["rx_datagrams"] > 20


# --- sd_notify ------------------------------------------------------------------------------
class NotifyListener:
    """The systemd side of $NOTIFY_SOCKET: every datagram, stamped when it arrived."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.path = path
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode().split("\n")))

    def times(self, item: str, since: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if t >= since and item in m]

    def wait_for(self, item: str, since: float, timeout: float = 10.0) -> float:
        return wait_for(f"{item} from the daemon", lambda: (self.times(item, since) or [0.0])[0], timeout, 0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.mark.alone     # watchdog gaps timed to 0.1 s: no other test's load beside it
def test_notify_ready_watchdog_freeze_reload_and_stop(make_lab, tmp_path):
    lab: Lab = make_lab(2)
    h = lab.hosts[0]
    watchdog_usec = 400_000
    listener = NotifyListener(str(tmp_path / "notify"))
    try:
        t0 = time.monotonic()
        proc = lab.start_daemon(h, lab.network_toml(h), wait_ready=False,
                                extra_env={"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": str(watchdog_usec)})
        ready = listener.wait_for("READY=1", t0, timeout=20)
        # READY only once the network is up: its TAP exists and the status socket answers
        assert _ifindex(h.ns, "vxdp-blue") is not None
        assert "blue" in lab.status(h)["networks"]
        first = [m for _, m in listener.messages if "READY=1" in m][0]
        assert any(x.startswith("STATUS=1 networks") for x in first)

        # WATCHDOG=1 at half of WATCHDOG_USEC, from the running loop
        time.sleep(1.5)
        pings = listener.times("WATCHDOG=1", ready)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert len(pings) >= 5, pings
        assert 0.15 < statistics.median(gaps) < 0.3, gaps
        assert max(gaps) < watchdog_usec / 1e6, gaps     # never late enough for systemd to fire

        # a frozen process sends nothing; it resumes when thawed
        proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(1.2)
        thawed = time.monotonic()
        proc.send_signal(signal.SIGCONT)
        during = [t for t in listener.times("WATCHDOG=1", stopped + 0.05) if t < thawed]
        assert during == []
        resumed = listener.wait_for("WATCHDOG=1", thawed, timeout=2)
        assert resumed - thawed < 0.5
        time.sleep(0.5)
        assert len(listener.times("WATCHDOG=1", thawed)) >= 2

        # STATUS= is refreshed periodically with rates (every 5 s)
        status = wait_for("a periodic STATUS=", lambda: [m for t, m in listener.messages if t > ready + 1
                                                      and "READY=1" not in m
                                                      and any(x.startswith("STATUS=") for x in m)], timeout=8)
        assert "pkt/s" in [x for x in status[0] if x.startswith("STATUS=")][0]

        # SIGHUP: RELOADING=1, then READY=1 again
        hup = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING=1", hup)
        assert listener.wait_for("READY=1", hup) >= reloading
        assert any(x.startswith("MONOTONIC_USEC=") for t, m in listener.messages if t >= hup and "RELOADING=1" in m
                   for x in m)

        # SIGTERM: STOPPING=1, a clean exit
        term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", term)
        assert proc.wait(10) == 0
    finally:
        listener.close()


# --- reload ---------------------------------------------------------------------------------
def test_sighup_under_load_adds_and_removes_networks_then_rejects_a_bad_config(make_lab, backend):
    lab: Lab = make_lab(2)
    h1, h2 = lab.hosts
    a1, a2 = lab.add_container(h1), lab.add_container(h2)
    g1 = lab.add_container(h1, "br-green", subnet=1)
    g2 = lab.add_container(h2, "br-green", subnet=1)
    lab.settle()
    blue = lab.network_toml(h1)
    green = lab.network_toml(h1, name="green", vni=43, tap="vxdp-green", bridge="br-green")
    red = lab.network_toml(h1, name="red", vni=44, tap="vxdp-red", bridge="br-red")
    lab.start_daemon(h1, blue + red, backend=backend)
    lab.start_daemon(h2, lab.network_toml(h2) + lab.network_toml(h2, name="green", vni=43, tap="vxdp-green",
                                                                  bridge="br-green"), backend=backend)
    assert lab.ping(a1, a2.ip, count=2, interval=0.1).ok          # ARP resolved before the flood
    blue_index = _ifindex(h1.ns, "vxdp-blue")
    assert _ifindex(h1.ns, "vxdp-red") is not None and _ifindex(h1.ns, "vxdp-green") is None

    count = 400
    flood = netns.popen(a1.ns, ["ping", "-n", "-q", "-i", "0.01", "-c", str(count), "-W", "2", a2.ip],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        with open(h1.config_path, "w") as f:                  # green in, red out, blue untouched
            f.write('[daemon]\nmetrics = ""\n' + blue + green)
        assert h1.proc is not None
        h1.proc.send_signal(signal.SIGHUP)
        wait_for("green up and red gone on h1", lambda: set(lab.status(h1)["networks"]) == {"blue", "green"})
        assert lab.ping(g1, g2.ip, count=2, interval=0.1).ok   # the new network carries traffic
        out, _ = flood.communicate(timeout=count * 0.01 + 30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(5)
    res = parse_ping(a1.name, a2.ip, out)
    assert res.sent == count and res.received == count, out
    assert _ifindex(h1.ns, "vxdp-red") is None and _ifindex(h1.ns, "vxdp-green") is not None
    assert _ifindex(h1.ns, "vxdp-blue") == blue_index         # blue was never re-created
    st = lab.status(h1)
    assert st["reloads"] == 1 and st["reload_failures"] == 0 and st["last_reload_ok"]

    # a config that does not validate: rejected, logged, nothing changes, traffic keeps flowing
    before = st["networks"]["blue"]["counters"]["tx_packets"]
    with open(h1.config_path, "w") as f:
        f.write('[daemon]\nmetrics = ""\n' + lab.network_toml(h1, vni=16777216))
    h1.proc.send_signal(signal.SIGHUP)
    wait_for("the rejection in the log", lambda: "reload rejected" in lab.log_tail(h1, 1000))
    assert "network[0].vni: 16777216 is out of range" in lab.log_tail(h1, 1000)
    assert lab.ping(a1, a2.ip, count=3, interval=0.1).ok
    assert lab.ping(g1, g2.ip, count=2, interval=0.1).ok
    st = lab.status(h1)
    assert set(st["networks"]) == {"blue", "green"}
    assert st["networks"]["blue"]["vni"] == 42
    assert st["reloads"] == 1 and st["reload_failures"] == 1 and not st["last_reload_ok"]
    assert st["networks"]["blue"]["counters"]["tx_packets"] >= before + 3
    assert _ifindex(h1.ns, "vxdp-blue") == blue_index


def test_reload_moves_the_metrics_endpoint_and_rejects_an_unusable_address(make_lab):
    lab: Lab = make_lab(1)
    h = lab.hosts[0]
    p1, p2 = _free_port(h.ns), _free_port(h.ns)
    net = lab.network_toml(h, peers=[])
    lab.start_daemon(h, net, daemon_toml=_metrics_toml(p1))
    assert _http_get(h.ns, p1, "/metrics")[0] == 200
    assert h.proc is not None

    def reload(daemon_toml: str) -> None:
        n = lab.status(h)["reloads"] + lab.status(h)["reload_failures"]
        with open(h.config_path, "w") as f:
            f.write(daemon_toml + net)
        assert h.proc is not None
        h.proc.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: lab.status(h)["reloads"] + lab.status(h)["reload_failures"] > n)

    reload(_metrics_toml(p2))
    assert _http_get(h.ns, p2, "/metrics")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        _http_get(h.ns, p1, "/metrics")
    assert lab.status(h)["metrics"] == f"127.0.0.1:{p2}"

    busy = _ns_socket(h.ns)                                  # someone else holds p1 now
    try:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # p1 may be in TIME_WAIT
        busy.bind(("127.0.0.1", p1))
        busy.listen()
        reload(_metrics_toml(p1))
        st = lab.status(h)
        assert st["reload_failures"] == 1 and st["metrics"] == f"127.0.0.1:{p2}"
        assert "daemon.metrics: cannot listen on 127.0.0.1:%d" % p1 in lab.log_tail(h, 1000)
        assert _http_get(h.ns, p2, "/metrics")[0] == 200      # the old endpoint still serves
    finally:
        busy.close()

    reload('[daemon]\nmetrics = ""\n')
    assert lab.status(h)["metrics"] is None
    with pytest.raises(ConnectionRefusedError):
        _http_get(h.ns, p2, "/metrics")


def test_a_metrics_address_in_use_fails_the_start_and_leaves_nothing(make_lab):
    lab: Lab = make_lab(1)
    h = lab.hosts[0]
    busy = _ns_socket(h.ns)
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = lab.start_daemon(h, lab.network_toml(h, peers=[]), daemon_toml=_metrics_toml(port), wait_ready=False)
        assert proc.wait(20) == 1
    finally:
        busy.close()
    assert f"daemon.metrics: cannot listen on 127.0.0.1:{port}" in lab.log_tail(h, 1000)
    assert _ifindex(h.ns, "vxdp-blue") is None
    assert not os.path.exists(h.socket_path)
