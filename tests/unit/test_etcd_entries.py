"""The etcd plane's entries go to the data plane, not into Python (issue 16).

A full read of the store (paged, through a stand-in for etcd3aio's kv.get) and then watch
events drive the real daemon rooms (`Networks`, `Neighbours`) over a real Dataplane of each
backend, with a network added the way `Networks.start` adds it, minus the TAP. What is checked:
the data plane holds what the store says (other hosts' MACs, never this host's own, the file's
entries winning, deletes and moves, neighbour entries), each flush reaches the FDB in one
`fdb_update` call per network, and with the C backend Python keeps no object per entry.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from helpers import c_backend
from vxlan_dp.config import parse_config
from vxlan_dp.control import Desired
from vxlan_dp.control.etcd import EtcdControl
from vxlan_dp.control.etcd_state import Keys, encode_fdb, encode_neigh
from vxlan_dp.datapath.offload import OffloadPlan
from vxlan_dp.fastpath import backends
from vxlan_dp.networks import Network, Networks

P = "/vxlan-dp"
K = Keys(P)
LOCAL = "198.18.0.1"
FILE_MAC = "02:ff:00:00:00:01"


def _mac(i: int) -> str:
    return f"02:00:00:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"


def _remote(i: int) -> str:
    return f"198.18.{1 + i % 200 // 250}.{2 + i % 200}"


@dataclass
class _Page:
    kvs: list[Any]
    more: bool
    header: Any


class _Kv:
    """etcd3aio's kv.get over a sorted list of (key, value): pages of `limit`, like etcd."""

    def __init__(self, kvs: list[tuple[bytes, bytes]]) -> None:
        self.kvs = sorted(kvs)
        self.requests = 0

    async def get(self, start: bytes, *, range_end: bytes, revision: int, limit: int,
                  timeout: float) -> _Page:  # noqa: ASYNC109 - etcd3aio's signature, stood in for
        self.requests += 1
        rows = [kv for kv in self.kvs if start <= kv[0] < range_end]
        return _Page([SimpleNamespace(key=k, value=v) for k, v in rows[:limit]], len(rows) > limit,
                     SimpleNamespace(revision=7))


class _Sink:
    """The daemon's ControlSink, with `Networks` doing the work on TAP-less networks."""

    def __init__(self, dp: Any) -> None:
        self.networks = Networks(dp, OffloadPlan())
        self.calls = 0
        real = dp.fdb_update

        def counted(*a: Any, **kw: Any) -> int:
            self.calls += 1
            return int(real(*a, **kw))
        self.networks.dp = SimpleNamespace(**{n: getattr(dp, n) for n in dir(dp) if not n.startswith("_")})
        self.networks.dp.fdb_update = counted
        self.networks.neigh.dp = dp

    def converge(self, want: Any, desired: Any) -> set[str]:
        for name, cfg in want.items():
            if name not in self.networks:
                dp = self.networks.dp
                handle = dp.add_network(cfg.params(1450), dp.add_endpoint("vxlan", -1))
                self.networks.neigh.attach(name, handle, cfg)
                self.networks._nets[name] = Network(cfg, handle, None, 1450, ("vxlan", cfg.local, 4789),
                                                    Desired((), ()))
            self.networks.apply(name, desired[name])
        return set(want)

    def apply(self, name: str, desired: Desired) -> None:
        self.networks.apply(name, desired)

    def update_entries(self, *a: Any, **kw: Any) -> None:
        self.networks.update_entries(*a, **kw)

    def local_macs(self, name: str, now: float) -> list[tuple[str, float]]:
        return []

    def local_neigh(self, name: str, now: float) -> list[tuple[str, str, float]]:
        return []


def _control(extra: str = "") -> EtcdControl:
    return EtcdControl(parse_config(
        f'[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["127.0.0.1:2379"]\nlocal = "{LOCAL}"\n'
        '[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n'
        f'fdb = [{{ mac = "{FILE_MAC}", remote = "198.18.9.9" }}]\n'
        'neigh = [{ ip = "192.168.0.9", mac = "02:ff:00:00:00:09" }]\n' + extra))


def _store(entries: int) -> list[tuple[bytes, bytes]]:
    kvs = [(K.network("red"), b'{"vni": 43}')]
    kvs += [(K.member(n, _remote(i)), b"{}") for n in ("blue", "red") for i in range(5)]
    kvs += [(K.fdb("blue", _mac(i)), encode_fdb(_remote(i))) for i in range(entries)]
    kvs += [(K.fdb("blue", "02:aa:00:00:00:01"), encode_fdb(LOCAL)),         # this host's own
            (K.fdb("blue", FILE_MAC), encode_fdb(_remote(0))),                # the file's wins
            (K.fdb("red", _mac(0)), encode_fdb(_remote(3))),
            (K.fdb("green", _mac(0)), encode_fdb(_remote(3))),                # a network not run here
            (K.neigh("blue", "192.168.0.4"), encode_neigh(_mac(4))),
            (K.neigh("blue", "192.168.0.9"), encode_neigh(_mac(9))),          # the file's wins
            (K.neigh("blue", "192.168.0.5"), encode_neigh(_mac(5), LOCAL))]   # our own endpoint
    return kvs


def _rows(dp: Any, sink: _Sink, name: str) -> dict[str, tuple[str, bool]]:
    net = sink.networks.get(name)
    assert net is not None
    return {r.mac: (r.remote, r.static) for r in dp.fdb_dump(net.handle, 0.0)}


