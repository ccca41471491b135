"""Static FDB entries, packed: what a config file or a control plane says a network holds.

A network with 1,000 or 100,000 static entries must not cost a Python object per entry for as
long as the daemon runs (the C fast path holds the real table). `FdbTable` keeps them as
    macs      6 bytes per entry, in the order given
    index     one array('I') slot per entry: which of `remotes` it points to
    remotes   the distinct remote addresses (a fleet has far fewer hosts than MACs)
and makes `FdbStatic` views only while someone iterates. Invariants: immutable; at most one
entry per MAC (the builder keeps the last one, as dict() would); equal tables compare equal
(also to a tuple of (mac, remote) pairs in the same order, which is what tests write).
`Dataplane.fdb_load` hands the three arrays to the fast path in one call.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = ["FdbStatic", "FdbTable", "FdbBuilder"]


class FdbStatic(NamedTuple):
    mac: str                        # lower-case aa:bb:cc:dd:ee:ff, unicast
    remote: str                     # underlay address, compressed text


def _mac_text(b: bytes) -> str:
    return b.hex(":")


class FdbTable:
    __slots__ = ("macs", "index", "remotes")

    def __init__(self, macs: bytes = b"", index: array[int] | None = None, remotes: tuple[str, ...] = ()) -> None:
        self.macs = bytes(macs)
        self.index = index if index is not None else array("I")
        self.remotes = tuple(remotes)
        if len(self.macs) != 6 * len(self.index) or max(self.index, default=-1) >= len(self.remotes):
            raise ValueError("FdbTable: macs, index and remotes do not fit together")

    def __contains__(self, mac: object) -> bool:
        """Whether 6-byte `mac` is in the table: a scan at C speed, no index kept beside it."""
        if not isinstance(mac, bytes) or len(mac) != 6:
            return False
        i = self.macs.find(mac)
        while i >= 0 and i % 6:
            i = self.macs.find(mac, i + 1)
        return i >= 0

    def __add__(self, other: "FdbTable") -> "FdbTable":
        """Both tables' entries, `other`'s after (so `other` wins where a MAC is in both)."""
        b = FdbBuilder()
        for t in (self, other):
            ids = [b.remote_id(r) for r in t.remotes]
            b.macs += t.macs
            b.index.extend(ids[i] for i in t.index)
        return b.table()

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> "FdbTable":
        """(mac text, remote text) pairs, already validated; a repeated MAC keeps its last remote."""
        last = dict(pairs)
        b = FdbBuilder()
        for mac, remote in last.items():
            b.add(bytes.fromhex(mac.replace(":", "")), remote)
        return b.table()

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[FdbStatic]:
        macs, index, remotes = self.macs, self.index, self.remotes
        for i in range(len(index)):
            yield FdbStatic(_mac_text(macs[6 * i:6 * i + 6]), remotes[index[i]])

    def __getitem__(self, i: int) -> FdbStatic:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return FdbStatic(_mac_text(self.macs[6 * i:6 * i + 6]), self.remotes[self.index[i]])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FdbTable):
            if self.macs != other.macs:
                return False
            if self.remotes == other.remotes:
                return self.index == other.index
            return all(self.remotes[a] == other.remotes[b] for a, b in zip(self.index, other.index))
        if isinstance(other, (tuple, list)):
            return len(other) == len(self) and all(tuple(a) == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.macs, len(self)))

    def __repr__(self) -> str:
        return f"FdbTable({len(self)} entries, {len(self.remotes)} remotes)"


class FdbBuilder:
    """Appends validated entries into the packed arrays (duplicates are the caller's business:
    the fast path keeps the last one)."""

    def __init__(self) -> None:
        self.macs = bytearray()
        self.index = array("I")
        self.remote_ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def remote_id(self, remote: str) -> int:
        rid = self.remote_ids.get(remote)
        if rid is None:
            rid = self.remote_ids[remote] = len(self.remote_ids)
        return rid

    def add(self, mac: bytes, remote: str) -> None:
        self.macs += mac
        self.index.append(self.remote_id(remote))

    def table(self) -> FdbTable:
        return FdbTable(bytes(self.macs), self.index, tuple(self.remote_ids))
