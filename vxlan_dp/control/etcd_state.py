"""The etcd control plane without I/O: key schema, the mirrored store, Desired state, publishing.

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
                                 <ip> in compressed form

Like aioquic's connection, everything here takes its input (key/value pairs, `now`) and hands
back decisions; etcd.py does the talking. Invariants:
- `StoreView` mirrors exactly the keys under P it was given (`load`, `put`, `delete`), minus
  the ones it cannot parse: those are remembered in `bad` (key -> reason) and otherwise ignored,
  so one malformed key never hides the others.
- `desired_for` is a pure function of the view and the network: peers = the network's members
  except this host (same address family, sorted), plus the file's static peers; FDB = the file's
  static entries, then the store's entries whose remote is not this host. A MAC that this host
  publishes itself is never installed as a remote entry.
- `Publisher.plan` claims a MAC (put P/fdb/<name>/<mac> = this host) when it is seen locally and
  the store has no owner for it, or another owner that was recorded *before* the MAC was last
  seen here (it moved back, or the other claim is stale); it withdraws a claim (delete, only if
  the value is still ours) once the MAC has aged out of the local table. So a MAC that moved to
  another host is left to that host, and two hosts never keep overwriting each other while only
  one of them sees the MAC.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..config import ConfigError, EtcdConfig, NetworkConfig, check_networks, store_network
from ..wire import is_multicast, mac_to_bytes
from .base import Desired

__all__ = ["Keys", "StoreView", "Change", "Ops", "Publisher", "desired_for", "plan_networks",
           "encode_member", "encode_fdb", "decode_fdb", "encode_neigh", "decode_neigh", "NETWORKS",
           "MEMBERS", "FDB", "NEIGH"]

NETWORKS, MEMBERS, FDB, NEIGH = "networks", "members", "fdb", "neigh"


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
        if parts[0] in (MEMBERS, FDB, NEIGH) and len(parts) == 3 and parts[1] and parts[2]:
            return parts[0], parts[1], parts[2]
        raise ValueError(f"not {self.prefix}/networks/<name>, /members/<name>/<address>, "
                         "/fdb/<name>/<mac> or /neigh/<name>/<ip>")


def encode_member() -> bytes:
    return json.dumps({"version": __version__}).encode()


def encode_fdb(remote: str) -> bytes:
    return json.dumps({"remote": remote}).encode()


def encode_neigh(mac: str) -> bytes:
    return json.dumps({"mac": mac}).encode()


def decode_neigh(value: bytes) -> str:
    """The MAC of a neigh value; ValueError(reason) if malformed."""
    obj = _json(value)
    if not isinstance(obj, dict) or not isinstance(obj.get("mac"), str):
        raise ValueError('value is not {"mac": "<aa:bb:cc:dd:ee:ff>"}')
    return _mac(obj["mac"])


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


@dataclass
class Change:
    """What a store update touched: the network definitions, and whose Desired may differ now."""
    networks: bool = False
    dirty: set[str] = field(default_factory=set)

    def __ior__(self, other: "Change") -> "Change":
        self.networks |= other.networks
        self.dirty |= other.dirty
        return self


class StoreView:
    """The part of the store under one prefix, as this daemon last heard it."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.networks: dict[str, Any] = {}               # name -> decoded JSON definition
        self.members: dict[str, set[str]] = {}           # name -> member addresses
        self.fdb: dict[str, dict[str, str]] = {}         # name -> mac -> remote
        self.neigh: dict[str, dict[str, str]] = {}       # name -> overlay ip -> mac
        self.changed_at: dict[tuple[str, str], float] = {}  # (name, mac) -> when its remote last changed
        self.bad: dict[bytes, str] = {}                  # unparsable key -> why

    def __len__(self) -> int:
        return (len(self.networks) + sum(map(len, self.members.values()))
                + sum(map(len, self.fdb.values())) + sum(map(len, self.neigh.values())))

    def load(self, kvs: Iterable[tuple[bytes, bytes]], now: float) -> Change:
        """Replace everything with a full snapshot (start-up, resynchronisation)."""
        old_nets, old_members, old_fdb, old_neigh = self.networks, self.members, self.fdb, self.neigh
        self.networks, self.members, self.fdb, self.neigh, self.bad = {}, {}, {}, {}, {}
        changed_at, self.changed_at = self.changed_at, {}
        for key, value in kvs:
            self._put(key, value, now, quiet=True)
        # A remote that is the same as before keeps its time: what matters to the publisher is
        # when the owner last changed, and a resync is not a change.
        for name, table in self.fdb.items():
            before = old_fdb.get(name, {})
            for mac, remote in table.items():
                if before.get(mac) == remote and (name, mac) in changed_at:
                    self.changed_at[(name, mac)] = changed_at[(name, mac)]
        dirty = {n for n in old_members.keys() | self.members.keys()
                 if old_members.get(n) != self.members.get(n)}
        dirty |= {n for n in old_fdb.keys() | self.fdb.keys() if old_fdb.get(n) != self.fdb.get(n)}
        dirty |= {n for n in old_neigh.keys() | self.neigh.keys() if old_neigh.get(n) != self.neigh.get(n)}
        return Change(networks=old_nets != self.networks, dirty=dirty)

    def put(self, key: bytes, value: bytes, now: float) -> Change:
        return self._put(key, value, now, quiet=False)

    def _put(self, key: bytes, value: bytes, now: float, *, quiet: bool) -> Change:
        try:
            kind, name, item = self.keys.parse(key)
            if kind == NETWORKS:
                obj = _json(value)
                if self.networks.get(name) == obj:
                    return Change()
                self.networks[name] = obj
                return Change(networks=True, dirty={name})
            if kind == MEMBERS:
                addr = _address(item)
                if item != addr:
                    raise ValueError(f"address {item!r} is not in its compressed form {addr!r}")
                members = self.members.setdefault(name, set())
                if addr in members:
                    return Change()
                members.add(addr)
                return Change(dirty={name})
            if kind == NEIGH:
                ip = _address(item)
                if item != ip:
                    raise ValueError(f"address {item!r} is not in its compressed form {ip!r}")
                mac = decode_neigh(value)
                return self._set(self.neigh, name, ip, mac)
            mac = _mac(item)
            if item != mac:
                raise ValueError(f"MAC {item!r} is not in lower case")
            remote = decode_fdb(value)
        except ValueError as e:
            # a key that turned bad is no longer what it was: forget the old value
            change = Change() if quiet else self.delete(key, now)
            self.bad[key] = str(e)
            return change
        self.bad.pop(key, None)
        table = self.fdb.setdefault(name, {})
        if table.get(mac) == remote:
            return Change()
        table[mac] = remote
        self.changed_at[(name, mac)] = now
        return Change(dirty={name})

    def _set(self, tables: dict[str, dict[str, str]], name: str, item: str, value: str) -> Change:
        table = tables.setdefault(name, {})
        if table.get(item) == value:
            return Change()
        table[item] = value
        return Change(dirty={name})

    def delete(self, key: bytes, now: float) -> Change:
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
            if not members:
                del self.members[name]
            return Change(dirty={name})
        tables = self.neigh if kind == NEIGH else self.fdb
        table = tables.get(name)
        if table is None or table.pop(item, None) is None:
            return Change()
        if not table:
            del tables[name]
        if kind == FDB:
            self.changed_at.pop((name, item), None)
        return Change(dirty={name})

    def owner(self, name: str, mac: str) -> str | None:
        return self.fdb.get(name, {}).get(mac)


