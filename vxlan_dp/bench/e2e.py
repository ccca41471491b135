"""End-to-end: two lab hosts, iperf3, ping and TCP request/response through several tunnels.

Tunnels (VARIANTS), each in its own lab, all in the same run:
- `kernel`: the kernel's vxlan device with the underlay's DEFAULT offloads (veth TX checksum
  offload on), as users run it. The headline row: every ratio is over this row.
- `kernel-txoff`: the same device with TX checksum offload turned off on the underlay veths
  (the lab's former setting, which makes the kernel segment and checksum in software). A
  labelled second reference only.
- `c`, `python`: vxlan-dp with the C / pure-Python backend, default offloads and settings
  (poll = "adaptive"); `c-interrupt`, `c-busy`: the C backend in the other poll modes, for
  their latency next to their CPU cost. `c-mq2`: the C backend with `queues = 2` (two-queue
  TAPs, two SO_REUSEPORT sockets, two pump threads), next to `c` (one queue) in the same run.
- `socat`: socat's TAP-over-UDP, the naive userspace baseline.
- `c-esp`: vxlan-dp with the C backend on an encrypted network (ESP in UDP, AES-256-GCM);
  its containers' MTU leaves room for ESP.
- `wireguard-go`: Debian's wireguard-go between the two hosts, L3 over its own UDP port
  (51820) on the same underlay; its rows measure host to host through the wg interfaces (a
  WireGuard tunnel carries IP, not Ethernet frames, so there is no bridge and no container).
Per tunnel: single- and 4-stream TCP (iperf3) with whole-machine CPU seconds per GB received;
UDP with 64-byte payloads from a flooding sender (`-b 0`), packets per second DELIVERED;
ping p50/p99 and a TCP request/response test (1-byte transactions, vxlan_dp/bench/rr.py),
each with the part it adds over the bare underlay measured the same way in the same lab; the
tunnel processes' CPU while the request/response test runs and while the tunnel sits idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import dataclasses
from dataclasses import dataclass, replace
from typing import Any, Callable

from ..lab import Lab, netns
from ..lab.lab import Host
from ..wire.esp import ESP_EXTRA
from .report import Progress, machine_info, write_results

__all__ = ["run_e2e", "VARIANTS", "DEFAULT_VARIANTS"]


@dataclass(frozen=True)
class Variant:
    tunnel: str                 # kernel | c | python | socat | wireguard-go
    tx_csum: bool = True        # underlay veth TX checksum offload (the kernel's default: on)
    daemon_extra: str = ""      # further [daemon] keys for vxlan-dp
    label: str = ""
    encrypt: bool = False       # vxlan-dp: ESP in UDP with a generated key


VARIANTS: dict[str, Variant] = {
    "kernel": Variant("kernel", label="kernel vxlan, default offloads (reference)"),
    "kernel-txoff": Variant("kernel", tx_csum=False, label="kernel vxlan, underlay tx checksum off"),
    "c": Variant("c", label="vxlan-dp C backend, defaults (poll = adaptive)"),
    "c-adaptive": Variant("c", daemon_extra='poll = "adaptive"\n', label="vxlan-dp C backend, poll = adaptive"),
    "c-interrupt": Variant("c", daemon_extra='poll = "interrupt"\n', label="vxlan-dp C backend, poll = interrupt"),
    "c-busy": Variant("c", daemon_extra='poll = "busy"\n', label="vxlan-dp C backend, poll = busy (holds a core)"),
    "c-mq2": Variant("c", daemon_extra="queues = 2\n", label="vxlan-dp C backend, queues = 2 (two pump threads)"),
    "python": Variant("python", label="vxlan-dp Python backend, defaults"),
    "socat": Variant("socat", label="socat TAP over UDP"),
    "c-esp": Variant("c", encrypt=True, label="vxlan-dp C backend, encrypted (ESP in UDP, AES-256-GCM)"),
    "wireguard-go": Variant("wireguard-go", label="wireguard-go (Debian), L3, UDP 51820, host to host"),
}
WG_PORT = 51820
WG_NET = "10.99.0."
DEFAULT_VARIANTS = ("kernel", "kernel-txoff", "c", "c-mq2", "c-interrupt", "c-busy", "python", "socat")
SOCAT_PORT = 9999
RR_PORT = 5301
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine: wall time x CPUs minus idle, from /proc/uptime.

    Not /proc/stat's tick-sampled counters: on a tickless VM they undercount busy time badly
    (bench/README.md has the case that showed it).
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


def _setup(lab: Lab, v: Variant) -> list[int]:
    """Bring the tunnel up between h1 and h2; returns the PIDs of its processes (both ends)."""
    h1, h2 = lab.hosts
    mtu = lab.overlay_mtu("vxlan")
    if v.tunnel == "kernel":
        for h in lab.hosts:
            lab.add_kernel_vxlan(h)
        return []
    if v.tunnel in ("c", "python"):
        extra = ""
        if v.encrypt:
            from ..keyman import new_key_file
            key_file = os.path.join(lab.workdir, "bench.key")
            new_key_file(key_file)
            extra = f'encrypt = true\nkey_file = "{key_file}"'
        for h in lab.hosts:
            lab.start_daemon(h, lab.network_toml(h, extra=extra), backend=v.tunnel,
                             daemon_toml='[daemon]\nmetrics = ""\nlog_level = "info"\n' + v.daemon_extra)
        return [h.proc.pid for h in lab.hosts if h.proc]
    if v.tunnel == "wireguard-go":
        return _start_wireguard(lab)
    if v.tunnel == "socat":
        procs = [_start_socat(lab, h1, h2, mtu), _start_socat(lab, h2, h1, mtu)]
        lab._pids.extend(p.pid for p in procs)  # the lab stops them with itself
        lab._save_state()
        lab._socat = procs  # type: ignore[attr-defined]  # the e2e bench hangs its socat relays on the lab
        return [p.pid for p in procs]
    raise ValueError(v.tunnel)


def _wg_uapi(name: str, text: str) -> None:
    """wireguard-go's configuration protocol (wireguard.com/xplatform): one `set` on its socket."""
    import socket
    deadline = time.monotonic() + 10
    path = f"/var/run/wireguard/{name}.sock"
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"wireguard-go did not open {path}")
        time.sleep(0.05)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(("set=1\n" + text + "\n").encode())
        reply = s.recv(4096).decode()
    if "errno=0" not in reply:
        raise RuntimeError(f"wireguard-go {name}: {reply.strip()}")


