"""The one interface between the daemon and a control plane (static file or etcd store).

A control plane answers two questions, and tells the daemon when the answers change:
- which networks this host runs (`networks()`: name -> NetworkConfig), and
- what each of them should hold (`desired()`: name -> Desired: flood list, static FDB entries
  and the IP -> MAC neighbour entries ARP / ND suppression answers from).

Invariants:
- The daemon owns the data plane; a control plane never touches it. It calls back through
  `ControlSink`: `converge` when the set of networks (or a network's definition) changes,
  `apply` when only a network's Desired state changes. Both run on the daemon's event loop,
  never concurrently with a pump.
- `Desired.peers` is in a stable order (the file's for static, sorted for etcd) and never holds
  the network's own local address; `Desired.fdb` holds at most one entry per MAC and
  `Desired.neigh` at most one per IP address. `Desired.keys` (store-keyed encrypted networks)
  shows ids only in its repr. Equal inputs
  give equal Desired values, so the daemon's diff in `apply` does nothing when nothing changed.
- The etcd plane's own entries do not travel in Desired (which holds the file's): they go to
  the data plane through `update_entries`, batched, and no copy of them is kept in Python.
- Losing the source (the store is unreachable) never changes Desired: the data plane keeps
  forwarding on the last known state, and `health()` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Config, NetworkConfig
from ..core.fdbtable import FdbTable

if TYPE_CHECKING:
    from .etcd_keys import KeySet

__all__ = ["Desired", "ControlPlane", "ControlSink"]


@dataclass(frozen=True)
class Desired:
    peers: tuple[str, ...]
    fdb: FdbTable | tuple[tuple[str, str], ...]  # (mac, remote); the static file's come packed
    neigh: tuple[tuple[str, str], ...] = ()  # (overlay ip, mac): ARP / ND suppression table
    keys: KeySet | None = None  # an encrypted network keyed by the store: its keys and send id
                                # (None: not encrypted, or keys from its key file)


class ControlSink(Protocol):
    """What a control plane may ask of the daemon."""

    def converge(self, want: Mapping[str, NetworkConfig], desired: Mapping[str, Desired]) -> set[str]:
        """Run exactly the networks in `want` (start, stop, restart changed ones); names now running."""
        ...

    def apply(self, name: str, desired: Desired) -> None:
        """Bring running network `name` to `desired`."""
        ...

    def local_macs(self, name: str, now: float) -> list[tuple[str, float]]:
        """(mac, age) of the MACs recently seen leaving network `name`'s TAP ([] if not running)."""
        ...

    def update_entries(self, name: str, fdb: FdbTable, fdb_remove: bytes = b"",
                       neigh: Sequence[tuple[str, str]] = (), neigh_remove: Sequence[str] = (), *,
                       replace: bool = False) -> None:
        """A store's entries for running network `name`, straight into the data plane (no copy
        kept): `fdb` installed (static), the 6-byte MACs of `fdb_remove` removed, likewise the
        neighbour entries; with `replace` they are the store's whole set (a full read). The
        file's own entries (Desired) keep winning for a MAC or address both name."""
        ...

    def local_neigh(self, name: str, now: float) -> list[tuple[str, str, float]]:
        """(ip, mac, age) of network `name`'s local endpoints: addresses snooped on its TAP and
        those a front-end set whose MAC was seen leaving the TAP ([] if not running)."""
        ...

    def key_state(self, name: str) -> tuple[tuple[int, ...], int] | None:
        """(key ids installed in the data plane, id sent with) of encrypted network `name`;
        None if it is not running or not encrypted. What a member acknowledges in the store."""
        ...


class ControlPlane(Protocol):
    backend: str

    async def start(self, sink: ControlSink) -> None:
        """Begin; returns once the first state is known (or, for a store, a bounded wait ended)."""
        ...

    async def stop(self) -> None:
        """End: withdraw what this host published where that is possible, within a bounded time."""
        ...

    def networks(self) -> dict[str, NetworkConfig]: ...

    def desired(self) -> dict[str, Desired]: ...

    def update_config(self, config: Config) -> None:
        """A reloaded config file; the daemon converges on `networks()`/`desired()` next."""
        ...

    def health(self) -> dict[str, Any]:
        """JSON-able: {"backend", "connected", "last_sync", ...} for status and metrics."""
        ...

    async def ensure_keys(self, name: str) -> None:
        """Encrypted network `name` keyed by the store: make its first key unless it has one.
        Raises (its text for the user) where there is no store or it cannot be reached."""
        ...
