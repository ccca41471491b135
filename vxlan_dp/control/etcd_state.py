"""The etcd control plane without I/O: key schema, what is kept of the store, Desired state, publishing.

Key schema, under the configured prefix P (default "/vxlan-dp"); values are JSON objects:

    P/networks/<name>            {"vni": 42, "encap": "vxlan", "port": 4789, ...}
                                 written by the operator, no lease; keys are config.STORE_NETWORK_KEYS
    P/members/<name>/<address>   {"version": "0.1.0"}
                                 one per host running network <name>; bound to that host's lease
    P/fdb/<name>/<mac>           {"remote": "198.18.0.2"}
                                 a MAC seen leaving the TAP of host <remote>; bound to the lease
                                 of the host that wrote it last
    P/neigh/<name>/<ip>          {"mac": "02:42:c0:a8:00:04"}
                                 an overlay address and its MAC, for ARP / ND suppression; written
                                 by whoever knows it (an operator, an orchestrator), no lease;
                                 <ip> in compressed form. A host publishing its own endpoints'
                                 addresses adds "host": <its address>, bound to its lease
    P/keys/<name>/<id>           {"key": "<64 hex>", "serial": 3, "created": ...}
                                 an encrypted network's key (etcd_keys.py), no lease; member
                                 values then acknowledge the key ids installed:
                                 {"version", "keys", "send"}. Keys are few and small: kept here
                                 (StoreView.netkeys), with each member's acknowledgement

Like aioquic's connection, everything here takes its input (key/value pairs, `now`) and hands
back decisions; etcd.py does the talking. Invariants:
- No mirror of the store's entries. `StoreView` keeps what is small and shared: network
  definitions and member addresses (per network, as sets of shared strings). An fdb or neigh
  key becomes an operation (`Change.fdb` / `Change.neigh`: install or replace one entry, or
  remove it) for the data plane, whose C tables are then the only per-entry state; a full read
  (`load`) hands back a `Snapshot` of packed tables (FdbTable arrays) that the data plane takes
  whole, replacing what it held. So 1,000,000 entries cost the fast path's tables, not a Python
  object each, and a resynchronisation is a new full read, never a diff against a copy.
- Unparsable keys are remembered in `bad` (key -> reason) and otherwise ignored, so one
  malformed key never hides the others; a key that turns bad removes what it held.
- `desired_for` is a pure function of the view and the network: peers = the network's members
  except this host (same address family, sorted), plus the file's static peers; FDB and
  neighbour entries = the file's. `installable` says which store entries a network's data
  plane takes: a remote of its address family that is not this host. A MAC this host publishes
  is never installed as a remote entry, nor an address it publishes for a local endpoint.
- `Publisher.plan` claims an item (a local MAC: P/fdb/<net>/<mac> = this host; a local address:
  P/neigh/<net>/<ip> = its MAC and this host) when it is seen locally and no other host's claim
  was heard *after* it was last seen here (it moved back, or the other claim is stale); it
  withdraws a claim (delete, only if the value is still ours) once the item has aged out of the
  local tables. It keeps local items only: what it claimed, and when another host took over an
  item it had seen (`note`, fed by the watch). So a MAC that moved to another host is left to
  that host, and two hosts never keep overwriting each other while only one of them sees it.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, EtcdConfig, NetworkConfig, check_networks, store_network
from ..core.fdbtable import FdbBuilder, FdbTable
from ..wire import is_multicast, mac_to_bytes
from .base import Desired
from .etcd_keys import MemberAck, StoreKey, decode_key, decode_member, encode_member, key_id, key_set

__all__ = ["Keys", "StoreView", "Loader", "Change", "Snapshot", "Ops", "Publisher", "desired_for", "installable",
           "plan_networks", "encode_member", "encode_fdb", "decode_fdb", "encode_neigh", "decode_neigh",
           "NETWORKS", "MEMBERS", "FDB", "NEIGH", "KEYS"]

NETWORKS, MEMBERS, FDB, NEIGH, KEYS = "networks", "members", "fdb", "neigh", "keys"
_CACHE = 65536  # decoded values / addresses remembered (a fleet has far fewer hosts than entries)


class Keys:
    """Builds and parses the keys under one prefix (bytes, as etcd has them)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.root = (self.prefix + "/").encode()

    def network(self, name: str) -> bytes:
        return f"{self.prefix}/{NETWORKS}/{name}".encode()

    def member(self, name: str, address: str) -> bytes:
        return f"{self.prefix}/{MEMBERS}/{name}/{address}".encode()

    def members(self, name: str) -> bytes:
        return f"{self.prefix}/{MEMBERS}/{name}/".encode()

    def fdb(self, name: str, mac: str) -> bytes:
        return f"{self.prefix}/{FDB}/{name}/{mac}".encode()

    def neigh(self, name: str, ip: str) -> bytes:
        return f"{self.prefix}/{NEIGH}/{name}/{ip}".encode()

    def key(self, name: str, kid: int) -> bytes:
        return f"{self.prefix}/{KEYS}/{name}/{kid}".encode()

    def keys(self, name: str) -> bytes:
        return f"{self.prefix}/{KEYS}/{name}/".encode()

    def item(self, kind: str, name: str, item: str) -> bytes:
        return f"{self.prefix}/{kind}/{name}/{item}".encode()

    def kind(self, kind: str) -> bytes:
        """The prefix of every key of one kind (networks, members, fdb, neigh)."""
        return f"{self.prefix}/{kind}/".encode()

    def entries(self, kind: str, name: str) -> bytes:
        """The prefix of network `name`'s fdb or neigh keys."""
        return f"{self.prefix}/{kind}/{name}/".encode()

    def parse(self, key: bytes) -> tuple[str, str, str]:
        """key -> (kind, network, item); item is "" for a network key. ValueError(reason) if not ours."""
        if not key.startswith(self.root):
            raise ValueError("outside the prefix")
        try:
            rest = key[len(self.root):].decode()
        except UnicodeDecodeError:
            raise ValueError("not UTF-8") from None
        parts = rest.split("/")
        if parts[0] == NETWORKS and len(parts) == 2 and parts[1]:
            return NETWORKS, parts[1], ""
        if parts[0] in (MEMBERS, FDB, NEIGH, KEYS) and len(parts) == 3 and parts[1] and parts[2]:
            return parts[0], parts[1], parts[2]
        raise ValueError(f"not {self.prefix}/networks/<name>, /members/<name>/<address>, "
                         "/fdb/<name>/<mac>, /neigh/<name>/<ip> or /keys/<name>/<id>")


