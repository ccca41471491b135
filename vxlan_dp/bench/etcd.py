"""`vxlan-dp bench etcd`: scale of the etcd control plane (a bench, not a test).

A lab with one daemon host and an etcd host. A writer (this module again, `python -m
vxlan_dp.bench.etcd --writer PHASE`, run inside the etcd host's namespace) fills the store with
simulated hosts: `members` members of network "blue", each publishing `per_member` MACs. Then a
real daemon starts knowing only the store, and we measure, for each fastpath backend:

    live fill     the store filled (transactions of TXN puts) while the daemon runs -> all applied
    cold start    daemon started -> its data plane holds every peer and FDB entry
    churn         up to 2,000 MACs move to other members and 20 members join -> applied
    departure     50 members and their MACs leave -> applied
    memory        the daemon's VmRSS / VmHWM once converged (and the same daemon, empty store)

The simulated members are addresses in 198.18.0.0/15 inside the lab: nothing is sent to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Callable

from ..lab import Host, Lab, netns
from .report import Progress, machine_info, write_results

__all__ = ["run_etcd"]

PREFIX = "/vxlan-dp"
TXN = 100  # puts per transaction (etcd's default --max-txn-ops is 128)
LEAVING = 50
JOINING = 20


def _member(i: int) -> str:
    return f"198.18.{1 + i // 250}.{1 + i % 250}"  # simulated hosts: never answer, never asked


def _mac(i: int, j: int) -> str:
    return f"02:00:00:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:{j:02x}"


# --- the writer: runs inside the etcd host's namespace ------------------------------------------

async def _writer(endpoint: str, phase: str, members: int, per: int) -> None:
    from etcd3aio import Etcd3Client, prefix_range_end
    from etcd3aio.kv import KVService

    async with Etcd3Client([endpoint]) as c:
        kv = c.kv
        if kv is None:      # set on entering the client; None only before it connected
            raise RuntimeError(f"etcd client for {endpoint} not connected")

        async def put_all(kvs: list[tuple[str, str]]) -> None:
            for i in range(0, len(kvs), TXN):
                await kv.txn([], [KVService.txn_op_put(k, v) for k, v in kvs[i:i + TXN]], timeout=30)

        async def delete_all(keys: list[str]) -> None:
            for i in range(0, len(keys), TXN):
                await kv.txn([], [KVService.txn_op_delete(k) for k in keys[i:i + TXN]], timeout=30)

        if phase == "init":
            await kv.delete(PREFIX + "/", range_end=prefix_range_end(PREFIX + "/"))
            kvs = [(f"{PREFIX}/networks/blue", json.dumps({"vni": 42}))]
            kvs += [(f"{PREFIX}/members/blue/{_member(i)}", "{}") for i in range(members)]
            kvs += [(f"{PREFIX}/fdb/blue/{_mac(i, j)}", json.dumps({"remote": _member(i)}))
                    for i in range(members) for j in range(per)]
            await put_all(kvs)
        elif phase == "churn":   # MACs move to the next member; JOINING members join
            moves = [(f"{PREFIX}/fdb/blue/{_mac(i, j)}", json.dumps({"remote": _member((i + 1) % members)}))
                     for i in range(members) for j in range(_moved(members, per))]
            joins = [(f"{PREFIX}/members/blue/{_member(members + k)}", "{}") for k in range(JOINING)]
            await put_all(moves + joins)
        elif phase == "leave":   # the first LEAVING members go, with their MACs
            keys = [f"{PREFIX}/members/blue/{_member(i)}" for i in range(LEAVING)]
            keys += [f"{PREFIX}/fdb/blue/{_mac(i, j)}" for i in range(LEAVING) for j in range(per)]
            await delete_all(keys)


def _moved(members: int, per: int) -> int:
    """MACs each member loses to the next in the churn phase: 2,000 in all at most."""
    return max(1, min(per, 2000 // members))


# --- the driver -----------------------------------------------------------------------------------

def _rss(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f)
    return int(st["VmRSS"].split()[0]) // 1024, int(st["VmHWM"].split()[0]) // 1024


def _state(lab: Lab, h: Host) -> tuple[int, dict[str, str]]:
    net = lab.status(h)["networks"].get("blue", {})
    return len(net.get("peers", [])), {r["mac"]: r["remote"] for r in net.get("fdb", []) if r["static"]}


def _until(lab: Lab, h: Host, ok: Callable[[int, dict[str, str]], bool], timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        peers, fdb = _state(lab, h)
        if ok(peers, fdb):
            return time.monotonic() - t0
        time.sleep(0.2)
    peers, fdb = _state(lab, h)
    raise RuntimeError(f"no convergence within {timeout}s: {peers} peers, {len(fdb)} entries")


def _write(lab: Lab, phase: str, members: int, per: int) -> float:
    t0 = time.monotonic()
    assert lab.etcd_host is not None
    endpoint = lab.etcd_endpoint.split("://", 1)[1]
    r = netns.run(lab.etcd_host.ns, [sys.executable, "-m", "vxlan_dp.bench.etcd", "--writer", phase,
                                     "--endpoint", endpoint, "--members", str(members),
                                     "--per-member", str(per)], timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"writer {phase} failed: {r.stderr[-2000:]}")
    return time.monotonic() - t0


def _pid(h: Host) -> int:
    assert h.proc is not None
    return h.proc.pid


def measure(backend: str, members: int, per: int, progress: Callable[[str], None]) -> dict[str, Any]:
    total = members * per
    out: dict[str, Any] = {"backend": backend, "members": members, "entries": total}
    with Lab(1) as lab:
        h = lab.hosts[0]
        lab.add_etcd_host()
        # baseline: the same daemon with an empty store but the network declared
        if lab.etcdctl("put", f"{PREFIX}/networks/blue", '{"vni": 42}').returncode != 0:
            raise RuntimeError("etcdctl put failed")
        lab.start_daemon(h, "", daemon_toml=lab.etcd_toml(h, lease_ttl=10), backend=backend)
        _until(lab, h, lambda p, f: "blue" in lab.status(h)["networks"])
        time.sleep(1.0)
        out["rss_empty_mib"] = _rss(_pid(h))[0]
        progress(f"{backend}: live fill")
        t0 = time.monotonic()
        out["write_s"] = round(_write(lab, "init", members, per), 2)
        _until(lab, h, lambda p, f: p == members and len(f) == total)
        out["live_fill_s"] = round(time.monotonic() - t0, 2)
        lab.stop_daemon(h)

        progress(f"{backend}: cold start")
        t0 = time.monotonic()
        lab.start_daemon(h, "", daemon_toml=lab.etcd_toml(h, lease_ttl=10), backend=backend)
        out["ready_s"] = round(time.monotonic() - t0, 2)
        _until(lab, h, lambda p, f: p == members and len(f) == total)
        out["cold_start_s"] = round(time.monotonic() - t0, 2)
        time.sleep(1.0)
        out["rss_mib"], out["hwm_mib"] = _rss(_pid(h))

        progress(f"{backend}: churn")
        moved = _moved(members, per)
        t0 = time.monotonic()
        _write(lab, "churn", members, per)
        _until(lab, h, lambda p, f: p == members + JOINING and f.get(_mac(members - 1, moved - 1)) == _member(0)
               and f.get(_mac(0, 0)) == _member(1))
        out["churn_s"] = round(time.monotonic() - t0, 2)

        progress(f"{backend}: departure")
        t0 = time.monotonic()
        _write(lab, "leave", members, per)
        _until(lab, h, lambda p, f: p == members + JOINING - LEAVING and len(f) == total - LEAVING * per)
        out["departure_s"] = round(time.monotonic() - t0, 2)
        out["rss_end_mib"], out["hwm_end_mib"] = _rss(_pid(h))
        st = lab.status(h)["control"]
        out["resyncs"], out["store_keys"] = st["resyncs"], st["store_keys"]
    return out


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| backend | members | entries | write | live fill | ready | cold start | churn | departure "
            "| RSS empty | RSS | peak |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['backend']} | {r['members']} | {r['entries']} | {r['write_s']} s | {r['live_fill_s']} s "
        f"| {r['ready_s']} s | {r['cold_start_s']} s | {r['churn_s']} s | {r['departure_s']} s "
        f"| {r['rss_empty_mib']} MiB | {r['rss_mib']} MiB | {r['hwm_mib']} MiB |\n" for r in rows)


def run_etcd(backends: list[str], members: int = 200, per_member: int = 100,
             out_dir: str = "bench/results") -> tuple[list[dict[str, Any]], list[str]]:
    """Measure each backend; print and write the results. Needs root and etcd-server."""
    if members <= LEAVING:
        raise ValueError(f"members must be more than the {LEAVING} that leave")
    if not 1 <= per_member <= 256:
        raise ValueError("per-member must be 1..256 (one MAC byte)")
    prog = Progress(len(backends) * 4)
    try:
        rows = [measure(b, members, per_member, prog.step) for b in backends]
    finally:
        prog.close()
    md = _markdown(rows)
    print(md)
    paths = write_results(out_dir, "etcd", {"machine": machine_info(), "results": rows}, md)
    print("\n".join(paths))
    return rows, paths


def main(argv: list[str] | None = None) -> int:
    """The writer's entry point (`python -m vxlan_dp.bench.etcd --writer PHASE ...`)."""
    ap = argparse.ArgumentParser(description="vxlan-dp bench etcd: the store writer")
    ap.add_argument("--writer", choices=["init", "churn", "leave"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--members", type=int, required=True)
    ap.add_argument("--per-member", type=int, required=True)
    a = ap.parse_args(argv)
    asyncio.run(_writer(a.endpoint, a.writer, a.members, a.per_member))
    return 0


if __name__ == "__main__":
    sys.exit(main())
