"""End-to-end: two lab hosts, iperf3 and ping through four tunnels in the same run.

Tunnels: (a) the kernel's vxlan device (the reference), (b) vxlan-dp with the C backend,
(c) vxlan-dp with the Python backend, (d) socat's TAP-over-UDP, the naive userspace baseline.
Per tunnel: single-stream TCP, 4-stream TCP, UDP at a fixed offered rate (500 Mbit/s of
1400-byte datagrams: `-b 0` is no capacity figure, its sender floods the TAP queue), loss at
that rate, CPU per packet at that rate (tunnel processes of both ends from /proc/PID/stat, and
the whole machine from /proc/uptime), whole-machine CPU seconds per GB moved in the TCP
runs, and ping latency through the tunnel (p50/p99) with the
added part over the bare underlay. Throughput is reported as a ratio to the kernel.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Callable

from ..lab import Lab, netns
from ..lab.lab import Host
from .report import Progress, machine_info, write_results

__all__ = ["run_e2e", "VARIANTS"]

VARIANTS = ("kernel", "c", "python", "socat")
SOCAT_PORT = 9999
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine: wall time x CPUs minus idle, from /proc/uptime.

    Not /proc/stat's tick-sampled counters: on a tickless VM they undercount busy time badly
    (0.15 s reported where the two daemons alone used 0.82 s).
    """
    with open("/proc/uptime") as f:
        up, idle = (float(x) for x in f.read().split()[:2])
    return up * (os.cpu_count() or 1) - idle


