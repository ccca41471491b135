"""The networks' owner: every fd of the data plane, who opens it and who closes it.

Invariants:
- `Networks` opens and closes every data-plane fd: the TAPs, the receive sockets (endpoints)
  and the egress sockets (one per IP version). The fastpath `Dataplane` only borrows them (it
  is told of each fd after it is open and before it is closed) and the pumps only watch them
  (`Pumps`, datapath/poll.py: an fd is added right after the open and removed right before
  the close; with the C backend a thread of their own waits on them, in C).
- A receive endpoint is shared by every network with the same (encap, local, port) and is
  closed with the last of them (`Endpoint.users` is its reference count by network name).
  Egress sockets live until `close()`.
- A TAP deleted under the running daemon is noticed by its pump (a negative errno), logged
  once, and re-created every second until it is back; the other networks never stop, and
  while it is away the Dataplane holds fd -1 for it (every queue's).
- Queues (`[daemon] queues` = N): every TAP is opened with N queues and every UDP endpoint
  with N sockets sharing the port (SO_REUSEPORT: the kernel spreads datagrams over them by
  flow); queue q's fds go to the Dataplane's queue q and to pump q. A raw GRE endpoint keeps
  one socket (each raw socket would see every packet), served by queue 0.
- Only this class changes a `Network` or `Endpoint`, on the event loop; the view (view.py)
  reads them there too. A TAP failure seen by a pump thread reaches `_tap_lost` on the loop.
- `converge` runs exactly the networks asked for; one network that cannot start is logged
  and skipped, never a reason to stop the others. `start` either brings a network fully up or
  leaves nothing behind (no fd, no Dataplane handle, no endpoint reference).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .config import NetworkConfig
from .control import Desired
from .core.fdbtable import FdbBuilder, FdbTable
from .datapath.offload import OffloadPlan
from .datapath.poll import Pumps, ThreadPumps, make_pumps
from .datapath.tap import Tap
from .datapath.underlay import gro_enabled, open_endpoints, open_tx_socket, underlay_mtu
from .fastpath.api import POLL_STATS, Dataplane
from .control.etcd_keys import KeySet
from .core.keys import KeyFileError, KeyRing, load_key_file, new_boot_id
from .neighbours import Neighbours
from .wire import encap_overhead
from .wire.esp import ESP_EXTRA

__all__ = ["Endpoint", "EndpointKey", "Network", "Networks", "derive_mtu", "DEFAULT_UNDERLAY_MTU"]

log = logging.getLogger("vxlan_dp")

DEFAULT_UNDERLAY_MTU = 1500
TAP_RETRY = 1.0  # seconds between attempts to re-create a vanished TAP

EndpointKey = tuple[str, str, int]  # (encap, local address, port)


def derive_mtu(net: NetworkConfig, underlay: int | None) -> int:
    """TAP MTU: underlay MTU minus outer IP, encapsulation and inner Ethernet (docs/ARCHITECTURE.md),
    and for an encrypted network the most ESP in UDP adds (wire/esp.py ESP_EXTRA)."""
    esp = ESP_EXTRA if net.encrypt else 0
    return (underlay or DEFAULT_UNDERLAY_MTU) - encap_overhead(net.encap, net.ipv6) - 14 - esp


@dataclass
class Endpoint:
    sock: socket.socket
    handle: int
    users: set[str] = field(default_factory=set)
    queue_socks: list[socket.socket] = field(default_factory=list)     # queues 1..

    @property
    def fds(self) -> list[int]:
        return [self.sock.fileno(), *(s.fileno() for s in self.queue_socks)]


@dataclass
class Network:
    cfg: NetworkConfig
    handle: int
    tap: Tap | None          # None while a vanished TAP is being re-created
    mtu: int
    ep_key: EndpointKey
    desired: Desired
    recovering: asyncio.Task[None] | None = None
    keys: KeyRing | None = None     # encrypted network: key ids only are kept here
    boot_id: int = 0
    key_seen: dict[int, float] = field(default_factory=dict)   # key id -> when first installed
    static_fdb: int = 0             # static FDB entries in the data plane (file's and store's)


class Networks:
    """The running networks, their endpoints and egress sockets, on the running event loop."""

    def __init__(self, dp: Dataplane, offload: OffloadPlan, *, poll: str = "adaptive", poll_spin_us: int = 300,
                 queues: int = 1) -> None:
        self.dp = dp
        self.offload = offload
        self.poll, self.poll_spin_us = poll, poll_spin_us
        self.queues = queues
        if dp.queues < queues:
            dp.set_queues(queues)
        self._pumps: Pumps | None = None
        self._nets: dict[str, Network] = {}
        self._endpoints: dict[EndpointKey, Endpoint] = {}
        self._tx: dict[int, socket.socket] = {}
        self.neigh = Neighbours(dp)     # ARP / ND suppression tables; set/delete for front-ends
        self._boots: set[int] = set()

    # --- reading (the view) -----------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._nets

    def __len__(self) -> int:
        return len(self._nets)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._nets))

    def get(self, name: str) -> Network | None:
        return self._nets.get(name)

    def items(self) -> list[tuple[str, Network]]:
        return list(self._nets.items())

    def endpoints(self) -> list[tuple[EndpointKey, Endpoint]]:
        return list(self._endpoints.items())

    def tx_versions(self) -> list[int]:
        """IP versions with an egress socket open."""
        return list(self._tx)

    # --- steering (the daemon, for the control plane) ---------------------------------------
    def converge(self, want: Mapping[str, NetworkConfig], desired: Mapping[str, Desired]) -> set[str]:
        """Run exactly the networks in `want`: stop the others, (re)start changed ones, apply the rest."""
        for name in self._nets.keys() - want.keys():
            self.stop(name)
        starting = []
        for name, cfg in want.items():
            net = self._nets.get(name)
            if net is not None:
                if _same_but_control(net.cfg, cfg):
                    net.cfg = cfg
                    self.apply(name, desired[name])
                    continue
                self.stop(name)
            starting.append((cfg, desired[name]))
        self.start_many(starting)
        return set(self._nets)

    def start_many(self, items: list[tuple[NetworkConfig, Desired]], *, strict: bool = False) -> None:
        """`start` for many networks, their TAPs opened in one batch (Tap.open_many). A network
        that cannot start is logged and skipped, or with `strict` raises after closing the
        TAPs opened for the ones not started yet (those started stay, for the caller's close)."""
        if not items:
            return      # Tap.open_many would still dump every link (2,000 of them at 1,000 networks)
        under: dict[str, int | None] = {}
        mtus = [self._mtu(cfg, under) for cfg, _ in items]
        taps = Tap.open_many([(cfg.tap, mtu, cfg.bridge) for (cfg, _), mtu in zip(items, mtus)],
                             offload=self._tap_offload(), queues=self.queues)
        for k, ((cfg, desired), mtu, tap) in enumerate(zip(items, mtus, taps)):
            try:
                if isinstance(tap, Exception):
                    raise tap
                self.start(cfg, desired, tap=tap, mtu=mtu)
            except Exception as e:
                if strict:
                    for rest in taps[k + 1:]:
                        if isinstance(rest, Tap):
                            rest.close()
                    raise
                log.error("network %s: cannot start: %s", cfg.name, e)

    def _mtu(self, cfg: NetworkConfig, under_cache: dict[str, int | None] | None = None) -> int:
        """The TAP MTU: configured, or derived from the underlay (warnings said here, once)."""
        if under_cache is not None and cfg.local in under_cache:
            under = under_cache[cfg.local]
        else:
            under = underlay_mtu(cfg.local)
            if under_cache is not None:
                under_cache[cfg.local] = under
        if under is None:
            log.warning("network %s: %s is not an address of this host (yet); assuming underlay MTU %d",
                        cfg.name, cfg.local, DEFAULT_UNDERLAY_MTU)
        if cfg.mtu and under and cfg.mtu > derive_mtu(cfg, under):
            log.warning("network %s: mtu %d exceeds what underlay MTU %d carries (%d); large frames will be dropped "
                        "by the underlay", cfg.name, cfg.mtu, under, derive_mtu(cfg, under))
        return cfg.mtu or derive_mtu(cfg, under)

    def start(self, cfg: NetworkConfig, desired: Desired, *, tap: Tap | None = None, mtu: int | None = None) -> None:
        """Open the network's TAP (unless `tap` is one opened for it, at `mtu`) and its endpoint
        and egress socket if not open yet; raise with nothing left behind when that fails."""
        loop = asyncio.get_running_loop()
        if mtu is None:
            mtu = self._mtu(cfg)
        try:
            self._tx_socket(6 if cfg.ipv6 else 4)
            key, ep = self._endpoint(cfg, loop)
        except Exception:
            if tap is not None:
                tap.close()
            raise
        handle: int | None = None
        net: Network | None = None
        try:
            if tap is None:
                tap = Tap.open(cfg.tap, mtu, cfg.bridge, offload=self._tap_offload(), queues=self.queues)
            handle = self.dp.add_network(cfg.params(mtu), ep.handle, tap.fd, vnet_hdr=tap.vnet_hdr,
                                         offload=tap.offload)
            for q, fd in enumerate(tap.queue_fds, 1):
                try:
                    self.dp.set_tap_queue(handle, q, fd)
                except OSError as e:
                    raise OSError(e.errno, f"TAP {cfg.tap} queue {q}: the fast path refused its fd "
                                           f"({e.strerror})") from e
            ring = None
            if cfg.encrypt:     # before any reader: an encrypted network never sends in the clear
                ring = KeyRing()
                self._install_keys(cfg, handle, ring, boot := self._boot_id(), {}, store=desired.keys)
            ep.users.add(cfg.name)
            # the keys are installed already (above): apply must not install them again
            net = self._nets[cfg.name] = Network(cfg, handle, tap, mtu, key, Desired((), (), (), desired.keys))
            self.neigh.attach(cfg.name, handle, cfg)
            if ring is not None:
                net.keys, net.boot_id = ring, boot
                net.key_seen = {kid: time.monotonic() for kid in ring.keys}
            self.apply(cfg.name, desired)
            self._watch_tap(net, tap)
        except Exception:
            self._undo_start(cfg, key, tap, handle, net, loop)
            raise
        log.info("network %s up: vni %d %s tap %s mtu %d peers %d", cfg.name, cfg.vni, cfg.encap, cfg.tap,
                 mtu, len(desired.peers))

    def _undo_start(self, cfg: NetworkConfig, key: EndpointKey, tap: Tap | None, handle: int | None,
                    net: Network | None, loop: asyncio.AbstractEventLoop) -> None:
        """Take back what a failed `start` did, in `stop`'s order, so that the network can be
        started again: out of the pumps, the Dataplane (its fds still open), then the TAP closed
        and the endpoint released if no other network has it. Each step runs whatever the one
        before it did; a step that fails is logged (the caller raises the start's own error)."""
        def step(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - undo the rest regardless
                log.error("network %s: undoing a failed start: %s: %s", cfg.name, what, e)

        if net is not None and self._nets.get(cfg.name) is net:
            del self._nets[cfg.name]
            self.neigh.detach(cfg.name)
        if handle is not None:
            if tap is not None:
                step("taking the TAP out of the pumps", lambda: self.pumps.remove_tap(handle, tap.fds))
            step("removing the network from the fast path", lambda: self.dp.remove_network(handle))
        if tap is not None:
            step(f"removing TAP {cfg.tap}", tap.close)
        self._endpoints[key].users.add(cfg.name)
        step("releasing the endpoint", lambda: self._release_endpoint(key, cfg.name, loop))

    def stop(self, name: str, *, closing: list[Tap] | None = None) -> None:
        """Stop network `name`; its TAP is closed here, or appended to `closing` for the
        caller to close with others (Tap.close_many)."""
        loop = asyncio.get_running_loop()
        net = self._nets.pop(name)
        if net.recovering:
            net.recovering.cancel()
        if net.tap is not None and net.tap.fd >= 0:
            self.pumps.remove_tap(net.handle, net.tap.fds)
        self.neigh.detach(name)
        # before the TAP's fds close: until then a pump thread writes the network's frames from
        # the overlay to them, and a number closed first can be another file's by then
        self.dp.remove_network(net.handle)
        if net.tap is not None:
            if closing is None:
                net.tap.close()
            else:
                closing.append(net.tap)
        self._release_endpoint(net.ep_key, name, loop)
        log.info("network %s removed", name)

    def apply(self, name: str, desired: Desired) -> None:
        """Bring a network's peers, static FDB and neighbour entries to `desired` (control plane output)."""
        net = self._nets[name]
        if desired.peers != net.desired.peers:
            self.dp.set_peers(net.handle, desired.peers)
        if desired.fdb == net.desired.fdb:
            pass
        elif not len(net.desired.fdb) and isinstance(desired.fdb, FdbTable):
            self.dp.fdb_load(net.handle, desired.fdb)   # a new network: the whole table, one call
            net.static_fdb = self.dp.fdb_statics(net.handle)
        else:
            old, new = dict(net.desired.fdb), dict(desired.fdb)
            for mac in old.keys() - new.keys():
                self.dp.fdb_remove(net.handle, mac)
            for mac, remote in new.items():
                if old.get(mac) != remote:
                    self.dp.fdb_add(net.handle, mac, remote)
            net.static_fdb = self.dp.fdb_statics(net.handle)
        self.neigh.apply(name, net.cfg, desired.neigh)
        if net.keys is not None and net.cfg.key_file is None and desired.keys != net.desired.keys:
            try:
                self._install_keys(net.cfg, net.handle, net.keys, net.boot_id, net.key_seen, store=desired.keys)
            except Exception as e:  # noqa: BLE001 - the installed keys stay; the next change retries
                log.error("network %s: keys from the store not installed: %s", name, e)
        net.desired = desired

    def update_entries(self, name: str, fdb: FdbTable, fdb_remove: bytes = b"",
                       neigh: Sequence[tuple[str, str]] = (), neigh_remove: Sequence[str] = (), *,
                       replace: bool = False) -> None:
        """A store's entries (control.ControlSink.update_entries): one fast-path call for the FDB
        part; the file's entries (`desired`) win for a MAC both name."""
        net = self._nets[name]
        file = net.desired.fdb
        if not isinstance(file, FdbTable):
            file = FdbTable.from_pairs(file)
        if replace:
            fdb = fdb + file                    # the file's last: the fast path keeps the last one
        elif len(file):
            kept = FdbBuilder()
            for e in fdb:
                if (raw := bytes.fromhex(e.mac.replace(":", ""))) not in file:
                    kept.add(raw, e.remote)
            fdb = kept.table()
            fdb_remove = b"".join(fdb_remove[i:i + 6] for i in range(0, len(fdb_remove), 6)
                                  if fdb_remove[i:i + 6] not in file)
        if replace or len(fdb) or fdb_remove:
            net.static_fdb = self.dp.fdb_update(net.handle, fdb, fdb_remove, replace=replace)
        if replace or neigh or neigh_remove:
            self.neigh.store_update(name, neigh, neigh_remove, replace=replace)

    # --- keys of encrypted networks (key management front-ends steer through these) -------
    def reload_keys(self) -> None:
        """Re-read every encrypted network's key file (SIGHUP); a file that cannot be used
        leaves that network's keys as they were, and says why (never the keys)."""
        for name, net in self._nets.items():
            if net.keys is None or net.cfg.key_file is None:    # none, or from the store
                continue
            try:
                self._install_keys(net.cfg, net.handle, net.keys, net.boot_id, net.key_seen)
            except Exception as e:  # noqa: BLE001 - one bad key file must not stop the others
                log.error("network %s: keys not reloaded: %s", name, e)

    def rekey_due(self, now: float) -> None:
        """Senders move to the newest key once it has been installed `rekey_delay` seconds:
        the time for the same key to reach every peer, so rotation loses nothing."""
        for net in self._nets.values():
            ring = net.keys
            if ring is None or ring.send_id == ring.newest() or net.cfg.key_file is None:
                continue    # with store keys, acknowledgements decide (apply)
            if now - net.key_seen.get(ring.newest(), now) >= net.cfg.rekey_delay:
                self._install_keys(net.cfg, net.handle, ring, net.boot_id, net.key_seen, now=now)

    def key_state(self, name: str) -> tuple[tuple[int, ...], int] | None:
        """(installed key ids, send id) of encrypted network `name`, or None."""
        net = self._nets.get(name)
        if net is None or net.keys is None:
            return None
        return tuple(net.keys.keys), net.keys.send_id

    def _install_keys(self, cfg: NetworkConfig, handle: int, ring: KeyRing, boot: int,
                      seen: dict[int, float], *, now: float | None = None, store: KeySet | None = None) -> None:
        """Install the network's keys: from its key file, or with no key file from the control
        plane (`store`, whose acknowledgements also choose the send key)."""
        if cfg.key_file is None:
            if store is None or not store.ids:
                raise KeyFileError(f"network {cfg.name}: no key in the store yet "
                                   f"(`vxlan-dp keys rotate {cfg.name}` puts the first)")
            keys = store.material()
        else:
            keys = load_key_file(cfg.key_file, f"network {cfg.name}: key_file")
        try:
            now = time.monotonic() if now is None else now
            for kid in keys:
                seen.setdefault(kid, now)
            for kid in list(seen):
                if kid not in keys:
                    del seen[kid]
            newest = next(reversed(keys))
            if store is not None:
                send = store.send if store.send in keys else newest
            elif not ring.keys or len(keys) == 1:
                send = newest       # first start, or a single key: nothing else to use
            elif now - seen[newest] >= cfg.rekey_delay:
                send = newest
            elif ring.send_id in keys:
                send = ring.send_id
            else:
                send = newest       # the key in use went: the newest is all there is
            self.dp.set_esp(handle, cfg.cipher, {k: bytes(v) for k, v in keys.items()}, send, boot)
            changed = send != ring.send_id or set(keys) != set(ring.keys)
            ring.install({k: bytearray(32) for k in keys})  # ids and order only: no material here
            ring.send_id = send
            if changed:
                log.info("network %s: keys %s installed, sending with key %d", cfg.name,
                         " ".join(str(k) for k in keys), send)
        finally:
            for k in keys.values():
                k[:] = bytes(len(k))

    def _boot_id(self) -> int:
        """A random 24-bit boot id per network start, never one this process used before."""
        while True:
            b = new_boot_id()
            if b not in self._boots:
                self._boots.add(b)
                return b

    def local_macs(self, name: str, now: float) -> list[tuple[str, float]]:
        """(mac, age) seen leaving network `name`'s TAP, for the control plane to publish."""
        net = self._nets.get(name)
        return [] if net is None else self.dp.local_macs(net.handle, now)

    def local_neigh(self, name: str, now: float) -> list[tuple[str, str, float]]:
        """(ip, mac, age) of network `name`'s local endpoints, for the control plane to publish."""
        net = self._nets.get(name)
        if net is None:
            return []
        return self.neigh.local(name, now, {m for m, _ in self.dp.local_macs(net.handle, now)})

    def close(self) -> None:
        """Stop every network and close the egress sockets: after this no fd of ours is open."""
        taps: list[Tap] = []
        for name in list(self._nets):
            try:
                self.stop(name, closing=taps)
            except Exception as e:  # noqa: BLE001 - tear down the rest regardless
                log.error("network %s: teardown: %s", name, e)
        try:
            Tap.close_many(taps)        # the data plane no longer holds any of these fds
        except Exception as e:  # noqa: BLE001 - the exit path goes on
            log.error("removing the TAPs: %s", e)
        if self._pumps is not None:
            self._pumps.stop()
            self._pumps = None
        for sock in self._tx.values():
            sock.close()
        self._tx.clear()

    # --- fds --------------------------------------------------------------------------------
    def _endpoint(self, net: NetworkConfig, loop: asyncio.AbstractEventLoop) -> tuple[EndpointKey, Endpoint]:
        key = (net.encap, net.local, net.port)
        ep = self._endpoints.get(key)
        if ep is None:
            n = 1 if net.encap == "gre" else self.queues
            socks = open_endpoints(net.encap, net.local, net.port, n, gro=self.offload.rx_gro)
            ipv4_header = net.encap == "gre" and not net.ipv6
            try:
                handle = self.dp.add_endpoint(net.encap, socks[0].fileno(), ipv4_header=ipv4_header,
                                              gro=gro_enabled(socks[0]))
                for q, sock in enumerate(socks[1:], 1):
                    self.dp.set_endpoint_queue(handle, q, sock.fileno())
            except Exception:
                for sock in socks:
                    sock.close()
                raise
            ep = self._endpoints[key] = Endpoint(socks[0], handle, queue_socks=socks[1:])
            self.pumps.add_endpoint(handle, ep.fds)
            log.info("listening for %s on %s", net.encap, f"{net.local}:{net.port}" if net.port else net.local)
        return key, ep

    def _release_endpoint(self, key: EndpointKey, name: str, loop: asyncio.AbstractEventLoop) -> None:
        ep = self._endpoints[key]
        ep.users.discard(name)
        if not ep.users:
            self.pumps.remove_endpoint(ep.handle, ep.fds)
            self.dp.remove_endpoint(ep.handle)
            for sock in [ep.sock, *ep.queue_socks]:
                sock.close()
            del self._endpoints[key]

    def _tx_socket(self, version: int) -> None:
        if version not in self._tx:
            sock = self._tx[version] = open_tx_socket(version)
            self.dp.set_tx_socket(version, sock.fileno())
            self.dp.set_tx_gso(version, self.offload.tx_gso)

    def _tap_offload(self) -> int:
        return self.offload.tap_flags if self.offload.vnet_hdr else 0

    # --- pumps and TAP recovery -------------------------------------------------------------
    @property
    def pumps(self) -> Pumps:
        """Who waits on our fds and calls the pumps ([daemon] poll, datapath/poll.py); made on
        first use, on the running loop: with the C backend, a thread of its own in C."""
        if self._pumps is None:
            self._pumps = make_pumps(self.dp, self.poll, self.poll_spin_us, asyncio.get_running_loop(),
                                     self.queues)
            self._pumps.start()
            log.info("poll mode %s%s, %d queue%s, %s", self.poll,
                     f" (spin {self.poll_spin_us} us)" if self.poll == "adaptive" else "",
                     self.queues, "s" if self.queues > 1 else "",
                     "a C pump thread each" if isinstance(self._pumps, ThreadPumps) else "event loop")
        return self._pumps

    def poll_stats(self) -> list[dict[str, int]]:
        """POLL_STATS by queue; zeros before the first network made the pumps."""
        if self._pumps is None:
            return [dict.fromkeys(POLL_STATS, 0) for _ in range(self.queues)]
        return [self._pumps.stats(q) for q in range(self.queues)]

    def _watch_tap(self, net: Network, tap: Tap) -> None:
        self.pumps.add_tap(net.handle, tap.fds, lambda err: self._tap_lost(net, err))

    def _tap_lost(self, net: Network, err: int) -> None:
        if net.tap is None or self._nets.get(net.cfg.name) is not net:
            return                  # already being re-created, or the network is gone
        loop = asyncio.get_running_loop()
        log.error("network %s: TAP %s failed (%s); re-creating it", net.cfg.name, net.cfg.tap, os.strerror(err))
        self.pumps.remove_tap(net.handle, net.tap.fds)
        self.dp.set_tap(net.handle, -1)
        net.tap.close()
        net.tap = None
        net.recovering = loop.create_task(self._recover_tap(net))

    async def _recover_tap(self, net: Network) -> None:
        while True:
            try:
                tap = Tap.open(net.cfg.tap, net.mtu, net.cfg.bridge, offload=self._tap_offload(),
                               queues=self.queues)
            except Exception as e:  # noqa: BLE001 - keep trying; say why once a second at most
                log.debug("network %s: TAP not back yet: %s", net.cfg.name, e)
                await asyncio.sleep(TAP_RETRY)
                continue
            try:
                self.dp.set_tap(net.handle, tap.fd, vnet_hdr=tap.vnet_hdr, offload=tap.offload)
                for q, fd in enumerate(tap.queue_fds, 1):
                    self.dp.set_tap_queue(net.handle, q, fd)
                self._watch_tap(net, tap)
            except Exception as e:  # noqa: BLE001 - as before the TAP came back (_tap_lost); try again
                log.error("network %s: TAP %s is back but the fast path refused it (%s); trying again",
                          net.cfg.name, tap.name, e)
                self.pumps.remove_tap(net.handle, tap.fds)
                self.dp.set_tap(net.handle, -1)     # every queue's fd, before they close
                tap.close()
                await asyncio.sleep(TAP_RETRY)
                continue
            net.tap = tap
            net.recovering = None
            log.info("network %s: TAP %s is back", net.cfg.name, tap.name)
            return


def _same_but_control(a: NetworkConfig, b: NetworkConfig) -> bool:
    """True when only peers, static FDB and neighbour entries, the suppression mode or the
    rekey timings differ: those are applied in place (read live)."""
    def control(n: NetworkConfig) -> NetworkConfig:
        return replace(n, peers=(), fdb=(), neigh=(), fdb_ips=(), suppress_arp=None, neigh_snoop=False,
                       rekey_delay=0.0, rekey_interval=None)
    return control(a) == control(b)
