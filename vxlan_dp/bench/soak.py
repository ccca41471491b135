"""Soak: a bounded run under full iperf3 load; the daemons' memory, fds and counters over time.

Two lab hosts, a container and a daemon on each (C backend unless told), iperf3 TCP in both
directions at once (--bidir, 2 streams each way) for the whole run. Every `interval` seconds
each daemon's VmRSS (/proc/PID/status) and open file descriptors (/proc/PID/fd) are sampled,
with its counters. "idle" is before the load; "start" is the first sample after a warm-up under
load (10% of the run, at most 30 s: by then the batch buffers, socket buffers and allocator
arenas are in use); "end" is the last sample under load.

Verdict (exit status 0 when all hold): at the end RSS and fds are within 5% of start, and
every counter adds up, per daemon and across the underlay once the load has stopped:
- every frame read from the TAP and every datagram received has exactly one fate:
  tap_rx_frames + rx_datagrams == drop_malformed + drop_too_big (either direction)
  + drop_no_peers + frames sent (tx_packets + drop_socket_error - flood_copies + flood_frames)
  + endpoint drops + drop_unknown_source + rx_packets;
- every accepted frame was written to the TAP or counted: rx_packets == tap_tx_frames +
  drop_tap_write_error;
- what one daemon sent, the other received or the kernel counted as lost on the way:
  tx_packets(A) == rx_datagrams(B) + Udp InErrors in B's namespace (a full socket buffer)
  + Udp NoPorts there (sent while B's daemon was still starting) + tx_dropped on the veths
  between them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Callable

from ..lab import Lab, netns
from ..lab.lab import Host
from .report import machine_info, write_results

__all__ = ["run_soak", "TOLERANCE"]

TOLERANCE = 0.05
EP_DROPS_EXCLUDED = ("drop_socket_error",)      # a failed receive is not a datagram


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _snmp(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/net/snmp") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto = names.split(":")[0]
        out.update({f"{proto}.{k}": int(v) for k, v in zip(names.split()[1:], values.split()[1:])})
    return out


def _tx_dropped(ns: str, ifname: str) -> int:
    with netns.ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return 0
        return int((ipr.get_links(idx[0])[0].get("IFLA_STATS64") or {}).get("tx_dropped", 0))


def totals(status: dict[str, Any]) -> dict[str, int]:
    """One daemon's network counters summed over its networks, plus its endpoints' figures."""
    t: dict[str, int] = {}
    for n in status["networks"].values():
        for k, v in n["counters"].items():
            t[k] = t.get(k, 0) + v
    t["ep_rx_datagrams"] = sum(e["counters"]["rx_datagrams"] for e in status["endpoints"])
    t["ep_drops"] = sum(v for e in status["endpoints"] for k, v in e["counters"].items()
                        if k.startswith("drop_") and k not in EP_DROPS_EXCLUDED)
    return t


def fate_check(t: dict[str, int]) -> dict[str, Any]:
    """The per-daemon equations of the module docstring: (left, right, ok) for each."""
    frames_sent = t["tx_packets"] + t["drop_socket_error"] - t["flood_copies"] + t["flood_frames"]
    inflow = t["tap_rx_frames"] + t["ep_rx_datagrams"]
    fates = (t["drop_malformed"] + t["drop_too_big"] + t["drop_no_peers"] + frames_sent
             + t["ep_drops"] + t["drop_unknown_source"] + t["rx_packets"])
    delivered = t["tap_tx_frames"] + t["drop_tap_write_error"]
    return {"one_fate_each": {"in": inflow, "fates": fates, "ok": inflow == fates},
            "accepted_written": {"rx_packets": t["rx_packets"], "written_or_counted": delivered,
                                 "ok": t["rx_packets"] == delivered}}


def underlay_check(lab: Lab, a: Host, b: Host, ta: dict[str, int], tb: dict[str, int]) -> dict[str, Any]:
    """tx_packets of a == rx_datagrams of b + what the kernel counted lost between them."""
    assert b.proc is not None
    k = _snmp(b.proc.pid)
    lost_socket, no_port = k["Udp.InErrors"], k["Udp.NoPorts"]
    lost_veth = _tx_dropped(a.ns, "ul0") + _tx_dropped(lab.ul_ns, b.name)
    return {"sent": ta["tx_packets"], "received": tb["ep_rx_datagrams"], "lost_socket_buffer": lost_socket,
            "lost_no_socket_yet": no_port, "lost_veth": lost_veth,
            "ok": ta["tx_packets"] == tb["ep_rx_datagrams"] + lost_socket + no_port + lost_veth}


def _quiet(ns: str) -> None:
    """No IPv6 chatter (RS, MLD, ND) of a namespace's own making, so the counters settle."""
    netns.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                   "net.ipv6.conf.default.disable_ipv6=1"], timeout=10)


