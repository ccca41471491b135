"""One `docker network create` for the whole fleet: Docker networks shared through etcd.

With `control = "etcd"` and `[docker] api` (the local Docker Engine API), a vxlan-dp network
created on one host's Docker is written to the store, and every other host's plugin creates it
in its own Docker, through that API, with the Docker SDK for Python; a `docker network rm` on
any host removes the key, and the others remove their copy (Docker refuses while containers
are attached to it there: that host keeps it and says so).

    <prefix>-docker/networks/<docker name> = {"subnet": ..., "ip_range": ..., "options": {...},
                                              "origin": <underlay address of the creating host>}

Written only if absent (a network of that name from another host wins), not bound to a lease:
a network outlives the hosts that use it. Beside the control plane's prefix, never under it.

The SDK is blocking (requests over the unix socket): every call runs in a worker thread, never
on the loop. That is not only politeness: Docker calls this very plugin (CreateNetwork, ...)
while it serves the SDK's request, and those calls are answered on the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..config import EtcdConfig
from ..control.etcd import describe, run_sessions

__all__ = ["NetworkShare"]

log = logging.getLogger("vxlan_dp.docker")

RPC_TIMEOUT = 5.0
PUBLISH_WAIT = 10.0   # seconds a freshly created network may take to show in Docker's API
DRIVER = "vxlan-dp"


class NetworkShare:
    def __init__(self, etcd: EtcdConfig, api: str, local: Any) -> None:
        self.etcd, self.api, self.local = etcd, api, local
        self.root = f"{etcd.prefix}-docker/networks/"
        self.names: dict[str, str] = {}          # Docker network ID -> name, for removals
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    def key(self, name: str) -> bytes:
        return f"{self.root}{name}".encode()

    # --- the plugin tells us ------------------------------------------------------------------
    def created(self, net_id: str, options: dict[str, str]) -> None:
        self._spawn(self._publish(net_id, options))

    def deleted(self, net_id: str) -> None:
        name = self.names.pop(net_id, None)
        if name is not None:
            self._spawn(self._withdraw(name))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(t)
        t.add_done_callback(self._jobs.discard)

    async def _publish(self, net_id: str, options: dict[str, str]) -> None:
        try:
            net = await asyncio.to_thread(self._docker_network, net_id)
            if net is None:
                log.warning("docker share: network %s never showed in the Docker API; not shared", net_id[:12])
                return
            name, cfgs = net["Name"], net.get("IPAM", {}).get("Config") or [{}]
            self.names[net_id] = name
            spec = {"subnet": cfgs[0].get("Subnet", ""), "ip_range": cfgs[0].get("IPRange", ""),
                    "options": options, "origin": self.local() or ""}
            from etcd3aio.kv import KVService

            client = await self._connected()
            r = await client.kv.txn([KVService.txn_compare_create_revision(self.key(name), 0)],
                                    [KVService.txn_op_put(self.key(name), json.dumps(spec, sort_keys=True))],
                                    timeout=RPC_TIMEOUT)
            if r.succeeded:
                log.info("docker share: network %s (%s) published for every host", name, spec["subnet"])
        except Exception as e:  # noqa: BLE001 - sharing is a convenience; the local network works
            log.warning("docker share: cannot publish network %s: %s", net_id[:12], describe(e))

    async def _withdraw(self, name: str) -> None:
        try:
            client = await self._connected()
            await client.kv.delete(self.key(name), timeout=RPC_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - the others keep it; say so
            log.warning("docker share: cannot withdraw network %s: %s", name, describe(e))

    async def _connected(self) -> Any:
        for _ in range(50):
            if self._client is not None:
                return self._client
            await asyncio.sleep(0.1)
        raise ConnectionError("the etcd store is not reachable")

    # --- the store tells us -------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._jobs) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        await run_sessions(self.etcd, self._session, "docker share")

    async def _session(self, client: Any) -> None:
        from etcd3aio import prefix_range_end

        root = self.root.encode()
        try:
            r = await client.kv.get(root, range_end=prefix_range_end(root), timeout=RPC_TIMEOUT)
            self._client = client
            for kv in r.kvs:     # what was shared while we were away
                await self._adopt(kv.key.decode()[len(self.root):], kv.value)
            it = client.watch.watch(root, range_end=prefix_range_end(root), start_revision=r.header.revision + 1)
            try:
                async for resp in it:
                    for ev in resp.events:
                        name = ev.kv.key.decode()[len(self.root):]
                        if ev.type == 0:  # mvccpb.Event.PUT
                            await self._adopt(name, ev.kv.value)
                        else:
                            await self._drop(name)
            finally:
                await it.aclose()
        finally:
            self._client = None

    async def _adopt(self, name: str, value: bytes) -> None:
        try:
            spec = json.loads(value)
            if not isinstance(spec, dict) or not isinstance(spec.get("options"), dict):
                raise ValueError("not a network object")
            made = await asyncio.to_thread(self._create, name, spec)
        except Exception as e:  # noqa: BLE001 - one bad key must not stop the watch
            log.error("docker share: cannot create network %s here: %s", name, describe(e))
            return
        if made:
            log.info("docker share: network %s (%s) created here, as on %s", name, spec.get("subnet"),
                     spec.get("origin") or "another host")

    async def _drop(self, name: str) -> None:
        try:
            why = await asyncio.to_thread(self._remove, name)
        except Exception as e:  # noqa: BLE001 - keep watching
            why = describe(e)
        if why:
            log.warning("docker share: network %s removed elsewhere, kept here: %s", name, why)

    # --- Docker (worker threads) --------------------------------------------------------------
    def _sdk(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.api, version="auto", timeout=60)

    def _docker_network(self, net_id: str) -> dict[str, Any] | None:
        import time

        import docker

        dc = self._sdk()
        try:
            deadline = time.monotonic() + PUBLISH_WAIT
            while time.monotonic() < deadline:
                try:
                    return dc.networks.get(net_id).attrs  # type: ignore[no-any-return]
                except docker.errors.NotFound:
                    time.sleep(0.1)
            return None
        finally:
            dc.close()

    def _find(self, dc: Any, name: str) -> Any:
        return next((n for n in dc.networks.list(names=[name]) if n.name == name), None)

    def _create(self, name: str, spec: dict[str, Any]) -> bool:
        from docker.types import IPAMConfig, IPAMPool

        dc = self._sdk()
        try:
            have = self._find(dc, name)
            if have is not None:
                if have.attrs.get("Driver") != DRIVER:
                    raise ValueError(f"a {have.attrs.get('Driver')} network of that name exists here")
                return False
            pool = IPAMPool(subnet=spec.get("subnet") or None, iprange=spec.get("ip_range") or None)
            dc.networks.create(name, driver=DRIVER, options={str(k): str(v) for k, v in spec["options"].items()},
                               ipam=IPAMConfig(driver=DRIVER, pool_configs=[pool]))
            return True
        finally:
            dc.close()

    def _remove(self, name: str) -> str:
        """'' once removed (or not here); else why it stays."""
        dc = self._sdk()
        try:
            have = self._find(dc, name)
            if have is None or have.attrs.get("Driver") != DRIVER:
                return ""
            have.reload()
            if have.attrs.get("Containers"):
                return f"{len(have.attrs['Containers'])} containers attached"
            have.remove()
            return ""
        finally:
            dc.close()
