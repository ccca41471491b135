"""Scale: a fleet's worth on one host (issue 16). Not a test: nothing here asserts a timing.

Static-config cases: one lab host (a network namespace), a config file generated with N
networks (TAP + bridge each, one shared VXLAN endpoint, two peers each) and E static FDB
entries per network; the daemon is started as systemd would (`vxlan-dp run -c FILE`, log level
info) and we measure
    ready     Popen -> READY=1 on the notify socket (parsing, TAPs, bridges, FDB loading)
    rss       VmRSS once READY (and VmHWM, the peak on the way)
    stop      SIGTERM -> exit (every TAP removed)
and check the daemon holds what it was told (networks and FDB entries, from its status).

Head-end replication (`replication`): one network with P peers, batches of 64 broadcast
frames; per replicated frame (one outer packet per peer):
    encap     the I/O-free `encap` of each backend (headers built, packets copied out)
    pump      `pump_tap` with real sends: frames written into a datagram socketpair standing in
              for the TAP, outer packets leaving by sendmmsg (C; Python: one sendto each) on
              the raw socket, routed into a veth whose other end drops them

Results: bench/results/<date>-scale.{json,md,png}, with the machine and the command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ..lab import Lab, netns
from .report import machine_info, write_results

__all__ = ["run_scale", "CASES"]


@dataclass(frozen=True)
class Case:
    name: str
    networks: int
    entries: int            # static FDB entries per network


CASES = {c.name: c for c in (
    Case("1x0", 1, 0),
    Case("100x0", 100, 0),
    Case("1x100k", 1, 100_000),
    Case("100x1k", 100, 1000),
    Case("1000x0", 1000, 0),
)}


def _mac(net: int, i: int) -> str:
    return f"02:{net >> 8 & 0xff:02x}:{net & 0xff:02x}:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"


def config_text(networks: int, entries: int, local: str = "198.18.0.1") -> str:
    """The TOML of a case: written the way a generator (or a person) would."""
    lines = ['[daemon]', 'metrics = ""', 'log_level = "info"', '']
    peers = '["198.18.1.1", "198.18.1.2"]'
    for n in range(networks):
        lines += ["[[network]]", f'name = "n{n}"', f"vni = {1000 + n}", f'local = "{local}"',
                  f'tap = "vxdp-n{n}"', f'bridge = "br-n{n}"', "mtu = 1450", f"peers = {peers}"]
        if entries:
            lines.append("fdb = [")
            lines += [f'  {{ mac = "{_mac(n, i)}", remote = "198.18.1.{1 + i % 2}" }},' for i in range(entries)]
            lines.append("]")
        lines.append("")
    return "\n".join(lines)


def _status_value(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _wait_ready(proc: subprocess.Popen[Any], notify: socket.socket, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    notify.settimeout(0.05)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            msg = notify.recv(4096).decode()
        except socket.timeout:
            continue
        if "READY=1" in msg.split("\n"):
            return True
    return False


def run_static_case(lab: Lab, case: Case, backend: str, timeout: float = 300.0) -> dict[str, Any]:
    h = lab.hosts[0]
    work = lab.workdir
    cfg = os.path.join(work, f"{case.name}.toml")
    with open(cfg, "w") as f:
        f.write(config_text(case.networks, case.entries, h.ip4))
    notify_path = os.path.join(work, "notify")
    if os.path.exists(notify_path):
        os.unlink(notify_path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    sock_path = os.path.join(work, "status.sock")
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    if backend == "python":
        env["VXLAN_DP_PUREPYTHON"] = "1"
    else:
        env.pop("VXLAN_DP_PUREPYTHON", None)
    log_path = os.path.join(work, f"{case.name}-{backend}.log")
    with open(log_path, "ab") as log:
        t0 = time.monotonic()
        proc = netns.popen(h.ns, [sys.executable, "-m", "vxlan_dp", "run", "-c", cfg, "--socket", sock_path],
                           stdout=log, stderr=subprocess.STDOUT, env=env)
    out: dict[str, Any] = {"case": case.name, "networks": case.networks, "entries_per_network": case.entries,
                           "backend": backend}
    try:
        ok = _wait_ready(proc, notify, timeout)
        out["ready_s"] = round(time.monotonic() - t0, 3) if ok else None
        if not ok:
            out["error"] = f"not ready after {timeout}s (exit {proc.poll()})"
            return out
        out["rss_kib"] = _status_value(proc.pid, "VmRSS")
        out["hwm_kib"] = _status_value(proc.pid, "VmHWM")
        out.update(_check_state(sock_path, case))
        t1 = time.monotonic()
        out["stop_exit"] = netns.stop(proc, signal.SIGTERM, 600.0)
        out["stop_s"] = round(time.monotonic() - t1, 3)
    finally:
        notify.close()
        if proc.poll() is None:
            netns.stop(proc, signal.SIGKILL, 10.0)
    return out


def _check_state(sock_path: str, case: Case) -> dict[str, Any]:
    """What the daemon holds, from its status socket: networks running, FDB entries of one."""
    from ..rpc import request
    st = request(sock_path, {"cmd": "status"}, timeout=120.0)
    nets = st.get("networks", {})
    sizes = [len(n["fdb"]) for n in nets.values()]
    return {"networks_running": len(nets), "fdb_entries_total": sum(sizes),
            "taps_up": sum(1 for n in nets.values() if n["tap_up"])}


# --- head-end replication ---------------------------------------------------------------------

def _replication_frames(count: int = 64) -> list[bytes]:
    eth = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x08\x06"
    return [eth + bytes(46)] * count


def replication_encap(peers: int, seconds: float) -> dict[str, float]:
    """us per replicated frame through the I/O-free encap, per backend."""
    from ..fastpath import NetworkParams, backends
    out: dict[str, float] = {}
    frames = _replication_frames()
    for name, cls in sorted(backends().items()):
        dp = cls(batch=64)
        net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1"), dp.add_endpoint("vxlan", -1))
        dp.set_peers(net, [f"198.19.{i >> 8}.{i & 0xff}" for i in range(1, peers + 1)])
        copies = 0
        t0 = time.perf_counter()
        deadline = t0 + (seconds if name == "c" else seconds / 4)
        while time.perf_counter() < deadline:
            copies += len(dp.encap(net, frames, 0.0))
        out[name] = round((time.perf_counter() - t0) / copies * 1e6, 4)
    return out


def _replication_pump_worker(peers: int, seconds: float, backend: str) -> None:
    """Runs inside a namespace whose 198.19.0.0/16 goes to a dummy device (see replication_pump)."""
    from ..datapath.underlay import open_tx_socket
    from ..fastpath import NetworkParams, backends
    dp = backends()[backend](batch=64)
    tap, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tap.setblocking(False)
    tx = open_tx_socket(4)
    dp.set_tx_socket(4, tx.fileno())
    net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1"), dp.add_endpoint("vxlan", -1),
                         tap.fileno())
    dp.set_peers(net, [f"198.19.{i >> 8}.{i & 0xff}" for i in range(1, peers + 1)])
    frame = _replication_frames(1)[0]
    t0 = time.perf_counter()
    deadline = t0 + seconds
    cpu0 = time.process_time()
    while time.perf_counter() < deadline:
        for _ in range(64):
            peer.send(frame)
        dp.pump_tap(net, 0.0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c = dp.counters(net)
    print(json.dumps({"copies": c["flood_copies"], "sent": c["tx_packets"], "send_errors": c["drop_socket_error"],
                      "wall_us_per_copy": round(wall / max(1, c["flood_copies"]) * 1e6, 4),
                      "cpu_us_per_copy": round(cpu / max(1, c["flood_copies"]) * 1e6, 4)}))


def underlay_sink(ns: str, dst: str) -> None:
    """Route `dst` (simulated peers, inside the lab) in namespace `ns` into a veth whose other
    end drops everything (wrong MAC, forwarding off), through a gateway with a permanent
    neighbour entry: sends to 1,000 peers succeed without one ARP, and nothing goes anywhere."""
    with netns.ipr(ns) as ipr:
        if not ipr.link_lookup(ifname="sink0"):
            ipr.link("add", ifname="sink0", kind="veth", peer="sink1")
            for name in ("sink0", "sink1"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up", mtu=9000)
            idx = ipr.link_lookup(ifname="sink0")[0]
            ipr.addr("add", index=idx, address="198.18.255.1", prefixlen=24)
            ipr.neigh("add", dst="198.18.255.254", lladdr="02:00:00:00:ff:fe", ifindex=idx, state=0x80)
        ipr.route("add", dst=dst, gateway="198.18.255.254", oif=ipr.link_lookup(ifname="sink0")[0])


def replication_pump(lab: Lab, peers: int, seconds: float, backend: str) -> dict[str, Any]:
    h = lab.hosts[0]
    underlay_sink(h.ns, "198.19.0.0/16")
    env = dict(os.environ)
    env.pop("VXLAN_DP_PUREPYTHON", None)
    argv = [sys.executable, "-c", "from vxlan_dp.bench.scale import _replication_pump_worker as w; "
            f"w({peers}, {seconds}, {backend!r})"]
    # whether the copies leave batched: the worker's sendmmsg / sendmsg system calls, counted by
    # the kernel's own tracepoints (perf stat), next to the copies sent (sendto is left out: the
    # worker writes its frames into the TAP stand-in with it)
    perf = shutil.which("perf")
    events = "syscalls:sys_enter_sendmmsg,syscalls:sys_enter_sendmsg"
    if perf:
        argv = [perf, "stat", "-x", ",", "-e", events, "--", *argv]
    r = netns.run(h.ns, argv, timeout=seconds * 4 + 60, env=env)
    if r.returncode != 0:
        return {"error": r.stderr[-500:]}
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    calls = _perf_counts(r.stderr) if perf else {}
    if calls:
        out["send_calls"] = calls
        n = sum(calls.values())
        out["copies_per_send_call"] = round(out["sent"] / n, 1) if n else None
    return out


def _perf_counts(text: str) -> dict[str, int]:
    """`perf stat -x ,` lines (count,unit,event,...) -> {system call: count}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2].startswith("syscalls:sys_enter_") and f[0].strip().isdigit():
            out[f[2].removeprefix("syscalls:sys_enter_")] = int(f[0])
    return out


