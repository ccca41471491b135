"""The etcd control plane: membership, FDB entries and network definitions from an etcd v3 store.

Client: etcd3aio (grpc.aio). Chosen because it is asyncio-native on our own event loop (no
thread, no second runtime), released recently, typed, and the only maintained asyncio client
that speaks TLS with client certificates as well as user/password (aetcd, the other maintained
one, opens plaintext channels only).

The key schema and every decision live in etcd_state.py (no I/O); this module talks. One
*session* per connection to one endpoint (the next one after a failure):

    connect (TLS, auth) -> read the whole prefix at one revision (paged) -> converge the
      daemon on it -> grant a lease -> put our member keys and re-bind our FDB claims to the
      new lease -> revoke the previous lease (whatever it still holds is stale)
      -> run until one of these fails:
           watch      prefix from revision+1: events -> StoreView -> pending changes
           keepalive  every lease_ttl/3; no answer within that time = the store is gone
           writer     every second: member keys of running networks; local MACs -> claims
           auth       re-authenticate every 4 minutes (etcd's simple tokens expire)
           rekey      every second: automatic rotation of store keys (`rekey_interval`),
                      acted on by the lowest member of a network only (etcd_keys.py)

Between sessions nothing in the data plane changes: it forwards on the last known state,
`health()` says "connected": false (status, metrics) and a warning is logged once per outage;
a new session's full read brings everything back in line (the resynchronisation), including
changes made while we were away. A watch that etcd cancels (compaction) ends the session the
same way. Changes are applied by a flusher that coalesces a burst of events (100 ms), so 20,000
entries arriving one by one cost a few dozen batches, not 20,000.

Entries (fdb and neigh keys) are not kept here: each event becomes an operation that reaches
the data plane in one batch per network and flush (ControlSink.update_entries; the C FDB takes
a batch in one call), and a full read hands every network its whole table at once, replacing
what it held. A network that starts later (its definition arrives, a reload adds it) has its
entries read from the store then (`_relist`: a paged range read of its fdb/ and neigh/ keys).
The full read is consumed page by page, so its peak is a page of keys plus packed tables.

Our keys: P/members/<net>/<local> for every running network (for an encrypted one its value
acknowledges the key ids installed and sent with, rewritten when they change), P/fdb/<net>/<mac> for every MAC
this host claims, P/neigh/<net>/<ip> for every local endpoint's address it claims (snooped with
`neigh_snoop`, or set by a front-end for a MAC seen on the TAP); all bound to our lease, so a host that dies drops out of everybody's flood
lists and FDBs within lease_ttl. A clean stop revokes the lease: gone at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, EtcdConfig, NetworkConfig
from ..core.fdbtable import FdbBuilder, FdbTable
from .base import ControlSink, Desired
from .etcd_keys import Retire, Rotate, all_send, encode_key, rotation_step
from .etcd_state import (FDB, NEIGH, Change, Keys, Ops, Publisher, Snapshot, StoreView, desired_for,
                         encode_fdb, encode_member, encode_neigh, installable, plan_networks)

__all__ = ["EtcdControl", "Endpoint", "parse_endpoint", "route_source", "new_client", "describe",
           "authenticate", "close_client", "run_keepalive", "run_sessions"]

log = logging.getLogger("vxlan_dp.etcd")

RPC_TIMEOUT = 5.0        # seconds for one request (a store that takes longer is as good as gone)
START_WAIT = 5.0         # start-up waits this long for the first full read, then goes on without
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # reconnect back-off
PUBLISH_INTERVAL = 1.0   # local MACs polled and published this often
PUBLISH_SLICE = 50       # networks looked at between two turns of the event loop
FLUSH_DELAY = 0.1        # store events coalesce for this long before the data plane sees them
PAGE = 5000              # keys per range request at start-up (gRPC messages stay well under 4 MiB)
READ_PARALLEL = 8        # networks whose entries are read at once in a full read
TXN_OPS = 100            # puts per transaction (etcd's --max-txn-ops defaults to 128)
AUTH_REFRESH = 240.0     # etcd simple tokens live 300 s by default
REKEY_CHECK = 1.0        # seconds between looks at automatic rotation (rekey_interval)


class Resync(Exception):
    """The session must start over with a full read (watch cancelled, lease lost)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def parse_endpoint(text: str, tls: bool) -> Endpoint:
    """A config endpoint ("host:port", "http(s)://host:port", validated by config.py)."""
    url = urlsplit(text if "://" in text else f"//{text}")
    assert url.hostname is not None and url.port is not None
    return Endpoint(url.hostname, url.port, tls or url.scheme == "https")


