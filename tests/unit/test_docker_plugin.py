"""The Docker plugin's protocol without Docker: libnetwork's calls as dockerd sends them (bodies
recorded from Debian's docker.io 20.10), over a real unix socket and aiohttp, against a fake
daemon; the links it would make are recorded instead of made (no root here)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from vxlan_dp.config import ConfigError, DockerConfig, NetworkConfig
from vxlan_dp.docker import Ipam, IpamError, LocalBook, Plugin, Pool, driver, server

NET_ID = "a4efbbda43b8b3459d0ffadfd8e585a5d79faec283fba62a82b79485e57663cb"
EP_ID = "36016d3279828e7a0d66ac7ac4fc6b6655012382e89090aadf1263dbb2ad985f"
MAC = "02:42:2d:b0:50:71"


class FakeDaemon:
    def __init__(self) -> None:
        self.running: dict[str, NetworkConfig] = {}
        self.added: list[str] = []
        self.neigh: dict[tuple[str, str], str] = {}     # (network, ip) -> mac: neigh_set's table
        self.ensured: list[str] = []

    def add_network(self, cfg: NetworkConfig) -> int:
        if any(n.vni == cfg.vni for n in self.running.values()):
            raise ConfigError("network.vni", "taken")
        self.running[cfg.name] = cfg
        self.added.append(cfg.name)
        return 1450

    def remove_network(self, name: str) -> None:
        self.running.pop(name, None)
        self.neigh = {k: v for k, v in self.neigh.items() if k[0] != name}

    def neigh_set(self, network: str, ip: str, mac: str) -> None:
        if network not in self.running:
            raise KeyError(network)
        self.neigh[network, ip] = mac

    def neigh_delete(self, network: str, ip: str) -> bool:
        return self.neigh.pop((network, ip), None) is not None

    async def ensure_keys(self, cfg: NetworkConfig) -> None:
        self.ensured.append(cfg.name)


class FakeLinks:
    def __init__(self) -> None:
        self.links: dict[str, dict[str, Any]] = {}

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(driver.links, "ensure_bridge", self.ensure_bridge)
        mp.setattr(driver.links, "delete_link", self.delete_link)
        mp.setattr(driver.links, "make_veth", self.make_veth)
        mp.setattr(driver.links, "attach", self.attach)

    def ensure_bridge(self, name: str) -> bool:
        made = name not in self.links
        self.links.setdefault(name, {"kind": "bridge"})
        return made

    def delete_link(self, name: str) -> bool:
        link = self.links.pop(name, None)
        if link and link.get("peer"):
            self.links.pop(link["peer"], None)
        return link is not None

    def make_veth(self, host: str, container: str, mtu: int, mac: str | None, bridge: str) -> None:
        assert bridge in self.links
        self.links[host] = {"kind": "veth", "peer": container, "mtu": mtu, "master": bridge}
        self.links[container] = {"kind": "veth", "peer": host, "mtu": mtu, "mac": mac}

    def attach(self, name: str, bridge: str) -> bool:
        if name not in self.links or bridge not in self.links:
            return False
        self.links[name]["master"] = bridge
        return True


@pytest.fixture
def env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DockerConfig, FakeDaemon, FakeLinks]]:
    cfg = DockerConfig(socket=str(tmp_path / "vxlan-dp.sock"), state=str(tmp_path / "state.json"),
                       local="198.18.0.1", peers=("198.18.0.2",), slice=(1, 2))
    fl = FakeLinks()
    fl.install(monkeypatch)
    yield cfg, FakeDaemon(), fl


async def _call(sock: str, method: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as s:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        async with s.post(f"http://plugin/{method}", data=data,
                          headers={"Content-Type": server.CONTENT_TYPE}) as r:
            return r.status, json.loads(await r.text())


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_handshake_and_http_errors(env: Any) -> None:
    cfg, daemon, _ = env

    async def go() -> None:
        plugin = Plugin(cfg, daemon)
        runner = await server.serve(plugin.routes(), cfg.socket)
        try:
            assert await _call(cfg.socket, "Plugin.Activate") == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
            st, caps = await _call(cfg.socket, "NetworkDriver.GetCapabilities")
            assert st == 200 and caps["Scope"] == "local"
            assert (await _call(cfg.socket, "IpamDriver.GetCapabilities"))[1] == {"RequiresMACAddress": True}
            st, spaces = await _call(cfg.socket, "IpamDriver.GetDefaultAddressSpaces")
            assert set(spaces) == {"LocalDefaultAddressSpace", "GlobalDefaultAddressSpace"}
            # a method we do not have: 404, so libnetwork treats it as not implemented
            st, body = await _call(cfg.socket, "NetworkDriver.AllocateNetwork", {})
            assert st == 404 and "Err" in body
            # syntactic junk: an HTTP error status
            assert (await _call(cfg.socket, "NetworkDriver.CreateNetwork", raw=b"{nope"))[0] == 400
            assert (await _call(cfg.socket, "NetworkDriver.CreateNetwork", raw=b"[1, 2]"))[0] == 400
            # well-formed but missing what it needs: 200 with Err
            st, body = await _call(cfg.socket, "NetworkDriver.CreateNetwork", {"Options": {}})
            assert st == 200 and body == {"Err": "NetworkID missing from the request"}
        finally:
            await runner.cleanup()

    _run(go())


@pytest.mark.parametrize("opts, err", [
    ({"vni": "16777216"}, "-o vni: 16777216 is out of range 0..16777215"),
    ({"vni": "blue"}, '-o vni: expected an integer, got "blue"'),
    ({"port": "4790"}, "-o vni: required key missing"),
    ({"vni": "42", "prot": "4790"}, '-o prot: unknown key (did you mean "port"?)'),
    ({"vni": "42", "encap": "gre", "port": "4790"}, "-o port: encap \"gre\" is IP protocol 47"),
    ({"vni": "42", "mtu": "40"}, "-o mtu: 40 is out of range 68..65535"),
    ({"vni": "42", "encrypted": "maybe"}, '-o encrypted: expected true or false, got "maybe"'),
    ({"vni": "42", "encrypted": "true", "encap": "gre"}, "-o encrypt: ESP is carried in UDP"),
    ({"vni": "42", "encrypted": "true", "encrypt": "true"}, "-o encrypted: give -o encrypted or -o encrypt"),
    ({"vni": "42", "encrypted": "true", "rekey_interval": "1h"}, "-o rekey_interval: automatic rotation needs"),
    ({"vni": "42", "encrypted": "", "cipher": "des"}, '-o cipher: "des" is not one of'),
])
def test_bad_options_fail_create_with_the_field_named(env: Any, opts: dict[str, str], err: str) -> None:
    cfg, daemon, fl = env

    async def go() -> None:
        plugin = Plugin(cfg, daemon)
        runner = await server.serve(plugin.routes(), cfg.socket)
        try:
            st, body = await _call(cfg.socket, "NetworkDriver.CreateNetwork", _create(opts))
            assert st == 200 and body["Err"].startswith(err), body
        finally:
            await runner.cleanup()

    _run(go())
    assert daemon.running == {} and fl.links == {}
    assert not os.path.exists(os.path.join(os.path.dirname(cfg.state), "keys"))   # no key made for nothing


def test_encrypted_option_static_makes_a_key_file_etcd_asks_the_store(env: Any) -> None:
    """`-o encrypted=true`: static control makes the network's key file (0600, beside the state
    file) and reuses it; etcd control keys it by the store (first key ensured, 12 h rotation)."""
    if os.geteuid() != 0:
        pytest.skip("key files must be owned by root: needs root")
    cfg, daemon, fl = env

    async def go(plugin: Plugin) -> dict[str, Any]:
        runner = await server.serve(plugin.routes(), cfg.socket)
        try:
            return (await _call(cfg.socket, "NetworkDriver.CreateNetwork",
                                _create({"vni": "42", "encrypted": "true", "port": "5555"})))[1]
        finally:
            await runner.cleanup()

    assert _run(go(Plugin(cfg, daemon))) == {}
    path = os.path.join(os.path.dirname(cfg.state), "keys", "docker-42.key")
    n = daemon.running["docker-42"]
    assert (n.encrypt, n.key_file, n.cipher, n.rekey_interval) == (True, path, "aes-256-gcm", None)
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = open(path).read()
    daemon.running.clear()
    _run(go(Plugin(cfg, daemon)))       # made once: a second create (another network id, a restart) reuses it
    assert open(path).read() == key and daemon.ensured == []

    class StoreBook:                    # the plugin tells static from etcd by its address book
        held: dict[str, dict[str, str]] = {}
    daemon.running.clear()
    assert _run(go(Plugin(cfg, daemon, book=StoreBook()))) == {}  # type: ignore[arg-type]  # a stand-in
    n = daemon.running["docker-42"]
    assert (n.encrypt, n.key_file, n.rekey_interval) == (True, None, 12 * 3600.0)
    assert daemon.ensured == ["docker-42"]


def _create(opts: dict[str, str], net_id: str = NET_ID) -> dict[str, Any]:
    return {"NetworkID": net_id, "Options": {"com.docker.network.enable_ipv6": False,
                                             "com.docker.network.generic": opts},
            "IPv4Data": [{"AddressSpace": "vxlan-dp-local", "Gateway": "192.168.60.1/24",
                          "Pool": "192.168.60.0/24"}], "IPv6Data": []}


def test_network_lifecycle_as_dockerd_sends_it(env: Any) -> None:
    cfg, daemon, fl = env

    async def go() -> None:
        plugin = Plugin(cfg, daemon)
        runner = await server.serve(plugin.routes(), cfg.socket)
        s = cfg.socket
        try:
            # docker network create -d vxlan-dp --ipam-driver vxlan-dp --subnet 192.168.60.0/24 -o vni=42 ...
            st, pool = await _call(s, "IpamDriver.RequestPool", {"AddressSpace": "vxlan-dp-local",
                                   "Pool": "192.168.60.0/24", "SubPool": "", "Options": {}, "V6": False})
            assert pool == {"PoolID": "192.168.60.0/24", "Pool": "192.168.60.0/24", "Data": {}}
            st, gw = await _call(s, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                 "Options": {"RequestAddressType": "com.docker.network.gateway"}})
            assert gw["Address"] == "192.168.60.1/24"
            assert await _call(s, "NetworkDriver.CreateNetwork",
                               _create({"vni": "42", "port": "4790", "encap": "vxlan"})) == (200, {})
            net = daemon.running["docker-42"]
            assert (net.vni, net.port, net.encap, net.local, net.peers) == (42, 4790, "vxlan", "198.18.0.1",
                                                                            ("198.18.0.2",))
            assert fl.links == {"vxbr-42": {"kind": "bridge"}} and net.bridge == "vxbr-42"
            # docker run --network blue
            st, addr = await _call(s, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                   "Options": {"com.docker.network.endpoint.macaddress": MAC}})
            assert addr["Address"] == "192.168.60.2/24"
            ep = {"NetworkID": NET_ID, "EndpointID": EP_ID,
                  "Interface": {"Address": addr["Address"], "AddressIPv6": "", "MacAddress": MAC},
                  "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}}
            assert await _call(s, "NetworkDriver.CreateEndpoint", ep) == (200, {"Interface": {}})
            st, join = await _call(s, "NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                   "SandboxKey": "/var/run/docker/netns/71d2bc4d3549", "Options": {}})
            assert join["InterfaceName"] == {"SrcName": "vxc36016d3279", "DstPrefix": "eth"}
            assert join["DisableGatewayService"] is True and not join.get("Gateway")
            assert fl.links["vxv36016d3279"]["master"] == "vxbr-42"
            assert fl.links["vxc36016d3279"] | {} == {"kind": "veth", "peer": "vxv36016d3279", "mtu": 1450,
                                                      "mac": MAC}
            assert daemon.neigh == {("docker-42", "192.168.60.2"): MAC}    # ARP for it answered on the host
            st, info = await _call(s, "NetworkDriver.EndpointOperInfo", {"NetworkID": NET_ID, "EndpointID": EP_ID})
            assert info["Value"]["address"] == "192.168.60.2/24"
            # docker network disconnect / docker rm
            assert await _call(s, "NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": EP_ID}) == (200, {})
            assert "vxv36016d3279" not in fl.links and "vxc36016d3279" not in fl.links
            assert daemon.neigh == {}
            assert await _call(s, "NetworkDriver.DeleteEndpoint",
                               {"NetworkID": NET_ID, "EndpointID": EP_ID}) == (200, {})
            assert await _call(s, "IpamDriver.ReleaseAddress",
                               {"PoolID": pool["PoolID"], "Address": "192.168.60.2"}) == (200, {})
            assert plugin.book.owner(Pool.parse(pool["PoolID"]), "192.168.60.2") is None  # type: ignore[attr-defined]
            # a second network with the same VNI is refused, naming the option
            st, body = await _call(s, "NetworkDriver.CreateNetwork", _create({"vni": "42"}, "f" * 64))
            assert body["Err"].startswith("-o vni: 42 is already the VNI of Docker network a4efbbda43b8")
            # docker network rm
            assert await _call(s, "NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID}) == (200, {})
            assert daemon.running == {} and fl.links == {}
            assert await _call(s, "IpamDriver.ReleaseAddress",
                               {"PoolID": pool["PoolID"], "Address": "192.168.60.1"}) == (200, {})
            assert await _call(s, "IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]}) == (200, {})
        finally:
            await runner.cleanup()

    _run(go())


def test_restart_restores_networks_endpoints_and_addresses(env: Any) -> None:
    cfg, daemon, fl = env

    async def go() -> None:
        p1 = Plugin(cfg, daemon)
        await p1.create_network(_create({"vni": "42", "port": "4790"}))
        a = await p1.request_address({"PoolID": "192.168.60.0/24",
                                      "Options": {"com.docker.network.endpoint.macaddress": MAC}})
        await p1.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                  "Interface": {"Address": a["Address"], "MacAddress": MAC}})
        await p1.join({"NetworkID": NET_ID, "EndpointID": EP_ID})
        # the daemon stops: its networks go; the bridge and the container's veth stay
        daemon.running.clear()
        daemon.neigh.clear()
        fl.links["vxv36016d3279"]["master"] = None
        p2 = Plugin(cfg, daemon)
        await p2.restore()
        assert set(daemon.running) == {"docker-42"} and daemon.added == ["docker-42", "docker-42"]
        assert p2.endpoints[EP_ID].joined and fl.links["vxv36016d3279"]["master"] == "vxbr-42"
        assert daemon.neigh == {("docker-42", "192.168.60.2"): MAC}    # the restarted daemon's table too
        # the address stays held: the next container does not get it again
        b = await p2.request_address({"PoolID": "192.168.60.0/24",
                                      "Options": {"com.docker.network.endpoint.macaddress": "02:42:00:00:00:09"}})
        assert a["Address"] == "192.168.60.2/24" and b["Address"] == "192.168.60.3/24"
        # the same endpoint asking again for its address (a dockerd restart) gets it
        again = await p2.request_address({"PoolID": "192.168.60.0/24", "Address": "192.168.60.2",
                                          "Options": {"com.docker.network.endpoint.macaddress": MAC}})
        assert again["Address"] == a["Address"]
        with pytest.raises(IpamError, match="192.168.60.2 is in use"):
            await p2.request_address({"PoolID": "192.168.60.0/24", "Address": "192.168.60.2",
                                      "Options": {"com.docker.network.endpoint.macaddress": "02:42:00:00:00:0a"}})

    _run(go())


def test_a_damaged_state_file_starts_empty(env: Any) -> None:
    cfg, daemon, _ = env
    with open(cfg.state, "w") as f:
        f.write("{not json")
    p = Plugin(cfg, daemon)
    _run(p.restore())
    assert p.networks == {} and daemon.running == {}


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_slices_never_collide_and_skip_reserved(n: int) -> None:
    pool = Pool(ipaddress.ip_network("192.168.60.0/24"))
    seen: dict[str, int] = {}

    async def drain(i: int) -> None:
        ipam = Ipam(LocalBook(), (i, n))
        while True:
            try:
                a = await ipam.request_address(pool.id, "", {"com.docker.network.endpoint.macaddress": f"m{len(seen)}"})
            except IpamError:
                return
            addr = a.split("/")[0]
            assert addr not in seen, f"{addr} given to hosts {seen[addr]} and {i}"
            seen[addr] = i

    for i in range(1, n + 1):
        _run(drain(i))
    assert not {"192.168.60.0", "192.168.60.1", "192.168.60.255"} & seen.keys()
    assert len(seen) == 253  # every other address went to exactly one host


def test_pools() -> None:
    ipam = Ipam(LocalBook())
    assert ipam.request_pool("s", "192.168.60.0/24", "192.168.60.64/26", False) == (
        "192.168.60.0/24 192.168.60.64/26", "192.168.60.0/24")
    assert list(Pool.parse("192.168.60.0/24 192.168.60.64/26").candidates((1, 1)))[0] == "192.168.60.64"
    for pool, sub, why in [("", "", "needs --subnet"), ("", "192.168.60.0/26", "needs a --subnet"),
                           ("192.168.60.0/24", "192.168.61.0/26", "not inside"), ("nope", "", "bad subnet"),
                           ("192.168.60.0/31", "", "too small")]:
        with pytest.raises(IpamError, match=why):
            ipam.request_pool("s", pool, sub, False)
    with pytest.raises(IpamError, match="unknown pool"):
        Pool.parse("garbage")


def test_state_file_is_replaced_atomically(env: Any) -> None:
    cfg, daemon, _ = env
    p = Plugin(cfg, daemon)
    _run(p.create_network(_create({"vni": "7"})))
    with open(cfg.state) as f:
        assert json.load(f)["networks"][NET_ID]["options"] == {"vni": "7"}
    assert not os.path.exists(cfg.state + ".tmp")


def test_sandboxes_a_restarted_dockerd_restored_get_a_prefix_of_their_own(env: Any) -> None:
    """docker.io 20.10 restores a live container's sandbox without our interfaces' names and
    would name the next one eth0 again ("file exists"): such joins get vx<vni>-N instead."""
    cfg, daemon, _ = env
    sandbox = "/var/run/docker/netns/71d2bc4d3549"

    async def go() -> None:
        p = Plugin(cfg, daemon)
        await p.activate({})
        await p.create_network(_create({"vni": "42"}))
        await p.create_network(_create({"vni": "43"}, "b" * 64))
        await p.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                 "Interface": {"Address": "192.168.60.2/24", "MacAddress": MAC}})
        first = await p.join({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": sandbox})
        assert first["InterfaceName"]["DstPrefix"] == "eth"
        await p.activate({})  # dockerd restarted with the container running
        await p.create_endpoint({"NetworkID": "b" * 64, "EndpointID": "e" * 64,
                                 "Interface": {"Address": "192.168.60.3/24", "MacAddress": "02:42:00:00:00:03"}})
        second = await p.join({"NetworkID": "b" * 64, "EndpointID": "e" * 64, "SandboxKey": sandbox})
        assert second["InterfaceName"]["DstPrefix"] == "vx43-"
        # once none of ours is left in it, the sandbox is an ordinary one again
        for ep in (EP_ID, "e" * 64):
            await p.leave({"NetworkID": NET_ID, "EndpointID": ep})
        assert p.restored == set()

    _run(go())


def test_options_read_as_their_toml_types() -> None:
    from vxlan_dp.config import docker_network

    cfg = DockerConfig(local="198.18.0.1", peers=("198.18.0.2",))
    n = docker_network({"vni": "42", "port": "8472", "ageing": "30.5", "source_ports": "50000-50010",
                        "learning": "false", "peers": "198.18.0.7, 198.18.0.8", "mtu": "1400"}, cfg)
    assert (n.name, n.tap, n.bridge, n.port, n.ageing, n.source_ports, n.learning, n.mtu) == (
        "docker-42", "vxdp-42", "vxbr-42", 8472, 30.5, (50000, 50010), False, 1400)
    assert n.peers == ("198.18.0.7", "198.18.0.8")        # -o peers overrides [docker] peers
    assert docker_network({"vni": "42"}, cfg).peers == ("198.18.0.2",)
    with pytest.raises(ConfigError, match=r"^-o learning: expected true or false, got 1$"):
        docker_network({"vni": "42", "learning": "1"}, cfg)
    with pytest.raises(ConfigError, match=r"^-o source_ports: low 9 is above high 8$"):
        docker_network({"vni": "42", "source_ports": "9-8"}, cfg)
    with pytest.raises(ConfigError, match=r"^-o local: unknown key"):
        docker_network({"vni": "42", "local": "198.18.0.9"}, cfg)


@pytest.mark.parametrize("toml, err", [
    ('[docker]\nslice = "1/2"\n', "docker.local: required with static control"),
    ('[docker]\nlocal = "198.18.0.1"\nslice = "3/2"\n', 'docker.slice: "3/2": want 1 <= i <= n <= 4096'),
    ('[docker]\nlocal = "198.18.0.1"\nslice = "half"\n', 'docker.slice: "half" is not a slice'),
    ('[docker]\nlocal = "198.18.0.1"\nsocket = "vxlan-dp.sock"\n', 'docker.socket: "vxlan-dp.sock" is not an absolute'),
    ('[docker]\nlocal = "198.18.0.1"\npeers = ["2001:2::2"]\n', "docker.peers[0]: 2001:2::2 is IPv6 but local"),
    ('[docker]\nlocal = "198.18.0.1"\nsocks = "/x"\n', 'docker.socks: unknown key (did you mean "socket"?)'),
])
def test_docker_table_errors_name_the_field(toml: str, err: str) -> None:
    from vxlan_dp.config import parse_config

    with pytest.raises(ConfigError) as e:
        parse_config('[daemon]\nmetrics = ""\n' + toml)
    assert str(e.value).startswith(err), str(e.value)


def test_docker_table_alone_is_a_config() -> None:
    from vxlan_dp.config import parse_config

    c = parse_config('[docker]\nlocal = "198.18.0.1"\npeers = ["198.18.0.1", "198.18.0.2"]\nslice = "2/3"\n')
    assert c.networks == () and c.docker is not None
    assert (c.docker.peers, c.docker.slice) == (("198.18.0.2",), (2, 3))   # own address skipped


def test_docker_api_needs_etcd_and_an_address() -> None:
    from vxlan_dp.config import parse_config

    with pytest.raises(ConfigError, match=r'^docker.api: shares networks through the store'):
        parse_config('[docker]\nlocal = "198.18.0.1"\napi = "unix:///var/run/docker.sock"\n')
    with pytest.raises(ConfigError, match=r'^docker.api: "/var/run/docker.sock" is not a Docker API address'):
        parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n'
                     '[docker]\napi = "/var/run/docker.sock"\n')


def test_dual_stack_network_and_endpoint(env: Any) -> None:
    cfg, daemon, _ = env

    async def go() -> None:
        p = Plugin(cfg, daemon)
        req = _create({"vni": "42"})
        req["IPv6Data"] = [{"AddressSpace": "vxlan-dp-local", "Gateway": "fd00:60::1/64", "Pool": "fd00:60::/64"}]
        await p.create_network(req)
        pool_id, _ = p.ipam.request_pool("vxlan-dp-local", "fd00:60::/64", "", True)
        a = await p.request_address({"PoolID": pool_id, "Options": {"com.docker.network.endpoint.macaddress": MAC}})
        assert a["Address"] == "fd00:60::2/64"   # host 1 of 2: the first half, past the gateway
        assert await p.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {
            "Address": "192.168.60.2/24", "AddressIPv6": a["Address"], "MacAddress": MAC}}) == {"Interface": {}}
        await p.join({"NetworkID": NET_ID, "EndpointID": EP_ID})   # both addresses answered for
        assert daemon.neigh == {("docker-42", "192.168.60.2"): MAC, ("docker-42", "fd00:60::2"): MAC}
        await p.delete_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID})
        assert daemon.neigh == {}

    _run(go())