def encode_fdb(remote: str) -> bytes:
    return json.dumps({"remote": remote}).encode()


def encode_neigh(mac: str, host: str | None = None) -> bytes:
    """A neigh value; `host`: the host that publishes it for a local endpoint of its own."""
    return json.dumps({"mac": mac} if host is None else {"mac": mac, "host": host}).encode()


def decode_neigh(value: bytes) -> tuple[str, str | None]:
    """(MAC, publishing host or None) of a neigh value; ValueError(reason) if malformed."""
    obj = _json(value)
    if not isinstance(obj, dict) or not isinstance(obj.get("mac"), str):
        raise ValueError('value is not {"mac": "<aa:bb:cc:dd:ee:ff>"}')
    host = obj.get("host")
    if host is not None and not isinstance(host, str):
        raise ValueError('"host" is not an address')
    return _mac(obj["mac"]), None if host is None else _address(host)


def _json(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("value is not JSON") from None


def _address(text: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if addr.is_unspecified or addr.is_multicast:
        raise ValueError(f"{text} is not a unicast address")
    return addr.compressed


def decode_fdb(value: bytes) -> str:
    """The remote address of an fdb value; ValueError(reason) if malformed."""
    obj = _json(value)
    if not isinstance(obj, dict) or not isinstance(obj.get("remote"), str):
        raise ValueError('value is not {"remote": "<address>"}')
    return _address(obj["remote"])


def _mac(text: str) -> str:
    try:
        raw = mac_to_bytes(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a MAC address") from None
    if is_multicast(raw):
        raise ValueError(f"{text} is a group address")
    return text.lower()


def _fast_mac(item: bytes) -> bytes | None:
    """The 6 bytes of a unicast MAC written as 17 lower-case hex-and-colon bytes, else None
    (then the general parser decides, with its reasons)."""
    if len(item) != 17 or item[2::3] != b":::::" or item != item.lower():
        return None
    try:
        raw = binascii.unhexlify(item.replace(b":", b""))
    except binascii.Error:
        return None
    return None if raw[0] & 1 else raw


def _mac_key(item: str) -> bytes:
    """The 6 bytes of an fdb key's MAC, which must be in lower case; ValueError(reason)."""
    mac = _mac(item)
    if item != mac:
        raise ValueError(f"MAC {item!r} is not in lower case")
    return bytes.fromhex(mac.replace(":", ""))


NeighOp = tuple[str, str | None] | None   # (mac, publishing host) or None: removed


@dataclass
class Change:
    """What a store update touched: the network definitions, whose flood lists may differ now,
    and the entries to install (a value) or remove (None) per network, the last word per item."""
    networks: bool = False
    dirty: set[str] = field(default_factory=set)
    fdb: dict[str, dict[bytes, str | None]] = field(default_factory=dict)      # net -> mac -> remote
    neigh: dict[str, dict[str, NeighOp]] = field(default_factory=dict)         # net -> ip -> op

    def __ior__(self, other: "Change") -> "Change":
        self.networks |= other.networks
        self.dirty |= other.dirty
        for name, ops in other.fdb.items():
            self.fdb.setdefault(name, {}).update(ops)
        for name, nops in other.neigh.items():
            self.neigh.setdefault(name, {}).update(nops)
        return self

    def entries(self) -> set[str]:
        """Networks with entry operations."""
        return set(self.fdb) | set(self.neigh)


@dataclass
class Snapshot:
    """The fdb and neigh keys of one full read, packed per network (consumed, then dropped)."""
    fdb: dict[str, FdbBuilder] = field(default_factory=dict)
    neigh: dict[str, list[tuple[str, str, str | None]]] = field(default_factory=dict)  # (ip, mac, host)

    def remote_of(self, name: str, mac: bytes) -> str | None:
        """The remote the read gave `mac` in network `name` (the last key wins, as in the data plane)."""
        b = self.fdb.get(name)
        if b is None:
            return None
        i = b.macs.rfind(mac)
        while i >= 0 and i % 6:
            i = b.macs.rfind(mac, 0, i + 5)
        return None if i < 0 else tuple(b.remote_ids)[b.index[i // 6]]


class StoreView:
    """Network definitions and members under one prefix, as this daemon last heard them."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.networks: dict[str, Any] = {}               # name -> decoded JSON definition
        self.members: dict[str, set[str]] = {}           # name -> member addresses
        self.netkeys: dict[str, dict[int, StoreKey]] = {}  # name -> key id -> key (etcd_keys.py)
        self.acks: dict[str, dict[str, MemberAck]] = {}  # name -> member address -> its key ids
        self.bad: dict[bytes, str] = {}                  # unparsable key -> why
        self._remotes: dict[bytes, str] = {}             # fdb value -> remote (decode cache)
        self._addrs: dict[str, str] = {}                 # address text -> normalised (shared strings)

    def __len__(self) -> int:
        return (len(self.networks) + sum(map(len, self.members.values()))
                + sum(map(len, self.netkeys.values())))

    def load(self, kvs: Iterable[tuple[bytes, bytes]]) -> tuple[Change, Snapshot]:
        """Replace everything with a full read (start-up, resynchronisation): the Change says
        which definitions and flood lists differ; the Snapshot holds every entry, packed."""
        loader = self.loader()
        loader.feed(kvs)
        return loader.finish()

    def loader(self, *, entries_only: bool = False) -> "Loader":
        """A full read taken page by page (`feed`), applied by `finish`; with `entries_only`,
        a read of fdb / neigh keys that leaves definitions and members as they are."""
        return Loader(self, entries_only)

    def put(self, key: bytes, value: bytes) -> Change:
        try:
            kind, name, item = self.keys.parse(key)
            if kind == FDB:
                mac, remote = _mac_key(item), self._remote(value)
                change = Change(fdb={name: {mac: remote}})
            elif kind == NEIGH:
                ip = self._neigh_ip(item)
                change = Change(neigh={name: {ip: decode_neigh(value)}})
            else:
                change = self._put(kind, name, item, value)
        except ValueError as e:
            # a key that turned bad is no longer what it was: forget the old value
            change = self.delete(key)
            self.bad[key] = str(e)
            return change
        self.bad.pop(key, None)
        return change

    def _put(self, kind: str, name: str, item: str, value: bytes) -> Change:
        if kind == NETWORKS:
            obj = _json(value)
            if self.networks.get(name) == obj:
                return Change()
            self.networks[name] = obj
            return Change(networks=True, dirty={name})
        if kind == KEYS:
            kid, new = key_id(item), decode_key(value)
            held = self.netkeys.setdefault(name, {})
            old = held.get(kid)
            if old is not None and old.same(new):
                new.material[:] = bytes(32)
                return Change()
            held[kid] = new
            if old is not None:
                old.material[:] = bytes(32)
            # a network waiting for its first key starts now: re-plan the networks too
            return Change(networks=old is None and len(held) == 1, dirty={name})
        addr = self._addr(item)
        if item != addr:
            raise ValueError(f"address {item!r} is not in its compressed form {addr!r}")
        members = self.members.setdefault(name, set())
        acks = self.acks.setdefault(name, {})
        ack = decode_member(value)
        if addr in members and acks.get(addr) == ack:
            return Change()
        members.add(addr)
        acks[addr] = ack
        return Change(dirty={name})

    def _remote(self, value: bytes) -> str:
        remote = _cached(self._remotes, value, decode_fdb)
        return self._addrs.setdefault(remote, remote)   # one string per address, shared

    def _addr(self, item: str) -> str:
        return _cached(self._addrs, item, _address)

    def _neigh_ip(self, item: str) -> str:
        ip = _address(item)
        if item != ip:
            raise ValueError(f"address {item!r} is not in its compressed form {ip!r}")
        return ip

    def delete(self, key: bytes) -> Change:
        self.bad.pop(key, None)
        try:
            kind, name, item = self.keys.parse(key)
        except ValueError:
            return Change()
        if kind == NETWORKS:
            if self.networks.pop(name, None) is None:
                return Change()
            return Change(networks=True, dirty={name})
        if kind == MEMBERS:
            members = self.members.get(name)
            if members is None or item not in members:
                return Change()
            members.discard(item)
            self.acks.get(name, {}).pop(item, None)
            if not members:
                del self.members[name]
                self.acks.pop(name, None)
            return Change(dirty={name})
        if kind == KEYS:
            held = self.netkeys.get(name, {})
            gone = held.pop(int(item), None) if item.isdigit() else None
            if gone is None:
                return Change()
            gone.material[:] = bytes(32)
            if not held:
                del self.netkeys[name]
            return Change(dirty={name})
        if kind == NEIGH:
            return Change(neigh={name: {item: None}})
        try:
            return Change(fdb={name: {_mac_key(item): None}})
        except ValueError:
            return Change()


class Loader:
    """One full read of the store (or of one network's entries) in progress: see StoreView.loader."""

    def __init__(self, view: StoreView, entries_only: bool) -> None:
        self.view, self.entries_only = view, entries_only
        self.networks: dict[str, Any] = {}
        self.members: dict[str, set[str]] = {}
        self.netkeys: dict[str, dict[int, StoreKey]] = {}
        self.acks: dict[str, dict[str, MemberAck]] = {}
        self.bad: dict[bytes, str] = {}
        self.snap = Snapshot()
        self._names: dict[bytes, str] = {}

    def feed(self, kvs: Iterable[tuple[bytes, bytes]]) -> None:
        view, snap, parse = self.view, self.snap, self.view.keys.parse
        fdb_prefix = view.keys.root + FDB.encode() + b"/"
        cut, names, remote = len(fdb_prefix), self._names, view._remote
        for key, value in kvs:
            # the common case first, on bytes (a million of these at start-up): an fdb key whose
            # MAC is 17 lower-case characters; anything else takes the general path below
            if key.startswith(fdb_prefix):
                net_b, _, mac_b = key[cut:].partition(b"/")
                raw = _fast_mac(mac_b)
                net = names.get(net_b)
                if net is None and raw is not None and net_b and net_b.isascii():
                    net = names[net_b] = net_b.decode()
                if raw is not None and net is not None:
                    try:
                        r = remote(value)
                    except ValueError as e:
                        self.bad[key] = str(e)
                        continue
                    fb = snap.fdb.get(net)
                    if fb is None:
                        fb = snap.fdb[net] = FdbBuilder()
                    fb.add(raw, r)
                    continue
            try:
                kind, name, item = parse(key)
                if kind == FDB:
                    b = snap.fdb.get(name)
                    if b is None:
                        b = snap.fdb[name] = FdbBuilder()
                    b.add(_mac_key(item), view._remote(value))
                elif kind == NEIGH:
                    mac, host = decode_neigh(value)
                    snap.neigh.setdefault(name, []).append((view._neigh_ip(item), mac, host))
                elif self.entries_only:
                    continue
                elif kind == NETWORKS:
                    self.networks[name] = _json(value)
                elif kind == KEYS:
                    self.netkeys.setdefault(name, {})[key_id(item)] = decode_key(value)
                else:
                    addr = view._addr(item)
                    if item != addr:
                        raise ValueError(f"address {item!r} is not in its compressed form {addr!r}")
                    self.members.setdefault(name, set()).add(addr)
                    self.acks.setdefault(name, {})[addr] = decode_member(value)
            except ValueError as e:
                self.bad[key] = str(e)

    def finish(self) -> tuple[Change, Snapshot]:
        view = self.view
        if self.entries_only:
            view.bad.update(self.bad)
            return Change(), self.snap
        old_nets, old_members, old_keys, old_acks = view.networks, view.members, view.netkeys, view.acks
        view.networks, view.members, view.bad = self.networks, self.members, self.bad
        view.netkeys, view.acks = self.netkeys, self.acks
        dirty = {n for n in old_members.keys() | view.members.keys() if old_members.get(n) != view.members.get(n)}
        dirty |= {n for n in old_acks.keys() | view.acks.keys() if old_acks.get(n) != view.acks.get(n)}
        rekeyed = {n for n in old_keys.keys() | view.netkeys.keys()
                   if not _same_keys(old_keys.get(n, {}), view.netkeys.get(n, {}))}
        for held in old_keys.values():
            for k in held.values():
                k.material[:] = bytes(len(k.material))
        return Change(networks=old_nets != view.networks or bool(rekeyed), dirty=dirty | rekeyed), self.snap


def _same_keys(a: dict[int, StoreKey], b: dict[int, StoreKey]) -> bool:
    return a.keys() == b.keys() and all(a[k].same(b[k]) for k in a)


def _cached(cache: dict[Any, str], key: Any, decode: Any) -> str:
    """decode(key), remembered (a bounded cache: emptied when full, never grown past _CACHE)."""
    got = cache.get(key)
    if got is None:
        got = decode(key)
        if len(cache) >= _CACHE:
            cache.clear()
        cache[key] = got
    return got


def _is_v6(addr: str) -> bool:
    return ":" in addr  # addresses in the view are normalised ipaddress text


def installable(net: NetworkConfig, remote: str) -> bool:
    """Whether network `net`'s data plane takes a store entry pointing at `remote`."""
    return remote != net.local and _is_v6(remote) == net.ipv6


def desired_for(view: StoreView, net: NetworkConfig) -> Desired:
    v6 = net.ipv6
    peers = {a for a in view.members.get(net.name, ()) if a != net.local and _is_v6(a) == v6}
    peers.update(net.peers)
    fdb = net.fdb if isinstance(net.fdb, FdbTable) else FdbTable.from_pairs((f.mac, f.remote) for f in net.fdb)
    keys = None
    if net.encrypt and net.key_file is None:    # keys from the store
        keys = key_set(view.netkeys.get(net.name, {}), view.acks.get(net.name, {}), net.local)
    return Desired(tuple(sorted(peers, key=_addr_order)), fdb, net.neigh_entries(), keys)


@functools.lru_cache(maxsize=65536)
def _addr_order(addr: str) -> tuple[int, int]:
    """ipaddress order of a normalised address, remembered: a network of 1,000 members is
    sorted at every membership change, and parsing 1,000 addresses each time was most of the
    control plane's CPU at 1,000 such networks (bench/README.md)."""
    a = ipaddress.ip_address(addr)
    return a.version, int(a)


def plan_networks(file_networks: Iterable[NetworkConfig], view: StoreView, etcd: EtcdConfig,
                  local: str | None) -> tuple[dict[str, NetworkConfig], dict[str, str]]:
    """The networks this host runs: the file's, then the store's (by name) that fit beside them.

    Returns (networks by name, problems by network name). A file network shadows a
    store network of the same name: the file is this host's explicit word. An encrypted
    network keyed by the store waits (a problem) until the store holds a key for it.
    """
    nets = {n.name: n for n in file_networks}
    problems: dict[str, str] = {}
    accepted = list(nets.values())
    taken = _Taken(accepted)
    for name in sorted(view.networks):
        if name in nets:
            continue
        path = view.keys.network(name).decode()
        if local is None:
            problems[name] = f"{path}: no local address for store networks (set etcd.local)"
            continue
        try:
            n = store_network(name, view.networks[name], local=local, etcd=etcd, path=path)
            if taken.may_clash(n):      # the full rules only then: they cost O(networks) each
                check_networks(accepted + [n])
        except ConfigError as e:
            problems[name] = str(e) if e.field.startswith(path) else f"{path}: {e}"
            continue
        accepted.append(n)
        taken.add(n)
        nets[name] = n
    for name, n in list(nets.items()):
        if n.encrypt and n.key_file is None and not view.netkeys.get(name):
            # never in the clear: it starts once its first key is in the store
            problems[name] = (f"encrypted, and {view.keys.keys(name).decode()} holds no key yet "
                              f"(`vxlan-dp keys rotate {name}` puts the first)")
            del nets[name]
    return nets, problems


class _Taken:
    """What accepted networks hold (names, VNIs, devices, UDP ports), so that a network that
    cannot break any rule of config.check_networks skips it: 1,000 store networks cost 1,000
    set lookups instead of half a million pairs."""

    def __init__(self, nets: Iterable[NetworkConfig]) -> None:
        self.names: set[str] = set()
        self.vnis: set[int] = set()
        self.devices: set[str] = set()
        self.udp: dict[tuple[str, int], tuple[str, bool]] = {}
        for n in nets:
            self.add(n)

    def add(self, n: NetworkConfig) -> None:
        self.names.add(n.name)
        self.vnis.add(n.vni)
        self.devices.add(n.tap)
        if n.bridge is not None:
            self.devices.add(n.bridge)
        self.udp.setdefault((n.local, n.port), (n.encap, n.encrypt))

    def may_clash(self, n: NetworkConfig) -> bool:
        if n.encap != "vxlan" or n.encrypt:     # GRE keys, ports of its own: the full rules
            return True
        other = self.udp.get((n.local, n.port))
        return (n.name in self.names or n.vni in self.vnis or n.tap in self.devices
                or (n.bridge is not None and (n.bridge in self.devices or n.bridge == n.tap))
                or (other is not None and other != ("vxlan", False)))


@dataclass
class Ops:
    """Writes the publisher wants: puts (key, value) and conditional deletes (key, expected value)."""
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)

    def __ior__(self, other: "Ops") -> "Ops":
        self.puts += other.puts
        self.deletes += other.deletes
        return self


Slot = tuple[str, str]  # (kind: FDB or NEIGH, network)


class Publisher:
    """Which local items this host claims in the store (see the module docstring for the rule):
    kind FDB, item a MAC; kind NEIGH, item an overlay address. Holds local items only."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.claimed: dict[Slot, dict[str, bytes]] = {}   # item -> the value we put
        self.moved: dict[Slot, dict[str, float]] = {}     # item -> when another host claimed it
        self.seen: dict[Slot, set[str]] = {}              # items seen locally at the last plan

    def note(self, kind: str, name: str, item: str, mine: bool | None, now: float) -> bool:
        """A store event for an item: `mine` True (our own value), False (another host's value),
        None (deleted). Only items this host claimed or saw matter; others are not kept.
        True when it was a claim of ours (taken over or deleted)."""
        if mine:
            return False
        slot = (kind, name)
        claimed, moved = self.claimed.get(slot), self.moved.get(slot)
        ours = claimed is not None and claimed.pop(item, None) is not None
        if mine is None:
            if moved is not None:
                moved.pop(item, None)
        elif ours or (moved is not None and item in moved) or item in self.seen.get(slot, ()):
            self.moved.setdefault(slot, {})[item] = now
        return ours

    def plan(self, kind: str, name: str, seen: Iterable[tuple[str, bytes, float]], now: float) -> Ops:
        """`seen`: (item, the value to publish for it, age) from the data plane's local tables."""
        ops = Ops()
        slot = (kind, name)
        claimed = self.claimed.setdefault(slot, {})
        moved = self.moved.setdefault(slot, {})
        here = set()
        for item, value, age in seen:
            here.add(item)
            if claimed.get(item) == value:
                continue
            taken = moved.get(item)
            if taken is not None and now - age <= taken:
                continue        # another host claimed it after we last saw it: it lives there now
            moved.pop(item, None)
            claimed[item] = value
            ops.puts.append((self.keys.item(kind, name, item), value))
        for item in [i for i in claimed if i not in here]:
            ops.deletes.append((self.keys.item(kind, name, item), claimed.pop(item)))
        for item in [i for i in moved if i not in here]:
            del moved[item]
        self.seen[slot] = here
        return ops

    def resynced(self, still_ours: Any) -> None:
        """After a full read: keep only the claims the store still holds with our value
        (`still_ours(kind, name, item, value) -> bool`); the others are claimed anew if seen."""
        for (kind, name), claimed in self.claimed.items():
            for item in [i for i, v in claimed.items() if not still_ours(kind, name, i, v)]:
                del claimed[item]

    def renew(self) -> Ops:
        """Puts that re-bind every claim (to a new lease)."""
        ops = Ops()
        for (kind, name), claimed in self.claimed.items():
            ops.puts += [(self.keys.item(kind, name, item), value) for item, value in claimed.items()]
        return ops

    def forget(self, name: str) -> Ops:
        """Drop network `name`'s claims; deletes for them (only where the value is still ours)."""
        ops = Ops()
        for kind in (FDB, NEIGH):
            for item, value in self.claimed.pop((kind, name), {}).items():
                ops.deletes.append((self.keys.item(kind, name, item), value))
            self.moved.pop((kind, name), None)
            self.seen.pop((kind, name), None)
        return ops

    def count(self, kind: str = FDB) -> int:
        return sum(len(c) for (k, _), c in self.claimed.items() if k == kind)