async def _flush(ctl: EtcdControl) -> None:
    task = asyncio.get_running_loop().create_task(ctl._run_flusher())
    try:
        for _ in range(50):
            await asyncio.sleep(0.05)
            if not ctl._dirty.is_set() and not ctl._pending.entries():
                break
        await asyncio.sleep(0.15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("backend", sorted(backends()))
def test_store_entries_reach_the_data_plane_in_batches(backend: str) -> None:
    dp = backends()[backend]()
    sink, ctl = _Sink(dp), _control()
    ctl.sink = sink
    kv = _Kv(_store(6_000))

    async def scenario() -> None:
        await ctl._read_all(SimpleNamespace(kv=kv))
        # definitions and members in 3 ranges around the entries, then per network run: its fdb/
        # keys (blue's 6,003 in 2 pages of PAGE, red's in 1) and its neigh/ keys; never green's
        assert kv.requests == 3 + 3 + 2
        blue = _rows(dp, sink, "blue")
        assert len(blue) == 6_001 and blue[_mac(7)] == (_remote(7), True)
        assert "02:aa:00:00:00:01" not in blue and blue[FILE_MAC] == ("198.18.9.9", True)
        assert _rows(dp, sink, "red") == {_mac(0): (_remote(3), True)}
        neigh = {r["ip"]: (r["mac"], r["source"]) for r in sink.networks.neigh.rows("blue", 0.0) or []}
        assert neigh == {"192.168.0.4": (_mac(4), "store"), "192.168.0.9": ("02:ff:00:00:00:09", "control")}
        assert sink.networks.neigh.status("blue")["suppress_arp"] is True
        calls = sink.calls
        # a burst of events: moves, deletes, a MAC becoming ours, the file's MAC: one call per network
        for i in range(100):
            ctl._changed(ctl.view.put(K.fdb("blue", _mac(i)), encode_fdb("198.18.7.7")))
        ctl._changed(ctl.view.delete(K.fdb("blue", _mac(200))))
        ctl._changed(ctl.view.put(K.fdb("blue", _mac(201)), encode_fdb(LOCAL)))
        ctl._changed(ctl.view.delete(K.fdb("blue", FILE_MAC)))
        ctl._changed(ctl.view.put(K.fdb("red", _mac(1)), encode_fdb(_remote(1))))
        ctl._changed(ctl.view.put(K.neigh("blue", "192.168.0.4"), encode_neigh(_mac(44))))
        await _flush(ctl)
        assert sink.calls - calls == 2
        blue = _rows(dp, sink, "blue")
        assert blue[_mac(5)] == ("198.18.7.7", True) and _mac(200) not in blue and _mac(201) not in blue
        assert blue[FILE_MAC] == ("198.18.9.9", True) and len(blue) == 5_999
        assert len(_rows(dp, sink, "red")) == 2
        assert {r["ip"]: r["mac"] for r in sink.networks.neigh.rows("blue", 0.0) or []}["192.168.0.4"] == _mac(44)
        # a resynchronisation replaces the whole table: what vanished from the store goes
        kv.kvs = sorted(kv for kv in kv.kvs if not kv[0].startswith(K.fdb("blue", "02:00:00:00:01")))
        await ctl._read_all(SimpleNamespace(kv=kv))
        blue = _rows(dp, sink, "blue")
        assert len(blue) == 6_001 - 256 and blue[_mac(5)] == (_remote(5), True)
        net = sink.networks.get("blue")
        assert net is not None and net.static_fdb == len(blue)

    asyncio.run(scenario())


def test_c_backend_python_side_holds_no_object_per_etcd_entry() -> None:
    """The C side owns the store's entries: after a full read of 20,000 keys and 10,000 watch
    events, Python has grown by far fewer allocated blocks than entries (none is kept per
    entry; what remains is the daemon's fixed state and allocator noise)."""
    dp = c_backend()()
    sink, ctl = _Sink(dp), _control()
    ctl.sink = sink
    entries = 20_000
    kv = _Kv(_store(entries))

    async def scenario() -> int:
        await ctl._read_all(SimpleNamespace(kv=kv))     # warm-up: networks, code paths, caches
        for i in range(100):
            ctl._changed(ctl.view.put(K.fdb("blue", _mac(i)), encode_fdb("198.18.7.7")))
        await _flush(ctl)
        del kv.kvs[:]
        await ctl._read_all(SimpleNamespace(kv=kv))     # the store emptied: the tables too
        assert not _rows(dp, sink, "blue").keys() - {FILE_MAC}
        kv.kvs = sorted(_store(entries))        # the store's own copy, alive until the end
        events = [(K.fdb("blue", _mac(entries + i)), encode_fdb(_remote(i))) for i in range(entries // 2)]
        gc.collect()
        before = sys.getallocatedblocks()
        await ctl._read_all(SimpleNamespace(kv=kv))
        for key, value in events:
            ctl._changed(ctl.view.put(key, value))
        await _flush(ctl)
        gc.collect()
        grown = sys.getallocatedblocks() - before
        assert len(_rows(dp, sink, "blue")) == entries + entries // 2 + 1
        return grown

    grown = asyncio.run(scenario())
    assert grown < entries // 20, f"{grown} blocks still allocated for {entries * 3 // 2} entries"
