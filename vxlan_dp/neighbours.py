"""The neighbour room: each running network's ARP / ND suppression table and mode.

The networks owner (networks.py, `Networks.neigh`) attaches a network when it starts it and
detaches it when it stops it; the control plane's entries (static file or etcd,
`Desired.neigh`) arrive through `apply`, and a front-end that knows endpoints' addresses (the
Docker plugin) adds its own through `set` / `delete` (daemon.networks.neigh).
Invariants:
- the data plane's static neighbour table of a network is exactly the union of the control
  plane's entries and the API's, the control plane winning for an address both name (the file
  or store is the operator's explicit word); snooped entries live in the data plane only;
- suppression is on when the network says `suppress_arp = true`, off when it says false, and
  otherwise on exactly while the table has entries or snooping may fill it (on by default
  where the table has entries); `neigh_snoop` is applied as configured;
- only differences reach the data plane, so an unchanged `apply` costs a dict comparison.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .config import NetworkConfig
from .fastpath.api import Dataplane, check_neigh_entry

__all__ = ["Neighbours"]


@dataclass
class _Net:
    handle: int
    cfg: NetworkConfig
    control: dict[str, str] = field(default_factory=dict)   # ip -> mac, from the control plane
    api: dict[str, str] = field(default_factory=dict)       # ip -> mac, from set()
    applied: dict[str, str] = field(default_factory=dict)   # what the data plane holds (statics)
    mode: tuple[bool, bool] | None = None                   # (suppress, snoop) applied


def _norm(ip: str) -> str:
    return ipaddress.ip_address(ip).compressed


class Neighbours:
    def __init__(self, dp: Dataplane) -> None:
        self.dp = dp
        self._nets: dict[str, _Net] = {}

    # --- the daemon's side ---------------------------------------------------------------
    def attach(self, name: str, handle: int, cfg: NetworkConfig) -> None:
        self._nets[name] = _Net(handle, cfg)

    def detach(self, name: str) -> None:
        self._nets.pop(name, None)

    def apply(self, name: str, cfg: NetworkConfig, entries: tuple[tuple[str, str], ...]) -> None:
        """The control plane's entries for running network `name` (its config may have changed)."""
        n = self._nets[name]
        n.cfg = cfg
        n.control = {_norm(ip): mac for ip, mac in entries}
        self._sync(n)

    # --- the API (Docker plugin and other front-ends) -----------------------------------
    def set(self, name: str, ip: str, mac: str) -> None:
        """Add or replace an entry of network `name`; KeyError if it is not running,
        ValueError naming what is wrong with the address or MAC."""
        n = self._nets[name]
        check_neigh_entry(ip, mac)
        n.api[_norm(ip)] = mac.lower()
        self._sync(n)

    def delete(self, name: str, ip: str) -> bool:
        """Remove an entry set through the API; False if there was none."""
        n = self._nets[name]
        found = n.api.pop(_norm(ip), None) is not None
        if found:
            self._sync(n)
        return found

    # --- views -------------------------------------------------------------------------
    def rows(self, name: str, now: float) -> list[dict[str, Any]] | None:
        """The network's table as the data plane holds it (snooped entries included)."""
        n = self._nets.get(name)
        if n is None:
            return None
        sources = {ip: "control" for ip in n.control} | {ip: "api" for ip in n.api if ip not in n.control}
        return [r._asdict() | {"source": sources.get(r.ip, "static" if r.static else "snooped")}
                for r in self.dp.neigh_dump(n.handle, now)]

    def status(self, name: str) -> dict[str, Any]:
        n = self._nets[name]
        suppress, snoop = n.mode or (False, False)
        return {"suppress_arp": suppress, "snoop": snoop, "entries": self.dp.neigh_size(n.handle),
                "counters": self.dp.neigh_counters(n.handle)}

    def counters(self, name: str) -> dict[str, int]:
        return self.dp.neigh_counters(self._nets[name].handle)

    # --- applying ------------------------------------------------------------------------
    def _sync(self, n: _Net) -> None:
        want = n.api | n.control
        for ip in n.applied.keys() - want.keys():
            self.dp.neigh_remove(n.handle, ip)
        for ip, mac in want.items():
            if n.applied.get(ip) != mac:
                self.dp.neigh_set(n.handle, ip, mac)
        n.applied = want
        snoop = n.cfg.neigh_snoop
        suppress = n.cfg.suppress_arp if n.cfg.suppress_arp is not None else bool(want) or snoop
        if n.mode != (suppress, snoop):
            self.dp.neigh_mode(n.handle, suppress=suppress, snoop=snoop)
            n.mode = (suppress, snoop)
