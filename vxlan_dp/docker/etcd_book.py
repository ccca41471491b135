"""Address claims in etcd, for the plugin's IPAM with `control = "etcd"` (ipam.AddressBook).

Key `<prefix>-ipam/<subnet>/<address>` (the subnet with "_" for "/"), value
{"owner": <endpoint MAC>, "host": <this host's underlay address>}, written only if absent
(a transaction on create_revision == 0) and bound to a lease of the plugin's own: an address is
held by one endpoint of one host in the whole fleet, a `docker rm` deletes the key (only if it is
still ours), and a host that dies loses its claims when its lease expires. The keys live beside
the control plane's prefix, not under it, so the control plane's view never sees them.

A stop does not revoke the lease: the containers keep running, and their addresses must stay
taken. A restarted plugin (the state file lists what it held) or a new session after an outage
claims them again under its new lease; a claim whose value is exactly ours (same owner, same
host) is taken over, anything else is somebody else's and is reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ..config import EtcdConfig
from ..control.etcd import close_client, run_keepalive, run_sessions
from .ipam import IpamError, Pool

__all__ = ["EtcdBook"]

log = logging.getLogger("vxlan_dp.docker")

RPC_TIMEOUT = 5.0
WAIT_CONNECTED = 5.0   # a request waits this long for the store before failing


class EtcdBook:
    def __init__(self, etcd: EtcdConfig, local: Callable[[], str | None]) -> None:
        self.etcd = etcd
        self.local = local
        self.held: dict[str, dict[str, str]] = {}   # pool id -> address -> owner (ours)
        self._client: Any = None
        self._lease = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.conflicts: list[str] = []

    def key(self, pool: Pool, address: str) -> bytes:
        return f"{self.etcd.prefix}-ipam/{str(pool.net).replace('/', '_')}/{address}".encode()

    def _value(self, owner: str) -> bytes:
        return json.dumps({"owner": owner, "host": self.local() or ""}, sort_keys=True).encode()

    # --- AddressBook --------------------------------------------------------------------------
    async def claim(self, pool: Pool, address: str, owner: str) -> str | None:
        client = await self._connected()
        ok = await self._claim(client, self.key(pool, address), self._value(owner))
        if ok:
            self.held.setdefault(pool.id, {})[address] = owner
            return owner
        return None

    async def release(self, pool: Pool, address: str) -> None:
        owner = self.held.get(pool.id, {}).pop(address, None)
        if owner is None:
            return
        from etcd3aio.kv import KVService

        client = await self._connected()
        key = self.key(pool, address)
        await client.kv.txn([KVService.txn_compare_value(key, self._value(owner))], [KVService.txn_op_delete(key)],
                            timeout=RPC_TIMEOUT)

    def owner(self, pool: Pool, address: str) -> str | None:
        return self.held.get(pool.id, {}).get(address)

    # --- the store ----------------------------------------------------------------------------
    async def _claim(self, client: Any, key: bytes, value: bytes) -> bool:
        from etcd3aio.kv import KVService

        r = await client.kv.txn([KVService.txn_compare_create_revision(key, 0)],
                                [KVService.txn_op_put(key, value, lease=self._lease)],
                                [KVService.txn_op_get(key)], timeout=RPC_TIMEOUT)
        if r.succeeded:
            return True
        kvs = r.responses[0].response_range.kvs
        if kvs and kvs[0].value == value:   # ours from before a restart or an outage: re-bind it
            r = await client.kv.txn([KVService.txn_compare_value(key, value)],
                                    [KVService.txn_op_put(key, value, lease=self._lease)], timeout=RPC_TIMEOUT)
            return bool(r.succeeded)
        return False

    async def _connected(self) -> Any:
        try:
            await asyncio.wait_for(self._ready.wait(), WAIT_CONNECTED)
        except asyncio.TimeoutError:
            raise IpamError("the etcd store is not reachable: no address can be allocated across hosts "
                            "now") from None
        return self._client

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await close_client(self._client)
            self._client = None

    async def _run(self) -> None:
        await run_sessions(self.etcd, self._session, "docker IPAM")

    async def _session(self, client: Any) -> None:
        try:
            grant = await client.lease.grant(self.etcd.lease_ttl, timeout=RPC_TIMEOUT)
            self._client, self._lease = client, grant.ID
            for pool_id, addrs in self.held.items():   # what we held before: ours again
                pool = Pool.parse(pool_id)
                for address, owner in list(addrs.items()):
                    if not await self._claim(client, self.key(pool, address), self._value(owner)):
                        msg = f"{address} of {pool.net} was taken by another host while this one was away"
                        log.error("docker IPAM: %s; its container here keeps it, expect a conflict", msg)
                        self.conflicts.append(msg)
            self._ready.set()
            await run_keepalive(client, self._lease, grant.TTL)
        finally:
            self._ready.clear()
            if self._client is client:
                self._client = None

