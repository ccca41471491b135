"""`vxlan-dp demo --docker`: the Docker walk-through, on this machine, with real dockerds.

Each lab host runs its own dockerd and its own vxlan-dp (serving the Docker plugin); every
host types the same `docker network create -d vxlan-dp ...` on a non-4789 port; a busybox
container per host pings every other one by address; then a container joins a second network
with `docker network connect` and leaves it with `docker network disconnect`, live. Everything
is torn down at the end (containers, networks, dockerds, namespaces), also after a failure.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .demo import _table
from .docker import Dockerd, DockerError
from .lab import Lab, LabError

__all__ = ["run_docker_demo", "DEMO_PORT"]

DEMO_PORT = 4790   # anything but 4789: the point of the walk-through


def _create_cmd(name: str, subnet: str, vni: int, port: int) -> list[str]:
    return ["network", "create", "-d", "vxlan-dp", "--ipam-driver", "vxlan-dp", "--subnet", subnet,
            "-o", f"vni={vni}", "-o", f"port={port}", "-o", "encap=vxlan", name]


def run_docker_demo(hosts: int = 2, *, port: int | None = None, backend: str | None = None,
                    keep: bool = False, out: TextIO = sys.stdout) -> int:
    port = port or DEMO_PORT
    lab = Lab(hosts)
    ok = False
    try:
        t0 = time.monotonic()
        lab.build()
        for h in lab.hosts:
            lab.start_dockerd(h)
            lab.start_daemon(h, "", daemon_toml=lab.docker_toml(h), backend=backend)
        ds = [lab.dockerds[h.name] for h in lab.hosts]
        version = ds[0].check("version", "--format", "{{.Server.Version}}")
        print(f"lab {lab.sfx}: {hosts} hosts, each with its own dockerd {version} and vxlan-dp "
              f"(plugin socket in its own /run/docker/plugins); up in {time.monotonic() - t0:.1f}s", file=out)
        create = _create_cmd("blue", "192.168.60.0/24", 42, port)
        print(f"on every host: docker {' '.join(create)}", file=out)
        for d in ds:
            d.check(*create)
        names = []
        for i, d in enumerate(ds, 1):
            d.check("run", "-d", "--name", f"busybox{i}", "--network", "blue", "vxdp-busybox", "sleep", "3600")
            names.append(f"busybox{i}")
        ips = [d.inspect("container", n)["NetworkSettings"]["Networks"]["blue"]["IPAddress"]
               for d, n in zip(ds, names)]
        for h, n, ip in zip(lab.hosts, names, ips):
            print(f"  {h.name} ({h.ip4}): docker run --network blue --name {n} busybox -> {ip}", file=out)
        rows = [["from", "to", "address", "result"]]
        results = []
        for i, d in enumerate(ds):
            for j in range(hosts):
                if i != j:
                    r = d.docker("exec", names[i], "ping", "-c", "3", "-i", "0.2", "-W", "1", "-w", "3", ips[j])
                    good = "3 packets received" in r.stdout
                    results.append(good)
                    rows.append([f"{names[i]} ({lab.hosts[i].name})", f"{names[j]} ({lab.hosts[j].name})", ips[j],
                                 "ok" if good else "FAIL"])
        print(f"docker exec busyboxN ping <every other host's busybox>, over UDP {port}:", file=out)
        _table(rows, out)
        live = _connect_disconnect(lab, ds, names, port, out)
        counters = lab.status(lab.hosts[0])["networks"]["docker-42"]["counters"]
        print(f"{lab.hosts[0].name}'s vxlan-dp, network docker-42: {counters['tx_packets']} packets sent, "
              f"{counters['rx_packets']} received over the overlay", file=out)
        ok = all(results) and bool(results) and live
        print(f"{sum(results)}/{len(results)} busybox pairs reached each other across hosts; connect/disconnect "
              f"{'live' if live else 'FAILED'}: {'PASS' if ok else 'FAIL'}", file=out)
        if keep:
            print(f"--keep: lab left up (docker -H unix://{ds[0].socket} ...); `vxlan-dp lab clean` removes it",
                  file=out)
        else:
            t1 = time.monotonic()
            for d in ds:
                ids = d.docker("ps", "-aq").stdout.split()
                if ids:
                    d.check("rm", "-f", *ids)
                for net in ("blue", "red"):
                    if d.docker("network", "inspect", net).returncode == 0:
                        d.check("network", "rm", net)
            print(f"teardown: containers removed, `docker network rm` on every host "
                  f"({time.monotonic() - t1:.1f}s); dockerds, daemons and namespaces next", file=out)
    except (LabError, DockerError, OSError, KeyError) as e:
        print(f"demo failed: {e}", file=out)
        ok = False
    finally:
        if not keep:
            lab.close()
    return 0 if ok else 1


def _connect_disconnect(lab: Lab, ds: list[Dockerd], names: list[str], port: int, out: TextIO) -> bool:
    """A second network; busybox1 joins it while running, reaches a container there, leaves."""
    create = _create_cmd("red", "192.168.61.0/24", 43, port)
    for d in ds[:2]:
        d.check(*create)
    ds[1].check("run", "-d", "--name", "red2", "--network", "red", "vxdp-busybox", "sleep", "3600")
    red2 = ds[1].inspect("container", "red2")["NetworkSettings"]["Networks"]["red"]["IPAddress"]

    def reach() -> bool:
        r = ds[0].docker("exec", names[0], "ping", "-c", "2", "-i", "0.2", "-W", "1", "-w", "2", red2)
        return "2 packets received" in r.stdout

    before = reach()
    ds[0].check("network", "connect", "red", names[0])
    joined = reach()
    ifaces = ds[0].check("exec", names[0], "ls", "/sys/class/net").split()
    ds[0].check("network", "disconnect", "red", names[0])
    left = reach()
    print(f"network red (vni 43) on {lab.hosts[0].name} and {lab.hosts[1].name}, red2 = {red2} on "
          f"{lab.hosts[1].name}:", file=out)
    print(f"  {names[0]} -> red2 before connect: {'reached' if before else 'unreachable'}; "
          f"after `docker network connect red {names[0]}`: {'reached' if joined else 'unreachable'} "
          f"(interfaces {', '.join(i for i in ifaces if i != 'lo')}); after disconnect: "
          f"{'reached' if left else 'unreachable'}", file=out)
    return not before and joined and not left
