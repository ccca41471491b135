"""The NetworkDriver and IpamDriver of libnetwork's remote protocol, as plain async methods.

Requests arrive as decoded JSON objects (server.py does the HTTP) and answers leave as dicts;
a failure is a `PluginError` (or IpamError / ConfigError) whose text Docker shows the user, as in
`docker network create -o vni=16777216` -> "-o vni: 16777216 is out of range 0..16777215".

What each call does (moby/libnetwork docs/remote.md, docs/ipam.md):
  CreateNetwork    validate the -o options as a [[network]] (config.docker_network), make the
                   bridge, have the daemon run the network (its TAP joins the bridge); with
                   -o encrypted=true first its key: a key file beside the state file (static
                   control) or the first key in the store (etcd)
  DeleteNetwork    the daemon drops the network (TAP gone), then the bridge goes
  CreateEndpoint   remember address and MAC (the IPAM half already allocated the address)
  Join             a veth pair: host side up on the bridge, container side with the network's
                   MTU and the endpoint's MAC, handed to libnetwork to move into the sandbox;
                   the endpoint's addresses -> its MAC go to the network's ARP / ND
                   suppression table (NetworkSteer.neigh_set), so the host answers for it
  Leave            the veth pair goes, so do its suppression entries; DeleteEndpoint forgets
                   the endpoint
  RequestPool/Address, Release*   ipam.py

Invariants:
- The daemon is steered only through `NetworkSteer` (add/remove a network at run time, set and
  withdraw neighbour entries); the plugin never touches TAPs or the data plane. A joined
  endpoint's neighbour entries exist exactly while it is joined (restored with it after a
  restart); one that cannot be set is logged, never a reason to fail the join (ARP floods then).
- After every change the state (networks with their options, endpoints, local allocations)
  is written to the state file, atomically. A restarted plugin reads it back: networks run
  again, the veths of running containers go back on their bridges, addresses stay held. Docker
  is never asked to recreate anything.
- Calls are serialised (one lock): libnetwork may send several at once when containers start
  together, and each call is a read-modify-write of the state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..config import ConfigError, DockerConfig, NetworkConfig, docker_key_file, docker_network
from . import links
from .ipam import GLOBAL_SPACE, LOCAL_SPACE, AddressBook, Ipam, LocalBook

__all__ = ["NetworkSteer", "PluginError", "Plugin", "IMPLEMENTS"]

log = logging.getLogger("vxlan_dp.docker")

IMPLEMENTS = ["NetworkDriver", "IpamDriver"]
GENERIC = "com.docker.network.generic"   # where `-o key=value` options arrive


class PluginError(Exception):
    """A request the plugin cannot complete; the text goes back to Docker as {"Err": ...}."""


class NetworkSteer(Protocol):
    """What the plugin asks of the daemon: networks added and removed while it runs."""

    def add_network(self, cfg: NetworkConfig) -> int:
        """Run `cfg` (TAP up, peers from the control plane); its MTU. Raises ConfigError when it
        clashes with a running network (VNI, TAP, port), another exception when it cannot start."""
        ...

    def remove_network(self, name: str) -> None:
        """Stop a network `add_network` started (its TAP goes); no-op if it does not run."""
        ...

    def neigh_set(self, network: str, ip: str, mac: str) -> None:
        """ARP / ND suppression: `ip` is at `mac` in running network `network` (frontend.Steer)."""
        ...

    def neigh_delete(self, network: str, ip: str) -> bool:
        """Withdraw an entry `neigh_set` made; False if there was none."""
        ...

    async def ensure_keys(self, cfg: NetworkConfig) -> None:
        """An encrypted network keyed by the store has a key there once this returns (the
        first one made if none); raises when that cannot be done (no store)."""
        ...


@dataclass
class DockerNetwork:
    id: str
    options: dict[str, str]
    cfg: NetworkConfig
    mtu: int = 0


@dataclass
class DockerEndpoint:
    id: str
    network: str
    address: str = ""
    mac: str = ""
    joined: bool = False
    sandbox: str = ""
    address6: str = ""

    def ips(self) -> list[str]:
        """The endpoint's addresses without their prefix lengths."""
        return [a.split("/", 1)[0] for a in (self.address, self.address6) if a]


@dataclass
class _State:
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)


