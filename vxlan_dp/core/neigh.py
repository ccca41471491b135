"""Neighbour table of one network: IP address -> MAC, for ARP / ND suppression.

I/O-free, time passed in as `now`. The same semantics as csrc/neigh.c:
- an address is 4 (IPv4) or 16 (IPv6) packed bytes; the two families never collide;
- a static entry (config, control plane, Docker) is never aged and never changed by
  snooping, only replaced or removed;
- a learned entry (snooped from an ARP reply / gratuitous ARP / NA leaving a local TAP) is
  refreshed by every announcement, follows a MAC move, and is forgotten `ageing` seconds
  after it was last announced;
- at most `max_learned` learned entries: more are refused (counted `snoop_full`), so a flood
  of spoofed announcements cannot grow memory. Statics always fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["NEIGH_COUNTERS", "NeighTable", "NeighEntry", "LEARN_NEW", "LEARN_MOVED",
           "LEARN_REFRESHED", "LEARN_STATIC", "LEARN_FULL"]

LEARN_NEW, LEARN_MOVED, LEARN_REFRESHED, LEARN_STATIC, LEARN_FULL = range(5)

# struct vxdp_neigh_counters (csrc/neigh.h), in order
NEIGH_COUNTERS = (
    "arp_suppressed",   # ARP requests answered here instead of flooded
    "nd_suppressed",    # IPv6 neighbour solicitations answered here instead of flooded
    "replies_sent",     # ARP replies / NAs written to the TAP
    "reply_errors",     # ... that the TAP refused (the request is still not flooded)
    "unknown_flooded",  # requests for an address not in the table: flooded as before
    "snooped",          # announcements that added or moved a learned entry
    "snoop_full",       # announcements refused: max_learned learned entries already
    "aged",             # learned entries forgotten by ageing
)


class NeighEntry(NamedTuple):
    ip: bytes
    mac: bytes
    static: bool
    age: float          # seconds since last announced (0 for static)


@dataclass
class _Slot:
    mac: bytes
    static: bool
    seen: float


class NeighTable:
    def __init__(self, ageing: float = 300.0, max_learned: int = 4096) -> None:
        if ageing <= 0 or max_learned < 0:
            raise ValueError("ageing must be positive and max_learned not negative")
        self.ageing = ageing
        self.max_learned = max_learned
        self._t: dict[bytes, _Slot] = {}
        self._learned = 0

    def __len__(self) -> int:
        return len(self._t)

    def lookup(self, ip: bytes) -> bytes | None:
        s = self._t.get(ip)
        return s.mac if s is not None else None

    def set_static(self, ip: bytes, mac: bytes) -> None:
        s = self._t.get(ip)
        if s is not None and not s.static:
            self._learned -= 1
        self._t[ip] = _Slot(mac, True, 0.0)

    def remove(self, ip: bytes) -> bool:
        s = self._t.pop(ip, None)
        if s is not None and not s.static:
            self._learned -= 1
        return s is not None

    def learn(self, ip: bytes, mac: bytes, now: float) -> int:
        s = self._t.get(ip)
        if s is None:
            if self._learned >= self.max_learned:
                return LEARN_FULL
            self._t[ip] = _Slot(mac, False, now)
            self._learned += 1
            return LEARN_NEW
        if s.static:
            return LEARN_STATIC
        s.seen = now
        if s.mac != mac:
            s.mac = mac
            return LEARN_MOVED
        return LEARN_REFRESHED

    def age(self, now: float) -> int:
        old = [ip for ip, s in self._t.items() if not s.static and now - s.seen >= self.ageing]
        for ip in old:
            del self._t[ip]
        self._learned -= len(old)
        return len(old)

    def entries(self, now: float) -> list[NeighEntry]:
        """Every entry, IPv4 before IPv6, each family by address."""
        return [NeighEntry(ip, s.mac, s.static, 0.0 if s.static else max(0.0, now - s.seen))
                for ip, s in sorted(self._t.items(), key=lambda kv: (len(kv[0]), kv[0]))]