def _is_v6(addr: str) -> bool:
    return ":" in addr  # addresses in the view are normalised ipaddress text


def desired_for(view: StoreView, net: NetworkConfig) -> Desired:
    v6 = net.ipv6
    peers = {a for a in view.members.get(net.name, ()) if a != net.local and _is_v6(a) == v6}
    peers.update(net.peers)
    fdb = {f.mac: f.remote for f in net.fdb}
    for mac, remote in view.fdb.get(net.name, {}).items():
        if remote != net.local and _is_v6(remote) == v6 and mac not in fdb:
            fdb[mac] = remote
    neigh = dict(net.neigh_entries())       # the file's word first, as for fdb
    for ip, mac in view.neigh.get(net.name, {}).items():
        neigh.setdefault(ip, mac)
    return Desired(tuple(sorted(peers, key=ipaddress.ip_address)), tuple(fdb.items()),
                   tuple(neigh.items()))


def plan_networks(file_networks: Iterable[NetworkConfig], view: StoreView, etcd: EtcdConfig,
                  local: str | None) -> tuple[dict[str, NetworkConfig], dict[str, str]]:
    """The networks this host runs: the file's, then the store's (by name) that fit beside them.

    Returns (networks by name, problems by store network name). A file network shadows a
    store network of the same name: the file is this host's explicit word.
    """
    nets = {n.name: n for n in file_networks}
    problems: dict[str, str] = {}
    accepted = list(nets.values())
    for name in sorted(view.networks):
        if name in nets:
            continue
        path = view.keys.network(name).decode()
        if local is None:
            problems[name] = f"{path}: no local address for store networks (set etcd.local)"
            continue
        try:
            n = store_network(name, view.networks[name], local=local, etcd=etcd, path=path)
            check_networks(accepted + [n])
        except ConfigError as e:
            problems[name] = str(e) if e.field.startswith(path) else f"{path}: {e}"
            continue
        accepted.append(n)
        nets[name] = n
    return nets, problems