def _pct(end: float, start: float) -> float:
    return 100.0 * (end - start) / start if start else 0.0


def _settled_checks(lab: Lab, timeout: float = 20.0) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """Counters of both daemons once nothing moves, and the checks over them."""
    h1, h2 = lab.hosts
    prev: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + timeout
    while True:
        tot = {h.name: totals(lab.status(h)) for h in (h1, h2)}
        if tot == prev or time.monotonic() > deadline:
            break
        prev = tot
        time.sleep(1.0)
    checks: dict[str, Any] = {h.name: fate_check(tot[h.name]) for h in (h1, h2)}
    checks[f"{h1.name}->{h2.name}"] = underlay_check(lab, h1, h2, tot[h1.name], tot[h2.name])
    checks[f"{h2.name}->{h1.name}"] = underlay_check(lab, h2, h1, tot[h2.name], tot[h1.name])
    return tot, checks


def _all_ok(checks: dict[str, Any]) -> bool:
    return all(v["ok"] if "ok" in v else _all_ok(v) for v in checks.values())


def soak(minutes: float, backend: str = "c", interval: float | None = None,
         log: Callable[[str], None] = print, tx_csum_off: bool = False) -> dict[str, Any]:
    seconds = max(10.0, minutes * 60)
    interval = interval or min(10.0, seconds / 8)
    warmup = min(30.0, seconds / 10)
    with Lab(2, tx_csum_off=tx_csum_off) as lab:
        h1, h2 = lab.hosts
        for h in lab.hosts:
            _quiet(h.ns)
            c = lab.add_container(h, mtu=lab.overlay_mtu("vxlan"))
            _quiet(c.ns)
        lab.settle()
        for h in lab.hosts:
            lab.start_daemon(h, lab.network_toml(h), backend=backend,
                             daemon_toml='[daemon]\nmetrics = ""\nlog_level = "info"\n')
        a, b = h1.containers[0], h2.containers[0]
        if not (lab.ping(a, b.ip).ok and lab.ping(b, a.ip).ok):
            raise RuntimeError("the overlay does not carry pings before the soak")
        pids = {h.name: h.proc.pid for h in lab.hosts if h.proc}

        def sample(t: float) -> dict[str, Any]:
            row: dict[str, Any] = {"t": round(t, 1)}
            for h in lab.hosts:
                # /proc first: the status request's own connection must not be counted
                rss, fds = proc_rss_kb(pids[h.name]), proc_fds(pids[h.name])
                tot = totals(lab.status(h))
                row[h.name] = {"rss_kb": rss, "fds": fds, "tx_packets": tot["tx_packets"],
                               "rx_packets": tot["rx_packets"]}
            return row

        idle = sample(0.0)
        srv = netns.popen(b.ns, ["iperf3", "-s", "-1", "-B", b.ip], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        cli = netns.popen(a.ns, ["iperf3", "-c", b.ip, "-t", str(int(seconds)), "--bidir", "-P", "2", "-J",
                                 "--connect-timeout", "3000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
        lab._pids += [srv.pid, cli.pid]  # `lab clean` finds them if we die
        lab._save_state()
        t0 = time.monotonic()
        samples: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        try:
            while cli.poll() is None:
                time.sleep(min(interval, max(0.5, t0 + seconds - time.monotonic())))
                t = time.monotonic() - t0
                if t >= seconds - 0.5 or cli.poll() is not None:
                    break
                s = sample(t)
                samples.append(s)
                if start is None and t >= warmup:
                    start = s
                log(f"soak {t:6.0f}s  " + "  ".join(
                    f"{h.name}: rss {s[h.name]['rss_kb']} kB fds {s[h.name]['fds']} tx {s[h.name]['tx_packets']}"
                    for h in lab.hosts))
            out, _ = cli.communicate(timeout=seconds + 60)
        finally:
            for p in (cli, srv):
                if p.poll() is None:
                    p.terminate()
                    p.wait(5)
        if start is None or len(samples) < 2:
            raise RuntimeError("too few samples under load; run longer")
        end = samples[-1]
        try:
            ip = json.loads(out)["end"]
            iperf = {"sent_bps": ip["sum_sent"]["bits_per_second"],
                     "received_bps": ip["sum_received"]["bits_per_second"],
                     "reverse_received_bps": ip.get("sum_received_bidir_reverse", {}).get("bits_per_second"),
                     "retransmits": ip["sum_sent"].get("retransmits")}
        except (ValueError, KeyError):
            iperf = {"error": out[-2000:]}
        totals_end, checks = _settled_checks(lab)
        hosts: dict[str, Any] = {}
        for h in lab.hosts:
            n = h.name
            r0, r1 = start[n]["rss_kb"], end[n]["rss_kb"]
            f0, f1 = start[n]["fds"], end[n]["fds"]
            hosts[n] = {
                "rss_kb": {"idle": idle[n]["rss_kb"], "start": r0, "end": r1, "change_pct": round(_pct(r1, r0), 2),
                           "ok": abs(r1 - r0) <= TOLERANCE * r0},
                "fds": {"idle": idle[n]["fds"], "start": f0, "end": f1, "change_pct": round(_pct(f1, f0), 2),
                        "ok": abs(f1 - f0) <= TOLERANCE * f0},
                "counters": totals_end[n],
            }
        for h in lab.hosts:
            if h.proc is None or h.proc.poll() is not None:
                raise RuntimeError(f"the daemon on {h.name} died during the soak:\n{lab.log_tail(h)}")
            with open(h.log_path, errors="replace") as f:
                hosts[h.name]["tracebacks"] = f.read().count("Traceback")
    ok = _all_ok(checks) and all(v["rss_kb"]["ok"] and v["fds"]["ok"] and not v["tracebacks"]
                                 for v in hosts.values())
    return {"minutes": minutes, "seconds": seconds, "backend": backend, "warmup_s": warmup,
            "interval_s": interval, "iperf3": iperf, "hosts": hosts, "checks": checks, "samples": samples,
            "idle": idle, "start_t": start["t"], "end_t": end["t"], "ok": ok}


def _markdown(r: dict[str, Any]) -> str:
    rows = [f"{r['seconds'] / 60:g} minutes of iperf3 TCP --bidir -P 2 through the overlay, {r['backend']} "
            f"backend; start = first sample after {r['warmup_s']:g} s of load (t={r['start_t']} s), "
            f"end = t={r['end_t']} s. Verdict: **{'PASS' if r['ok'] else 'FAIL'}**", "",
            "| daemon | RSS idle kB | RSS start kB | RSS end kB | change | fds idle | fds start | fds end | change |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n, h in r["hosts"].items():
        m, f = h["rss_kb"], h["fds"]
        rows.append(f"| {n} | {m['idle']} | {m['start']} | {m['end']} | {m['change_pct']:+.2f}% | "
                    f"{f['idle']} | {f['start']} | {f['end']} | {f['change_pct']:+.2f}% |")
    ip = r["iperf3"]
    if "error" not in ip:
        rows += ["", f"iperf3: {ip['received_bps'] / 1e9:.3f} Gbit/s one way, "
                     f"{(ip['reverse_received_bps'] or 0) / 1e9:.3f} Gbit/s the other, "
                     f"{ip['retransmits']} retransmits"]
    rows += ["", "| check | figures | ok |", "|---|---|---|"]
    for name, c in r["checks"].items():
        items = c.items() if "ok" not in c else [("", c)]
        for sub, v in items:
            figs = ", ".join(f"{k} {x}" for k, x in v.items() if k != "ok")
            rows.append(f"| {name} {sub} | {figs} | {'yes' if v['ok'] else '**no**'} |")
    rows += ["", "| daemon | tap_rx_frames | tx_packets | rx_packets | tap_tx_frames | flood_frames | drops |",
             "|---|---|---|---|---|---|---|"]
    for n, h in r["hosts"].items():
        c = h["counters"]
        drops = sum(v for k, v in c.items() if k.startswith("drop_")) + c["ep_drops"]
        rows.append(f"| {n} | {c['tap_rx_frames']} | {c['tx_packets']} | {c['rx_packets']} | "
                    f"{c['tap_tx_frames']} | {c['flood_frames']} | {drops} |")
    return "\n".join(rows)


def _chart(r: dict[str, Any]) -> Callable[[str], None]:
    def draw(path: str) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ts = [s["t"] for s in r["samples"]]
        for n in r["hosts"]:
            ax1.plot(ts, [s[n]["rss_kb"] / 1024 for s in r["samples"]], label=n)
            ax2.plot(ts, [s[n]["fds"] for s in r["samples"]], label=n)
        ax1.set_ylim(bottom=0)         # a flat line must look flat, not zoomed into noise
        ax2.set_ylim(bottom=0)
        ax1.set_xlabel("s")
        ax1.set_ylabel("VmRSS MiB")
        ax1.set_title("daemon memory under load")
        ax2.set_xlabel("s")
        ax2.set_ylabel("open fds")
        ax2.set_title("daemon file descriptors")
        ax1.legend()
        ax2.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return draw


def run_soak(minutes: float = 10.0, backend: str = "c", out_dir: str = "bench/results",
             name: str = "soak", tx_csum_off: bool = False) -> tuple[dict[str, Any], list[str]]:
    r = soak(minutes, backend, tx_csum_off=tx_csum_off)
    data = {"machine": machine_info(), **r}
    md = _markdown(r)
    paths = write_results(out_dir, name, data, md, _chart(r))
    print(md)
    print("\nwrote " + ", ".join(paths))
    return r, paths