class Plugin:
    def __init__(self, cfg: DockerConfig, steer: NetworkSteer, *, book: AddressBook | None = None,
                 local: Callable[[], str | None] = lambda: None, share: Any = None) -> None:
        self.cfg = cfg
        self.steer = steer
        self.book = book if book is not None else LocalBook()
        # static control: this host's slice keeps hosts apart; etcd: the store does
        self.ipam = Ipam(self.book, cfg.slice if isinstance(self.book, LocalBook) else (1, 1))
        self.networks: dict[str, DockerNetwork] = {}
        self.endpoints: dict[str, DockerEndpoint] = {}
        self._local = local
        self.share = share      # share.NetworkShare with [docker] api: networks go fleet-wide
        self._lock = asyncio.Lock()
        # static control: encrypted networks' key files live beside the state file
        self._key_dir = (os.path.join(os.path.dirname(cfg.state), "keys")
                         if isinstance(self.book, LocalBook) else None)
        self.restored: set[str] = set()    # sandboxes a restarted dockerd took over (see join)

    # --- dispatch --------------------------------------------------------------------------
    def routes(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """URL path (without "/") -> handler; anything else is 404 (a method we do not have)."""
        return {
            "Plugin.Activate": self.activate,
            "NetworkDriver.GetCapabilities": self.net_capabilities,
            "NetworkDriver.CreateNetwork": self.locked(self.create_network),
            "NetworkDriver.DeleteNetwork": self.locked(self.delete_network),
            "NetworkDriver.CreateEndpoint": self.locked(self.create_endpoint),
            "NetworkDriver.EndpointOperInfo": self.oper_info,
            "NetworkDriver.DeleteEndpoint": self.locked(self.delete_endpoint),
            "NetworkDriver.Join": self.locked(self.join),
            "NetworkDriver.Leave": self.locked(self.leave),
            "NetworkDriver.DiscoverNew": self.nothing,
            "NetworkDriver.DiscoverDelete": self.nothing,
            "NetworkDriver.ProgramExternalConnectivity": self.nothing,
            "NetworkDriver.RevokeExternalConnectivity": self.nothing,
            "IpamDriver.GetCapabilities": self.ipam_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.nothing,
            "IpamDriver.RequestAddress": self.locked(self.request_address),
            "IpamDriver.ReleaseAddress": self.locked(self.release_address),
        }

    def locked(self, fn: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
               ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        async def run(req: dict[str, Any]) -> dict[str, Any]:
            async with self._lock:
                return await fn(req)
        return run

    # --- handshake --------------------------------------------------------------------------
    async def activate(self, req: dict[str, Any]) -> dict[str, Any]:
        # A dockerd (re)starting while containers are joined: it restores their sandboxes
        # (--live-restore) without the names of our interfaces in them, so it would name the
        # next one it moves in "eth0" again, which exists ("error renaming interface ... file
        # exists", measured with docker.io 20.10). Joins into those sandboxes get a prefix of
        # their own (join).
        self.restored |= {e.sandbox for e in self.endpoints.values() if e.joined and e.sandbox}
        return {"Implements": IMPLEMENTS}

    async def net_capabilities(self, req: dict[str, Any]) -> dict[str, Any]:
        # "local": each host's Docker keeps its own copy of the network (there is no swarm
        # store); "global" connectivity: containers on other hosts are reachable through it.
        return {"Scope": "local", "ConnectivityScope": "global"}

    async def ipam_capabilities(self, req: dict[str, Any]) -> dict[str, Any]:
        # the MAC comes with every address request: it names the owner of an allocation
        return {"RequiresMACAddress": True}

    async def address_spaces(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE}

    async def nothing(self, req: dict[str, Any]) -> dict[str, Any]:
        return {}

    # --- networks ---------------------------------------------------------------------------
    async def create_network(self, req: dict[str, Any]) -> dict[str, Any]:
        net_id = _required(req, "NetworkID")
        options = (req.get("Options") or {}).get(GENERIC) or {}
        if not isinstance(options, dict):
            raise PluginError(f"{GENERIC} is not an object")
        options = {str(k): str(v) for k, v in options.items()}
        if net_id in self.networks:          # libnetwork retrying, or a restart replaying it
            if self.networks[net_id].options == options:
                return {}
            raise PluginError(f"network {net_id[:12]} exists with other options")
        cfg = docker_network(options, self.cfg, self._local())     # every option checked, keys aside
        if cfg.encrypt and self._key_dir is not None and "rekey_interval" not in options:
            self._make_key_file(cfg.vni)    # (rekey_interval: refused with a key file, below)
        cfg = self._network_cfg(options)
        for other in self.networks.values():
            if other.cfg.vni == cfg.vni:
                raise ConfigError("-o vni", f"{cfg.vni} is already the VNI of Docker network {other.id[:12]}")
        net = DockerNetwork(net_id, options, cfg)
        await self._bring_up(net)
        self.networks[net_id] = net
        self.save()
        if self.share is not None:
            self.share.created(net_id, options)
        log.info("docker network %s: %s vni %d %s port %d, bridge %s, mtu %d", net_id[:12], cfg.name, cfg.vni,
                 cfg.encap, cfg.port, cfg.bridge, net.mtu)
        return {}

    def _network_cfg(self, options: dict[str, str]) -> NetworkConfig:
        return docker_network(options, self.cfg, self._local(), key_dir=self._key_dir)

    def _make_key_file(self, vni: int) -> None:
        """Static control: the network's key file, made (one random key, 0600) if missing. The
        same file must be on every host before the network is created there: Docker's swarm
        hands keys out, a static fleet copies the file (README, Docker)."""
        from ..keyman import new_key_file

        assert self._key_dir is not None
        path = docker_key_file(self._key_dir, vni)
        if os.path.exists(path):
            return
        os.makedirs(self._key_dir, mode=0o700, exist_ok=True)
        new_key_file(path)
        log.warning("docker network vni %d: encrypted; made its key file %s. Copy it to the same path on "
                    "every other host before creating the network there", vni, path)

    async def _bring_up(self, net: DockerNetwork) -> None:
        assert net.cfg.bridge is not None
        if net.cfg.encrypt and net.cfg.key_file is None:
            await self.steer.ensure_keys(net.cfg)   # etcd: the first key, made once for the fleet
        made = links.ensure_bridge(net.cfg.bridge)
        try:
            net.mtu = self.steer.add_network(net.cfg)
        except Exception:
            if made:
                links.delete_link(net.cfg.bridge)
            raise

    async def delete_network(self, req: dict[str, Any]) -> dict[str, Any]:
        net = self.networks.pop(_required(req, "NetworkID"), None)
        if net is None:
            return {}
        for ep in [e for e in self.endpoints.values() if e.network == net.id]:
            self._drop_endpoint(ep)
        self.steer.remove_network(net.cfg.name)
        if net.cfg.bridge:
            links.delete_link(net.cfg.bridge)
        self.save()
        if self.share is not None:
            self.share.deleted(net.id)
        log.info("docker network %s (%s) removed", net.id[:12], net.cfg.name)
        return {}

    # --- endpoints --------------------------------------------------------------------------
    def _network(self, req: dict[str, Any]) -> DockerNetwork:
        net_id = _required(req, "NetworkID")
        net = self.networks.get(net_id)
        if net is None:
            raise PluginError(f"no vxlan-dp network {net_id[:12]} here")
        return net

    async def create_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        net = self._network(req)
        ep_id = _required(req, "EndpointID")
        iface = req.get("Interface") or {}
        if not (iface.get("Address") or iface.get("AddressIPv6")) or not iface.get("MacAddress"):
            raise PluginError("endpoint without an address or MAC (use --ipam-driver vxlan-dp)")
        self.endpoints[ep_id] = DockerEndpoint(ep_id, net.id, str(iface.get("Address") or ""),
                                               iface["MacAddress"].lower(), address6=str(iface.get("AddressIPv6") or ""))
        self.save()
        return {"Interface": {}}  # libnetwork gave address and MAC: we echo nothing (remote.md)

    async def oper_info(self, req: dict[str, Any]) -> dict[str, Any]:
        ep = self.endpoints.get(str(req.get("EndpointID", "")))
        if ep is None:
            return {"Value": {}}
        host, _ = links.veth_names(ep.id)
        return {"Value": {"address": ep.address, "mac": ep.mac, "veth": host if ep.joined else ""}}

    async def delete_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        ep = self.endpoints.get(_required(req, "EndpointID"))
        if ep is not None:
            self._drop_endpoint(ep)
            self.save()
        return {}

    def _drop_endpoint(self, ep: DockerEndpoint) -> None:
        links.delete_link(links.veth_names(ep.id)[0])
        self._neigh(ep, False)
        self.endpoints.pop(ep.id, None)

    def _neigh(self, ep: DockerEndpoint, joined: bool) -> None:
        """The endpoint's suppression entries in its network: set while joined, else withdrawn."""
        net = self.networks.get(ep.network)
        if net is None or not ep.mac:
            return
        for ip in ep.ips():
            try:
                if joined:
                    self.steer.neigh_set(net.cfg.name, ip, ep.mac)
                else:
                    self.steer.neigh_delete(net.cfg.name, ip)
            except (KeyError, ValueError) as e:
                log.warning("docker endpoint %s: neighbour entry %s -> %s not %s: %s", ep.id[:12], ip, ep.mac,
                            "set" if joined else "withdrawn", e)

    async def join(self, req: dict[str, Any]) -> dict[str, Any]:
        net = self._network(req)
        ep = self.endpoints.get(_required(req, "EndpointID"))
        if ep is None:
            raise PluginError(f"no endpoint {str(req.get('EndpointID'))[:12]} here")
        host, container = links.veth_names(ep.id)
        assert net.cfg.bridge is not None
        links.make_veth(host, container, net.mtu, ep.mac or None, net.cfg.bridge)
        ep.joined, ep.sandbox = True, str(req.get("SandboxKey") or "")
        self._neigh(ep, True)
        self.save()
        # ethN as everywhere in Docker; in a sandbox restored by a restarted dockerd, vx<vni>-N
        # (a container joins a network once, so that name is free whatever dockerd forgot).
        prefix = f"vx{net.cfg.vni}-" if ep.sandbox in self.restored else "eth"
        # No gateway: an L2 overlay has no router of its own, and DisableGatewayService keeps
        # libnetwork from adding docker_gwbridge (there is no bridge driver: --bridge=none).
        return {"InterfaceName": {"SrcName": container, "DstPrefix": prefix},
                "DisableGatewayService": True}

    async def leave(self, req: dict[str, Any]) -> dict[str, Any]:
        ep = self.endpoints.get(_required(req, "EndpointID"))
        if ep is not None:
            links.delete_link(links.veth_names(ep.id)[0])
            ep.joined = False
            self._neigh(ep, False)
            self.save()
        return {}

    # --- IPAM -------------------------------------------------------------------------------
    async def request_pool(self, req: dict[str, Any]) -> dict[str, Any]:
        pool_id, pool = self.ipam.request_pool(str(req.get("AddressSpace", "")), str(req.get("Pool") or ""),
                                               str(req.get("SubPool") or ""), bool(req.get("V6")))
        return {"PoolID": pool_id, "Pool": pool, "Data": {}}

    async def request_address(self, req: dict[str, Any]) -> dict[str, Any]:
        opts = {str(k): str(v) for k, v in (req.get("Options") or {}).items()}
        addr = await self.ipam.request_address(_required(req, "PoolID"), str(req.get("Address") or ""), opts)
        self.save()
        return {"Address": addr, "Data": {}}

    async def release_address(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.ipam.release_address(_required(req, "PoolID"), _required(req, "Address"))
        self.save()
        return {}

    # --- state ------------------------------------------------------------------------------
    def save(self) -> None:
        self.restored &= {e.sandbox for e in self.endpoints.values() if e.joined}
        st = _State(
            networks={i: {"options": n.options} for i, n in self.networks.items()},
            endpoints={i: {k: v for k, v in asdict(e).items() if k != "id"} for i, e in self.endpoints.items()},
            addresses=self.book.held,
            restored=sorted(self.restored))
        tmp = f"{self.cfg.state}.tmp"
        os.makedirs(os.path.dirname(self.cfg.state) or ".", exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(asdict(st), f, indent=1, sort_keys=True)
        os.replace(tmp, self.cfg.state)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            with open(self.cfg.state) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("docker: state file %s unreadable (%s); starting with no Docker networks", self.cfg.state, e)
            return None
        if not isinstance(raw, dict):
            log.error("docker: state file %s is not a JSON object; starting with no Docker networks", self.cfg.state)
            return None
        return raw

    async def restore(self) -> None:
        """Run again what the state file holds: networks, their bridges' veths, allocations."""
        raw = self._read_state()
        if raw is None:
            return
        self.book.held = {str(p): {str(a): str(o) for a, o in m.items()}
                          for p, m in (raw.get("addresses") or {}).items()}
        for net_id, n in (raw.get("networks") or {}).items():
            options = {str(k): str(v) for k, v in (n.get("options") or {}).items()}
            try:
                net = DockerNetwork(net_id, options, self._network_cfg(options))
                await self._bring_up(net)
            except Exception as e:  # noqa: BLE001 - one bad network must not keep the others down
                log.error("docker network %s: cannot run it again: %s", net_id[:12], e)
                continue
            self.networks[net_id] = net
        self.restored = {str(k) for k in raw.get("restored") or []}
        for ep_id, item in (raw.get("endpoints") or {}).items():
            ep = DockerEndpoint(ep_id, str(item.get("network", "")), str(item.get("address", "")),
                                str(item.get("mac", "")), bool(item.get("joined")), str(item.get("sandbox", "")),
                                str(item.get("address6", "")))
            owner = self.networks.get(ep.network)
            if owner is None:
                continue
            self.endpoints[ep_id] = ep
            if ep.joined and owner.cfg.bridge and not links.attach(links.veth_names(ep_id)[0], owner.cfg.bridge):
                ep.joined = False  # its container went while we were away; Docker will say Leave
            if ep.joined:
                self._neigh(ep, True)
        log.info("docker: %d networks and %d endpoints back from %s", len(self.networks), len(self.endpoints),
                 self.cfg.state)
        self.save()


def _required(req: dict[str, Any], key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v:
        raise PluginError(f"{key} missing from the request")
    return v
