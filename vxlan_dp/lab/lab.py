"""A multi-host overlay lab on one machine: hosts and containers as network namespaces.

    containers (ns) --veth--> br-blue [host ns] <-- TAP (vxlan-dp) ; host ul0 --veth--> ulbr [underlay ns]

Underlay addresses come from 198.18.0.0/15 (IPv4) and 2001:2::/48 (IPv6), the benchmarking
ranges; overlay addresses from 192.168.0.0/16. They exist only inside namespaces this lab made.
Every name carries a random suffix, reserved by creating the lab's state file, so labs built side
by side (parallel tests, demos) never collide; `close()` stops the daemons this lab started (by
PID) and deletes its namespaces, also after a failure; the state file under /run/vxlan-dp/lab
lets `vxlan-dp lab clean` finish the job if the lab process itself died.

`add_etcd_host()` adds one more namespace on the underlay (198.18.0.254 / 2001:2::fe, never a
daemon host) running Debian's etcd server with its data in the lab's workdir, for the etcd
control plane; its PID is recorded like the daemons' and it is stopped by `close()`.

`start_dockerd()` gives a host its own real Docker (lab/docker.py): dockerd in the host's
network namespace and a private mount namespace in which /run/docker/plugins is the host's
own directory; `close()` removes its containers and stops it before the namespaces go.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ..linux import IFA_F_NODAD
from ..wire import encap_overhead
from . import netns
from .docker import Dockerd, busybox_rootfs_tar, clean_dockerd

__all__ = ["Lab", "Host", "Container", "PingResult", "LabError", "clean", "STATE_DIR", "PREFIX",
           "ETCD_PORT"]

PREFIX = "vxdp"
STATE_DIR = "/run/vxlan-dp/lab"
UNDERLAY_MTU = 1500
ETCD_PORT = 2379


class LabError(RuntimeError):
    pass


@dataclass
class Container:
    name: str
    ns: str
    host: "Host"
    ip: str
    mac: str
    bridge: str = "br-blue"     # what `restore_host` needs to build it again
    mtu: int = 1450
    subnet: int = 0


@dataclass
class Host:
    index: int
    name: str
    ns: str
    ip4: str
    ip6: str
    containers: list[Container] = field(default_factory=list)
    proc: subprocess.Popen[Any] | None = None
    config_path: str = ""
    socket_path: str = ""
    log_path: str = ""

    def address(self, ipv6: bool) -> str:
        return self.ip6 if ipv6 else self.ip4


@dataclass
class PingResult:
    src: str
    dst: str
    sent: int
    received: int
    avg_ms: float | None

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received == self.sent


class Lab:
    def __init__(self, hosts: int = 2, *, ipv6: bool = False, workdir: str | None = None,
                 tx_csum_off: bool = False) -> None:
        """`tx_csum_off`: a labelled, non-default option reproducing `ethtool -K ul0 tx off` on
        every host's underlay veth (the kernel then fills inner checksums in software). By
        default the veths keep the kernel's offloads, as users' links do: a kernel vxlan peer's
        inner TCP/UDP checksums then arrive partial, which vxlan-dp must complete."""
        if not 1 <= hosts <= 200:
            raise LabError("hosts must be 1..200")
        self.sfx = _reserve_suffix()
        self.ipv6 = ipv6
        self.tx_csum_off = tx_csum_off
        self.ul_ns = f"{PREFIX}-{self.sfx}-ul"
        self.hosts = [Host(i, f"h{i}", f"{PREFIX}-{self.sfx}-h{i}", f"198.18.0.{i}", f"2001:2::{i:x}")
                      for i in range(1, hosts + 1)]
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"{PREFIX}-{self.sfx}-")
        self._namespaces: list[str] = []
        self._pids: list[int] = []
        self._state = os.path.join(STATE_DIR, f"{PREFIX}-{self.sfx}.json")
        self.etcd_host: Host | None = None
        self.etcd_proc: subprocess.Popen[Any] | None = None
        self._etcd_args: list[str] = []
        self._etcd_scheme = "http"
        self.dockerds: dict[str, Dockerd] = {}
        self._image_tar: str | None = None

    # --- context management ---------------------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _save_state(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(self._state, "w") as f:
            json.dump({"namespaces": self._namespaces, "pids": self._pids, "workdir": self.workdir,
                       "dockerd": [{"exec_root": d.exec_root, "mounts": d.mounts,
                                    "pid": d.proc.pid if d.proc else None}
                                   for d in self.dockerds.values()]}, f)

    def _ns(self, name: str) -> str:
        netns.create(name)
        self._namespaces.append(name)
        self._save_state()
        with netns.ipr(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    # --- building -------------------------------------------------------------------------
    def build(self) -> None:
        self._ns(self.ul_ns)
        with netns.ipr(self.ul_ns) as ul:
            ul.link("add", ifname="ulbr", kind="bridge")
            ul.link("set", index=ul.link_lookup(ifname="ulbr")[0], state="up")
        for h in self.hosts:
            self.add_host_ns(h)

    def add_host_ns(self, h: Host) -> None:
        self._ns(h.ns)
        with netns.ipr(self.ul_ns) as ul:
            ul.link("add", ifname=h.name, kind="veth", peer=f"{h.name}p")
            ul.link("set", index=ul.link_lookup(ifname=f"{h.name}p")[0], net_ns_fd=h.ns)
            idx = ul.link_lookup(ifname=h.name)[0]
            ul.link("set", index=idx, master=ul.link_lookup(ifname="ulbr")[0], state="up")
        with netns.ipr(h.ns) as ipr:
            idx = ipr.link_lookup(ifname=f"{h.name}p")[0]
            ipr.link("set", index=idx, ifname="ul0", mtu=UNDERLAY_MTU)
            ipr.addr("add", index=idx, address=h.ip4, prefixlen=24)
            ipr.addr("add", index=idx, address=h.ip6, prefixlen=64, flags=IFA_F_NODAD)
            ipr.link("set", index=idx, state="up")
        if self.tx_csum_off:
            netns.tx_checksum_off(h.ns, "ul0")

    def add_host(self) -> Host:
        """A further host joining the running lab (the daemon is started separately)."""
        i = len(self.hosts) + 1
        h = Host(i, f"h{i}", f"{PREFIX}-{self.sfx}-h{i}", f"198.18.0.{i}", f"2001:2::{i:x}")
        self.hosts.append(h)
        self.add_host_ns(h)
        return h

    def remove_host(self, h: Host) -> None:
        """The host vanishes, as a machine that loses power: its daemon is killed (SIGKILL, by
        PID) and its namespace and its containers' namespaces are deleted (their links with them)."""
        self.stop_daemon(h, signal.SIGKILL)
        for ns in [c.ns for c in h.containers] + [h.ns]:
            netns.remove(ns)
            if ns in self._namespaces:
                self._namespaces.remove(ns)
        self._save_state()
        # the kernel destroys a namespace, and its veths, in the background (cleanup_net)
        deadline = time.monotonic() + 10
        with netns.ipr(self.ul_ns) as ul:
            while ul.link_lookup(ifname=h.name):
                if time.monotonic() > deadline:
                    raise LabError(f"{h.name}'s underlay link outlived its namespace")
                time.sleep(0.05)

    def restore_host(self, h: Host) -> None:
        """Bring back a host `remove_host` took away: its namespace on the underlay and its
        containers, with the same names, addresses and MACs (its daemon is started separately)."""
        old, h.containers = h.containers, []
        self.add_host_ns(h)
        for c in old:
            self.add_container(h, c.bridge, mtu=c.mtu, subnet=c.subnet)

    def add_container(self, host: Host, bridge: str = "br-blue", *, mtu: int = 1450,
                      subnet: int = 0) -> Container:
        j = len([c for c in host.containers if c.ip.startswith(f"192.168.{subnet}.")]) + 1
        octet = host.index * 10 + j
        name = f"c{host.index}-{j}" if subnet == 0 else f"c{host.index}-{j}n{subnet}"
        ns = self._ns(f"{PREFIX}-{self.sfx}-{name}")
        mac = f"02:42:c0:a8:{subnet:02x}:{octet:02x}"
        with netns.ipr(host.ns) as ipr:
            if not ipr.link_lookup(ifname=bridge):
                ipr.link("add", ifname=bridge, kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname=bridge)[0], state="up", mtu=mtu)
            port = f"v{name}"[:15]
            ipr.link("add", ifname=port, kind="veth", peer=f"{port}p"[:15])
            ipr.link("set", index=ipr.link_lookup(ifname=f"{port}p"[:15])[0], net_ns_fd=ns)
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0], mtu=mtu,
                     master=ipr.link_lookup(ifname=bridge)[0], state="up")
        with netns.ipr(ns) as ipr:
            idx = ipr.link_lookup(ifname=f"{port}p"[:15])[0]
            ipr.link("set", index=idx, ifname="eth0", address=mac, mtu=mtu)
            ipr.addr("add", index=idx, address=f"192.168.{subnet}.{octet}", prefixlen=24)
            ipr.link("set", index=idx, state="up")
        c = Container(name, ns, host, f"192.168.{subnet}.{octet}", mac, bridge, mtu, subnet)
        host.containers.append(c)
        return c

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every veth the lab made is operationally up.

        The kernel activates a link's queue from its linkwatch work, up to a second after the
        carrier comes on (net/core/link_watch.c); frames sent before that sit in a noop qdisc.
        """
        deadline = time.monotonic() + timeout
        pending = list(self._namespaces)
        while pending and time.monotonic() < deadline:
            still = []
            for ns in pending:
                with netns.ipr(ns) as ipr:
                    if any(link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
                           and link.get("IFLA_OPERSTATE") != "UP" for link in ipr.get_links()):
                        still.append(ns)
            pending = still
            if pending:
                time.sleep(0.05)
        if pending:
            raise LabError(f"links not up after {timeout}s in {', '.join(pending)}")

    def overlay_mtu(self, encap: str = "vxlan") -> int:
        return UNDERLAY_MTU - encap_overhead(encap, self.ipv6) - 14

    def add_kernel_vxlan(self, host: Host, *, vni: int = 42, port: int = 4789, bridge: str = "br-blue",
                         remotes: list[Host] | None = None, ifname: str = "vx-kernel",
                         udpcsum: bool | None = None, zerocsum6_tx: bool | None = None,
                         zerocsum6_rx: bool | None = None) -> None:
        """The kernel's own vxlan device on `host`, as the interop peer (learning, head-end flood).
        `udpcsum` (IPv4: outer UDP checksum sent), `zerocsum6_tx` / `zerocsum6_rx` (IPv6: send /
        accept a zero outer checksum) are `ip link add ... type vxlan` [no]udpcsum,
        [no]udp6zerocsumtx / rx; None keeps the kernel's default."""
        others = remotes if remotes is not None else [h for h in self.hosts if h is not host]
        mtu = self.overlay_mtu("vxlan")
        with netns.ipr(host.ns) as ipr:
            kw: dict[str, Any] = {"vxlan_id": vni, "vxlan_port": port, "vxlan_learning": 1}
            for key, v in (("vxlan_udp_csum", udpcsum), ("vxlan_udp_zero_csum6_tx", zerocsum6_tx),
                           ("vxlan_udp_zero_csum6_rx", zerocsum6_rx)):
                if v is not None:
                    kw[key] = int(v)
            kw["vxlan_local6" if self.ipv6 else "vxlan_local"] = host.address(self.ipv6)
            ipr.link("add", ifname=ifname, kind="vxlan", **kw)
            idx = ipr.link_lookup(ifname=ifname)[0]
            if not ipr.link_lookup(ifname=bridge):
                ipr.link("add", ifname=bridge, kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname=bridge)[0], state="up")
            ipr.link("set", index=idx, mtu=mtu, master=ipr.link_lookup(ifname=bridge)[0], state="up")
            for h in others:  # all-zero MAC entries: flood unknown/broadcast to every remote
                ipr.fdb("append", ifindex=idx, lladdr="00:00:00:00:00:00", dst=h.address(self.ipv6))

    def kernel_fdb(self, host: Host, ifname: str = "vx-kernel") -> dict[str, str]:
        """MAC -> remote learned or configured on the kernel vxlan device of `host`."""
        with netns.ipr(host.ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            return {m.get("NDA_LLADDR"): m.get("NDA_DST") for m in ipr.fdb("dump", ifindex=idx)
                    if m.get("NDA_DST") and m.get("NDA_LLADDR") != "00:00:00:00:00:00"}

    # --- daemons --------------------------------------------------------------------------
    def network_toml(self, host: Host, *, name: str = "blue", vni: int = 42, encap: str = "vxlan",
                     port: int | None = None, tap: str = "vxdp-blue", bridge: str = "br-blue",
                     peers: list[Host] | None = None, extra: str = "") -> str:
        others = peers if peers is not None else [h for h in self.hosts if h is not host]
        lines = ["[[network]]", f'name = "{name}"', f"vni = {vni}", f'encap = "{encap}"']
        if port is not None and encap != "gre":
            lines.append(f"port = {port}")
        lines += [f'local = "{host.address(self.ipv6)}"', f'tap = "{tap}"', f'bridge = "{bridge}"',
                  "peers = [" + ", ".join(f'"{h.address(self.ipv6)}"' for h in others) + "]"]
        if extra:
            lines.append(extra)
        return "\n".join(lines) + "\n"

    def start_daemon(self, host: Host, networks_toml: str, *, backend: str | None = None,
                     daemon_toml: str = '[daemon]\nmetrics = ""\n', timeout: float = 20.0,
                     wait_ready: bool = True, extra_env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        host.config_path = os.path.join(self.workdir, f"{host.name}.toml")
        host.socket_path = os.path.join(self.workdir, f"{host.name}.sock")
        host.log_path = os.path.join(self.workdir, f"{host.name}.log")
        with open(host.config_path, "w") as f:
            f.write(daemon_toml + "\n" + networks_toml)
        notify_path = os.path.join(self.workdir, f"{host.name}.notify")
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, PYTHONUNBUFFERED="1")
        if backend == "python":
            env["VXLAN_DP_PUREPYTHON"] = "1"
        elif backend == "c":
            env.pop("VXLAN_DP_PUREPYTHON", None)
        env.update(extra_env or {})
        log = open(host.log_path, "ab")
        host.proc = netns.popen(host.ns, [sys.executable, "-m", "vxlan_dp", "run", "-c", host.config_path,
                                          "--socket", host.socket_path, "--log-level", "debug"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self._pids.append(host.proc.pid)
        self._save_state()
        try:
            if wait_ready:
                self._wait_ready(host, notify, timeout)
        finally:
            notify.close()
        return host.proc

    def _wait_ready(self, host: Host, notify: socket.socket, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        notify.settimeout(0.2)
        while time.monotonic() < deadline:
            assert host.proc is not None
            if host.proc.poll() is not None:
                raise LabError(f"daemon on {host.name} exited with {host.proc.returncode}:\n{self.log_tail(host)}")
            try:
                msg = notify.recv(4096).decode()
            except socket.timeout:
                continue
            if "READY=1" in msg.split("\n"):
                return
        raise LabError(f"daemon on {host.name} not ready after {timeout}s:\n{self.log_tail(host)}")

    def log_tail(self, host: Host, lines: int = 30) -> str:
        try:
            with open(host.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop_daemon(self, host: Host, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        p, host.proc = host.proc, None
        return None if p is None else netns.stop(p, sig, timeout)

    def status(self, host: Host) -> dict[str, Any]:
        from ..rpc import request
        return request(host.socket_path, {"cmd": "status"})

    # --- etcd -----------------------------------------------------------------------------
    def add_etcd_host(self, *, extra_args: list[str] | None = None, scheme: str = "http",
                      timeout: float = 20.0) -> Host:
        """A lab host of its own running etcd (`etcd` from Debian's etcd-server) on the underlay."""
        if shutil.which("etcd") is None:
            raise LabError("etcd is not installed (apt-get install etcd-server)")
        h = Host(0, "etcd", f"{PREFIX}-{self.sfx}-etcd", "198.18.0.254", "2001:2::fe")
        self.add_host_ns(h)
        self.etcd_host = h
        self._etcd_args, self._etcd_scheme = list(extra_args or []), scheme
        self.start_etcd(timeout)
        return h

    @property
    def etcd_endpoint(self) -> str:
        assert self.etcd_host is not None
        host = f"[{self.etcd_host.ip6}]" if self.ipv6 else self.etcd_host.ip4
        return f"{self._etcd_scheme}://{host}:{ETCD_PORT}"

    def start_etcd(self, timeout: float = 20.0) -> None:
        """(Re)start the lab's etcd on its data directory; returns once it serves clients."""
        h = self.etcd_host
        assert h is not None and self.etcd_proc is None
        # "vxlan_dp" in the data directory's name lets `lab clean` recognise the process as ours
        data = os.path.join(self.workdir, "vxlan_dp-etcd")
        s = self._etcd_scheme
        client_urls = f"{s}://{h.ip4}:{ETCD_PORT},{s}://[{h.ip6}]:{ETCD_PORT}"
        log_path = os.path.join(self.workdir, "etcd.log")
        argv = ["etcd", "--name", "lab", "--data-dir", data, "--listen-client-urls", client_urls,
                "--advertise-client-urls", client_urls, "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "lab=http://127.0.0.1:2380", *self._etcd_args]
        with open(log_path, "ab") as log:
            start = log.tell()
            self.etcd_proc = netns.popen(h.ns, argv, stdout=log, stderr=subprocess.STDOUT)
        self._pids.append(self.etcd_proc.pid)
        self._save_state()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.etcd_proc.poll() is not None:
                raise LabError(f"etcd exited with {self.etcd_proc.returncode}:\n{_tail(log_path, start)}")
            if b"ready to serve client requests" in _read_from(log_path, start):
                return
            time.sleep(0.05)
        raise LabError(f"etcd not ready after {timeout}s:\n{_tail(log_path, start)}")

    def stop_etcd(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        p, self.etcd_proc = self.etcd_proc, None
        if p is not None:
            netns.stop(p, sig, timeout)

    def etcdctl(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """`etcdctl ARGS` (Debian's etcd-client) against the lab's etcd, run in its namespace."""
        assert self.etcd_host is not None
        return netns.run(self.etcd_host.ns, ["etcdctl", "--endpoints", self.etcd_endpoint,
                                             "--dial-timeout", "3s", *args], timeout=timeout,
                         env=dict(os.environ, ETCDCTL_API="3"))

    def etcd_toml(self, host: Host, *, lease_ttl: int = 10, prefix: str = "/vxlan-dp", extra: str = "") -> str:
        """A daemon config knowing only the store and its own address (control = "etcd")."""
        return ('[daemon]\nmetrics = ""\ncontrol = "etcd"\n\n[etcd]\n'
                f'endpoints = ["{self.etcd_endpoint}"]\nprefix = "{prefix}"\n'
                f'local = "{host.address(self.ipv6)}"\nlease_ttl = {lease_ttl}\n' + extra)

    # --- docker ---------------------------------------------------------------------------
    def start_dockerd(self, host: Host, *, timeout: float = 30.0) -> Dockerd:
        """(Re)start `host`'s own dockerd, with the lab's busybox image loaded the first time."""
        d = self.dockerds.get(host.name)
        fresh = d is None
        if d is None:
            # "vxlan_dp" in the path: `lab clean` knows dockerd by its command line
            d = self.dockerds[host.name] = Dockerd(host.name, host.ns,
                                                   os.path.join(self.workdir, f"vxlan_dp-docker-{host.name}"))
        try:
            d.start(timeout)
        finally:
            self._save_state()
        if fresh:
            if self._image_tar is None:
                self._image_tar = busybox_rootfs_tar(os.path.join(self.workdir, "busybox-rootfs.tar"))
            d.load_image(self._image_tar)
        return d

    def docker_toml(self, host: Host, *, control: str = "static", extra: str = "", lease_ttl: int = 10) -> str:
        """A daemon config serving the Docker plugin to `host`'s dockerd (start_dockerd first):
        static control takes the host's slice of every subnet and every other host as a peer;
        etcd control (add_etcd_host first) needs only the store and the host's address."""
        d = self.dockerds[host.name]
        table = (f'[docker]\nsocket = "{d.plugin_socket}"\nstate = "{os.path.join(d.root, "vxlan-dp.json")}"\n'
                 f'local = "{host.address(self.ipv6)}"\n')
        if control == "etcd":
            return self.etcd_toml(host, lease_ttl=lease_ttl) + "\n" + table + extra
        others = [h.address(self.ipv6) for h in self.hosts if h is not host]
        return ('[daemon]\nmetrics = ""\n\n' + table + f'slice = "{host.index}/{len(self.hosts)}"\n'
                "peers = [" + ", ".join(f'"{a}"' for a in others) + "]\n" + extra)

    def stop_dockerd(self, host: Host, sig: int = signal.SIGTERM) -> int | None:
        """Stop `host`'s dockerd alone (containers keep running: --live-restore)."""
        rc = self.dockerds[host.name].stop(sig)
        self._save_state()
        return rc

    # --- traffic --------------------------------------------------------------------------
    def run(self, ns: str, argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return netns.run(ns, argv, timeout=timeout)

    def iperf3(self, client: Container, server: Container, *, seconds: float = 2.0, udp_rate: str | None = None,
               streams: int = 1, reverse: bool = False, length: int | None = None,
               bitrate: str | None = None) -> dict[str, Any]:
        """A bounded iperf3 run between two containers; returns iperf3's JSON result."""
        srv = netns.popen(server.ns, ["iperf3", "-s", "-1", "-B", server.ip], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        try:
            self._wait_listening(server.ns, 5201, srv)
            argv = ["iperf3", "-c", server.ip, "-t", str(seconds), "-J", "-P", str(streams), "--connect-timeout", "3000"]
            if udp_rate:
                argv += ["-u", "-b", udp_rate]
            if length:
                argv += ["-l", str(length)]
            if bitrate and not udp_rate:    # TCP paced too: a bounded capture holds all of it
                argv += ["-b", bitrate]
            if reverse:
                argv.append("-R")
            for _ in range(50):  # the server needs a moment to listen
                r = self.run(client.ns, argv, timeout=seconds + 20)
                if r.returncode == 0 or "Connection refused" not in r.stdout:
                    break
                if srv.poll() is not None:
                    # the one-off server is gone (it serves one attempt, even a failed one,
                    # then exits): nothing would ever listen again, start another
                    srv = netns.popen(server.ns, ["iperf3", "-s", "-1", "-B", server.ip],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.1)
            try:
                report: dict[str, Any] = json.loads(r.stdout)
                return report
            except ValueError:
                return {"error": r.stdout + r.stderr}
        finally:
            if srv.poll() is None:
                srv.terminate()
            srv.wait(5)

    def _wait_listening(self, ns: str, port: int, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
        """Until a TCP socket listens on `port` in `ns` (bounded): on a loaded machine a server
        may take longer to start than a client's retries last."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            r = self.run(ns, ["ss", "-Hltn", f"sport = :{port}"], timeout=5)
            if r.stdout.strip():
                return
            time.sleep(0.05)

    def ping(self, src: Container, dst_ip: str, count: int = 3, interval: float = 0.2,
             wait: float = 1.0) -> PingResult:
        r = self.run(src.ns, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait), dst_ip],
                     timeout=count * (interval + wait) + 10)
        return parse_ping(src.name, dst_ip, r.stdout)

    def ping_all(self, count: int = 3) -> list[PingResult]:
        """Every container pings every other container on another host, all at once."""
        pairs = [(a, b) for h in self.hosts for a in h.containers
                 for g in self.hosts if g is not h for b in g.containers]
        procs = [(a, b, netns.popen(a.ns, ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", b.ip],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                 for a, b in pairs]
        out = []
        for a, b, p in procs:
            try:
                stdout, _ = p.communicate(timeout=count * 1.5 + 15)
            except subprocess.TimeoutExpired:
                p.kill()
                stdout, _ = p.communicate()
            out.append(parse_ping(a.name, b.name, stdout))
        return out

    # --- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        for d in self.dockerds.values():  # containers first: their veths sit on the daemons' bridges
            try:
                d.close()
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        self.dockerds.clear()
        for h in self.hosts:
            try:
                self.stop_daemon(h)
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        try:
            self.stop_etcd()
        except Exception:  # noqa: BLE001 - keep tearing down
            pass
        for ns in reversed(self._namespaces):
            netns.remove(ns)
        self._namespaces.clear()
        try:
            os.unlink(self._state)
        except OSError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def _reserve_suffix() -> str:
    """A suffix no other live lab on this machine has: its state file, created exclusively here,
    holds it (labs build side by side: parallel tests, several demos). `close()` removes it."""
    os.makedirs(STATE_DIR, exist_ok=True)
    while True:
        sfx = secrets.token_hex(2)
        path = os.path.join(STATE_DIR, f"{PREFIX}-{sfx}.json")
        if netns.exists(f"{PREFIX}-{sfx}-ul"):
            continue            # a crashed lab's leftovers (its state file gone): `lab clean` removes them
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"namespaces": [], "pids": []}, f)
        return sfx


_PING_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_RTT_RE = re.compile(r"= [\d.]+/([\d.]+)/")


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _tail(path: str, offset: int, lines: int = 15) -> str:
    return "\n".join(_read_from(path, offset).decode(errors="replace").splitlines()[-lines:])


def parse_ping(src: str, dst: str, out: str) -> PingResult:
    m = _PING_RE.search(out or "")
    rtt = _RTT_RE.search(out or "")
    return PingResult(src, dst, int(m.group(1)) if m else 0, int(m.group(2)) if m else 0,
                      float(rtt.group(1)) if rtt else None)


def _is_ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"vxlan_dp" in f.read()
    except OSError:
        return False


def clean(only: str | None = None) -> list[str]:
    """Remove what dead labs left: their dockerds, daemons (by recorded PID) and namespaces.

    `only`: one lab's state file, and nothing else (a test cleaning up after its own lab while
    other labs run on the machine); without it every recorded lab, then every PREFIX-* namespace.
    """
    removed: list[str] = []
    paths = [only] if only else ([os.path.join(STATE_DIR, fn) for fn in os.listdir(STATE_DIR)]
                                 if os.path.isdir(STATE_DIR) else [])
    for path in paths:
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        for d in st.get("dockerd", []):
            clean_dockerd(d.get("pid"), d.get("exec_root") or "", d.get("mounts", []))
        for pid in st.get("pids", []):
            if _is_ours(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for ns in st.get("namespaces", []):
            if netns.exists(ns):
                netns.remove(ns)
                removed.append(ns)
        shutil.rmtree(st.get("workdir", ""), ignore_errors=True) if st.get("workdir") else None
        os.unlink(path)
    if only is None:
        for ns in netns.listing():
            if ns.startswith(PREFIX + "-"):
                netns.remove(ns)
                removed.append(ns)
    return removed