# --- the run --------------------------------------------------------------------------------

def run_scale(cases: list[str], backends: list[str], *, peers: int = 1000, seconds: float = 2.0,
              repeat: int = 1, out_dir: str = "bench/results") -> tuple[dict[str, Any], list[str]]:
    results: list[dict[str, Any]] = []
    repl: dict[str, Any] = {}
    with Lab(1, workdir=tempfile.mkdtemp(prefix="vxdp-scale-")) as lab:
        for name in cases:
            if name == "replication":
                continue
            for backend in backends:
                for k in range(repeat):
                    r = run_static_case(lab, CASES[name], backend)
                    r["run"] = k + 1
                    print(_line(r), flush=True)
                    results.append(r)
        if "replication" in cases:
            repl = {"peers": peers, "encap_us_per_copy": replication_encap(peers, seconds)}
            repl["pump"] = {b: replication_pump(lab, peers, seconds, b) for b in backends}
            print(f"replication to {peers} peers: {json.dumps(repl)}", flush=True)
    data = {"machine": machine_info(), "static": results, "replication": repl}
    paths = write_results(out_dir, "scale", data, _markdown(results, repl), lambda p: _chart(results, p))
    return data, paths


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['case']:>8} {r['backend']:<6} ERROR {r['error']}"
    return (f"{r['case']:>8} {r['backend']:<6} ready {r['ready_s']:7.2f} s  rss {r['rss_kib'] / 1024:7.1f} MiB  "
            f"hwm {r['hwm_kib'] / 1024:7.1f} MiB  stop {r.get('stop_s', 0):6.2f} s  "
            f"nets {r['networks_running']}/{r['networks']} fdb {r['fdb_entries_total']}")