@dataclass
class Ops:
    """Writes the publisher wants: puts (key, value) and conditional deletes (key, expected value)."""
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)


class Publisher:
    """Which local MACs this host claims in the store (see the module docstring for the rule)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.claimed: dict[str, dict[str, str]] = {}  # network -> mac -> local address claimed with

    def plan(self, name: str, local: str, seen: Iterable[tuple[str, float]], view: StoreView,
             now: float) -> Ops:
        """`seen`: (mac, age) from the data plane's local-MAC table of network `name`."""
        ops = Ops()
        claimed = self.claimed.setdefault(name, {})
        value = encode_fdb(local)
        here = {mac: now - age for mac, age in seen}
        for mac, last_seen in here.items():
            owner = view.owner(name, mac)
            if owner == local:
                claimed[mac] = local
                continue
            if owner is not None and last_seen <= view.changed_at.get((name, mac), now):
                claimed.pop(mac, None)  # it lives elsewhere now; not ours to withdraw
                continue
            claimed[mac] = local
            ops.puts.append((self.keys.fdb(name, mac), value))
        for mac in [m for m in claimed if m not in here]:
            addr = claimed.pop(mac)
            if view.owner(name, mac) == addr:
                ops.deletes.append((self.keys.fdb(name, mac), encode_fdb(addr)))
        return ops

    def renew(self, view: StoreView) -> Ops:
        """Puts that re-bind every claim the store still shows as ours (to a new lease)."""
        ops = Ops()
        for name, claimed in self.claimed.items():
            for mac, addr in claimed.items():
                if view.owner(name, mac) == addr:
                    ops.puts.append((self.keys.fdb(name, mac), encode_fdb(addr)))
        return ops

    def forget(self, name: str, view: StoreView) -> Ops:
        """Drop network `name`'s claims; deletes for those the store still shows as ours."""
        ops = Ops()
        for mac, addr in self.claimed.pop(name, {}).items():
            if view.owner(name, mac) == addr:
                ops.deletes.append((self.keys.fdb(name, mac), encode_fdb(addr)))
        return ops

    def count(self) -> int:
        return sum(map(len, self.claimed.values()))