def _ping_rtts(lab: Lab, ns: str, ip: str, count: int = 200, interval: float = 0.01) -> list[float]:
    r = lab.run(ns, ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", ip], timeout=count * interval + 30)
    return [float(tok.split("=")[1]) for line in r.stdout.splitlines() for tok in line.split()
            if tok.startswith("time=")]


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _start_socat(lab: Lab, h: Host, peer: Host, mtu: int) -> subprocess.Popen[Any]:
    p = netns.popen(h.ns, ["socat", f"UDP-DATAGRAM:{peer.ip4}:{SOCAT_PORT},bind={h.ip4}:{SOCAT_PORT}",
                           "TUN,tun-type=tap,tun-name=sotap,iff-no-pi,iff-up"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    with netns.ipr(h.ns) as ipr:
        while not ipr.link_lookup(ifname="sotap"):
            if time.monotonic() > deadline or p.poll() is not None:
                raise RuntimeError("socat did not create its TAP")
            time.sleep(0.05)
        idx = ipr.link_lookup(ifname="sotap")[0]
        ipr.link("set", index=idx, mtu=mtu, master=ipr.link_lookup(ifname="br-blue")[0], state="up")
    return p


def _setup(lab: Lab, variant: str) -> list[int]:
    """Bring the tunnel up between h1 and h2; returns the PIDs of its processes (both ends)."""
    h1, h2 = lab.hosts
    mtu = lab.overlay_mtu("vxlan")
    if variant == "kernel":
        for h in lab.hosts:
            lab.add_kernel_vxlan(h)
        return []
    if variant in ("c", "python"):
        for h in lab.hosts:
            lab.start_daemon(h, lab.network_toml(h), backend=variant,
                             daemon_toml='[daemon]\nmetrics = ""\nlog_level = "info"\n')
        return [h.proc.pid for h in lab.hosts if h.proc]
    if variant == "socat":
        procs = [_start_socat(lab, h1, h2, mtu), _start_socat(lab, h2, h1, mtu)]
        lab._pids.extend(p.pid for p in procs)  # noqa: SLF001 - the lab stops them with itself
        lab._save_state()  # noqa: SLF001
        lab._socat = procs  # type: ignore[attr-defined]  # noqa: SLF001
        return [p.pid for p in procs]
    raise ValueError(variant)


def _teardown_extra(lab: Lab) -> None:
    for p in getattr(lab, "_socat", []):
        if p.poll() is None:
            p.terminate()
            p.wait(5)


def measure(variant: str, seconds: float, progress: Callable[[str], None]) -> dict[str, Any]:
    res: dict[str, Any] = {"variant": variant}
    with Lab(2) as lab:
        for h in lab.hosts:
            lab.add_container(h, mtu=lab.overlay_mtu("vxlan"))
        lab.settle()
        pids = _setup(lab, variant)
        try:
            a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
            if not lab.ping(a, b.ip, count=3).ok:
                raise RuntimeError(f"{variant}: containers cannot reach each other")
            progress(f"{variant}: ping latency")
            under = _ping_rtts(lab, lab.hosts[0].ns, lab.hosts[1].ip4)
            rtts = _ping_rtts(lab, a.ns, b.ip)
            res["ping_ms"] = {"p50": _pct(rtts, 50), "p99": _pct(rtts, 99), "underlay_p50": _pct(under, 50),
                              "added_p50": (_pct(rtts, 50) or 0) - (_pct(under, 50) or 0)}
            for streams in (1, 4):
                progress(f"{variant}: TCP x{streams}")
                busy0 = _machine_busy()
                r = lab.iperf3(a, b, seconds=seconds, streams=streams)
                busy = _machine_busy() - busy0
                got = r.get("end", {}).get("sum_received", {})
                res[f"tcp{streams}_bps"] = got.get("bits_per_second", 0.0)
                gbytes = got.get("bytes", 0) / 1e9
                res[f"tcp{streams}_cpu_s_per_gb"] = busy / gbytes if gbytes else None
            progress(f"{variant}: UDP 500 Mbit/s")
            cpu0 = sum(_proc_cpu(p) for p in pids)
            busy0 = _machine_busy()
            r = lab.iperf3(a, b, seconds=seconds, udp_rate="500M", length=1400)
            cpu1 = sum(_proc_cpu(p) for p in pids)
            busy1 = _machine_busy()
            s = r.get("end", {}).get("sum", {})
            pkts = s.get("packets", 0)
            res["udp"] = {"offered_bps": 500e6, "received_bps": s.get("bits_per_second", 0.0) *
                          (1 - s.get("lost_percent", 100.0) / 100), "loss_percent": s.get("lost_percent"),
                          "packets": pkts,
                          "tunnel_cpu_us_per_pkt": (cpu1 - cpu0) / pkts * 1e6 if pids and pkts else None,
                          "machine_cpu_us_per_pkt": (busy1 - busy0) / pkts * 1e6 if pkts else None}
        finally:
            _teardown_extra(lab)
    return res


def _markdown(results: list[dict[str, Any]]) -> str:
    k = next((r for r in results if r["variant"] == "kernel"), None)

    def ratio(r: dict[str, Any], key: str) -> str:
        return f"{r[key] / k[key]:.3f}" if k and k.get(key) else "-"

    def f(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    rows = ["| tunnel | TCP x1 Gbit/s | ratio | TCP x4 Gbit/s | ratio | CPU s/GB x1 | x4 | UDP 500M loss % "
            "| tunnel CPU us/pkt | machine CPU us/pkt | ping p50 ms | p99 ms | added p50 ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        u, pg = r.get("udp", {}), r.get("ping_ms", {})
        rows.append(f"| {r['variant']} | {r.get('tcp1_bps', 0) / 1e9:.3f} | {ratio(r, 'tcp1_bps')} | "
                    f"{r.get('tcp4_bps', 0) / 1e9:.3f} | {ratio(r, 'tcp4_bps')} | {f(r.get('tcp1_cpu_s_per_gb'), '.2f')} | "
                    f"{f(r.get('tcp4_cpu_s_per_gb'), '.2f')} | {f(u.get('loss_percent'), '.2f')} | "
                    f"{f(u.get('tunnel_cpu_us_per_pkt'), '.2f')} | {f(u.get('machine_cpu_us_per_pkt'), '.2f')} | "
                    f"{f(pg.get('p50'), '.3f')} | {f(pg.get('p99'), '.3f')} | {f(pg.get('added_p50'), '.3f')} |")
    return "\n".join(rows)


def _chart(results: list[dict[str, Any]]) -> Callable[[str], None]:
    def draw(path: str) -> None:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        names = [r["variant"] for r in results]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        w = 0.38
        xs = range(len(names))
        ax1.bar([x - w / 2 for x in xs], [r.get("tcp1_bps", 0) / 1e9 for r in results], w, label="TCP x1")
        ax1.bar([x + w / 2 for x in xs], [r.get("tcp4_bps", 0) / 1e9 for r in results], w, label="TCP x4")
        ax1.set_xticks(list(xs), names)
        ax1.set_ylabel("Gbit/s")
        ax1.set_title("iperf3 through the overlay")
        ax1.legend()
        ax2.bar(names, [r.get("udp", {}).get("machine_cpu_us_per_pkt") or 0 for r in results], color="tab:red")
        ax2.set_ylabel("machine CPU us / packet")
        ax2.set_title("CPU at 500 Mbit/s UDP (1400 B)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return draw


def run_e2e(variants: tuple[str, ...] = VARIANTS, seconds: float = 5.0, out_dir: str = "bench/results",
            name: str = "e2e") -> tuple[list[dict[str, Any]], list[str]]:
    from ..fastpath import backends  # noqa: PLC0415
    variants = tuple(v for v in variants if v != "c" or "c" in backends())
    prog = Progress(len(variants) * 4)
    results = []
    try:
        for v in variants:
            try:
                results.append(measure(v, seconds, prog.step))
            except Exception as e:  # noqa: BLE001 - one tunnel failing must not lose the others' figures
                results.append({"variant": v, "error": str(e)})
    finally:
        prog.close()
    ok = [r for r in results if "error" not in r]
    md = _markdown(ok) + "".join(f"\n\n{r['variant']} failed: {r['error']}" for r in results if "error" in r)
    data = {"machine": machine_info(), "seconds": seconds, "results": results}
    paths = write_results(out_dir, name, data, md, _chart(ok))
    print(md)
    print("\nwrote " + ", ".join(paths))
    return results, paths