def _markdown(results: list[dict[str, Any]], repl: dict[str, Any]) -> str:
    rows = ["| case | networks | static entries | backend | run | READY s | RSS MiB | peak MiB | stop s | holds |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['case']} | {r['networks']} | {r['networks'] * r['entries_per_network']} | "
                        f"{r['backend']} | {r['run']} | error: {r['error']} | | | | |")
            continue
        holds = (f"{r['networks_running']} nets, {r['fdb_entries_total']} entries, {r['taps_up']} TAPs up")
        rows.append(f"| {r['case']} | {r['networks']} | {r['networks'] * r['entries_per_network']} | "
                    f"{r['backend']} | {r['run']} | {r['ready_s']:.2f} | {r['rss_kib'] / 1024:.1f} | "
                    f"{r['hwm_kib'] / 1024:.1f} | {r.get('stop_s', 0):.2f} | {holds} |")
    text = "\n".join(rows)
    if repl:
        text += (f"\n\nHead-end replication to {repl['peers']} peers, 64-frame batches of broadcast frames, "
                 "per replicated frame (one outer packet per peer); send calls: the pump's send system "
                 "calls as the kernel's tracepoints counted them (perf stat):\n\n| backend | encap (I/O-free) us | "
                 "pump wall us | pump CPU us | sent | send errors | send calls | copies per call |\n"
                 "|---|---|---|---|---|---|---|---|\n")
        for b, v in repl["pump"].items():
            calls = ", ".join(f"{k} {n}" for k, n in v.get("send_calls", {}).items() if n) or "-"
            text += (f"| {b} | {repl['encap_us_per_copy'].get(b, '-')} | {v.get('wall_us_per_copy', '-')} | "
                     f"{v.get('cpu_us_per_copy', '-')} | {v.get('sent', '-')} | {v.get('send_errors', '-')} | "
                     f"{calls} | {v.get('copies_per_send_call', '-')} |\n")
    return text


def _chart(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in results if "error" not in r]
    labels = [f"{r['case']}\n{r['backend']}#{r['run']}" for r in ok]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8, len(ok) * 0.9), 4))
    a.bar(labels, [r["ready_s"] for r in ok], color="tab:blue")
    a.set_ylabel("time to READY (s)")
    b.bar(labels, [r["rss_kib"] / 1024 for r in ok], color="tab:orange")
    b.set_ylabel("RSS at READY (MiB)")
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
