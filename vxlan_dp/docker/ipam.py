"""The IPAM half of the plugin: pools and addresses that never collide across hosts.

libnetwork asks for a pool when a network is created, then for its gateway address, then for
one address per endpoint (docs/ipam.md in moby/libnetwork). Every host runs the same
`docker network create --subnet S`, so every host's Docker asks this host's plugin for
addresses out of the same subnet; they must differ across hosts:

- static control: host i of n allocates only from the i-th of n equal parts of the usable
  addresses (`[docker] slice = "i/n"`); parts are disjoint, so hosts cannot collide.
- etcd: an address is claimed in the store (`<prefix>/ipam/<subnet>/<address>`, created only
  if absent, bound to the claimer's lease), so it is unique across the fleet; a dead host's
  claims go when its lease expires, a `docker rm` releases its address at once.

Invariants:
- Pool IDs are the pool's own text ("192.168.60.0/24", or "192.168.60.0/24 192.168.60.64/26"
  with a sub-pool), so a restarted plugin understands the IDs Docker kept.
- The gateway address (the first address, or the one given with --gateway) is the same on
  every host and is never handed to an endpoint; nothing answers on it (an L2 overlay).
- An address is held by one owner (the endpoint's MAC address, which libnetwork sends because
  we require it); the same owner asking again for its address gets it (a dockerd restart
  re-requests the addresses of running containers).
This module does no I/O but through the `AddressBook` it is given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["IpamError", "Pool", "AddressBook", "LocalBook", "Ipam", "GATEWAY_TYPE", "MAC_OPTION"]

GATEWAY_TYPE = "com.docker.network.gateway"       # RequestAddressType of the gateway request
MAC_OPTION = "com.docker.network.endpoint.macaddress"
LOCAL_SPACE, GLOBAL_SPACE = "vxlan-dp-local", "vxlan-dp-global"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpamError(Exception):
    """A request that cannot be met; the text goes back to Docker (and to the user)."""


@dataclass(frozen=True)
class Pool:
    net: Network
    sub: Network | None = None

    @property
    def id(self) -> str:
        return str(self.net) if self.sub is None else f"{self.net} {self.sub}"

    @classmethod
    def parse(cls, pool_id: str) -> "Pool":
        try:
            parts = pool_id.split()
            net = ipaddress.ip_network(parts[0])
            sub = ipaddress.ip_network(parts[1]) if len(parts) == 2 else None
        except (ValueError, IndexError):
            raise IpamError(f"unknown pool {pool_id!r}") from None
        if len(parts) > 2 or (sub is not None and not sub.subnet_of(net)):  # type: ignore[arg-type]
            raise IpamError(f"unknown pool {pool_id!r}")
        return cls(net, sub)

    @property
    def gateway(self) -> str:
        return str(self.net.network_address + 1)

    def candidates(self, part: tuple[int, int]) -> Iterator[str]:
        """Addresses this host may hand out, in order: its part of the usable range."""
        if self.sub is not None:          # --ip-range: the user chose the range itself
            first, last = int(self.sub.network_address), int(self.sub.broadcast_address)
        else:
            first, last = int(self.net.network_address), int(self.net.broadcast_address)
        # never the network address, the gateway (first host) or the IPv4 broadcast
        lo = max(first, int(self.net.network_address) + 2)
        hi = min(last, int(self.net.broadcast_address) - (1 if self.net.version == 4 else 0))
        i, n = part
        size = (hi - lo + 1) // n if hi >= lo else 0
        start = lo + (i - 1) * size
        end = hi if i == n else start + size - 1
        cls = ipaddress.IPv4Address if self.net.version == 4 else ipaddress.IPv6Address
        for a in range(start, end + 1):
            yield str(cls(a))


class AddressBook(Protocol):
    """Where allocations live: this process (static control) or the etcd store."""

    held: dict[str, dict[str, str]]   # pool id -> address -> owner: this host's own allocations

    async def claim(self, pool: Pool, address: str, owner: str) -> str | None:
        """Take `address` for `owner`; None if taken, else the owner now holding it."""
        ...

    async def release(self, pool: Pool, address: str) -> None: ...

    def owner(self, pool: Pool, address: str) -> str | None: ...


class LocalBook:
    """Allocations held in this process (and in the plugin's state file)."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, str]] = {}   # pool id -> address -> owner

    async def claim(self, pool: Pool, address: str, owner: str) -> str | None:
        have = self.held.setdefault(pool.id, {})
        if address in have and have[address] != owner:
            return None
        have[address] = owner
        return owner

    async def release(self, pool: Pool, address: str) -> None:
        self.held.get(pool.id, {}).pop(address, None)

    def owner(self, pool: Pool, address: str) -> str | None:
        return self.held.get(pool.id, {}).get(address)


class Ipam:
    def __init__(self, book: AddressBook, part: tuple[int, int] = (1, 1)) -> None:
        self.book = book
        self.part = part

    def request_pool(self, space: str, pool: str, sub: str, v6: bool) -> tuple[str, str]:
        """(pool id, pool) for `--subnet pool [--ip-range sub]`."""
        if not pool:
            if sub:
                raise IpamError("an --ip-range needs a --subnet")
            # no default pools: on an overlay every host must use the same subnet, which only
            # the user can name
            raise IpamError("the vxlan-dp IPAM driver needs --subnet (the same on every host)")
        try:
            net = ipaddress.ip_network(pool)
            subnet = ipaddress.ip_network(sub) if sub else None
        except ValueError as e:
            raise IpamError(f"bad subnet: {e}") from None
        if subnet is not None and (subnet.version != net.version or not subnet.subnet_of(net)):  # type: ignore[arg-type]
            raise IpamError(f"--ip-range {subnet} is not inside --subnet {net}")
        if net.num_addresses < 4:
            raise IpamError(f"--subnet {net} is too small for a network")
        p = Pool(net, subnet)
        return p.id, str(net)

    async def request_address(self, pool_id: str, address: str, options: dict[str, str]) -> str:
        """An address as "a.b.c.d/len"."""
        pool = Pool.parse(pool_id)
        plen = pool.net.prefixlen
        if options.get("RequestAddressType") == GATEWAY_TYPE:
            return f"{address or pool.gateway}/{plen}"
        owner = (options.get(MAC_OPTION) or "").lower()
        if not owner:
            raise IpamError(f"no {MAC_OPTION} in the request (the plugin asks Docker for it)")
        if address:
            try:
                if ipaddress.ip_address(address) not in pool.net:
                    raise IpamError(f"{address} is not in {pool.net}")
            except ValueError:
                raise IpamError(f"{address!r} is not an address") from None
            if await self.book.claim(pool, address, owner) is None:
                raise IpamError(f"{address} is in use (by {self.book.owner(pool, address) or 'another host'})")
            return f"{address}/{plen}"
        for cand in pool.candidates(self.part):
            if self.book.owner(pool, cand) is not None:
                continue
            if await self.book.claim(pool, cand, owner) is not None:
                return f"{cand}/{plen}"
        i, n = self.part
        raise IpamError(f"no free address in {pool.net}" + (f" (this host's part {i}/{n})" if n > 1 else ""))

    async def release_address(self, pool_id: str, address: str) -> None:
        pool = Pool.parse(pool_id)
        if address == pool.gateway and self.book.owner(pool, address) is None:
            return
        await self.book.release(pool, address)
