"""The daemon as the outside sees it: status line, snapshot, FDB rows, metric and offload views.

Invariants:
- Read-only: nothing here opens, closes or changes a network, an fd or a counter. The only
  state of its own is the previous sample `status_line` computes its rates against.
- Every read happens on the daemon's event loop, between two pump calls, so a snapshot never
  races a batch (the fast path's tables are not thread-safe).
- Front-ends read through this object only, each through the small Protocol it declares
  (rpc.StatusSource, metrics.MetricsSource); `View` satisfies both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import __version__
from .control import ControlPlane
from .datapath.offload import OffloadPlan, flag_names
from .fastpath import BACKEND
from .fastpath.api import Dataplane
from .networks import Networks

if TYPE_CHECKING:
    from .frontend import FrontEnd

__all__ = ["EndpointView", "NetworkView", "ReloadStats", "View", "show_addr"]


@dataclass(frozen=True)
class NetworkView:
    """What the collector needs to know about one running network besides its counters."""
    name: str
    handle: int
    vni: int
    encap: str
    tap: str
    tap_up: bool
    mtu: int
    max_fdb_entries: int
    static_fdb: int         # static entries the control plane installed


@dataclass(frozen=True)
class EndpointView:
    encap: str
    local: str
    port: int
    handle: int

    @property
    def label(self) -> str:
        """`vxlan://198.18.0.1:4789`, `gre://198.18.0.1`, `gre-udp://[2001:2::1]:4754`."""
        host = f"[{self.local}]" if ":" in self.local else self.local
        return f"{self.encap}://{host}" + (f":{self.port}" if self.encap != "gre" and self.port else "")


@dataclass
class ReloadStats:
    """Kept by the daemon's reload, shown by status and metrics."""
    reloads: int = 0
    failures: int = 0
    last_ok: bool = True