def route_source(host: str, port: int) -> str:
    """The source address the kernel picks towards host:port (a UDP connect sends nothing)."""
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        return ipaddress.ip_address(s.getsockname()[0]).compressed


def _describe(e: BaseException) -> str:
    """One line for a log or status: gRPC's status code and etcd's words, else the exception."""
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):  # grpc.aio.AioRpcError: its repr spans lines
        return f"{code().name}: {details() or 'no details'}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class EtcdControl:
    backend = "etcd"

    def __init__(self, config: Config) -> None:
        assert config.etcd is not None
        # gRPC logs every cancelled stream at DEBUG with a traceback: not our debugging aid
        logging.getLogger("grpc").setLevel(logging.WARNING)
        self.config = config
        self.etcd = config.etcd
        self.keys = Keys(self.etcd.prefix)
        self.view = StoreView(self.keys)
        self.publisher = Publisher(self.keys)
        tls = self.etcd.ca is not None or self.etcd.cert is not None
        self.endpoints = [parse_endpoint(e, tls) for e in self.etcd.endpoints]
        self.local: str | None = self.etcd.local
        self.sink: ControlSink | None = None
        self._nets: dict[str, NetworkConfig] = {n.name: n for n in config.networks}
        self._running: dict[str, NetworkConfig] = {}
        self._problems: dict[str, str] = {}
        self._pending = Change()
        self._dirty = asyncio.Event()
        self._wake_writer = asyncio.Event()
        self._synced = asyncio.Event()
        self._relist_wanted: set[str] = set()   # running networks whose entries must be read
        self.entries_at_sync = 0                # fdb and neigh keys in the last full read
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self._members: dict[tuple[str, str], bytes] = {}   # member keys put in this session: value
        self._plain_warned: set[str] = set()    # endpoints warned about: keys over plain TCP
        self._all_sending: dict[str, float] = {}  # network -> since when all send the newest key
        self.rotations = 0          # automatic rotations this host made
        self._client: Any = None
        self._lease = 0
        # health
        self.connected = False
        self.endpoint: Endpoint | None = None
        self.last_sync: float | None = None   # wall clock of the last full read
        self.last_event: float | None = None  # wall clock of the last watch event
        self.down_since: float | None = time.time()
        self.last_error: str | None = None
        self.resyncs = 0
        self.outages = 0

    # --- ControlPlane ---------------------------------------------------------------------
    async def start(self, sink: ControlSink) -> None:
        self.sink = sink
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run_sessions()), loop.create_task(self._run_flusher())]
        try:
            await asyncio.wait_for(self._synced.wait(), START_WAIT)
        except asyncio.TimeoutError:
            log.warning("etcd: no answer from %s within %.0fs (%s); starting without the store, retrying",
                        ", ".join(map(str, self.endpoints)), START_WAIT, self.last_error or "no error yet")

    async def stop(self) -> None:
        self._closing = True  # the session leaves its client open for the revoke below
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.connected and self._client is not None and self._lease:
            # Revoking the lease deletes our member keys and claims now, not lease_ttl later.
            try:
                await asyncio.wait_for(self._client.lease.revoke(self._lease), 2.0)
                log.info("etcd: lease revoked, membership withdrawn")
            except Exception as e:  # noqa: BLE001 - going away anyway; the lease will expire
                log.warning("etcd: could not revoke the lease (%s); it expires in %ds", _describe(e),
                            self.etcd.lease_ttl)
        if self._client is not None:
            await close_client(self._client)
            self._client = None

    def networks(self) -> dict[str, NetworkConfig]:
        return dict(self._nets)

    def desired(self) -> dict[str, Desired]:
        return {name: desired_for(self.view, n) for name, n in self._nets.items()}

    def update_config(self, config: Config) -> None:
        if config.etcd != self.etcd:
            log.warning("etcd settings changed; they take effect at the next restart")
        self.config = config
        self._reconcile()

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "connected": self.connected,
            "endpoint": str(self.endpoint) if self.endpoint else None,
            "prefix": self.etcd.prefix, "local": self.local,
            "last_sync": self.last_sync, "last_event": self.last_event,
            "down_since": None if self.connected else self.down_since,
            "last_error": self.last_error, "resyncs": self.resyncs, "outages": self.outages,
            "lease": f"{self._lease:x}" if self._lease else None, "lease_ttl": self.etcd.lease_ttl,
            "store_keys": len(self.view) + self.entries_at_sync, "entries_at_sync": self.entries_at_sync,
            "claimed_macs": self.publisher.count(FDB), "claimed_addresses": self.publisher.count(NEIGH),
            "problems": dict(self._problems), "rotations": self.rotations,
            "bad_keys": {k.decode(errors="replace"): v for k, v in list(self.view.bad.items())[:20]},
        }

    async def ensure_keys(self, name: str) -> None:
        """The first key of a store-keyed network (a Docker network made with -o encrypted):
        put as id 1 only if it does not exist, so hosts creating the network at once make one
        key between them; returns once the view holds a key for `name`."""
        from etcd3aio.kv import KVService

        if self.view.netkeys.get(name):
            return
        client = self._client
        if client is None or not self.connected:
            raise RuntimeError(f"network {name}: its encryption keys come from the store, which is not "
                               f"reachable ({self.last_error or 'not connected yet'})")
        where = self.keys.key(name, 1)
        material = bytearray(secrets.token_bytes(32))
        try:
            value = encode_key(material, 1, time.time())
        finally:
            material[:] = bytes(32)
        r = await client.kv.txn([KVService.txn_compare_create_revision(where, 0)],
                                [KVService.txn_op_put(where, value)], timeout=RPC_TIMEOUT)
        if r.succeeded:
            self._changed(self.view.put(where, value))
            log.info("etcd: network %s: its first key (1) put in the store", name)
        deadline = time.monotonic() + START_WAIT
        while not self.view.netkeys.get(name):      # another host's, on its way through the watch
            if time.monotonic() > deadline:
                raise RuntimeError(f"network {name}: no key in the store after {START_WAIT:g}s")
            await asyncio.sleep(0.05)

    # --- applying the view ----------------------------------------------------------------
    def _changed(self, change: Change) -> None:
        if change.networks or change.dirty or change.fdb or change.neigh:
            self._pending |= change
            self._dirty.set()

    async def _run_flusher(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(FLUSH_DELAY)  # let a burst of events land first
            self._dirty.clear()
            if self._closing:
                continue
            try:
                self._flush()
            except Exception:  # keep the control plane alive; the next change retries
                log.exception("etcd: applying store changes failed")
            if self._relist_wanted and self.connected and self._client is not None:
                await self._relist(self._client)

    def _flush(self) -> None:
        """Apply what the store said since the last flush (a function of its own, so that a
        burst's operations are gone once applied, not held by a waiting coroutine)."""
        pending, self._pending = self._pending, Change()
        if pending.networks:
            self._reconcile()
        else:
            for name in sorted(pending.dirty & self._running.keys()):
                self._apply(name)
        for name in sorted(pending.entries() & self._running.keys()):
            self._apply_entries(name, pending.fdb.get(name, {}), pending.neigh.get(name, {}))

    def _apply(self, name: str) -> None:
        assert self.sink is not None
        self.sink.apply(name, desired_for(self.view, self._running[name]))
        if self._running[name].encrypt:
            self._wake_writer.set()     # acknowledge the installed keys at once

    def _apply_entries(self, name: str, fdb: dict[bytes, str | None],
                       neigh: dict[str, tuple[str, str | None] | None]) -> None:
        """Store events' operations for running network `name`, as one batch."""
        assert self.sink is not None
        n = self._running[name]
        b, gone = FdbBuilder(), bytearray()
        for mac, remote in fdb.items():
            if remote is not None and installable(n, remote):
                b.add(mac, remote)
            else:           # deleted, or now this host's own (or of the other family)
                gone += mac
        puts, removes = [], []
        for ip, op in neigh.items():
            if op is None:
                removes.append(ip)
            elif op[1] != n.local:  # an address published by this host is its snooped entry already
                puts.append((ip, op[0]))
        self.sink.update_entries(name, b.table(), bytes(gone), puts, removes)

    def _apply_snapshot(self, name: str, snap: Snapshot) -> None:
        """Network `name`'s whole store table from a full read (or its own range read)."""
        assert self.sink is not None
        n = self._running[name]
        table = FdbTable()
        b = snap.fdb.get(name)
        if b is not None:
            remotes = tuple(b.remote_ids)
            ok = [installable(n, r) for r in remotes]
            if all(ok):
                table = FdbTable(bytes(b.macs), b.index, remotes)
            else:
                kept = FdbBuilder()
                for i, rid in enumerate(b.index):
                    if ok[rid]:
                        kept.add(bytes(b.macs[6 * i:6 * i + 6]), remotes[rid])
                table = kept.table()
        neigh = [(ip, mac) for ip, mac, host in snap.neigh.get(name, ()) if host != n.local]
        self.sink.update_entries(name, table, b"", neigh, (), replace=True)

    def _reconcile(self, converge: bool = True) -> None:
        """Recompute the network set; with `converge`, make the daemon run it."""
        nets, problems = plan_networks(self.config.networks, self.view, self.etcd, self.local)
        for name, why in problems.items():
            if self._problems.get(name) != why:
                log.error("etcd: network %s not joined: %s", name, why)
        self._problems = problems
        self._nets = nets
        self._warn_plaintext()
        if converge and self.sink is not None and not self._closing:
            desired = {name: desired_for(self.view, n) for name, n in nets.items()}
            before = self._running
            running = self.sink.converge(nets, desired)
            self._running = {name: nets[name] for name in running if name in nets}
            # new, restarted with another definition (its data plane table started empty), or
            # its file entries or address changed (they decide which store entries apply):
            # read their entries from the store again
            self._relist_wanted |= {name for name, n in self._running.items() if before.get(name) != n}
            self._relist_wanted &= self._running.keys()
            if self._relist_wanted:
                self._dirty.set()
            self._wake_writer.set()

    # --- sessions -------------------------------------------------------------------------
    async def _run_sessions(self) -> None:
        delay, i = RETRY_MIN, 0
        while True:
            ep = self.endpoints[i % len(self.endpoints)]
            try:
                await self._session(ep)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure ends the session; we retry
                if self.connected:
                    delay = RETRY_MIN  # it worked until now: try again promptly
                self._lost(ep, e)
            i += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _lost(self, ep: Endpoint, e: BaseException) -> None:
        error, self.last_error = self.last_error, f"{ep}: {_describe(e)}"
        if self.connected:
            self.connected = False
            self.down_since = time.time()
            self.outages += 1
            log.warning("etcd %s lost (%s); the data plane keeps forwarding on the last known state "
                        "(%d networks), reconnecting", ep, _describe(e), len(self._running))
        elif self.last_error != error:  # say each new reason once, not every retry
            log.warning("etcd %s: %s; retrying", ep, _describe(e))
        else:
            log.debug("etcd %s: %s", ep, _describe(e))

    def _new_client(self, ep: Endpoint) -> Any:
        return new_client(self.etcd, ep)

    async def _session(self, ep: Endpoint) -> None:
        if self.local is None:
            self.local = await asyncio.get_running_loop().run_in_executor(None, route_source, ep.host, ep.port)
            log.info("etcd: local underlay address %s (the route towards %s; set etcd.local to choose)",
                     self.local, ep)
        client = self._new_client(ep)
        await client.connect()
        tasks: list[asyncio.Task[Any]] = []
        try:
            if self.etcd.username:
                await self._authenticate(client)
            # the lease after the read: a full read of a fleet's store may outlast its TTL, and
            # nothing keeps it alive until the session's tasks start
            revision = await self._read_all(client)
            grant = await client.lease.grant(self.etcd.lease_ttl, timeout=RPC_TIMEOUT)
            old_lease, lease = self._lease, grant.ID
            self._client, self._lease, self.endpoint = client, lease, ep
            self._members = {}
            await self._write_members(client, lease)
            await self._execute(client, lease, self.publisher.renew())
            if old_lease and old_lease != lease:
                try:
                    await client.lease.revoke(old_lease, timeout=RPC_TIMEOUT)
                except Exception as e:  # noqa: BLE001 - most often: it expired while we were away
                    log.debug("etcd: old lease %x: %s", old_lease, _describe(e))
            was_down = self.down_since
            self.connected = True
            self.last_error = None
            self._warn_plaintext()
            if self.resyncs == 1:
                log.info("etcd %s: connected; %d keys under %s, lease %x (ttl %ds)", ep, len(self.view),
                         self.etcd.prefix, lease, grant.TTL)
            else:
                log.info("etcd %s reachable again after %.1fs; resynchronised (%d keys under %s)", ep,
                         time.time() - (was_down or time.time()), len(self.view), self.etcd.prefix)
            self.down_since = None
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._run_watch(client, revision + 1)),
                     loop.create_task(self._run_keepalive(client, lease, grant.TTL)),
                     loop.create_task(self._run_writer(client, lease)),
                     loop.create_task(self._run_rekey(client))]
            if self.etcd.username:
                tasks.append(loop.create_task(self._run_auth(client)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # raises the failure that ended the session
            raise Resync("session tasks ended")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self._closing:  # else stop() still revokes the lease through this client
                self._client = None
                try:
                    await asyncio.wait_for(client.close(), 2.0)
                except Exception:  # noqa: BLE001 - a dead channel may not close cleanly
                    pass

    async def _authenticate(self, client: Any) -> None:
        await authenticate(self.etcd, client)

    async def _run_auth(self, client: Any) -> None:
        while True:
            await asyncio.sleep(AUTH_REFRESH)
            await self._authenticate(client)

    async def _read_all(self, client: Any) -> int:
        """The whole prefix at one revision, in pages; the view and the daemon follow it.

        First everything but the entries (definitions, members, any stray key), then the fdb/
        and neigh/ keys of each network this host runs, one range per network (a few in flight):
        etcd 3.4 walks the whole rest of a range for every page of it, so one range over a
        million entries costs a quadratic walk (minutes), and other hosts' networks need no read.
        """
        from etcd3aio import prefix_range_end

        root, fdb, neigh = self.keys.root, self.keys.kind(FDB), self.keys.kind(NEIGH)
        loader = self.view.loader()
        revision = await _read_range(client, root, fdb, loader.feed)
        for start, end in ((prefix_range_end(fdb), neigh), (prefix_range_end(neigh), prefix_range_end(root))):
            await _read_range(client, start, end, loader.feed, revision)
        loader.finish()
        nets, _ = plan_networks(self.config.networks, self.view, self.etcd, self.local)
        entries = self.view.loader(entries_only=True)
        gate = asyncio.Semaphore(READ_PARALLEL)

        async def one(name: str) -> None:
            async with gate:
                await self._read_entries(client, name, entries.feed, revision)
        await asyncio.gather(*(one(name) for name in sorted(nets)))
        _, snap = entries.finish()
        self.resyncs += 1
        self.last_sync = time.time()
        self.entries_at_sync = sum(map(len, snap.fdb.values())) + sum(map(len, snap.neigh.values()))
        for key, why in self.view.bad.items():
            log.warning("etcd: ignoring %s: %s", key.decode(errors="replace"), why)
        # A full read re-evaluates everything: the daemon may have missed any change.
        self._pending = Change()
        self._reconcile()       # every running network gets its Desired (peers, file entries) here
        for name in self._running:
            self._apply_snapshot(name, snap)
        self._relist_wanted.clear()
        self.publisher.resynced(lambda kind, name, item, value: _still_ours(snap, kind, name, item, value))
        self._synced.set()
        return revision

    async def _read_entries(self, client: Any, name: str, feed: Callable[[Any], None], revision: int = 0) -> None:
        """Network `name`'s fdb/ and neigh/ keys (at `revision`; 0: the current one) into `feed`."""
        from etcd3aio import prefix_range_end

        for kind in (FDB, NEIGH):
            start = self.keys.entries(kind, name)
            await _read_range(client, start, prefix_range_end(start), feed, revision)

    async def _relist(self, client: Any) -> None:
        """Read the entries of the networks in `_relist_wanted` and hand each its whole table."""
        names, self._relist_wanted = sorted(self._relist_wanted), set()
        for i, name in enumerate(names):
            loader = self.view.loader(entries_only=True)
            try:
                await self._read_entries(client, name, loader.feed)
            except Exception as e:  # noqa: BLE001 - the session's own tasks notice a dead store
                log.warning("etcd: reading the entries of %s: %s; trying again", name, _describe(e))
                self._relist_wanted.update(names[i:])
                return
            if name in self._running:
                self._apply_snapshot(name, loader.finish()[1])

    async def _run_watch(self, client: Any, revision: int) -> None:
        from etcd3aio import prefix_range_end

        it = client.watch.watch(self.keys.root, range_end=prefix_range_end(self.keys.root),
                                start_revision=revision)
        try:
            async for resp in it:
                if resp.canceled or resp.compact_revision:
                    raise Resync(f"watch cancelled by etcd (compacted at revision {resp.compact_revision}); "
                                 "reading the store again")
                if not resp.events:
                    continue
                now = time.monotonic()
                change = Change()
                wake = False
                for ev in resp.events:
                    if ev.type == 0:  # mvccpb.Event.PUT
                        c = self.view.put(ev.kv.key, ev.kv.value)
                    else:
                        c = self.view.delete(ev.kv.key)
                        member = self._member_of(ev.kv.key)
                        wake |= member in self._members     # ours: put it back now
                        self._members.pop(member, None)
                    wake |= self._note(c, now)
                    # an encrypted network's keys or acknowledgements: its rotation steps now
                    wake |= any(name in self.view.netkeys for name in c.dirty)
                    change |= c
                self.last_event = time.time()
                self._changed(change)
                if wake:    # not for every member change: a pass over 1,000 networks is not free
                    self._wake_writer.set()
        finally:
            await it.aclose()

    def _note(self, c: Change, now: float) -> bool:
        """Tell the publisher of another host's (or our own) word on an item it may claim;
        True if a claim of ours was taken over or deleted."""
        ours = False
        for name, ops in c.fdb.items():
            local = self._local_of(name)
            for mac, remote in ops.items():
                ours |= self.publisher.note(FDB, name, mac.hex(":"), None if remote is None else remote == local, now)
        for name, nops in c.neigh.items():
            local = self._local_of(name)
            for ip, op in nops.items():
                ours |= self.publisher.note(NEIGH, name, ip, None if op is None else op[1] == local, now)
        return ours

    def _local_of(self, name: str) -> str | None:
        n = self._nets.get(name)
        return n.local if n is not None else self.local

    def _member_of(self, key: bytes) -> tuple[str, str]:
        try:
            kind, name, item = self.keys.parse(key)
        except ValueError:
            return "", ""
        return (name, item) if kind == "members" else ("", "")

    async def _run_keepalive(self, client: Any, lease: int, ttl: int) -> None:
        await run_keepalive(client, lease, ttl)

    async def _run_writer(self, client: Any, lease: int) -> None:
        while True:
            await self._write_members(client, lease)
            await self._publish(client, lease)
            self._wake_writer.clear()
            try:
                await asyncio.wait_for(self._wake_writer.wait(), PUBLISH_INTERVAL)
            except asyncio.TimeoutError:
                pass

    def _member_value(self, name: str) -> bytes:
        """{"version"} and, for an encrypted network, the key ids its data plane holds and sends
        with (etcd_keys.py: what the other members wait for before sending with a new key)."""
        assert self.sink is not None
        state = self.sink.key_state(name) if self._running[name].encrypt else None
        return encode_member() if state is None else encode_member(state[0], state[1])

    async def _write_members(self, client: Any, lease: int) -> None:
        want = {(name, n.local): self._member_value(name) for name, n in self._running.items()}
        for (name, addr), value in sorted(want.items()):
            if self._members.get((name, addr)) == value:
                continue
            new = (name, addr) not in self._members
            await client.kv.put(self.keys.member(name, addr), value, lease=lease, timeout=RPC_TIMEOUT)
            self._changed(self.view.put(self.keys.member(name, addr), value))
            self._members[(name, addr)] = value
            if new:
                log.info("etcd: member of %s as %s", name, addr)
        for name, addr in sorted(self._members.keys() - want.keys()):
            await client.kv.delete(self.keys.member(name, addr), timeout=RPC_TIMEOUT)
            self._members.pop((name, addr), None)
            await self._execute(client, lease, self.publisher.forget(name))
            log.info("etcd: left %s", name)

    def _warn_plaintext(self) -> None:
        """Once per endpoint: keys of encrypted networks travel from a store reached without TLS."""
        ep = self.endpoint
        if ep is None or ep.tls or not self.connected or str(ep) in self._plain_warned:
            return
        names = sorted(n for n, cfg in self._nets.items() if cfg.encrypt and cfg.key_file is None)
        if names:
            self._plain_warned.add(str(ep))
            log.warning("etcd %s is reached without TLS and the encryption keys of network(s) %s come from "
                        "it: anyone who can read that connection can decrypt the overlay. Use https:// "
                        "endpoints with [etcd] ca (and cert/key)", ep, ", ".join(names))

    async def _run_rekey(self, client: Any) -> None:
        """Automatic rotation (`rekey_interval`): only the lowest member of a network acts
        (etcd_keys.rotation_step), and its put of a new key id succeeds only if that id does
        not exist yet, so two hosts that both think they drive make one key, not two."""
        from etcd3aio.kv import KVService

        while True:
            await asyncio.sleep(REKEY_CHECK)
            now = time.time()
            for name, n in list(self._running.items()):
                if not n.encrypt or n.key_file is not None or n.rekey_interval is None:
                    continue
                keys, acks = self.view.netkeys.get(name, {}), self.view.acks.get(name, {})
                if all_send(keys, acks):
                    self._all_sending.setdefault(name, now)
                else:
                    self._all_sending.pop(name, None)
                step = rotation_step(keys, acks, n.local, interval=n.rekey_interval, now=now,
                                     all_sending_since=self._all_sending.get(name))
                if isinstance(step, Rotate):
                    key = self.keys.key(name, step.key_id)
                    material = bytearray(secrets.token_bytes(32))
                    try:
                        r = await client.kv.txn([KVService.txn_compare_create_revision(key, 0)],
                                                [KVService.txn_op_put(key, encode_key(material, step.serial, now))],
                                                timeout=RPC_TIMEOUT)
                    finally:
                        material[:] = bytes(32)
                    if r.succeeded:
                        self.rotations += 1
                        log.info("etcd: network %s: automatic rotation (every %gs): key %d put in the store",
                                 name, n.rekey_interval, step.key_id)
                elif isinstance(step, Retire):
                    await client.kv.txn([], [KVService.txn_op_delete(self.keys.key(name, k)) for k in step.key_ids],
                                        timeout=RPC_TIMEOUT)
                    self._all_sending.pop(name, None)
                    log.info("etcd: network %s: every member sends with the newest key; keys %s retired",
                             name, " ".join(map(str, step.key_ids)))

    async def _publish(self, client: Any, lease: int) -> None:
        assert self.sink is not None
        now = time.monotonic()
        for k, (name, n) in enumerate(list(self._running.items())):
            if k % PUBLISH_SLICE == PUBLISH_SLICE - 1:
                await asyncio.sleep(0)      # let the watch and the flusher in between
                if name not in self._running:
                    continue
            mine = encode_fdb(n.local)
            ops = self.publisher.plan(FDB, name, [(m, mine, age) for m, age in self.sink.local_macs(name, now)], now)
            ops |= self.publisher.plan(NEIGH, name, [(ip, encode_neigh(mac, n.local), age)
                                                     for ip, mac, age in self.sink.local_neigh(name, now)], now)
            if ops:
                await self._execute(client, lease, ops)

    async def _execute(self, client: Any, lease: int, ops: Ops) -> None:
        """Puts (in transactions of TXN_OPS), then conditional deletes; the view follows at once."""
        from etcd3aio.kv import KVService

        for i in range(0, len(ops.puts), TXN_OPS):
            batch = ops.puts[i:i + TXN_OPS]
            await client.kv.txn([], [KVService.txn_op_put(k, v, lease=lease) for k, v in batch], timeout=RPC_TIMEOUT)
            for k, v in batch:
                self._changed(self.view.put(k, v))
                log.debug("etcd: put %s", k.decode())
        for k, expected in ops.deletes:
            # Only if still ours: another host may have taken the MAC over since.
            await client.kv.txn([KVService.txn_compare_value(k, expected)], [KVService.txn_op_delete(k)],
                                timeout=RPC_TIMEOUT)
            log.debug("etcd: withdrew %s", k.decode())


async def _read_range(client: Any, start: bytes, end: bytes, feed: Callable[[Any], None], revision: int = 0) -> int:
    """Every key in [start, end) at `revision` (0: the current one), PAGE keys per request, each
    page handed to `feed` as (key, value) pairs as it arrives (never the whole range in memory).
    Returns the revision read at."""
    while True:
        r = await client.kv.get(start, range_end=end, revision=revision, limit=PAGE, timeout=RPC_TIMEOUT)
        revision = revision or r.header.revision
        feed((kv.key, kv.value) for kv in r.kvs)
        if not r.more or not r.kvs:
            return int(revision)
        start = r.kvs[-1].key + b"\0"


def _still_ours(snap: Snapshot, kind: str, name: str, item: str, value: bytes) -> bool:
    """Whether a full read shows claim (kind, name, item) = value of ours."""
    if kind == FDB:
        remote = snap.remote_of(name, bytes.fromhex(item.replace(":", "")))
        return remote is not None and encode_fdb(remote) == value
    return any(encode_neigh(mac, host) == value for ip, mac, host in snap.neigh.get(name, ()) if ip == item)


def new_client(etcd: EtcdConfig, ep: Endpoint) -> Any:
    """An etcd3aio client for `ep` with the [etcd] table's TLS settings (not yet connected)."""
    from etcd3aio import Etcd3Client  # static mode never loads grpc

    # None is etcd3aio's default for each: no ca_cert means plain TCP, no chain means no mTLS.
    ca_cert = cert_chain = cert_key = None
    if ep.tls:
        ca = etcd.ca or ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
        ca_cert = _read(ca)
        if etcd.cert and etcd.key:
            cert_chain = _read(etcd.cert)
            cert_key = _read(etcd.key)
    client = Etcd3Client([f"{ep.host}:{ep.port}"], tls_server_name=ep.host if ep.tls else None,
                         rpc_max_attempts=2, ca_cert=ca_cert, cert_chain=cert_chain, cert_key=cert_key)
    # etcd3aio targets "ipv4:<endpoints>" only; an IPv6 endpoint needs gRPC's ipv6: scheme
    # and a host name its dns: resolver (TLS still checks the name, tls_server_name above).
    try:
        addr = ipaddress.ip_address(ep.host)
    except ValueError:
        client._manager.target = f"dns:///{ep.host}:{ep.port}"
    else:
        client._manager.target = (f"ipv6:[{addr}]:{ep.port}" if addr.version == 6
                                  else f"ipv4:{addr}:{ep.port}")
    return client


async def _first(stream: Any) -> Any:
    async for resp in stream:
        return resp
    return None


def _read(path: str) -> bytes:
    with open(os.path.expanduser(path), "rb") as f:
        return f.read()


async def authenticate(etcd: EtcdConfig, client: Any) -> None:
    """Log in with [etcd] username/password; the token rides on every later request."""
    assert etcd.username is not None
    resp = await client.auth.authenticate(etcd.username, etcd.password or "", timeout=RPC_TIMEOUT)
    client.set_token(resp.token)


async def close_client(client: Any) -> None:
    """Close a client's channel within a second; a channel already dead is not an error."""
    try:
        await asyncio.wait_for(client.close(), 1.0)
    except Exception:  # noqa: BLE001 - closing a dead channel
        pass


async def run_keepalive(client: Any, lease: int, ttl: int) -> None:
    """Keep `lease` alive every ttl/3; raise Resync when the store stops answering or it expired."""
    interval = max(0.5, ttl / 3)
    while True:
        await asyncio.sleep(interval)
        stream = client.lease.keep_alive(lease)
        try:
            resp = await asyncio.wait_for(_first(stream), interval)
        finally:
            stream.cancel()
        if resp is None or resp.TTL <= 0:
            raise Resync(f"lease {lease:x} expired")


async def run_sessions(etcd: EtcdConfig, session: Callable[[Any], Awaitable[None]], what: str,
                       retry: float = 1.0) -> None:
    """For the store's other users (the Docker plugin): connect to the [etcd] endpoints in turn
    (TLS, login) and run `session(client)` until it fails; say why, wait `retry`, go on with the
    next endpoint. Returns only by cancellation."""
    tls = etcd.ca is not None or etcd.cert is not None
    endpoints = [parse_endpoint(e, tls) for e in etcd.endpoints]
    i = 0
    while True:
        ep = endpoints[i % len(endpoints)]
        client = new_client(etcd, ep)
        try:
            await client.connect()
            if etcd.username:
                await authenticate(etcd, client)
            await session(client)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure ends the session; we retry
            log.warning("%s: etcd %s: %s; retrying", what, ep, _describe(e))
        finally:
            try:
                await asyncio.wait_for(client.close(), 2.0)
            except Exception:  # noqa: BLE001 - a dead channel may not close cleanly
                pass
        i += 1
        await asyncio.sleep(retry)


describe = _describe
