"""The neighbour room: each running network's ARP / ND suppression table and mode.

The networks owner (networks.py, `Networks.neigh`) attaches a network when it starts it and
detaches it when it stops it; the control plane's entries arrive through `apply` (the file's,
`Desired.neigh`) and `store_update` (a store's, etcd: straight to the data plane, no copy kept
here), and a front-end that knows endpoints' addresses (the Docker plugin) adds its own through
`set` / `delete` (daemon.networks.neigh).
Invariants:
- the data plane's static neighbour table of a network is the union of the file's entries, the
  store's and the API's; the file wins for an address two of them name (it is the operator's
  explicit word), then the store over the API. The one exception: an API `set` for an address
  the store holds, and no store event for it since, replaces the store's entry until the
  store's next word on that address (no copy of the store's entries is kept to know better);
- snooped entries live in the data plane only;
- suppression is on when the network says `suppress_arp = true`, off when it says false, and
  otherwise on exactly while the table has entries or snooping may fill it (on by default
  where the table has entries); `neigh_snoop` is applied as configured;
- only differences of the file's and the API's entries reach the data plane, so an unchanged
  `apply` costs a dict comparison; what is kept per entry is for those two (small) only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from collections.abc import Sequence
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
    shadowed: set[str] = field(default_factory=set)         # API addresses the store's entry holds
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

    def store_update(self, name: str, puts: Sequence[tuple[str, str]], removes: Sequence[str], *,
                     replace: bool = False) -> None:
        """A store's entries for running network `name`: (ip, mac) installed, addresses removed;
        with `replace`, `puts` is the store's whole set (the other statics not the file's or the
        API's go)."""
        n = self._nets[name]
        if replace:
            keep = {_norm(ip) for ip, _ in puts} | n.control.keys() | n.api.keys()
            removes = [r.ip for r in self.dp.neigh_dump(n.handle, 0.0) if r.static and r.ip not in keep]
            n.shadowed.clear()
        for ip in map(_norm, removes):
            if ip in n.control:
                continue
            if ip in n.api:
                self.dp.neigh_set(n.handle, ip, n.api[ip])      # the API's entry shows again
                n.shadowed.discard(ip)
            else:
                self.dp.neigh_remove(n.handle, ip)
        for ip, mac in ((_norm(ip), mac) for ip, mac in puts):
            if ip in n.control:
                continue
            if ip in n.api:
                n.shadowed.add(ip)
            self.dp.neigh_set(n.handle, ip, mac)
        self._mode(n)

    def local(self, name: str, now: float, macs: set[str]) -> list[tuple[str, str, float]]:
        """(ip, mac, age) of local endpoints: snooped entries, and API entries whose MAC is in
        `macs` (those seen leaving the TAP). Reads the table only where snooping or the API
        may have put such entries."""
        n = self._nets.get(name)
        if n is None or not (n.cfg.neigh_snoop or n.api):
            return []
        out = [(r.ip, r.mac, r.age) for r in self.dp.neigh_dump(n.handle, now) if not r.static]
        out += [(ip, mac, 0.0) for ip, mac in n.api.items()
                if mac in macs and ip not in n.control and ip not in n.shadowed]
        return out

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
        ip = _norm(ip)
        found = n.api.pop(ip, None) is not None
        if found and ip in n.shadowed:      # the store's entry stays
            n.shadowed.discard(ip)
            n.applied.pop(ip, None)
        elif found:
            self._sync(n)
        return found

    # --- views -------------------------------------------------------------------------
    def rows(self, name: str, now: float) -> list[dict[str, Any]] | None:
        """The network's table as the data plane holds it (snooped entries included)."""
        n = self._nets.get(name)
        if n is None:
            return None
        sources = {ip: "control" for ip in n.control} | {ip: "api" for ip in n.api
                                                          if ip not in n.control and ip not in n.shadowed}
        return [r._asdict() | {"source": sources.get(r.ip, "store" if r.static else "snooped")}
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
        want = {ip: mac for ip, mac in n.api.items() if ip not in n.shadowed} | n.control
        for ip in n.applied.keys() - want.keys():
            if ip in n.shadowed:
                continue        # an API entry the store's holds: the store's stays
            self.dp.neigh_remove(n.handle, ip)
        for ip, mac in want.items():
            if n.applied.get(ip) != mac:
                self.dp.neigh_set(n.handle, ip, mac)
        n.applied = want
        self._mode(n)

    def _mode(self, n: _Net) -> None:
        snoop = n.cfg.neigh_snoop
        if n.cfg.suppress_arp is not None:
            suppress = n.cfg.suppress_arp
        else:   # the table may hold the store's entries too: ask it (learned ones mean snoop)
            suppress = snoop or bool(n.applied) or self.dp.neigh_size(n.handle) > 0
        if n.mode != (suppress, snoop):
            self.dp.neigh_mode(n.handle, suppress=suppress, snoop=snoop)
            n.mode = (suppress, snoop)