class View:
    def __init__(self, networks: Networks, offload: OffloadPlan, control: ControlPlane,
                 reload_stats: ReloadStats, front_ends: Sequence["FrontEnd"] = ()) -> None:
        self.networks = networks
        self.offload = offload
        self.control = control
        self.reload_stats = reload_stats
        self.front_ends = front_ends
        self.started = time.monotonic()
        self._sample: tuple[float, dict[str, int]] | None = None

    # --- what metrics.MetricsSource asks -----------------------------------------------------
    @property
    def dp(self) -> Dataplane:
        return self.networks.dp

    @property
    def reloads(self) -> int:
        return self.reload_stats.reloads

    @property
    def reload_failures(self) -> int:
        return self.reload_stats.failures

    @property
    def last_reload_ok(self) -> bool:
        return self.reload_stats.last_ok

    def metric_networks(self) -> list[NetworkView]:
        return [NetworkView(name, n.handle, n.cfg.vni, n.cfg.encap, n.cfg.tap, n.tap is not None, n.mtu,
                            n.cfg.max_fdb_entries, n.static_fdb)
                for name, n in self.networks.items()]

    def metric_endpoints(self) -> list[EndpointView]:
        return [EndpointView(k[0], k[1], k[2], e.handle) for k, e in self.networks.endpoints()]

    def poll_stats(self) -> tuple[str, list[dict[str, int]]]:
        """([daemon] poll, POLL_STATS by queue): what each pump thread did (datapath/poll.py)."""
        return self.networks.poll, self.networks.poll_stats()

    def offload_features(self) -> dict[str, bool]:
        """Feature -> in use now: the plan, less what the data path turned off at run time."""
        dp = self.dp
        f = self.offload.features()
        f["udp_segment"] = f["udp_segment"] and all(dp.tx_gso(v) for v in self.networks.tx_versions())
        taps = [(n.handle, n.tap) for _, n in self.networks.items() if n.tap is not None]
        if taps:
            f["vnet_hdr"] = f["vnet_hdr"] and all(tap.vnet_hdr for _, tap in taps)
            f["tap_gro"] = f["vnet_hdr"] and all(dp.tap_offload(h) for h, _ in taps)
        else:
            f["tap_gro"] = f["vnet_hdr"]
        return f

    # --- what rpc.StatusSource asks ----------------------------------------------------------
    def fdb_rows(self, name: str) -> list[dict[str, Any]] | None:
        """One network's forwarding entries, or None when there is no such network."""
        net = self.networks.get(name)
        if net is None:
            return None
        return [r._asdict() for r in self.dp.fdb_dump(net.handle, time.monotonic())]

    def summary(self) -> dict[str, Any]:
        """Per network, counts only (peers, FDB entries, static ones): cheap at 1,000 networks
        (the flood list's length is the one last handed to the data plane: reading the list
        back from C is a string per peer, 1,000,000 at 1,000 networks of 1,000 peers)."""
        dp = self.dp
        return {"control": self.control.health(),
                "networks": {name: {"peers": len(n.desired.peers), "fdb": dp.fdb_size(n.handle),
                                    "static_fdb": n.static_fdb} for name, n in self.networks.items()}}

    def lookup(self, items: list[Any]) -> list[Any]:
        """[network, "mac", MAC] -> the entry's remote (or None); [network, "peer", address]
        -> whether it is in the flood list; None where the network is not running."""
        out: list[Any] = []
        now = time.monotonic()
        peers: dict[str, set[str]] = {}
        for name, kind, what in items:
            net = self.networks.get(name)
            if net is None:
                out.append(None)
            elif kind == "mac":
                row = self.dp.fdb_get(net.handle, what, now)
                out.append(None if row is None else row.remote)
            else:
                if name not in peers:
                    peers[name] = set(self.dp.peers(net.handle))
                out.append(what in peers[name])
        return out

    def neigh_rows(self, name: str) -> list[dict[str, Any]] | None:
        """One network's ARP / ND suppression table, or None when there is no such network."""
        return self.networks.neigh.rows(name, time.monotonic())

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        dp = self.dp
        nets = {}
        for name, n in self.networks.items():
            nets[name] = {
                "vni": n.cfg.vni, "encap": n.cfg.encap, "port": n.cfg.port, "local": n.cfg.local,
                "tap": n.cfg.tap, "tap_up": n.tap is not None, "mtu": n.mtu,
                "peers": dp.peers(n.handle),
                "fdb": [r._asdict() for r in dp.fdb_dump(n.handle, now)],
                "counters": dp.counters(n.handle),
                # outer source of the last inner checksum completed (wire/csum.py), or None
                "csum_peer": dp.csum_peer(n.handle),
                "neigh": self.networks.neigh.status(name),
                # key ids only, never material
                "encryption": None if n.keys is None else {
                    "cipher": n.cfg.cipher, "key_ids": list(n.keys.keys), "send_key": n.keys.send_id},
            }
        eps = [{"encap": k[0], "local": k[1], "port": k[2], "networks": sorted(e.users),
                "sockets": len(e.fds),      # one per queue (SO_REUSEPORT); a raw GRE one: 1
                "counters": dp.endpoint_counters(e.handle)} for k, e in self.networks.endpoints()]
        snap = {"version": __version__, "backend": BACKEND, "pid": os.getpid(),
                "uptime": now - self.started, "batch": dp.batch, "queues": dp.queues, "reloads": self.reloads,
                "reload_failures": self.reload_failures, "last_reload_ok": self.last_reload_ok,
                "control": self.control.health(), "networks": nets, "endpoints": eps,
                "offload": self.offload_status()}
        mode, queues = self.poll_stats()
        snap["poll"] = {"mode": mode, "queues": queues}
        for fe in self.front_ends:
            snap.update(fe.status())
        return snap

    def offload_status(self) -> dict[str, Any]:
        """The plan, what is on now (runtime fallbacks included) and the offload counters."""
        dp = self.dp
        nets = {name: {"vnet_hdr": bool(n.tap and n.tap.vnet_hdr),
                       "granted": flag_names(n.tap.offload if n.tap else 0),
                       "coalescing": flag_names(dp.tap_offload(n.handle))}
                for name, n in self.networks.items()}
        return {"plan": self.offload.as_dict(), "enabled": self.offload_features(), "networks": nets,
                "stats": dp.offload_stats()}

    # --- systemd's STATUS= ---------------------------------------------------------------------
    def status_line(self) -> str:
        """One line for systemd's STATUS=: networks, and rates since the previous call."""
        now = time.monotonic()
        dp = self.dp
        tot = dict.fromkeys(("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "drops"), 0)
        down = 0
        for _, n in self.networks.items():
            c = dp.counters(n.handle)
            for k in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes"):
                tot[k] += c.get(k, 0)
            tot["drops"] += sum(v for k, v in c.items() if k.startswith("drop_"))
            down += n.tap is None
        for _, e in self.networks.endpoints():
            tot["drops"] += sum(v for k, v in dp.endpoint_counters(e.handle).items() if k.startswith("drop_"))
        text = f"{len(self.networks)} networks" + (f" ({down} TAP down)" if down else "")
        prev, self._sample = self._sample, (now, tot)
        if prev is None or now - prev[0] < 0.5:
            return f"{text}, {tot['tx_packets']} tx / {tot['rx_packets']} rx packets"

        def rate(k: str) -> float:
            assert prev is not None
            return max(0, tot[k] - prev[1].get(k, 0)) / (now - prev[0])
        return (f"{text}; tx {_si(rate('tx_packets'))}pkt/s {_si(rate('tx_bytes') * 8)}bit/s; "
                f"rx {_si(rate('rx_packets'))}pkt/s {_si(rate('rx_bytes') * 8)}bit/s; "
                f"drops {_si(rate('drops'))}/s")


def show_addr(addr: tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _si(x: float) -> str:
    """1234567 -> '1.23M': rates in a status line."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"