def _start_wireguard(lab: Lab) -> list[int]:
    """wireguard-go on both hosts, peered over the underlay; its interfaces get WG_NET.1 / .2."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    keys = [X25519PrivateKey.generate() for _ in lab.hosts]
    pubs = [k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in keys]
    procs = []
    for i, h in enumerate(lab.hosts):
        name = f"wg{lab.sfx}{i}"          # the UAPI socket directory is shared by every namespace
        p = netns.popen(h.ns, ["wireguard-go", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        env=dict(os.environ, LOG_LEVEL="error"))
        procs.append(p)
        lab._pids.append(p.pid)
        lab._save_state()
        other = lab.hosts[1 - i]
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat
        priv = keys[i].private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        _wg_uapi(name, f"private_key={priv.hex()}\nlisten_port={WG_PORT}\npublic_key={pubs[1 - i].hex()}\n"
                       f"endpoint={other.ip4}:{WG_PORT}\nallowed_ip={WG_NET}{2 - i}/32\n")
        with netns.ipr(h.ns) as ipr:
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=idx, address=f"{WG_NET}{i + 1}", prefixlen=24)
            ipr.link("set", index=idx, state="up")
    lab._wg = procs  # type: ignore[attr-defined]  # stopped with the lab, like socat
    return [p.pid for p in procs]


def _teardown_extra(lab: Lab) -> None:
    for p in getattr(lab, "_wg", []):
        if p.poll() is None:
            p.terminate()
            p.wait(5)
    for p in getattr(lab, "_socat", []):
        if p.poll() is None:
            p.terminate()
            p.wait(5)


def _rr(lab: Lab, client_ns: str, server_ns: str, addr: str, seconds: float) -> dict[str, float]:
    """One bench/rr.py request/response run; the server serves this one connection and exits."""
    srv = netns.popen(server_ns, [sys.executable, "-m", "vxlan_dp.bench.rr", "server", addr, str(RR_PORT)],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert srv.stdout is not None
        srv.stdout.readline()   # "listening"
        r = netns.run(client_ns, [sys.executable, "-m", "vxlan_dp.bench.rr", "client", addr, str(RR_PORT),
                                  str(seconds)], timeout=seconds + 30)
        if r.returncode != 0:
            raise RuntimeError(f"rr client failed: {r.stderr.strip()[-300:]}")
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))
    finally:
        if srv.poll() is None:
            srv.terminate()
        srv.wait(5)


def _iperf3(lab: Lab, a: Any, b: Any, errors: list[str], **kw: Any) -> dict[str, Any]:
    """lab.iperf3, tried up to three times: on this loaded machine a run now and then fails to
    connect at all (iperf3's one-off server); every failure is kept in the results."""
    r: dict[str, Any] = {}
    for _ in range(3):
        r = lab.iperf3(a, b, **kw)
        if "error" not in r:
            return r
        errors.append(str(r["error"])[:200])
    return r


def _cpu(pids: list[int]) -> float:
    return sum(_proc_cpu(p) for p in pids)


def _pump_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds of each C pump thread ("h<i>/vxdp-pump<q>": csrc/poll.c names them)."""
    out: dict[str, float] = {}
    for i, pid in enumerate(pids):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if comm.startswith("vxdp-pump"):
                out[f"h{i + 1}/{comm}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def measure(name: str, seconds: float, progress: Callable[[str], None], *,
            tx_csum_off: bool = False) -> dict[str, Any]:
    """`tx_csum_off` (the bench's --tx-csum-off): every variant's underlay with TX checksum
    offload off, as the `-txoff` variants have it."""
    v = VARIANTS[name]
    if tx_csum_off:
        v = dataclasses.replace(v, tx_csum=False)
    res: dict[str, Any] = {"variant": name, "label": v.label, "tx_csum": v.tx_csum, "iperf3_errors": []}
    with Lab(2, tx_csum_off=not v.tx_csum) as lab:    # the lab's own labelled option
        for h in lab.hosts:
            lab.add_container(h, mtu=lab.overlay_mtu("vxlan") - (ESP_EXTRA if v.encrypt else 0))
        lab.settle()
        pids = _setup(lab, v)
        try:
            h1, h2 = lab.hosts
            a, b = h1.containers[0], h2.containers[0]
            if v.tunnel == "wireguard-go":  # L3: host to host through the wg interfaces
                a, b = replace(a, ns=h1.ns, ip=f"{WG_NET}1"), replace(b, ns=h2.ns, ip=f"{WG_NET}2")
            if not lab.ping(a, b.ip, count=3).ok:
                raise RuntimeError(f"{name}: containers cannot reach each other")
            progress(f"{name}: latency (ping, request/response)")
            under = _ping_rtts(lab, h1.ns, h2.ip4)
            rtts = _ping_rtts(lab, a.ns, b.ip)
            res["ping_ms"] = {"p50": _pct(rtts, 50), "p99": _pct(rtts, 99), "underlay_p50": _pct(under, 50),
                              "added_p50": (_pct(rtts, 50) or 0) - (_pct(under, 50) or 0)}
            rr_s = max(2.0, seconds / 2)
            rr_under = _rr(lab, h1.ns, h2.ns, h2.ip4, rr_s)
            cpu0, t0 = _cpu(pids), time.monotonic()
            rr = _rr(lab, a.ns, b.ns, b.ip, rr_s)
            cpu_rr = (_cpu(pids) - cpu0) / (time.monotonic() - t0) * 100 if pids else None
            res["rr"] = {"p50_us": rr["p50_us"], "p99_us": rr["p99_us"], "tps": rr["tps"],
                         "underlay_p50_us": rr_under["p50_us"], "added_p50_us": rr["p50_us"] - rr_under["p50_us"],
                         "tunnel_cpu_pct": cpu_rr}
            for streams in (1, 4):
                progress(f"{name}: TCP x{streams}")
                busy0, pump0, t0 = _machine_busy(), _pump_cpu(pids), time.monotonic()
                r = _iperf3(lab, a, b, res["iperf3_errors"], seconds=seconds, streams=streams)
                busy = _machine_busy() - busy0
                pump1, dt = _pump_cpu(pids), time.monotonic() - t0
                res[f"tcp{streams}_pump_cpu_pct"] = {k: (pump1[k] - pump0.get(k, 0.0)) / dt * 100 for k in sorted(pump1)}
                got = r.get("end", {}).get("sum_received", {})
                res[f"tcp{streams}_bps"] = got.get("bits_per_second", 0.0)
                gbytes = got.get("bytes", 0) / 1e9
                res[f"tcp{streams}_cpu_s_per_gb"] = busy / gbytes if gbytes else None
            progress(f"{name}: UDP 64-byte flood")
            cpu0 = _cpu(pids)
            r = _iperf3(lab, a, b, res["iperf3_errors"], seconds=seconds, udp_rate="0", length=64)
            cpu1 = _cpu(pids)
            s = r.get("end", {}).get("sum", {})
            sent, lost = s.get("packets", 0), s.get("lost_packets", 0)
            delivered = max(0, sent - lost)
            res["udp64"] = {"sent": sent, "delivered": delivered, "seconds": s.get("seconds", seconds),
                            "delivered_pps": delivered / (s.get("seconds") or seconds),
                            "tunnel_cpu_us_per_pkt": (cpu1 - cpu0) / delivered * 1e6 if pids and delivered else None}
            if pids:            # after traffic: what the tunnel costs doing nothing
                time.sleep(1.0)
                cpu0, t0 = _cpu(pids), time.monotonic()
                time.sleep(2.0)
                res["idle_cpu_pct"] = (_cpu(pids) - cpu0) / (time.monotonic() - t0) * 100
        finally:
            _teardown_extra(lab)
    return res


def _fmt(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _markdown(results: list[dict[str, Any]]) -> str:
    k = next((r for r in results if r["variant"] == "kernel"), None)
    so = next((r for r in results if r["variant"] == "socat"), None)

    def get(r: dict[str, Any] | None, path: str) -> Any:
        x: Any = r
        for part in path.split("."):
            x = x.get(part) if isinstance(x, dict) else None
        return x

    def ratio(r: dict[str, Any], path: str, ref: dict[str, Any] | None = k) -> str:
        a, b = get(r, path), get(ref, path)
        return f"{a / b:.2f}" if a is not None and b else "-"

    rows = ["Throughput. Ratios are over the `kernel` row (default offloads) of this run.", "",
            "| tunnel | underlay tx csum | TCP x1 Gbit/s | ratio | TCP x4 Gbit/s | ratio | CPU s/GB x1 "
            "| x kernel | CPU s/GB x4 | x kernel | UDP 64 B kpps delivered | ratio | tunnel CPU us/pkt |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(
            f"| {r['variant']} | {'on' if r.get('tx_csum', True) else 'off'} | "
            f"{r.get('tcp1_bps', 0) / 1e9:.3f} | {ratio(r, 'tcp1_bps')} | "
            f"{r.get('tcp4_bps', 0) / 1e9:.3f} | {ratio(r, 'tcp4_bps')} | "
            f"{_fmt(r.get('tcp1_cpu_s_per_gb'), '.2f')} | {ratio(r, 'tcp1_cpu_s_per_gb')} | "
            f"{_fmt(r.get('tcp4_cpu_s_per_gb'), '.2f')} | {ratio(r, 'tcp4_cpu_s_per_gb')} | "
            f"{_fmt((get(r, 'udp64.delivered_pps') or 0) / 1e3, '.1f')} | {ratio(r, 'udp64.delivered_pps')} | "
            f"{_fmt(get(r, 'udp64.tunnel_cpu_us_per_pkt'), '.2f')} |")
    rows += ["", "Latency. Added = through the tunnel minus the bare underlay, same method, same lab; "
             "x socat = added p50 over socat's added p50. Tunnel CPU: both ends' processes, % of one core.", "",
             "| tunnel | ping p50 us | p99 us | added p50 us | x socat | RR p50 us | RR p99 us | added RR p50 us "
             "| x socat | RR trans/s | tunnel CPU % during RR | tunnel CPU % idle |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pg, rr = r.get("ping_ms", {}), r.get("rr", {})
        rows.append(
            f"| {r['variant']} | {_fmt(pg.get('p50') and pg['p50'] * 1e3, '.0f')} | "
            f"{_fmt(pg.get('p99') and pg['p99'] * 1e3, '.0f')} | {_fmt(pg.get('added_p50') * 1e3 if 'added_p50' in pg else None, '.0f')} | "
            f"{ratio(r, 'ping_ms.added_p50', so)} | {_fmt(rr.get('p50_us'), '.0f')} | {_fmt(rr.get('p99_us'), '.0f')} | "
            f"{_fmt(rr.get('added_p50_us'), '.0f')} | {ratio(r, 'rr.added_p50_us', so)} | {_fmt(rr.get('tps'), '.0f')} | "
            f"{_fmt(rr.get('tunnel_cpu_pct'), '.1f')} | {_fmt(r.get('idle_cpu_pct'), '.2f')} |")
    pumps = [r for r in results if r.get("tcp4_pump_cpu_pct")]
    if pumps:
        rows += ["", "C pump threads (h1 sends, h2 receives), % of one core during TCP x1 / x4:", ""]
        for r in pumps:
            rows.append(f"- `{r['variant']}`: " + ", ".join(
                f"{k} {_fmt(r.get('tcp1_pump_cpu_pct', {}).get(k), '.0f')} / {v:.0f}"
                for k, v in r["tcp4_pump_cpu_pct"].items()))
    rows += ["", "Rows: " + "; ".join(f"`{r['variant']}` = {r.get('label', '')}" for r in results) + "."]
    return "\n".join(rows)


def _chart(results: list[dict[str, Any]]) -> Callable[[str], None]:
    def draw(path: str) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        names = [r["variant"] + ("" if r.get("tx_csum", True) else "\n(tx csum off)") for r in results]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
        w = 0.38
        xs = range(len(names))
        ax1.bar([x - w / 2 for x in xs], [r.get("tcp1_bps", 0) / 1e9 for r in results], w, label="TCP x1")
        ax1.bar([x + w / 2 for x in xs], [r.get("tcp4_bps", 0) / 1e9 for r in results], w, label="TCP x4")
        ax1.set_xticks(list(xs), names, fontsize=8)
        ax1.set_ylabel("Gbit/s")
        ax1.set_title("iperf3 through the overlay (reference: 'kernel', default offloads)")
        ax1.legend()
        ax2.bar([x - w / 2 for x in xs], [(r.get("ping_ms", {}).get("added_p50") or 0) * 1e3 for r in results], w,
                label="ping added p50")
        ax2.bar([x + w / 2 for x in xs], [r.get("rr", {}).get("added_p50_us") or 0 for r in results], w,
                label="TCP RR added p50")
        ax2.set_xticks(list(xs), names, fontsize=8)
        ax2.set_ylabel("us over the bare underlay")
        ax2.set_title("Latency added by the tunnel")
        ax2.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return draw


def run_e2e(variants: tuple[str, ...] = DEFAULT_VARIANTS, seconds: float = 5.0, out_dir: str = "bench/results",
            name: str = "e2e", tx_csum_off: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    from ..fastpath import backends
    variants = tuple(v for v in variants if VARIANTS[v].tunnel != "c" or "c" in backends())
    prog = Progress(len(variants) * 4)
    results = []
    try:
        for v in variants:
            try:
                results.append(measure(v, seconds, prog.step, tx_csum_off=tx_csum_off))
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
