"""Forwarding database of one network: inner MAC -> remote underlay address.

I/O-free, time passed in as `now` (seconds, any monotonic origin). Invariants:
- a static entry is never aged, never moved by learning, only removed explicitly;
- a learned entry is refreshed by every frame from its MAC and moves with it to a new remote;
- a learned entry older than `ageing` seconds is removed by `age(now)`;
- at most `max_entries` entries: learning beyond that is refused (counted by the caller), so
  a flood of spoofed source MACs cannot grow memory without bound; static entries always fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Fdb", "FdbEntry", "LEARN_NEW", "LEARN_MOVED", "LEARN_REFRESHED", "LEARN_STATIC",
           "LEARN_FULL"]

LEARN_NEW, LEARN_MOVED, LEARN_REFRESHED, LEARN_STATIC, LEARN_FULL = range(5)


class FdbEntry(NamedTuple):
    mac: bytes
    remote: str
    static: bool
    age: float  # seconds since last seen (0 for static)


@dataclass
class _Slot:
    remote: str
    static: bool
    seen: float


class Fdb:
    def __init__(self, ageing: float = 300.0, max_entries: int = 65536) -> None:
        if ageing <= 0 or max_entries <= 0:
            raise ValueError("ageing and max_entries must be positive")
        self.ageing = ageing
        self.max_entries = max_entries
        self._t: dict[bytes, _Slot] = {}

    def __len__(self) -> int:
        return len(self._t)

    def lookup(self, mac: bytes) -> str | None:
        s = self._t.get(mac)
        return s.remote if s is not None else None

    def learn(self, mac: bytes, remote: str, now: float) -> int:
        s = self._t.get(mac)
        if s is None:
            if len(self._t) >= self.max_entries:
                return LEARN_FULL
            self._t[mac] = _Slot(remote, False, now)
            return LEARN_NEW
        if s.static:
            return LEARN_STATIC
        s.seen = now
        if s.remote != remote:
            s.remote = remote
            return LEARN_MOVED
        return LEARN_REFRESHED

    def add_static(self, mac: bytes, remote: str) -> None:
        self._t[mac] = _Slot(remote, True, 0.0)

    def statics(self) -> int:
        return sum(s.static for s in self._t.values())

    def keep_static(self, keep: set[bytes]) -> None:
        """Remove every static entry whose MAC is not in `keep` (learned entries stay)."""
        for m in [m for m, s in self._t.items() if s.static and m not in keep]:
            del self._t[m]

    def remove(self, mac: bytes) -> bool:
        return self._t.pop(mac, None) is not None

    def age(self, now: float) -> list[bytes]:
        dead = [m for m, s in self._t.items() if not s.static and now - s.seen >= self.ageing]
        for m in dead:
            del self._t[m]
        return dead

    def entries(self, now: float) -> list[FdbEntry]:
        return sorted(FdbEntry(m, s.remote, s.static, 0.0 if s.static else max(0.0, now - s.seen))
                      for m, s in self._t.items())
