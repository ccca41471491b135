"""The etcd control plane without a server: key schema, mirrored store, Desired state, publishing.

etcd_state.py takes key/value pairs and `now` and hands back decisions, so every rule of the
issue is checked here in memory: who is in a flood list, which FDB entries a host installs,
when a host claims a MAC, yields it to another host, takes it back or withdraws it. The
fastpath's local-MAC table (what the publisher reads) is checked on the Python reference; the
C backend is held to it by test_differential.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from helpers import eth_frame
from vxlan_dp.config import ConfigError, EtcdConfig, parse_config, store_network
from vxlan_dp.control import Desired, StaticControl, make_control
from vxlan_dp.control.etcd import Endpoint, EtcdControl, _describe, _still_ours, parse_endpoint
from vxlan_dp.control.etcd_keys import (KeySet, MemberAck, Retire, Rotate, StoreKey, all_send, choose_send,
                                        decode_key, decode_member, encode_key, encode_member, ordered,
                                        rotation_step)
from vxlan_dp.control.etcd_state import (FDB, NEIGH, Change, Keys, Publisher, StoreView, decode_fdb,
                                         decode_neigh, desired_for, encode_fdb, encode_neigh, installable,
                                         plan_networks)
from vxlan_dp.core.fdbtable import FdbBuilder
from vxlan_dp.fastpath import NetworkParams, PureDataplane

A, B, C, D = "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"
A6, B6 = "2001:db8::1", "2001:db8::2"
M1, M2, M3 = "02:42:c0:a8:00:01", "02:42:c0:a8:00:02", "02:42:c0:a8:00:03"
P = "/vxlan-dp"
K = Keys(P)
ETCD = EtcdConfig(endpoints=("198.18.0.254:2379",), local=A)
NOW = 1000.0


def _view(*kvs: tuple[str, Any]) -> StoreView:
    v = StoreView(K)
    v.load([(k.encode(), json.dumps(val).encode()) for k, val in kvs])
    return v


def _raw(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _blue(local: str = A, **kw: Any):
    return store_network("blue", {"vni": 42} | kw, local=local, etcd=ETCD, path=f"{P}/networks/blue")


# --- key schema -----------------------------------------------------------------------------

def test_keys_round_trip_and_reject_what_is_not_ours() -> None:
    assert K.network("blue") == b"/vxlan-dp/networks/blue"
    assert K.member("blue", A) == b"/vxlan-dp/members/blue/198.18.0.1"
    assert K.fdb("blue", M1) == b"/vxlan-dp/fdb/blue/02:42:c0:a8:00:01"
    assert K.parse(K.member("blue", A6)) == ("members", "blue", A6)  # IPv6 colons are fine
    assert K.parse(K.network("red")) == ("networks", "red", "")
    for bad in (b"/other/networks/blue", b"/vxlan-dp/networks/", b"/vxlan-dp/members/blue",
                b"/vxlan-dp/fdb/blue/x/y", b"/vxlan-dp/peers/blue/a", b"/vxlan-dp/\xff"):
        with pytest.raises(ValueError):
            K.parse(bad)
    assert Keys("/lab/overlay/").root == b"/lab/overlay/"


def test_fdb_values_decode_to_normalised_unicast_addresses() -> None:
    assert decode_fdb(encode_fdb(A)) == A
    assert decode_fdb(b'{"remote": "2001:DB8:0::2"}') == B6
    for bad in (b"x", b"[]", b'{"remote": 5}', b'{"remote": "nope"}', b'{"remote": "224.0.0.1"}'):
        with pytest.raises(ValueError):
            decode_fdb(bad)


# --- what is kept of the store: definitions and members; entries become operations ---------

def test_view_follows_puts_and_deletes_and_reports_what_changed() -> None:
    v = StoreView(K)
    assert v.put(K.network("blue"), b'{"vni": 42}') == Change(networks=True, dirty={"blue"})
    assert v.put(K.network("blue"), b'{"vni": 42}') == Change()          # same value: nothing
    assert v.put(K.member("blue", B), b"{}") == Change(dirty={"blue"})
    assert v.put(K.member("blue", B), b"{}") == Change()
    assert v.put(K.fdb("blue", M1), encode_fdb(B)) == Change(fdb={"blue": {_raw(M1): B}})
    assert v.put(K.fdb("blue", M1), encode_fdb(C)) == Change(fdb={"blue": {_raw(M1): C}})
    assert len(v) == 2                                         # entries are not kept: no mirror
    assert v.delete(K.fdb("blue", M1)) == Change(fdb={"blue": {_raw(M1): None}})
    assert v.delete(K.member("blue", B)) == Change(dirty={"blue"})
    assert v.delete(K.member("blue", B)) == Change()
    assert v.delete(K.network("blue")) == Change(networks=True, dirty={"blue"})
    assert len(v) == 0
    c = Change()    # a burst coalesces: the last word per entry
    for val in (encode_fdb(B), encode_fdb(C)):
        c |= v.put(K.fdb("blue", M1), val)
    c |= v.delete(K.fdb("blue", M2))
    assert c.fdb == {"blue": {_raw(M1): C, _raw(M2): None}} and c.entries() == {"blue"}


def test_bad_keys_are_remembered_and_ignored_never_fatal() -> None:
    v = StoreView(K)
    v.put(K.fdb("blue", M1), encode_fdb(B))
    assert v.put(K.fdb("blue", M1), b'{"remote": "nope"}') == Change(fdb={"blue": {_raw(M1): None}})  # old value gone
    assert "not an IP address" in v.bad[K.fdb("blue", M1)]
    v.put(K.fdb("blue", "02:42:C0:A8:00:01"), encode_fdb(B))
    v.put(K.fdb("blue", "ff:ff:ff:ff:ff:ff"), encode_fdb(B))
    v.put(K.member("blue", "2001:db8:0::1"), b"{}")
    v.put(b"/vxlan-dp/junk", b"{}")
    v.put(K.network("red"), b"not json")
    assert len(v.bad) == 6 and len(v) == 0
    assert v.put(K.fdb("blue", M1), encode_fdb(C)) == Change(fdb={"blue": {_raw(M1): C}})  # fixed: back
    assert len(v.bad) == 5


def test_a_full_read_is_packed_tables_and_says_which_flood_lists_changed() -> None:
    v = _view((f"{P}/fdb/blue/{M1}", {"remote": B}), (f"{P}/members/blue/{B}", {}))
    change, snap = v.load([(K.fdb("blue", M1), encode_fdb(B)), (K.fdb("blue", M2), encode_fdb(C)),
                           (K.fdb("red", M3), encode_fdb(B)), (K.member("blue", B), b"{}"),
                           (K.member("red", C), b"{}"), (K.fdb("blue", "nope"), b"{}"),
                           # what the fast path for fdb keys must leave to the general one
                           (K.fdb("blue", M3.upper()), encode_fdb(B)), (K.fdb("blue", "03:00:00:00:00:01"), encode_fdb(B)),
                           (K.fdb("blue", f"{M3}/x"), encode_fdb(B)), (K.fdb("blue", "zz:00:00:00:00:01"), encode_fdb(B)),
                           (K.fdb("bl\u00fce", M3), encode_fdb(B)), (K.fdb("blue", M3), b'{"remote": 1}')])
    assert change == Change(networks=False, dirty={"red"})
    assert isinstance(snap.fdb["blue"], FdbBuilder) and snap.fdb["blue"].table() == ((M1, B), (M2, C))
    assert snap.fdb["bl\u00fce"].table() == ((M3, B),)          # a name beyond ASCII is still a name
    assert snap.remote_of("blue", _raw(M2)) == C and snap.remote_of("blue", _raw(M3)) is None
    reasons = {k.decode().split("/", 3)[3]: why for k, why in v.bad.items()}
    assert sorted(reasons) == sorted(["blue/nope", f"blue/{M3.upper()}", "blue/03:00:00:00:00:01", f"blue/{M3}/x",
                                      "blue/zz:00:00:00:00:01", f"blue/{M3}"])
    assert "lower case" in reasons[f"blue/{M3.upper()}"] and "group" in reasons["blue/03:00:00:00:00:01"]
    assert '{"remote"' in reasons[f"blue/{M3}"]
    assert v.load([(K.member("blue", B), b"{}"), (K.member("red", C), b"{}")])[0] == Change()
    # a network's own range read: entries only, definitions and members stay
    loader = v.loader(entries_only=True)
    loader.feed([(K.fdb("blue", M3), encode_fdb(D))])
    assert loader.finish()[1].fdb["blue"].table() == ((M3, D),) and v.members == {"blue": {B}, "red": {C}}


# --- Desired state --------------------------------------------------------------------------

def test_desired_is_the_other_members_and_their_macs_never_our_own() -> None:
    v = _view((f"{P}/members/blue/{A}", {}), (f"{P}/members/blue/{C}", {}), (f"{P}/members/blue/{B}", {}),
              (f"{P}/members/blue/198.18.0.10", {}), (f"{P}/members/blue/{B6}", {}),
              (f"{P}/members/red/{D}", {}),
              (f"{P}/fdb/blue/{M1}", {"remote": A}), (f"{P}/fdb/blue/{M2}", {"remote": B}),
              (f"{P}/fdb/blue/{M3}", {"remote": B6}))
    d = desired_for(v, _blue())
    assert d == Desired((B, C, "198.18.0.10"), ())           # address order, IPv4 only, not A
    assert desired_for(v, _blue()) == d                       # equal inputs, equal outputs
    # the store's entries a network takes: other hosts' of its family, never its own
    assert [installable(_blue(), r) for r in (A, B, B6)] == [False, True, False]


def test_file_networks_add_static_peers_and_entries_that_win() -> None:
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n'
                       '[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n'
                       f'peers = ["{D}"]\nfdb = [{{ mac = "{M2}", remote = "{D}" }}]\n')
    v = _view((f"{P}/members/blue/{B}", {}), (f"{P}/fdb/blue/{M2}", {"remote": B}),
              (f"{P}/fdb/blue/{M3}", {"remote": B}))
    assert desired_for(v, cfg.networks[0]) == Desired((B, D), ((M2, D),))
    # the store's M2 loses to the file's in the data plane (test_etcd_entries_reach_the_data_plane...)


def test_plan_networks_file_shadows_store_and_bad_definitions_are_reported() -> None:
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n'
                       '[[network]]\nname = "blue"\nvni = 7\nlocal = "198.18.0.1"\ntap = "t0"\n')
    v = _view((f"{P}/networks/blue", {"vni": 42}), (f"{P}/networks/green", {"vni": 44, "encap": "gre-udp"}),
              (f"{P}/networks/red", {"vni": 7}), (f"{P}/networks/bad", {"vni": "x"}),
              (f"{P}/networks/averylongname", {"vni": 9}), (f"{P}/networks/odd", {"vni": 10, "peers": []}))
    nets, problems = plan_networks(cfg.networks, v, ETCD, A)
    assert sorted(nets) == ["blue", "green"]
    assert nets["blue"].vni == 7 and nets["blue"].tap == "t0"                 # the file's own
    assert (nets["green"].tap, nets["green"].bridge, nets["green"].port) == ("vxdp-green", "br-green", 4754)
    assert problems["red"].startswith("/vxlan-dp/networks/red: ") and "7 is already the VNI" in problems["red"]
    assert problems["bad"] == '/vxlan-dp/networks/bad.vni: expected an integer, got "x"'
    assert "15" in problems["averylongname"] and "etcd.tap" in problems["averylongname"]
    assert problems["odd"] == "/vxlan-dp/networks/odd.peers: come from the members/ keys of the store"
    nets, problems = plan_networks((), v, ETCD, None)
    assert not nets and "set etcd.local" in problems["blue"]


# --- publishing local MACs and addresses ------------------------------------------------------

def test_publisher_claims_new_macs_once_and_withdraws_them_when_they_age_out() -> None:
    pub, mine = Publisher(K), encode_fdb(A)
    ops = pub.plan(FDB, "blue", [(M1, mine, 0.5), (M2, mine, 3.0)], NOW)
    assert ops.puts == [(K.fdb("blue", M1), mine), (K.fdb("blue", M2), mine)]
    assert not ops.deletes
    for mac in (M1, M2):  # the watch echoes our own writes
        pub.note(FDB, "blue", mac, True, NOW)
    assert not pub.plan(FDB, "blue", [(M1, mine, 1.5), (M2, mine, 4.0)], NOW + 1)    # already ours: quiet
    ops = pub.plan(FDB, "blue", [(M1, mine, 2.5)], NOW + 2)                          # M2 aged out here
    assert ops.deletes == [(K.fdb("blue", M2), mine)] and not ops.puts  # delete if still ours
    assert pub.count() == 1
    pub.note(FDB, "blue", M1, None, NOW + 3)                                        # someone deleted ours
    assert pub.plan(FDB, "blue", [(M1, mine, 0.1)], NOW + 3).puts == [(K.fdb("blue", M1), mine)]


def test_a_mac_that_moved_away_is_left_to_its_new_host_until_seen_here_again() -> None:
    pub, mine = Publisher(K), encode_fdb(A)
    assert pub.plan(FDB, "blue", [(M1, mine, 0.0)], NOW).puts
    pub.note(FDB, "blue", M1, False, NOW + 5)   # B saw it after we last did: it moved
    assert not pub.plan(FDB, "blue", [(M1, mine, 5.5)], NOW + 5.5)                 # last seen NOW < NOW + 5
    assert pub.count() == 0
    assert not pub.plan(FDB, "blue", [], NOW + 400)                                # aged out: nothing to withdraw
    # it comes back: seen here after B's claim, so A claims it again
    assert pub.plan(FDB, "blue", [(M1, mine, 0.2)], NOW + 10).puts == [(K.fdb("blue", M1), mine)]
    # B's claim arriving *after* A's last sighting never makes A delete B's entry
    pub.note(FDB, "blue", M1, False, NOW + 11)
    ops = pub.plan(FDB, "blue", [], NOW + 12)
    assert not ops.deletes
    # seen again after B's claim while still tracked: A takes it back
    pub.plan(FDB, "blue", [(M1, mine, 0.0)], NOW + 13)
    pub.note(FDB, "blue", M1, False, NOW + 14)
    assert not pub.plan(FDB, "blue", [(M1, mine, 1.0)], NOW + 15)                  # seen at 14: not after
    assert pub.plan(FDB, "blue", [(M1, mine, 0.5)], NOW + 16).puts                 # seen at 15.5: after


def test_renew_rebinds_only_claims_the_store_still_shows_as_ours_and_forget_withdraws() -> None:
    pub, mine = Publisher(K), encode_fdb(A)
    pub.plan(FDB, "blue", [(M1, mine, 0.0), (M2, mine, 0.0), (M3, mine, 0.0)], NOW)
    pub.note(FDB, "blue", M2, False, NOW + 1)
    # a full read shows M3 taken by C while we were away
    _, snap = StoreView(K).load([(K.fdb("blue", M1), mine), (K.fdb("blue", M3), encode_fdb(C))])
    pub.resynced(lambda kind, name, item, value: _still_ours(snap, kind, name, item, value))
    assert pub.renew().puts == [(K.fdb("blue", M1), mine)]
    ops = pub.forget("blue")
    assert ops.deletes == [(K.fdb("blue", M1), mine)] and pub.count() == 0


def test_local_addresses_are_claimed_with_their_mac_and_host_and_follow_a_new_mac() -> None:
    pub = Publisher(K)
    v1, v2 = encode_neigh(M1, A), encode_neigh(M2, A)
    assert pub.plan(NEIGH, "blue", [("192.168.0.4", v1, 0.0)], NOW).puts == [(K.neigh("blue", "192.168.0.4"), v1)]
    assert not pub.plan(NEIGH, "blue", [("192.168.0.4", v1, 1.0)], NOW + 1)
    assert pub.plan(NEIGH, "blue", [("192.168.0.4", v2, 0.0)], NOW + 2).puts == [(K.neigh("blue", "192.168.0.4"), v2)]
    assert pub.count(NEIGH) == 1 and pub.count(FDB) == 0
    assert decode_neigh(v2) == (M2, A) and decode_neigh(encode_neigh(M1)) == (M1, None)
    assert pub.plan(NEIGH, "blue", [], NOW + 3).deletes == [(K.neigh("blue", "192.168.0.4"), v2)]


# --- the local-MAC table of the fast path (Python reference) ----------------------------------

def test_local_mac_table_records_unicast_sources_leaving_the_tap() -> None:
    dp = PureDataplane()
    ep = dp.add_endpoint("vxlan", -1)
    net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local=A, ageing=10.0, max_fdb_entries=2), ep)
    dp.set_peers(net, [B])
    dp.encap(net, [eth_frame("ff:ff:ff:ff:ff:ff", M1, 100), eth_frame(M2, "01:00:5e:00:00:01", 100), b"short"], NOW)
    dp.encap(net, [eth_frame(M1, M2, 9000)], NOW + 1)           # too big: still a sighting, not sent
    assert dp.local_macs(net, NOW + 2) == [(M1, 2.0), (M2, 1.0)]
    dp.encap(net, [eth_frame(M1, M3, 100)], NOW + 2)                 # table full: M3 not recorded
    dp.encap(net, [eth_frame(M3, M1, 100)], NOW + 3)                 # M1 refreshed
    assert dp.local_macs(net, NOW + 10.5) == [(M1, 7.5), (M2, 9.5)]
    assert dp.local_macs(net, NOW + 11.5) == [(M1, 8.5)]     # M2 older than ageing: not listed
    assert dp.age(NOW + 11.5) == 0                           # counts FDB entries only
    dp.encap(net, [eth_frame(M1, M3, 100)], NOW + 12)                # room again after the sweep
    assert [m for m, _ in dp.local_macs(net, NOW + 12)] == [M1, M3]
    assert dp.counters(net)["tap_rx_frames"] == 7


# --- the I/O half, without a server ------------------------------------------------------------

def test_endpoints_parse_to_tls_when_asked() -> None:
    assert parse_endpoint("198.18.0.254:2379", False) == Endpoint("198.18.0.254", 2379, False)
    assert parse_endpoint("https://etcd1.example:2379", False) == Endpoint("etcd1.example", 2379, True)
    assert parse_endpoint("http://[2001:db8::9]:2379", True) == Endpoint("2001:db8::9", 2379, True)
    assert str(Endpoint("2001:db8::9", 2379, True)) == "https://[2001:db8::9]:2379"


def test_grpc_targets_for_ipv4_ipv6_and_names() -> None:
    """etcd3aio builds "ipv4:" targets only; we set its channel target (pins that attribute)."""
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379", '
                       '"[2001:db8::9]:2379", "etcd.example:2380"]\nlocal = "198.18.0.1"\n')
    ctl = EtcdControl(cfg)
    targets = [ctl._new_client(ep)._manager.target for ep in ctl.endpoints]
    assert targets == ["ipv4:198.18.0.254:2379", "ipv6:[2001:db8::9]:2379", "dns:///etcd.example:2380"]


def test_describe_gives_one_line_for_grpc_errors() -> None:
    class FakeRpcError(Exception):
        def code(self) -> Any:
            return type("C", (), {"name": "INVALID_ARGUMENT"})()

        def details(self) -> str:
            return "etcdserver: authentication failed"

    assert _describe(FakeRpcError("a\nb")) == "INVALID_ARGUMENT: etcdserver: authentication failed"
    assert _describe(TimeoutError()) == "TimeoutError"
    assert _describe(OSError("no route\nmore")) == "OSError: no route"


class _Sink:
    def __init__(self) -> None:
        self.converged: list[set[str]] = []
        self.applied: list[tuple[str, Desired]] = []
        self.entries: list[tuple[Any, ...]] = []

    def converge(self, want: Any, desired: Any) -> set[str]:
        self.converged.append(set(want))
        return set(want)

    def apply(self, name: str, desired: Desired) -> None:
        self.applied.append((name, desired))

    def key_state(self, name: str) -> tuple[tuple[int, ...], int] | None:
        return None

    def local_macs(self, name: str, now: float) -> list[tuple[str, float]]:
        return []

    def update_entries(self, name: str, fdb: Any, fdb_remove: bytes = b"", neigh: Any = (), neigh_remove: Any = (),
                       *, replace: bool = False) -> None:
        self.entries.append((name, fdb, fdb_remove, tuple(neigh), tuple(neigh_remove), replace))

    def local_neigh(self, name: str, now: float) -> list[tuple[str, str, float]]:
        return []


def test_store_changes_reach_the_daemon_coalesced_without_a_server() -> None:
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n'
                       'local = "198.18.0.1"\n')

    async def scenario() -> tuple[_Sink, EtcdControl]:
        ctl = EtcdControl(cfg)
        sink = _Sink()
        ctl.sink = sink
        flusher = asyncio.get_running_loop().create_task(ctl._run_flusher())
        try:
            ctl._changed(ctl.view.put(K.network("blue"), b'{"vni": 42}'))
            await asyncio.sleep(0.3)
            assert sink.converged == [{"blue"}] and ctl.networks()["blue"].tap == "vxdp-blue"
            for i in range(50):  # a burst of members: one apply, not fifty
                ctl._changed(ctl.view.put(K.member("blue", f"198.18.1.{i + 1}"), b"{}"))
            await asyncio.sleep(0.3)
        finally:
            flusher.cancel()
        return sink, ctl

    sink, ctl = asyncio.run(scenario())
    assert len(sink.applied) == 1 and len(sink.applied[0][1].peers) == 50
    h = ctl.health()
    assert h["backend"] == "etcd" and h["connected"] is False and h["store_keys"] == 51


def test_make_control_picks_the_backend() -> None:
    static = parse_config('[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n'
                          'peers = ["198.18.0.2"]\n')
    ctl = make_control(static)
    assert isinstance(ctl, StaticControl) and ctl.health() == {"backend": "static", "connected": True}
    assert ctl.desired() == {"blue": Desired(("198.18.0.2",), ())}
    etcd = parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n')
    assert isinstance(make_control(etcd), EtcdControl)


def test_status_and_metrics_show_a_disconnected_store() -> None:
    from prometheus_client.exposition import generate_latest

    from vxlan_dp.cli import render_control
    from vxlan_dp.metrics import make_registry

    health = {"backend": "etcd", "connected": False, "down_since": time.time() - 65, "resyncs": 3, "outages": 1,
              "last_sync": 1.5e9, "last_error": "http://198.18.0.254:2379: UNAVAILABLE: connection refused",
              "problems": {"red": "/vxlan-dp/networks/red.vni: expected an integer"}}
    line = render_control(health)
    assert "DISCONNECTED for 1m05s" in line and "last known state" in line and "UNAVAILABLE" in line
    assert "store network red not joined" in line
    assert render_control({"backend": "static", "connected": True}) == ""
    assert "connected to" in render_control(health | {"connected": True, "endpoint": "http://x:1"})

    class Source:
        dp = PureDataplane()
        reloads = reload_failures = 0
        last_reload_ok = True
        control = type("Ctl", (), {"health": staticmethod(lambda: health)})()

        def metric_networks(self) -> list[Any]:
            return []

        def metric_endpoints(self) -> list[Any]:
            return []

    text = generate_latest(make_registry(Source(), process=False)).decode()  # type: ignore[arg-type]  # a duck-typed stand-in
    assert 'vxlan_dp_control_connected{backend="etcd"} 0.0' in text
    assert "vxlan_dp_control_resyncs_total 3.0" in text and "vxlan_dp_control_outages_total 1.0" in text
    assert "vxlan_dp_control_last_sync_timestamp_seconds 1.5e+09" in text


def test_store_network_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        store_network("blue", {"vni": 42, "local": "1.2.3.4"}, local=A, etcd=ETCD, path=f"{P}/networks/blue")
    assert str(e.value) == "/vxlan-dp/networks/blue.local: is set per host ([etcd] local)"


# --- the neighbour table (ARP / ND suppression) ---------------------------------------------

def test_neigh_keys_become_operations_and_the_file_stays_in_desired() -> None:
    assert K.neigh("blue", "192.168.0.4") == b"/vxlan-dp/neigh/blue/192.168.0.4"
    assert K.parse(K.neigh("blue", "fd00::4")) == ("neigh", "blue", "fd00::4")
    cfg = parse_config('[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n'
                       '[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n'
                       f'neigh = [{{ ip = "192.168.0.5", mac = "{M3}" }}]\n')
    v = StoreView(K)
    _, snap = v.load([(K.neigh("blue", "192.168.0.4"), encode_neigh(M1)), (K.neigh("blue", "192.168.0.5"), encode_neigh(M2)),
                      (K.neigh("blue", "fd00::4"), encode_neigh(M1.upper(), A)), (K.neigh("red", "192.168.0.4"), encode_neigh(M2))])
    assert snap.neigh["blue"] == [("192.168.0.4", M1, None), ("192.168.0.5", M2, None), ("fd00::4", M1, A)]
    assert desired_for(v, cfg.networks[0]).neigh == (("192.168.0.5", M3),)   # the file's; it wins in the room
    ch = v.put(K.neigh("blue", "192.168.0.4"), encode_neigh(M2))        # a MAC move
    assert ch.neigh == {"blue": {"192.168.0.4": (M2, None)}} and not ch.dirty
    assert v.delete(K.neigh("blue", "192.168.0.4")).neigh == {"blue": {"192.168.0.4": None}}


def test_bad_neigh_keys_are_remembered_not_applied() -> None:
    v = StoreView(K)
    _, snap = v.load([(K.neigh("blue", "fd00:0::4"), encode_neigh(M1)), (K.neigh("blue", "224.0.0.1"), encode_neigh(M1)),
                      (K.neigh("blue", "192.168.0.4"), encode_neigh("ff:ff:ff:ff:ff:ff")),
                      (K.neigh("blue", "192.168.0.5"), encode_fdb(A)), (K.neigh("blue", "192.168.0.6"), encode_neigh(M2)),
                      (K.neigh("blue", "192.168.0.7"), b'{"mac": "02:42:c0:a8:00:01", "host": 7}')])
    assert snap.neigh == {"blue": [("192.168.0.6", M2, None)]}
    reasons = {k.decode().rsplit("/", 1)[1]: r for k, r in v.bad.items()}
    assert "compressed form" in reasons["fd00:0::4"] and "not a unicast" in reasons["224.0.0.1"]
    assert "group address" in reasons["192.168.0.4"] and '{"mac"' in reasons["192.168.0.5"]
    assert '"host"' in reasons["192.168.0.7"]
    assert decode_neigh(encode_neigh(M1)) == (M1, None)


# --- encryption keys in the store (issue 14) -----------------------------------------------

KEY1, KEY2 = "11" * 32, "22" * 32


def _key(hexkey: str, serial: int, created: float | None = NOW) -> dict[str, Any]:
    return {"key": hexkey, "serial": serial} | ({} if created is None else {"created": created})


def test_key_values_decode_and_errors_never_quote_the_value() -> None:
    k = decode_key(encode_key(bytes.fromhex(KEY1), 3, NOW))
    assert (bytes(k.material).hex(), k.serial, k.created) == (KEY1, 3, NOW) and KEY1 not in repr(k)
    secret = "ab" * 31 + "zz"                        # 64 characters, not hex
    for bad in (b"x" + secret.encode(), json.dumps({"key": secret}).encode(), json.dumps({"key": KEY1[:-2]}).encode(),
                json.dumps({"key": KEY1, "serial": -1}).encode(), json.dumps({"key": KEY1, "created": "x"}).encode()):
        with pytest.raises(ValueError) as ei:
            decode_key(bad)
        assert secret[:16] not in str(ei.value) and KEY1[:16] not in str(ei.value)
    v = _view(("/vxlan-dp/keys/blue/1", {"key": secret}), ("/vxlan-dp/keys/blue/0", _key(KEY1, 1)),
              ("/vxlan-dp/keys/blue/2", _key(KEY2, 2)))
    assert set(v.netkeys["blue"]) == {2} and len(v.bad) == 2
    assert secret[:16] not in json.dumps({k.decode(): r for k, r in v.bad.items()})


def test_member_values_acknowledge_installed_keys_and_changes_are_dirty() -> None:
    assert decode_member(encode_member([7, 8], 7)) == MemberAck((7, 8), 7)
    assert decode_member(encode_member()) == MemberAck() == decode_member(b"junk")
    v = _view(("/vxlan-dp/members/blue/198.18.0.2", {"version": "x"}))
    assert v.acks["blue"][B] == MemberAck()
    assert v.put(K.member("blue", B), encode_member([1], 1)) == Change(dirty={"blue"})
    assert v.put(K.member("blue", B), encode_member([1], 1)) == Change()
    assert v.delete(K.member("blue", B)) == Change(dirty={"blue"}) and "blue" not in v.acks
    # the first key of a network re-plans the networks (one waiting for it can start), later ones not
    assert v.put(K.key("blue", 1), encode_key(bytes(32), 1, NOW)) == Change(networks=True, dirty={"blue"})
    assert v.put(K.key("blue", 2), encode_key(bytes(32), 2, NOW)) == Change(dirty={"blue"})
    assert v.delete(K.key("blue", 1)) == Change(dirty={"blue"}) and list(v.netkeys["blue"]) == [2]


def test_senders_use_the_newest_key_once_every_other_member_has_it() -> None:
    keys = {9: StoreKey(bytearray(32), 1), 2: StoreKey(bytearray(32), 2)}   # id 2 is newer: ids wrap
    assert ordered(keys) == [9, 2]
    acks = {A: MemberAck((9, 2), 9), B: MemberAck((9,), 9), C: MemberAck((9, 2), 9)}
    assert choose_send([9, 2], acks, A) == 9                     # B has not installed 2 yet
    acks[B] = MemberAck((9, 2), 9)
    assert choose_send([9, 2], acks, A) == 2
    assert choose_send([9, 2], {A: MemberAck((9,), 9), B: MemberAck()}, B) == 9     # our own ack is not waited for
    assert choose_send([9, 2], {B: MemberAck()}, A) == 2          # an old daemon acknowledges nothing: not waited for
    assert choose_send([9, 2], {B: MemberAck((5,), 5)}, A) == 9   # nothing in common: the oldest
    assert choose_send([], {}, A) == 0


def test_desired_carries_the_store_keys_only_for_store_keyed_networks() -> None:
    v = _view(("/vxlan-dp/keys/blue/1", _key(KEY1, 1)), ("/vxlan-dp/keys/blue/2", _key(KEY2, 2)),
              ("/vxlan-dp/members/blue/198.18.0.2", {"keys": [1], "send": 1}))
    d = desired_for(v, _blue(encrypt=True))
    assert d.keys is not None and d.keys.ids == (1, 2) and d.keys.send == 1
    assert KEY1[:8] not in repr(d) and KEY2[:8] not in repr(d)
    assert {k: bytes(m).hex() for k, m in d.keys.material().items()} == {1: KEY1, 2: KEY2}
    v.put(K.member("blue", B), encode_member([1, 2], 1))
    assert desired_for(v, _blue(encrypt=True)).keys == KeySet([(1, bytes.fromhex(KEY1)), (2, bytes.fromhex(KEY2))], 2)
    assert desired_for(v, _blue()).keys is None
    nets, problems = plan_networks([], _view(("/vxlan-dp/networks/blue", {"vni": 42, "encrypt": True})), ETCD, A)
    assert nets == {} and "holds no key yet" in problems["blue"]        # never up in the clear
    v.put(K.network("blue"), b'{"vni": 42, "encrypt": true}')
    nets, problems = plan_networks([], v, ETCD, A)
    assert set(nets) == {"blue"} and problems == {}
    with pytest.raises(ConfigError, match="key_file"):
        _blue(encrypt=True, key_file="/x")


def test_automatic_rotation_is_driven_by_the_lowest_member_alone() -> None:
    one = {1: StoreKey(bytearray(32), 1, NOW)}
    acks = {C: MemberAck((1,), 1), A: MemberAck((1,), 1), B: MemberAck((1,), 1)}
    kw: dict[str, Any] = {"interval": 60, "all_sending_since": None}
    assert rotation_step(one, acks, A, now=NOW + 59, **kw) is None
    assert rotation_step(one, acks, A, now=NOW + 60, **kw) == Rotate(2, 2)
    assert rotation_step(one, acks, B, now=NOW + 600, **kw) is None        # not the lowest: never
    assert rotation_step(one, {B: acks[B], C: acks[C]}, B, now=NOW + 60, **kw) == Rotate(2, 2)  # A left
    two = one | {2: StoreKey(bytearray(32), 2, NOW + 60)}
    assert rotation_step(two, acks, A, now=NOW + 70, interval=60, all_sending_since=None) is None
    assert not all_send(two, acks)
    acks = {a: MemberAck((1, 2), 2) for a in acks}
    assert all_send(two, acks)
    assert rotation_step(two, acks, A, now=NOW + 70, interval=60, all_sending_since=NOW + 69.5) is None
    assert rotation_step(two, acks, A, now=NOW + 70, interval=60, all_sending_since=NOW + 68) == Retire((1,))
    assert rotation_step({255: StoreKey(bytearray(32), 7, None)}, acks, A, now=NOW, **kw) == Rotate(1, 8)


def test_rekey_interval_and_store_keys_in_the_config() -> None:
    etcd = '[daemon]\ncontrol = "etcd"\n[etcd]\nendpoints = ["198.18.0.254:2379"]\n'
    net = '[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\nencrypt = true\n'
    n = parse_config(etcd + net + 'rekey_interval = "12h"\n').networks[0]
    assert (n.key_file, n.rekey_interval) == (None, 43200.0)
    assert parse_config(etcd + net).networks[0].rekey_interval is None
    for text, field, words in (
            (net, "network[0].key_file", 'control = "etcd"'),
            (etcd + net + 'rekey_interval = "12 parsecs"\n', "network[0].rekey_interval", "not a duration"),
            (etcd + net + "rekey_interval = 0.5\n", "network[0].rekey_interval", "at least 1 second"),
            (etcd + net.replace("encrypt = true\n", "") + "rekey_interval = 60\n", "network[0].rekey_interval",
             "encrypt = true")):
        with pytest.raises(ConfigError) as ei:
            parse_config(text)
        assert ei.value.problems[0].field == field if ei.value.problems else ei.value.field == field
        assert words in str(ei.value), str(ei.value)
    assert _blue(encrypt=True, rekey_interval="1d").rekey_interval == 86400.0
