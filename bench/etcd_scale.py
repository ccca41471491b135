#!/usr/bin/env python3
"""Scale check of the etcd control plane (not a test): 200 members, 20,000 FDB entries.

A lab with one daemon host and an etcd host. A writer (this script again, run inside the etcd
host's namespace) fills the store with simulated hosts: 200 members of network "blue", each
publishing 100 MACs. Then a real daemon starts knowing only the store, and we measure

    live fill     the store filled (txns of 100 puts) while the daemon runs -> all applied
    cold start    daemon started -> its data plane holds 200 peers and 20,000 FDB entries
    churn         2,000 MACs move to other members and 20 members join -> applied
    departure     50 members and their 5,000 MACs leave -> applied
    memory        the daemon's VmRSS / VmHWM once converged (and the same daemon, empty store)

for each fastpath backend. Usage (root, etcd-server installed):

    python bench/etcd_scale.py [--members 200] [--per-member 100] [--backend c|python|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PREFIX = "/vxlan-dp"
TXN = 100  # puts per transaction (etcd's default --max-txn-ops is 128)


def _member(i: int) -> str:
    return f"198.18.{1 + i // 250}.{1 + i % 250}"  # simulated hosts: never answer, never asked


def _mac(i: int, j: int) -> str:
    return f"02:00:00:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:{j:02x}"


# --- the writer: runs inside the etcd host's namespace ------------------------------------------

async def _writer(endpoint: str, phase: str, members: int, per: int) -> None:
    from etcd3aio import Etcd3Client, prefix_range_end
    from etcd3aio.kv import KVService

    async with Etcd3Client([endpoint]) as c:
        async def put_all(kvs: list[tuple[str, str]]) -> None:
            for i in range(0, len(kvs), TXN):
                await c.kv.txn([], [KVService.txn_op_put(k, v) for k, v in kvs[i:i + TXN]], timeout=30)

        async def delete_all(keys: list[str]) -> None:
            for i in range(0, len(keys), TXN):
                await c.kv.txn([], [KVService.txn_op_delete(k) for k in keys[i:i + TXN]], timeout=30)

        if phase == "init":
            await c.kv.delete(PREFIX + "/", range_end=prefix_range_end(PREFIX + "/"))
            kvs = [(f"{PREFIX}/networks/blue", json.dumps({"vni": 42}))]
            kvs += [(f"{PREFIX}/members/blue/{_member(i)}", "{}") for i in range(members)]
            kvs += [(f"{PREFIX}/fdb/blue/{_mac(i, j)}", json.dumps({"remote": _member(i)}))
                    for i in range(members) for j in range(per)]
            await put_all(kvs)
        elif phase == "churn":   # 2,000 MACs move to the next member; 20 members join
            moves = [(f"{PREFIX}/fdb/blue/{_mac(i, j)}", json.dumps({"remote": _member((i + 1) % members)}))
                     for i in range(members) for j in range(min(per, 2000 // members))]
            joins = [(f"{PREFIX}/members/blue/{_member(members + k)}", "{}") for k in range(20)]
            await put_all(moves + joins)
        elif phase == "leave":   # the first 50 members go, with their MACs
            keys = [f"{PREFIX}/members/blue/{_member(i)}" for i in range(50)]
            keys += [f"{PREFIX}/fdb/blue/{_mac(i, j)}" for i in range(50) for j in range(per)]
            await delete_all(keys)


# --- the driver -----------------------------------------------------------------------------------

def _rss(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f)
    return int(st["VmRSS"].split()[0]) // 1024, int(st["VmHWM"].split()[0]) // 1024


def _state(lab: Any, h: Any) -> tuple[int, dict[str, str]]:
    net = lab.status(h)["networks"].get("blue", {})
    return len(net.get("peers", [])), {r["mac"]: r["remote"] for r in net.get("fdb", []) if r["static"]}


def _until(lab: Any, h: Any, ok: Any, timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        peers, fdb = _state(lab, h)
        if ok(peers, fdb):
            return time.monotonic() - t0
        time.sleep(0.2)
    peers, fdb = _state(lab, h)
    raise RuntimeError(f"no convergence within {timeout}s: {peers} peers, {len(fdb)} entries")


def _write(lab: Any, phase: str, members: int, per: int) -> float:
    from vxlan_dp.lab import netns
    t0 = time.monotonic()
    endpoint = lab.etcd_endpoint.split("://", 1)[1]
    r = netns.run(lab.etcd_host.ns, [sys.executable, os.path.abspath(__file__), "--writer", phase,
                                     "--endpoint", endpoint, "--members", str(members),
                                     "--per-member", str(per)],
                  timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    if r.returncode != 0:
        raise RuntimeError(f"writer {phase} failed: {r.stderr[-2000:]}")
    return time.monotonic() - t0


def run(backend: str, members: int, per: int) -> dict[str, Any]:
    from vxlan_dp.lab import Lab

    total = members * per
    out: dict[str, Any] = {"backend": backend, "members": members, "entries": total}
    with Lab(1) as lab:
        h = lab.hosts[0]
        lab.add_etcd_host()
        # baseline: the same daemon with an empty store but the network declared
        assert lab.etcdctl("put", f"{PREFIX}/networks/blue", '{"vni": 42}').returncode == 0
        lab.start_daemon(h, "", daemon_toml=lab.etcd_toml(h, lease_ttl=10), backend=backend)
        _until(lab, h, lambda p, f: "blue" in lab.status(h)["networks"])
        time.sleep(1.0)
        out["rss_empty_mib"] = _rss(h.proc.pid)[0]
        t0 = time.monotonic()
        out["write_s"] = round(_write(lab, "init", members, per), 2)
        _until(lab, h, lambda p, f: p == members and len(f) == total)
        out["live_fill_s"] = round(time.monotonic() - t0, 2)
        lab.stop_daemon(h)

        t0 = time.monotonic()
        lab.start_daemon(h, "", daemon_toml=lab.etcd_toml(h, lease_ttl=10), backend=backend)
        out["ready_s"] = round(time.monotonic() - t0, 2)
        _until(lab, h, lambda p, f: p == members and len(f) == total)
        out["cold_start_s"] = round(time.monotonic() - t0, 2)
        time.sleep(1.0)
        out["rss_mib"], out["hwm_mib"] = _rss(h.proc.pid)

        moved = min(per, 2000 // members)
        t0 = time.monotonic()
        _write(lab, "churn", members, per)
        _until(lab, h, lambda p, f: p == members + 20 and f.get(_mac(members - 1, moved - 1)) == _member(0)
               and f.get(_mac(0, 0)) == _member(1))
        out["churn_s"] = round(time.monotonic() - t0, 2)

        t0 = time.monotonic()
        _write(lab, "leave", members, per)
        _until(lab, h, lambda p, f: p == members + 20 - 50 and len(f) == total - 50 * per)
        out["departure_s"] = round(time.monotonic() - t0, 2)
        out["rss_end_mib"], out["hwm_end_mib"] = _rss(h.proc.pid)
        st = lab.status(h)["control"]
        out["resyncs"], out["store_keys"] = st["resyncs"], st["store_keys"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--per-member", type=int, default=100)
    ap.add_argument("--backend", choices=["c", "python", "both"], default="both")
    ap.add_argument("--writer", choices=["init", "churn", "leave"], help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.writer:
        asyncio.run(_writer(a.endpoint, a.writer, a.members, a.per_member))
        return 0
    if os.geteuid() != 0:
        print("etcd_scale: needs root (network namespaces)", file=sys.stderr)
        return 2
    rows = [run(b, a.members, a.per_member) for b in (["c", "python"] if a.backend == "both" else [a.backend])]
    for r in rows:
        print(json.dumps(r))
    print(f"\n{'backend':<8} {'members':>7} {'entries':>7} {'write':>6} {'live':>6} {'ready':>6} {'cold':>6} "
          f"{'churn':>6} "
          f"{'depart':>6} {'RSS empty':>9} {'RSS':>5} {'peak':>5}")
    for r in rows:
        print(f"{r['backend']:<8} {r['members']:>7} {r['entries']:>7} {r['write_s']:>5}s {r['live_fill_s']:>5}s "
              f"{r['ready_s']:>5}s "
              f"{r['cold_start_s']:>5}s {r['churn_s']:>5}s {r['departure_s']:>5}s {r['rss_empty_mib']:>6} MiB "
              f"{r['rss_mib']:>5} {r['hwm_mib']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
