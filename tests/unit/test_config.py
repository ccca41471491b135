"""The config file as users meet it: what parses to what, and what each mistake is called.

Every bad config must fail with one ConfigError naming the exact TOML field and saying why;
these messages are the spec a user reads, so the table below asserts them.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vxlan_dp.config import (EMBEDDED_DEFAULT, Config, ConfigError, DaemonConfig, EtcdConfig,
                             FdbStatic, NetworkConfig, config_from_dict, load_config, parse_config)

CONFIGS = pathlib.Path(__file__).parent / "configs"


def net(**kv: str | None) -> str:
    """A [[network]] table in TOML; each value is raw TOML text, None leaves the key out."""
    fields = {"name": '"blue"', "vni": "42", "local": '"198.18.0.1"', "tap": '"vxdp-blue"'} | kv
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v is not None)
    return f"[[network]]\n{body}\n"


def red(**kv: str | None) -> str:
    """A second network that clashes with net() in nothing."""
    return net(**({"name": '"red"', "vni": "43", "tap": '"vxdp-red"'} | kv))


V6 = {"local": '"2001:db8::1"'}
FDB = '[{ mac = "02:42:c0:a8:00:04", remote = "198.18.0.2" }]'
ETCD = '[etcd]\nendpoints = ["127.0.0.1:2379"]\n'


# --- good configs ----------------------------------------------------------------------------

def test_embedded_default_parses_to_one_vxlan_network_on_loopback_metrics() -> None:
    cfg = parse_config(EMBEDDED_DEFAULT)
    assert cfg == Config(
        daemon=DaemonConfig(metrics="127.0.0.1:9469", control="static", batch=64, log_level="info",
                            fdb_sweep=5.0),
        networks=(NetworkConfig(name="blue", vni=42, encap="vxlan", port=4789, local="198.18.0.1",
                                tap="vxdp-blue", peers=("198.18.0.2", "198.18.0.3"),
                                fdb=(FdbStatic("02:42:c0:a8:00:04", "198.18.0.2"),)),),
        etcd=None, source="<string>")
    assert cfg.daemon.metrics_address == ("127.0.0.1", 9469)


def test_full_example_parses_every_key_normalised() -> None:
    path = CONFIGS / "full.toml"
    cfg = load_config(path)
    assert cfg == Config(
        daemon=DaemonConfig(metrics="[::1]:9100", control="etcd", batch=256, log_level="warning",
                            fdb_sweep=2.0),
        networks=(
            NetworkConfig(name="blue", vni=42, encap="vxlan", port=8472, local="198.18.0.1",
                          tap="vxdp-blue", bridge="br-blue", mtu=1450, learning=False,
                          peers=("198.18.0.2", "198.18.0.3"),
                          fdb=(FdbStatic("02:42:c0:a8:00:04", "198.18.0.2"),
                               FdbStatic("02:42:c0:a8:00:05", "198.18.0.3")),
                          ageing=600.0, source_ports=(50000, 50999), allow_unknown_sources=True,
                          strict=True, nvgre=False, max_fdb_entries=1024),
            NetworkConfig(name="red", vni=7, encap="gre-udp", port=4754, local="2001:db8::1",
                          tap="vxdp-red", peers=("2001:db8::2",),
                          fdb=(FdbStatic("0a:00:00:00:00:01", "2001:db8::2"),), ageing=30.5,
                          nvgre=True),
            NetworkConfig(name="green", vni=0, encap="gre", port=0, local="198.18.0.1",
                          tap="vxdp-green"),
        ),
        etcd=EtcdConfig(endpoints=("http://198.18.0.10:2379", "etcd2.lab.example:2379"),
                        prefix="/lab/overlay", lease_ttl=30, ca="/etc/vxlan-dp/ca.pem",
                        cert="/etc/vxlan-dp/client.pem", key="/etc/vxlan-dp/client.key",
                        username="vxdp", password="s3cret"),
        source=str(path))
    assert cfg.daemon.metrics_address == ("::1", 9100)
    assert [n.ipv6 for n in cfg.networks] == [False, True, False]
    assert isinstance(cfg.daemon.fdb_sweep, float) and isinstance(cfg.networks[0].ageing, float)


@pytest.mark.parametrize("encap, port", [("vxlan", 4789), ("gre-udp", 4754), ("gre", 0)])
def test_default_port_follows_encap(encap: str, port: int) -> None:
    n = parse_config(net(encap=f'"{encap}"')).networks[0]
    assert (n.encap, n.port) == (encap, port)
    assert (n.bridge, n.mtu, n.learning, n.peers, n.fdb, n.ageing, n.source_ports,
            n.allow_unknown_sources, n.strict, n.nvgre, n.max_fdb_entries) == (
        None, None, True, (), (), 300.0, (49152, 65535), False, False, False, 65536)


def test_encap_defaults_to_vxlan_and_daemon_table_is_optional() -> None:
    cfg = parse_config(net())
    assert cfg.networks[0].encap == "vxlan" and cfg.daemon == DaemonConfig()


@pytest.mark.parametrize("value", ['""', "false"])
def test_metrics_can_be_turned_off(value: str) -> None:
    cfg = parse_config(f"[daemon]\nmetrics = {value}\n" + net())
    assert cfg.daemon.metrics is None and cfg.daemon.metrics_address is None


@pytest.mark.parametrize("text, stored, address", [
    ("0.0.0.0:9469", "0.0.0.0:9469", ("0.0.0.0", 9469)),
    ("localhost:9100", "localhost:9100", ("localhost", 9100)),
    ("[2001:0db8::0001]:9469", "[2001:db8::1]:9469", ("2001:db8::1", 9469)),
])
def test_metrics_address_forms(text: str, stored: str, address: tuple[str, int]) -> None:
    d = parse_config(f'[daemon]\nmetrics = "{text}"\n' + net()).daemon
    assert (d.metrics, d.metrics_address) == (stored, address)


def test_networks_of_one_encap_share_a_udp_port() -> None:
    cfg = parse_config(net() + red() + red(name='"green"', vni="44", tap='"vxdp-green"', port="8472"))
    assert [(n.local, n.port) for n in cfg.networks] == [("198.18.0.1", 4789)] * 2 + [("198.18.0.1", 8472)]


def test_different_encaps_coexist_on_different_ports_and_addresses() -> None:
    cfg = parse_config(net() + red(encap='"gre-udp"', port="4789", local='"198.18.0.9"')
                       + red(name='"green"', vni="44", tap='"vxdp-green"', encap='"gre"'))
    assert [n.encap for n in cfg.networks] == ["vxlan", "gre-udp", "gre"]


def test_nvgre_and_plain_gre_share_an_endpoint_when_keys_do_not_overlap() -> None:
    # NVGRE VSID 1 owns keys 256..511; plain key 512 is outside it.
    cfg = parse_config(net(encap='"gre"', vni="1", nvgre="true") + red(encap='"gre"', vni="512"))
    assert [(n.vni, n.nvgre) for n in cfg.networks] == [(1, True), (512, False)]


def test_etcd_control_may_have_no_networks() -> None:
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n' + ETCD)
    assert cfg.networks == () and cfg.etcd == EtcdConfig(endpoints=("127.0.0.1:2379",))


def test_etcd_host_settings_for_store_networks() -> None:
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n' + ETCD + 'local = "2001:DB8::3"\ntap = "ov-{name}"\n'
                       'bridge = ""\n')
    assert cfg.etcd is not None
    assert (cfg.etcd.local, cfg.etcd.tap, cfg.etcd.bridge) == ("2001:db8::3", "ov-{name}", None)
    assert cfg.etcd.tap_for("blue") == "ov-blue" and cfg.etcd.bridge_for("blue") is None
    d = parse_config('[daemon]\ncontrol = "etcd"\n' + ETCD).etcd
    assert d is not None and (d.local, d.tap_for("red"), d.bridge_for("red")) == (None, "vxdp-red", "br-red")


def test_config_from_dict_matches_parse_config() -> None:
    d = {"network": [{"name": "blue", "vni": 42, "local": "198.18.0.1", "tap": "vxdp-blue",
                      "peers": ("198.18.0.2",), "source_ports": (1000, 2000)}]}
    assert config_from_dict(d, source="x") == dataclasses.replace(
        parse_config(net(peers='["198.18.0.2"]', source_ports="[1000, 2000]")), source="x")
    assert config_from_dict(d).source == "<dict>"


def test_network_lookup_by_name() -> None:
    cfg = parse_config(net() + red())
    assert cfg.network("red").vni == 43
    with pytest.raises(KeyError, match="purple"):
        cfg.network("purple")


def test_config_is_frozen() -> None:
    n = parse_config(net()).networks[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.vni = 7  # type: ignore[misc]  # frozen: the assignment must raise


def test_params_carries_every_fast_path_field() -> None:
    n = parse_config(net(encap='"gre-udp"', port="6000", mtu="1400", learning="false", ageing="60",
                         source_ports="[40000, 40010]", allow_unknown_sources="true", strict="true",
                         nvgre="true", max_fdb_entries="99")).networks[0]
    p = n.params()
    assert (p.vni, p.encap, p.local, p.port, p.sport_min, p.sport_max, p.mtu, p.learning,
            p.allow_unknown_sources, p.ageing, p.max_fdb_entries, p.nvgre, p.strict) == (
        42, "gre-udp", "198.18.0.1", 6000, 40000, 40010, 1400, False, True, 60.0, 99, True, True)
    assert n.params(1300).mtu == 1300


def test_params_needs_an_mtu_when_it_is_derived() -> None:
    n = parse_config(net()).networks[0]
    assert n.params(1450).mtu == 1450
    with pytest.raises(ValueError, match="MTU"):
        n.params()
    with pytest.raises(ValueError, match="MTU"):
        n.params(20)


# --- bad configs: (TOML, field named, reason fragment) --------------------------------------

BAD: list[tuple[str, str, str]] = [
    # unknown keys, at every level
    ("colour = 1\n" + net(), "colour", "unknown key"),
    ('[daemon]\nmetric = "127.0.0.1:1"\n' + net(), "daemon.metric", 'unknown key (did you mean "metrics"?)'),
    (net(vin="42"), "network[0].vin", "unknown key"),
    (net(fdb='[{ mac = "02:00:00:00:00:01", remote = "198.18.0.2", vlan = 5 }]'), "network[0].fdb[0].vlan",
     "unknown key"),
    (net() + ETCD + "user = 'x'\n", "etcd.user", "unknown key"),
    (net(**{'"tap name"': '"x"'}), 'network[0]."tap name"', "unknown key"),
    # structure
    ("daemon = 5\n" + net(), "daemon", "expected a table, got 5"),
    ("[network]\nname = 'blue'\n", "network", "write [[network]], not [network]"),
    ("network = [5]\n", "network[0]", "expected a table, got 5"),
    ("[daemon]\n", "network", 'control = "static" needs at least one [[network]]'),
    ('[daemon]\ncontrol = "etcd"\n' + net(), "etcd", "needs an [etcd] table with endpoints"),
    # required keys
    (net(name=None), "network[0].name", "required key missing"),
    (net(vni=None), "network[0].vni", "required key missing"),
    (net(local=None), "network[0].local", "required key missing"),
    (net(tap=None), "network[0].tap", "required key missing"),
    # types
    (net(vni="true"), "network[0].vni", "expected an integer, got true"),
    (net(vni='"42"'), "network[0].vni", 'expected an integer, got "42"'),
    (net(vni="42.0"), "network[0].vni", "expected an integer, got 42.0"),
    (net(mtu="true"), "network[0].mtu", "expected an integer, got true"),
    (net(learning='"yes"'), "network[0].learning", 'expected true or false, got "yes"'),
    (net(allow_unknown_sources="1"), "network[0].allow_unknown_sources", "expected true or false, got 1"),
    (net(ageing="true"), "network[0].ageing", "expected a number of seconds, got true"),
    (net(tap="5"), "network[0].tap", "expected a string, got 5"),
    (net(peers='"198.18.0.2"'), "network[0].peers", "expected an array"),
    # ranges
    (net(vni="16777216"), "network[0].vni", "16777216 is out of range 0..16777215"),
    (net(vni="-1"), "network[0].vni", "-1 is out of range 0..16777215"),
    (net(port="0"), "network[0].port", "0 is out of range 1..65535"),
    (net(port="65536"), "network[0].port", "65536 is out of range 1..65535"),
    (net(mtu="67"), "network[0].mtu", "67 is out of range 68..65535"),
    (net(mtu="65536"), "network[0].mtu", "65536 is out of range 68..65535"),
    (net(ageing="0"), "network[0].ageing", "0 is not a positive number of seconds"),
    (net(ageing="-1.5"), "network[0].ageing", "-1.5 is not a positive number of seconds"),
    (net(ageing="nan"), "network[0].ageing", "nan is not a positive number of seconds"),
    (net(max_fdb_entries="0"), "network[0].max_fdb_entries", "0 is out of range 1..16777216"),
    (net(max_fdb_entries="16777217"), "network[0].max_fdb_entries", "out of range 1..16777216"),
    # encapsulation
    (net(encap='"ipip"'), "network[0].encap", '"ipip" is not one of vxlan, gre, gre-udp'),
    (net(encap='"gre"', port="4789"), "network[0].port", "has no UDP header"),
    (net(encap='"gre"', source_ports="[1, 2]"), "network[0].source_ports", "has no UDP header"),
    (net(nvgre="true"), "network[0].nvgre", 'NVGRE applies to encap "gre" and "gre-udp", not "vxlan"'),
    # source ports
    (net(source_ports="49152"), "network[0].source_ports", "expected an array, got 49152"),
    (net(source_ports="[1, 2, 3]"), "network[0].source_ports", "expected [low, high], got 3 element(s)"),
    (net(source_ports="[60000, 50000]"), "network[0].source_ports", "low 60000 is above high 50000"),
    (net(source_ports="[0, 65535]"), "network[0].source_ports[0]", "0 is out of range 1..65535"),
    (net(source_ports='[1000, "2000"]'), "network[0].source_ports[1]", 'expected an integer, got "2000"'),
    # names and interface names
    (net(name='"blue net"'), "network[0].name", "is not a valid network name"),
    (net(name='""'), "network[0].name", "is not a valid network name"),
    (net(tap='"vxdp-blue-012345"'), "network[0].tap", "is 16 bytes long; Linux interface names are 1..15"),
    (net(tap='""'), "network[0].tap", "is 0 bytes long"),
    (net(tap='"vx/blue"'), "network[0].tap", "not a valid Linux interface name (no '/', ':' or whitespace)"),
    (net(tap='"vx blue"'), "network[0].tap", "not a valid Linux interface name"),
    (net(tap='".."'), "network[0].tap", '".." is not a valid Linux interface name'),
    (net(bridge='"br:0"'), "network[0].bridge", "not a valid Linux interface name"),
    (net(bridge='"vxdp-blue"'), "network[0].bridge", "is this network's own tap"),
    # addresses
    (net(local='"198.18.0.x"'), "network[0].local", '"198.18.0.x" is not an IPv4 or IPv6 address'),
    (net(local='"0.0.0.0"'), "network[0].local", "0.0.0.0 is the unspecified address"),
    (net(local='"239.1.1.1"'), "network[0].local", "239.1.1.1 is a multicast address"),
    (net(local='"fe80::1%eth0"'), "network[0].local", "scoped IPv6 addresses"),
    (net(peers='["198.18.0.2", "2001:db8::2"]'), "network[0].peers[1]", "2001:db8::2 is IPv6 but local 198.18.0.1 is IPv4"),
    (net(peers='["198.18.0.1"]'), "network[0].peers[0]", "198.18.0.1 is this host's local address"),
    (net(peers='["2001:db8::2", "2001:0db8:0::2"]', **V6), "network[0].peers[1]", "2001:db8::2 is a duplicate of peers[0]"),
    (net(peers='["198.18.0.2", 5]'), "network[0].peers[1]", "expected a string, got 5"),
    # static FDB
    (net(fdb='[{ mac = "01:00:5e:00:00:01", remote = "198.18.0.2" }]'), "network[0].fdb[0].mac",
     "01:00:5e:00:00:01 is a group (multicast or broadcast) address"),
    (net(fdb='[{ mac = "FF:FF:FF:FF:FF:FF", remote = "198.18.0.2" }]'), "network[0].fdb[0].mac",
     "ff:ff:ff:ff:ff:ff is a group"),
    (net(fdb='[{ mac = "02:42:c0:a8:00", remote = "198.18.0.2" }]'), "network[0].fdb[0].mac",
     '"02:42:c0:a8:00" is not a MAC address (want aa:bb:cc:dd:ee:ff)'),
    (net(fdb='[{ mac = "02:00:00:00:00:01", remote = "198.18.0.2" }, { mac = "02:00:00:00:00:02", '
             'remote = "198.18.0.2" }, { mac = "02:00:00:00:00:01", remote = "198.18.0.3" }]'),
     "network[0].fdb[2].mac", "02:00:00:00:00:01 is a duplicate of fdb[0]"),
    (net(fdb='[{ mac = "02:00:00:00:00:01", remote = "2001:db8::2" }]'), "network[0].fdb[0].remote",
     "is IPv6 but local 198.18.0.1 is IPv4"),
    (net(fdb='[{ mac = "02:00:00:00:00:01" }]'), "network[0].fdb[0].remote", "required key missing"),
    (net(fdb='["02:00:00:00:00:01"]'), "network[0].fdb[0]", 'expected a table, got "02:00:00:00:00:01"'),
    # across networks: the later one is named
    (net() + red() + red(vni="44", tap='"vxdp-x"'), "network[2].name", "duplicate of network[1]"),
    (net() + red(vni="42"), "network[1].vni", "42 is already the VNI of network[0] (blue)"),
    (net() + red(tap='"vxdp-blue"'), "network[1].tap", '"vxdp-blue" is already the tap of network[0] (blue)'),
    (net(bridge='"br0"') + red(tap='"br0"'), "network[1].tap", '"br0" is the bridge of network[0] (blue)'),
    (net() + red(bridge='"vxdp-blue"'), "network[1].bridge", '"vxdp-blue" is the tap of network[0] (blue)'),
    (net(bridge='"br0"') + red(bridge='"br0"'), "network[1].bridge",
     '"br0" is already the bridge of network[0] (blue); a shared bridge would carry frames across VNIs'),
    (net() + red(encap='"gre-udp"', port="4789"), "network[1].port",
     "198.18.0.1 port 4789 already carries vxlan for network[0] (blue)"),
    (net(encap='"gre-udp"', port="4789") + red(), "network[1].port", "already carries gre-udp"),
    (net(encap='"gre"', vni="1", nvgre="true") + red(encap='"gre"', vni="300"), "network[1].vni",
     "plain GRE key 300 lies inside NVGRE VSID 1 (keys 256..511)"),
    # daemon
    ("[daemon]\nmetrics = true\n" + net(), "daemon.metrics", 'expected "host:port", "" or false, got true'),
    ('[daemon]\nmetrics = "::1:9469"\n' + net(), "daemon.metrics", "put an IPv6 address in brackets"),
    ('[daemon]\nmetrics = "127.0.0.1"\n' + net(), "daemon.metrics", "has no port"),
    ('[daemon]\nmetrics = "127.0.0.1:70000"\n' + net(), "daemon.metrics", "port 70000 is out of range 1..65535"),
    ('[daemon]\nmetrics = "127.0.0.1:http"\n' + net(), "daemon.metrics", 'port "http" is not a number'),
    ('[daemon]\nmetrics = "300.0.0.1:9469"\n' + net(), "daemon.metrics", '"300.0.0.1" is not an IPv4 address'),
    ('[daemon]\ncontrol = "k8s"\n' + net(), "daemon.control", '"k8s" is not one of static, etcd'),
    ("[daemon]\nbatch = 0\n" + net(), "daemon.batch", "0 is out of range 1..1024"),
    ("[daemon]\nbatch = 1025\n" + net(), "daemon.batch", "1025 is out of range 1..1024"),
    ('[daemon]\nlog_level = "verbose"\n' + net(), "daemon.log_level", "is not one of debug, info, warning, error"),
    ("[daemon]\nfdb_sweep = 0\n" + net(), "daemon.fdb_sweep", "0 is not a positive number of seconds"),
    ('[daemon]\noffload = "yes"\n' + net(), "daemon.offload", 'expected true or false, got "yes"'),
    ("[daemon]\noffload = 1\n" + net(), "daemon.offload", "expected true or false, got 1"),
    ('[daemon]\npoll = "spin"\n' + net(), "daemon.poll", '"spin" is not one of interrupt, adaptive, busy'),
    ("[daemon]\npoll = 1\n" + net(), "daemon.poll", ""),
    ("[daemon]\npoll_spin_us = 0\n" + net(), "daemon.poll_spin_us", "0 is out of range 1..10000"),
    ("[daemon]\npoll_spin_us = 20000\n" + net(), "daemon.poll_spin_us", "20000 is out of range 1..10000"),
    ("[daemon]\nqueues = 0\n" + net(), "daemon.queues", "0 is out of range 1..16"),
    ("[daemon]\nqueues = 17\n" + net(), "daemon.queues", "17 is out of range 1..16"),
    ('[daemon]\nqueues = "all"\n' + net(), "daemon.queues", '"all" is neither "auto" nor a number of queues 1..16'),
    ("[daemon]\nqueues = true\n" + net(), "daemon.queues", "expected an integer, got true"),
    # etcd
    (net() + "[etcd]\nprefix = '/x'\n", "etcd.endpoints", "required key missing"),
    (net() + "[etcd]\nendpoints = []\n", "etcd.endpoints", "needs at least one endpoint"),
    (net() + "[etcd]\nendpoints = ['etcd1']\n", "etcd.endpoints[0]", '"etcd1" has no port'),
    (net() + "[etcd]\nendpoints = ['ftp://etcd1:2379']\n", "etcd.endpoints[0]", "is not an etcd endpoint"),
    (net() + "[etcd]\nendpoints = ['a:1', 'a:1']\n", "etcd.endpoints[1]", "a:1 is a duplicate of endpoints[0]"),
    (net() + ETCD + "cert = '/c.pem'\n", "etcd.key", "required when cert is set"),
    (net() + ETCD + "password = 'pw'\n", "etcd.username", "required when password is set"),
    (net() + ETCD + "prefix = 'vxlan-dp'\n", "etcd.prefix", "is not a key prefix"),
    (net() + ETCD + "lease_ttl = 0\n", "etcd.lease_ttl", "0 is out of range 1..3600"),
    (net() + ETCD + "local = '0.0.0.0'\n", "etcd.local", "unspecified address"),
    (net() + ETCD + "tap = 'vxdp'\n", "etcd.tap", 'has no "{name}"'),
    (net() + ETCD + "tap = 'vx-{name}-{vni}'\n", "etcd.tap", 'is the only placeholder'),
    (net() + ETCD + "tap = 'a-very-long-tap-{name}'\n", "etcd.tap", "Linux interface names are 1..15"),
    (net() + ETCD + "bridge = 'br {name}'\n", "etcd.bridge", "not a valid Linux interface name"),
    # the ARP / ND suppression table
    (net(neigh='[{ ip = "192.168.0.4" }]'), "network[0].neigh[0].mac", "required"),
    (net(neigh='[{ ip = "224.0.0.1", mac = "02:42:c0:a8:00:04" }]'), "network[0].neigh[0].ip",
     "224.0.0.1 is a multicast address"),
    (net(neigh='[{ ip = "192.168.0.4", mac = "ff:ff:ff:ff:ff:ff" }]'), "network[0].neigh[0].mac",
     "is a group (multicast or broadcast) address"),
    (net(neigh='[{ ip = "192.168.0.4", mac = "02:42:c0:a8:00:04", remote = "198.18.0.2" }]'),
     "network[0].neigh[0].remote", "unknown key"),
    (net(neigh='[{ ip = "192.168.0.4", mac = "02:42:c0:a8:00:04" }, { ip = "192.168.0.4", mac = "02:42:c0:a8:00:05" }]'),
     "network[0].neigh[1].ip", "192.168.0.4 is a duplicate of neigh[0]"),
    (net(fdb='[{ mac = "02:42:c0:a8:00:04", remote = "198.18.0.2", ip = "192.168.0.4" }]',
         neigh='[{ ip = "192.168.0.4", mac = "02:42:c0:a8:00:05" }]'),
     "network[0].neigh[0].ip", "192.168.0.4 is a duplicate of fdb[0].ip"),
    (net(fdb='[{ mac = "02:42:c0:a8:00:04", remote = "198.18.0.2", ip = ["192.168.0.4", "192.168.0.4"] }]'),
     "network[0].fdb[0].ip[1]", "192.168.0.4 is a duplicate of ip[0]"),
    (net(fdb='[{ mac = "02:42:c0:a8:00:04", remote = "198.18.0.2", ip = "nope" }]'), "network[0].fdb[0].ip",
     "is not an IPv4 or IPv6 address"),
    (net(suppress_arp='"yes"'), "network[0].suppress_arp", "expected true or false"),
    (net(neigh_snoop="1"), "network[0].neigh_snoop", "expected true or false"),
]


def test_neighbour_table_from_neigh_and_fdb_ips() -> None:
    n = parse_config(net(fdb='[{ mac = "02:42:C0:A8:00:04", remote = "198.18.0.2", ip = ["192.168.0.4", '
                             '"fd00:0::4"] }, { mac = "02:42:c0:a8:00:05", remote = "198.18.0.2", '
                             'ip = "192.168.0.5" }]',
                         neigh='[{ ip = "192.168.0.6", mac = "02:42:C0:A8:00:06" }]',
                         suppress_arp="false", neigh_snoop="true")).networks[0]
    assert n.neigh_entries() == (("192.168.0.6", "02:42:c0:a8:00:06"), ("192.168.0.4", "02:42:c0:a8:00:04"),
                                 ("fd00::4", "02:42:c0:a8:00:04"), ("192.168.0.5", "02:42:c0:a8:00:05"))
    assert (n.suppress_arp, n.neigh_snoop) == (False, True)
    d = parse_config(net()).networks[0]
    assert (d.neigh_entries(), d.suppress_arp, d.neigh_snoop) == ((), None, False)


@pytest.mark.parametrize("text, field, reason", BAD, ids=[f"{i:02d}-{f}" for i, (_, f, _) in enumerate(BAD)])
def test_bad_config_names_field_and_reason(text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    err = info.value
    assert err.field == field
    assert reason in err.reason
    assert str(err) == f"{field}: {err.reason}"


def test_bad_table_is_big_enough_to_be_the_spec() -> None:
    assert len(BAD) >= 35
    assert len({t for t, _, _ in BAD}) == len(BAD), "two table rows test the same config"


def test_vni_out_of_range_reads_exactly_as_documented() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(net() + red(vni="16777216"))
    assert str(info.value) == "network[1].vni: 16777216 is out of range 0..16777215"


def test_unknown_key_is_reported_before_missing_keys() -> None:
    # A typo for a required key must name the typo, not the key it was meant to be.
    with pytest.raises(ConfigError, match=r"^network\[0\]\.nmae: unknown key \(did you mean \"name\"\?\)$"):
        parse_config(net(name=None, nmae='"blue"'))


def test_toml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[daemon]\nbatch = 64\nlog_level "info"\n')
    assert info.value.field == ""
    assert "invalid TOML" in str(info.value) and "line 3" in str(info.value)


def test_load_config_reports_a_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == ""
    assert str(info.value) == f"cannot read {path}: No such file or directory"


def test_load_config_reports_a_directory_and_non_utf8(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read .*: Is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'# caf\xe9\n' + net().encode())
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_load_config_records_its_source(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "vxlan-dp.toml"
    path.write_text(EMBEDDED_DEFAULT)
    cfg = load_config(str(path))
    assert cfg.source == str(path)
    assert dataclasses.replace(cfg, source="<string>") == parse_config(EMBEDDED_DEFAULT)


def test_config_from_dict_rejects_a_non_table() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict([1, 2])  # type: ignore[arg-type]  # the wrong type on purpose
    assert (info.value.field, info.value.reason) == ("", "expected a table, got an array")


# --- whatever the values, the only failure is a ConfigError -----------------------------------

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 1 << 33) | st.floats(allow_nan=True)
    | st.sampled_from(["", "vxlan", "gre", "gre-udp", "198.18.0.2", "::1", "02:00:00:00:00:01",
                       "x:1", "[::1]:9", "/", "."]) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["mac", "remote", "x"]),
                                                                 inner, max_size=3),
    max_leaves=6)
_KEYS = ["name", "vni", "encap", "port", "local", "tap", "bridge", "mtu", "learning", "peers", "fdb",
         "ageing", "source_ports", "nvgre", "max_fdb_entries", "strict"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6),
       st.dictionaries(st.sampled_from(["metrics", "control", "batch", "log_level", "fdb_sweep"]),
                       _VALUES, max_size=2))
def test_any_values_give_a_config_or_a_config_error(network: dict, daemon: dict) -> None:
    base = {"name": "blue", "vni": 42, "local": "198.18.0.1", "tap": "vxdp-blue"}
    try:
        cfg = config_from_dict({"daemon": daemon, "network": [base | network]})
    except ConfigError as e:
        assert e.field.startswith(("network[0]", "daemon")) and e.reason
    else:
        n = cfg.networks[0]
        assert 0 <= n.vni <= 0xFFFFFF and 1 <= n.max_fdb_entries <= 1 << 24
        assert n.ageing > 0 and math.isfinite(n.ageing)


def test_poll_defaults_to_adaptive_and_takes_each_mode() -> None:
    d = parse_config(net()).daemon
    assert (d.poll, d.poll_spin_us) == ("adaptive", 300)
    for mode in ("interrupt", "adaptive", "busy"):
        assert parse_config(f'[daemon]\npoll = "{mode}"\n' + net()).daemon.poll == mode
    assert parse_config("[daemon]\npoll_spin_us = 250\n" + net()).daemon.poll_spin_us == 250


def test_queues_default_to_one_and_auto_is_one_per_cpu_up_to_four() -> None:
    import os

    from vxlan_dp import config
    from vxlan_dp.fastpath import api
    assert parse_config(net()).daemon.queues == 1
    assert parse_config("[daemon]\nqueues = 2\n" + net()).daemon.queues == 2
    cpus = len(os.sched_getaffinity(0))
    assert parse_config('[daemon]\nqueues = "auto"\n' + net()).daemon.queues == min(cpus, 4)
    assert config.QUEUES_MAX == api.QUEUES_MAX      # the one number config cannot import


def test_offload_is_on_unless_turned_off() -> None:
    assert parse_config(net()).daemon.offload is True
    assert parse_config("[daemon]\noffload = false\n" + net()).daemon.offload is False
    assert parse_config("[daemon]\noffload = true\n" + net()).daemon.offload is True


# --- every bad field in one run ---------------------------------------------------------------

SEVERAL_BAD = ('[daemon]\nbatch = 0\nlog_level = "loud"\nmetrcs = "127.0.0.1:1"\n'
               + net(vni="16777216", peers='["198.18.0.2", "not-an-address", "198.18.0.2"]', mtu="20")
               + red(local='"198.18.0.300"')            # a required field: the rest of red is not judged
               + net(name='"green"', vni="42", tap='"vxdp-green"', learning='"yes"')
               + "[etcd]\nendpoints = ['127.0.0.1:2379']\nlease_ttl = 0\n")
SEVERAL_BAD_PROBLEMS = [
    ("daemon.metrcs", 'unknown key (did you mean "metrics"?)'),
    ("daemon.batch", "0 is out of range 1..1024"),
    ("daemon.log_level", '"loud" is not one of debug, info, warning, error'),
    ("etcd.lease_ttl", "0 is out of range 1..3600"),
    ("network[0].vni", "16777216 is out of range 0..16777215"),
    ("network[0].mtu", "20 is out of range 68..65535"),
    ("network[0].peers[1]", '"not-an-address" is not an IPv4 or IPv6 address'),
    ("network[0].peers[2]", "198.18.0.2 is a duplicate of peers[0]"),
    ("network[1].local", '"198.18.0.300" is not an IPv4 or IPv6 address'),
    ("network[2].learning", 'expected true or false, got "yes"'),
]


def test_every_bad_field_is_reported_in_one_run() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(SEVERAL_BAD)
    got = [(p.field, p.reason) for p in info.value.problems]
    assert got == SEVERAL_BAD_PROBLEMS
    # the first problem is the error itself, as when there is only one
    assert (info.value.field, info.value.reason) == SEVERAL_BAD_PROBLEMS[0]
    assert str(info.value) == f"{SEVERAL_BAD_PROBLEMS[0][0]}: {SEVERAL_BAD_PROBLEMS[0][1]}"


def test_rules_across_networks_are_all_reported_and_skip_networks_that_did_not_read() -> None:
    text = (net() + red(vni="42", tap='"vxdp-blue"')    # two clashes with network[0]
            + net(name='"bad"', vni='"x"', tap='"vxdp-bad"')  # does not read: takes no part
            + net(name='"blue"', vni="44", tap='"vxdp-4"'))  # a third clash
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert [(p.field, p.reason) for p in info.value.problems] == [
        ("network[2].vni", 'expected an integer, got "x"'),         # each network is read first
        ("network[1].vni", "42 is already the VNI of network[0] (blue)"),
        ("network[1].tap", '"vxdp-blue" is already the tap of network[0] (blue)'),
        ("network[3].name", "duplicate of network[0]"),
    ]


def test_one_bad_field_is_one_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(net() + red(vni="16777216"))
    assert len(info.value.problems) == 1


def test_check_prints_every_bad_field_and_exits_2(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vxlan_dp import cli

    path = tmp_path / "bad.toml"
    path.write_text(SEVERAL_BAD)
    assert cli.main(["check", "-c", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"vxlan-dp: {path}: {f}: {r}" for f, r in SEVERAL_BAD_PROBLEMS]


_FDB_MACS = st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:02", "02:AA:bb:00:00:03", "03:00:00:00:00:04",
                             "02:00:00:00:00", "02-00-00-00-00-05", "02:00:00:00:00:0g", " 2:00:00:00:00:06",
                             "02:00:00:00:00:07\n", 7])
_FDB_REMOTES = st.sampled_from(["198.18.1.1", "198.18.1.2", "198.18.0.1", "2001:2::1", "224.0.0.1", "nope", 5])
_FDB_ENTRY = st.one_of(st.fixed_dictionaries({"mac": _FDB_MACS, "remote": _FDB_REMOTES}),
                       st.fixed_dictionaries({"mac": _FDB_MACS, "remote": _FDB_REMOTES, "ip": st.just("192.168.0.9")}),
                       st.fixed_dictionaries({"mac": _FDB_MACS}), st.just("02:00:00:00:00:01"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_FDB_ENTRY, max_size=6))
@example([{"mac": " 2:00:00:00:00:06", "remote": "198.18.1.1"}])   # int(" 2", 16) took the space: a crash
def test_fdb_checked_whole_equals_the_entry_by_entry_loop(fdb: list) -> None:
    """A static FDB array is checked a column at a time when it looks usual (config._fdb_whole)
    and entry by entry otherwise: the same table, or the same error naming the same field."""
    import vxlan_dp.config as config_module
    raw = {"network": [{"name": "blue", "vni": 42, "local": "198.18.0.1", "tap": "t0", "fdb": fdb}]}

    def parse() -> object:
        try:
            c = config_from_dict(raw)
        except ConfigError as e:
            return str(e)
        t = c.networks[0].fdb
        return (t.macs, list(t.index), t.remotes, c.networks[0].fdb_ips)
    whole = parse()
    fast = config_module._fdb_whole
    config_module._fdb_whole = lambda raw, local: None
    try:
        assert parse() == whole
    finally:
        config_module._fdb_whole = fast
