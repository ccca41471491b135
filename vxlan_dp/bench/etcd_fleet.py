"""`vxlan-dp bench etcd --fleet`: the etcd control plane at fleet scale (issue 16). Not a test.

One lab host (a network namespace) runs a real etcd-server listening on that namespace's
loopback only (127.0.0.1) with its data on tmpfs, and one daemon that knows only the store.
A writer (this module again, `python -m vxlan_dp.bench.etcd_fleet --writer ...`, run inside
the namespace) fills the store with a simulated fleet:

    networks     N networks, P/networks/n<i> (vxlan, one shared UDP endpoint)
    members      every network has M members out of H simulated hosts (198.18.4.0/22:
                 addresses inside the lab's namespace only; nothing is ever sent to them)
    fdb          E entries in all, spread evenly over the networks, each MAC on one member

and we measure:
    cold start   daemon started (Popen) -> every network running with M peers and its entries
                 in the data plane (the `summary` RPC: counts from the fast path)
    RSS          the daemon's VmRSS then (VmHWM: its peak on the way)
    churn        R changes per second for S seconds, each a single etcd write: 80 % MAC moves,
                 10 % joins (half a host joining a network, half a new MAC), 10 % leaves (half a
                 host leaving, half a MAC deleted); every key is touched once. The same process
                 polls the daemon (`lookup` RPC: the C FDB and flood list themselves) every
                 POLL s for every change not yet seen, so a change's latency is (first poll
                 that sees it) - (the moment etcd acknowledged the write: it had committed),
                 with up to one poll interval on top; also given from the moment the write
                 was sent (its round trip added), and the write round trip itself.
    CPU          the daemon's CPU time during the churn, as a share of one core
    RSS after    VmRSS after the churn minute, against the one before it

Results: bench/results/<date>-etcd-fleet.{json,md,png}, with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from ..lab import Lab, netns
from .report import Progress, machine_info, write_results
from .scale import underlay_sink

__all__ = ["run_fleet"]

PREFIX = "/vxlan-dp"
TXN = 100           # puts per transaction while filling (etcd's --max-txn-ops defaults to 128)
FILL_PARALLEL = 8   # transactions in flight while filling
POLL = 0.02         # seconds between lookups of the changes not yet seen
GIVE_UP = 10.0      # a change not seen after this long counts as lost
LOOKUP_MAX = 500    # items per lookup request (the status socket reads lines of up to 64 KiB)
ETCD = "127.0.0.1:2379"
SIMULATED = "198.18.4.0/22"     # the simulated hosts' addresses (host_addr)


def host_addr(i: int) -> str:
    return f"198.18.{4 + i // 250}.{1 + i % 250}"


def net_name(n: int) -> str:
    return f"n{n}"


def fleet_mac(n: int, j: int) -> str:
    return f"02:{n >> 8 & 0xff:02x}:{n & 0xff:02x}:{j >> 16 & 0xff:02x}:{j >> 8 & 0xff:02x}:{j & 0xff:02x}"


def members_of(n: int, hosts: int, per: int) -> list[int]:
    """The simulated hosts in network n: a contiguous (wrapping) slice, so each host is in
    about networks * per / hosts networks."""
    return [(n * per + k) % hosts for k in range(per)]


# --- inside the namespace: the writer and the prober --------------------------------------

async def _fill(networks: int, hosts: int, per: int, entries: int) -> None:
    from etcd3aio import Etcd3Client, prefix_range_end
    from etcd3aio.kv import KVService

    async with Etcd3Client([ETCD]) as c:
        kv = c.kv
        assert kv is not None
        await kv.delete(PREFIX + "/", range_end=prefix_range_end(PREFIX + "/"), timeout=120)
        each = entries // networks

        def keys() -> Any:
            for n in range(networks):
                yield f"{PREFIX}/networks/{net_name(n)}", json.dumps({"vni": 1000 + n})
                mem = members_of(n, hosts, per)
                for h in mem:
                    yield f"{PREFIX}/members/{net_name(n)}/{host_addr(h)}", "{}"
                for j in range(each):
                    yield (f"{PREFIX}/fdb/{net_name(n)}/{fleet_mac(n, j)}",
                           json.dumps({"remote": host_addr(mem[j % per])}))
        it = iter(keys())
        sem = asyncio.Semaphore(FILL_PARALLEL)

        async def txn(batch: list[tuple[str, str]]) -> None:
            async with sem:
                await kv.txn([], [KVService.txn_op_put(k, v) for k, v in batch], timeout=60)
        tasks = []
        while True:
            batch = [kv_ for _, kv_ in zip(range(TXN), it)]
            if not batch:
                break
            await sem.acquire()
            sem.release()
            tasks.append(asyncio.ensure_future(txn(batch)))
            if len(tasks) > 4 * FILL_PARALLEL:
                await asyncio.gather(*tasks)
                tasks = []
        await asyncio.gather(*tasks)


def _rpc(path: str, req: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    out: dict[str, Any] = json.loads(buf)
    return out


def _plan(networks: int, hosts: int, per: int, entries: int, total: int, seed: int) -> list[tuple[Any, ...]]:
    """`total` changes, each key touched once: (kind, network, key, value or None, lookup item,
    expected answer)."""
    rng = random.Random(seed)
    each = entries // networks
    out: list[tuple[Any, ...]] = []
    used: set[tuple[int, int]] = set()
    left: set[tuple[int, int]] = set()
    new_mac = [each] * networks
    for k in range(total):
        n = rng.randrange(networks)
        name = net_name(n)
        mem = members_of(n, hosts, per)
        r = rng.random()
        if r < 0.80 or r >= 0.95:           # a MAC moves to another member, or is deleted
            while True:
                j = rng.randrange(each)
                if (n, j) not in used:
                    used.add((n, j))
                    break
            mac = fleet_mac(n, j)
            key = f"{PREFIX}/fdb/{name}/{mac}"
            if r < 0.80:
                to = host_addr(mem[(j + 1 + rng.randrange(per - 1)) % per])
                out.append(("move", name, key, json.dumps({"remote": to}), [name, "mac", mac], to))
            else:
                out.append(("mac-leave", name, key, None, [name, "mac", mac], None))
        elif r < 0.85:                      # a host joins the network
            h = (mem[-1] + 1 + len([x for x in used if x[0] == -1 - n])) % hosts
            used.add((-1 - n, h))
            key = f"{PREFIX}/members/{name}/{host_addr(h)}"
            out.append(("join", name, key, "{}", [name, "peer", host_addr(h)], True))
        elif r < 0.90:                      # a new MAC appears
            mac = fleet_mac(n, new_mac[n])
            new_mac[n] += 1
            to = host_addr(mem[rng.randrange(per)])
            out.append(("mac-join", name, f"{PREFIX}/fdb/{name}/{mac}", json.dumps({"remote": to}),
                        [name, "mac", mac], to))
        else:                               # a host leaves the network
            cand = [h for h in mem if (n, h) not in left]
            h = cand[rng.randrange(len(cand))]
            left.add((n, h))
            key = f"{PREFIX}/members/{name}/{host_addr(h)}"
            out.append(("leave", name, key, None, [name, "peer", host_addr(h)], False))
        del k
    return out


async def _churn(sock: str, networks: int, hosts: int, per: int, entries: int, rate: int,
                 seconds: float) -> dict[str, Any]:
    from etcd3aio import Etcd3Client

    plan = _plan(networks, hosts, per, entries, int(rate * seconds), seed=16)
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    seen: dict[int, float] = {}
    loop = asyncio.get_running_loop()
    async with Etcd3Client([ETCD]) as c:
        kv = c.kv
        assert kv is not None
        done_writing = asyncio.Event()

        async def write(i: int) -> None:
            _, _, key, value, _, _ = plan[i]
            sent[i] = time.monotonic()
            if value is None:
                await kv.delete(key, timeout=30)
            else:
                await kv.put(key, value, timeout=30)
            acked[i] = time.monotonic()

        async def writer() -> None:
            tick, per_tick = 0.01, max(1, rate // 100)
            t0 = time.monotonic()
            pending: set[asyncio.Future[None]] = set()
            for k in range(0, len(plan), per_tick):
                delay = t0 + (k // per_tick) * tick - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for i in range(k, min(k + per_tick, len(plan))):
                    f = asyncio.ensure_future(write(i))
                    pending.add(f)
                    f.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            done_writing.set()

        async def prober() -> None:
            while True:
                now = time.monotonic()
                want = [i for i in sent if i not in seen and now - sent[i] < GIVE_UP]
                if done_writing.is_set() and not want:
                    return
                for k in range(0, len(want), LOOKUP_MAX):
                    part = want[k:k + LOOKUP_MAX]
                    ans = await loop.run_in_executor(None, _rpc, sock,
                                                     {"cmd": "lookup", "items": [plan[i][4] for i in part]})
                    t = time.monotonic()
                    for i, got in zip(part, ans["found"]):
                        if got == plan[i][5]:
                            seen[i] = t
                await asyncio.sleep(POLL)
        t_start = time.monotonic()
        await asyncio.gather(writer(), prober())
        elapsed = time.monotonic() - t_start
    lat = sorted(max(0.0, seen[i] - acked.get(i, sent[i])) for i in seen)
    lat_sent = sorted(seen[i] - sent[i] for i in seen)
    rtt = sorted(acked[i] - sent[i] for i in acked)
    by_kind: dict[str, list[float]] = {}
    for i in seen:
        by_kind.setdefault(plan[i][0], []).append(max(0.0, seen[i] - acked.get(i, sent[i])))

    def pct(xs: list[float], p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else float("nan")
    return {"changes": len(plan), "seen": len(seen), "lost": len(plan) - len(seen),
            "elapsed_s": round(elapsed, 1), "rate": round(len(plan) / elapsed, 1),
            "p50_ms": pct(lat, 0.50), "p90_ms": pct(lat, 0.90), "p99_ms": pct(lat, 0.99),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "from_send_p50_ms": pct(lat_sent, 0.50), "from_send_p99_ms": pct(lat_sent, 0.99),
            "write_rtt_p50_ms": pct(rtt, 0.50), "write_rtt_p99_ms": pct(rtt, 0.99),
            "kinds": {k: {"n": len(v), "p99_ms": pct(sorted(v), 0.99)} for k, v in sorted(by_kind.items())},
            "latencies_ms": [round(x * 1000, 1) for x in lat[::max(1, len(lat) // 2000)]]}


# --- the driver -------------------------------------------------------------------------------

def _rss(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f)
    return int(st["VmRSS"].split()[0]) // 1024, int(st["VmHWM"].split()[0]) // 1024


def _cpu(pid: int) -> float:
    """The process's user + system CPU seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _in_ns(lab: Lab, ns: str, args: list[str], timeout: float) -> str:
    r = netns.run(ns, [sys.executable, "-m", "vxlan_dp.bench.etcd_fleet", *args], timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed: {r.stderr[-3000:]}")
    return r.stdout


def _spy(pid: int, seconds: float, path: str) -> Any:
    """py-spy sampling `pid` for `seconds` into collapsed stacks at `path` (None without py-spy)."""
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        return None
    import subprocess
    return subprocess.Popen([spy, "record", "--format", "raw", "--rate", "50", "--nonblocking", "-p", str(pid),
                             "-d", str(int(seconds)), "-o", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(path: str, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, % of samples on top of the stack, % with it anywhere in the stack)."""
    own: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            k = int(count)
            total += k
            frames = [fr.split(" (")[0] + " " + fr.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                      if " (" in fr else fr for fr in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + k
            for fr in set(frames):
                anywhere[fr] = anywhere.get(fr, 0) + k
    return [(fn, round(100 * c / total, 1), round(100 * anywhere[fn] / total, 1))
            for fn, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]] if total else []


def measure(networks: int, hosts: int, per: int, entries: int, rate: int, seconds: float,
            bridge: bool, progress: Any, profile: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"networks": networks, "hosts": hosts, "members_per_network": per,
                           "entries": entries, "rate": rate, "seconds": seconds, "bridges": bridge}
    shm = tempfile.mkdtemp(prefix="vxlan_dp-bench-", dir="/dev/shm")
    with Lab(1, workdir=shm) as lab:
        h = lab.hosts[0]
        data = os.path.join(shm, "vxlan_dp-etcd")
        log = open(os.path.join(shm, "etcd.log"), "wb")
        argv = ["etcd", "--name", "bench", "--data-dir", data,
                "--listen-client-urls", f"http://{ETCD}", "--advertise-client-urls", f"http://{ETCD}",
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380", "--initial-cluster", "bench=http://127.0.0.1:2380",
                "--quota-backend-bytes", str(8 << 30), "--max-request-bytes", str(8 << 20)]
        underlay_sink(h.ns, SIMULATED)     # the floods to simulated hosts leave, and go nowhere
        etcd = netns.popen(h.ns, argv, stdout=log, stderr=log)
        lab._pids.append(etcd.pid)
        try:
            deadline = time.monotonic() + 30
            while b"ready to serve client requests" not in open(log.name, "rb").read():
                if time.monotonic() > deadline or etcd.poll() is not None:
                    raise RuntimeError("etcd did not start: " + open(log.name, "rb").read()[-2000:].decode())
                time.sleep(0.1)
            progress("filling the store")
            t0 = time.monotonic()
            _in_ns(lab, h.ns, ["--writer", "fill", *_args(networks, hosts, per, entries)], 3600)
            out["fill_s"] = round(time.monotonic() - t0, 1)
            toml = (f'[daemon]\nmetrics = ""\ncontrol = "etcd"\n\n[etcd]\nendpoints = ["{ETCD}"]\n'
                    f'local = "{h.ip4}"\nlease_ttl = 10\n' + ('' if bridge else 'bridge = ""\n'))
            progress("cold start")
            t0 = time.monotonic()
            lab.start_daemon(h, "", daemon_toml=toml, backend="c", timeout=300, wait_ready=not profile)
            out["ready_s"] = None if profile else round(time.monotonic() - t0, 2)
            assert h.proc is not None
            spy = _spy(h.proc.pid, 30, f"{profile}-start.txt") if profile else None
            each = entries // networks
            deadline = t0 + 600
            while True:
                try:
                    s = _rpc(h.socket_path, {"cmd": "summary"})
                except OSError:     # not listening yet (started without waiting for READY)
                    s = {}
                nets = s.get("networks", {})
                if len(nets) == networks and all(v["peers"] == per and v["static_fdb"] == each for v in nets.values()):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no convergence: {len(nets)} networks")
                time.sleep(0.1)
            out["cold_start_s"] = round(time.monotonic() - t0, 2)
            if spy is not None:
                spy.wait(60)
                out["profile_start"] = top_functions(f"{profile}-start.txt")
            assert h.proc is not None
            pid = h.proc.pid
            time.sleep(2.0)
            out["rss_mib"], out["hwm_mib"] = _rss(pid)
            progress("churn")
            spy = _spy(pid, seconds, profile + "-churn.txt") if profile else None
            cpu0, w0 = _cpu(pid), time.monotonic()
            res = json.loads(_in_ns(lab, h.ns, ["--writer", "churn", "--socket", h.socket_path,
                                                "--rate", str(rate), "--seconds", str(seconds),
                                                *_args(networks, hosts, per, entries)], seconds * 5 + 600))
            out["churn"] = res
            out["daemon_cpu_pct"] = round(100 * (_cpu(pid) - cpu0) / (time.monotonic() - w0), 1)
            if spy is not None:
                spy.wait(60)
                out["profile_churn"] = top_functions(f"{profile}-churn.txt")
            time.sleep(2.0)
            out["rss_after_mib"], out["hwm_after_mib"] = _rss(pid)
            out["rss_growth_pct"] = round(100 * (out["rss_after_mib"] - out["rss_mib"]) / out["rss_mib"], 1)
            out["control"] = {k: v for k, v in _rpc(h.socket_path, {"cmd": "summary"})["control"].items()
                              if k in ("store_keys", "entries_at_sync", "resyncs", "connected")}
            out["log_tail"] = lab.log_tail(h, 5)
            t0 = time.monotonic()
            lab.stop_daemon(h, timeout=300)     # 1,000 TAPs and bridges to remove
            out["stop_s"] = round(time.monotonic() - t0, 1)
        finally:
            netns.stop(etcd, signal.SIGTERM, 10.0)
            log.close()
    return out


def _args(networks: int, hosts: int, per: int, entries: int) -> list[str]:
    return ["--networks", str(networks), "--hosts", str(hosts), "--per", str(per), "--entries", str(entries)]


def _markdown(r: dict[str, Any]) -> str:
    c = r["churn"]
    head = ("| networks | hosts | members/net | entries | fill | ready | cold start | RSS | peak | churn rate "
            "| changes seen | p50 | p99 | max | p99 from send | write p99 | daemon CPU | RSS after | growth |\n"
            + "|---:" * 19 + "|\n")
    return head + (f"| {r['networks']} | {r['hosts']} | {r['members_per_network']} | {r['entries']} "
                   f"| {r['fill_s']} s | {'-' if r['ready_s'] is None else str(r['ready_s']) + ' s'} | {r['cold_start_s']} s | {r['rss_mib']} MiB "
                   f"| {r['hwm_mib']} MiB | {c['rate']}/s | {c['seen']}/{c['changes']} | {c['p50_ms']} ms "
                   f"| {c['p99_ms']} ms | {c['max_ms']} ms | {c['from_send_p99_ms']} ms | {c['write_rtt_p99_ms']} ms "
                   f"| {r['daemon_cpu_pct']} % | {r['rss_after_mib']} MiB | {r['rss_growth_pct']} % |\n")


def _chart(r: dict[str, Any], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    lat = r["churn"]["latencies_ms"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([100 * i / max(1, len(lat) - 1) for i in range(len(lat))], lat)
    ax.axhline(500, color="red", linestyle="--", label="target p99 500 ms")
    ax.set_xlabel("percentile of changes")
    ax.set_ylabel("commit -> data plane (ms)")
    ax.set_title(f"etcd churn {r['churn']['rate']}/s over {r['networks']} networks, {r['entries']} entries")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def run_fleet(networks: int = 1000, hosts: int = 1000, per: int = 100, entries: int = 1_000_000,
              rate: int = 1000, seconds: float = 60.0, bridge: bool = True,
              out_dir: str = "bench/results", profile: bool = False) -> tuple[dict[str, Any], list[str]]:
    prog = Progress(3)
    try:
        os.makedirs(out_dir, exist_ok=True)
        spy = os.path.join(os.path.abspath(out_dir), time.strftime("%Y-%m-%d-%H%M-etcd-fleet-pyspy")) if profile else None
        r = measure(networks, hosts, per, entries, rate, seconds, bridge, prog.step, spy)
    finally:
        prog.close()
    md = _markdown(r)
    print(md)
    paths = write_results(out_dir, "etcd-fleet", {"machine": machine_info(), "results": [r]}, md)
    png = [p for p in paths if p.endswith(".md")]
    if png:
        _chart(r, png[0][:-3] + ".png")
        paths.append(png[0][:-3] + ".png")
    print("\n".join(paths))
    return r, paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="vxlan-dp bench etcd --fleet: the writer and prober")
    ap.add_argument("--writer", choices=["fill", "churn"], required=True)
    ap.add_argument("--networks", type=int, required=True)
    ap.add_argument("--hosts", type=int, required=True)
    ap.add_argument("--per", type=int, required=True)
    ap.add_argument("--entries", type=int, required=True)
    ap.add_argument("--socket")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args(argv)
    if a.writer == "fill":
        asyncio.run(_fill(a.networks, a.hosts, a.per, a.entries))
    else:
        print(json.dumps(asyncio.run(_churn(a.socket, a.networks, a.hosts, a.per, a.entries, a.rate, a.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
