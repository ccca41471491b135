"""The neighbour room (vxlan_dp/neighbours.py) on a real Dataplane of each backend: what the
control plane and the API (the Docker plugin's way in) put in the table, and when suppression
is on."""

from __future__ import annotations

import dataclasses

import pytest

from vxlan_dp.config import parse_config
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.neighbours import Neighbours

M1, M2, M3 = "02:42:c0:a8:00:01", "02:42:c0:a8:00:02", "02:42:c0:a8:00:03"
CFG = parse_config('[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n').networks[0]


@pytest.fixture(params=sorted(backends()))
def room(request: pytest.FixtureRequest) -> tuple[Neighbours, int]:
    dp = backends()[request.param]()
    net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1"), dp.add_endpoint("vxlan", -1))
    r = Neighbours(dp)
    r.attach("blue", net, CFG)
    return r, net


def table(r: Neighbours) -> dict[str, tuple[str, str]]:
    return {row["ip"]: (row["mac"], row["source"]) for row in r.rows("blue", 0.0) or []}


def test_suppression_is_on_where_the_table_has_entries(room: tuple[Neighbours, int]) -> None:
    r, _ = room
    r.apply("blue", CFG, ())
    assert r.status("blue")["suppress_arp"] is False
    r.apply("blue", CFG, (("192.168.0.4", M1),))
    assert r.status("blue") | {"counters": None} == {"suppress_arp": True, "snoop": False, "entries": 1,
                                                     "counters": None}
    r.apply("blue", dataclasses.replace(CFG, suppress_arp=False), (("192.168.0.4", M1),))
    assert r.status("blue")["suppress_arp"] is False
    r.apply("blue", dataclasses.replace(CFG, neigh_snoop=True), ())
    assert (r.status("blue")["suppress_arp"], r.status("blue")["snoop"]) == (True, True)


def test_control_plane_and_api_entries_merge_control_winning(room: tuple[Neighbours, int]) -> None:
    r, _ = room
    r.apply("blue", CFG, (("192.168.0.4", M1), ("fd00:0::4", M1)))
    r.set("blue", "192.168.0.4", M2)            # the control plane's word stands
    r.set("blue", "192.168.0.5", M2.upper())
    assert table(r) == {"192.168.0.4": (M1, "control"), "fd00::4": (M1, "control"),
                        "192.168.0.5": (M2, "api")}
    r.apply("blue", CFG, (("fd00::4", M3),))    # 192.168.0.4 withdrawn: the API's entry shows
    assert table(r) == {"192.168.0.4": (M2, "api"), "fd00::4": (M3, "control"), "192.168.0.5": (M2, "api")}
    assert r.delete("blue", "192.168.0.4") and not r.delete("blue", "192.168.0.4")
    assert table(r) == {"fd00::4": (M3, "control"), "192.168.0.5": (M2, "api")}


def test_api_errors_name_the_problem(room: tuple[Neighbours, int]) -> None:
    r, _ = room
    with pytest.raises(KeyError):
        r.set("red", "192.168.0.4", M1)
    with pytest.raises(ValueError, match="not a unicast"):
        r.set("blue", "ff02::1", M1)
    with pytest.raises(ValueError, match="group address"):
        r.set("blue", "192.168.0.4", "01:00:5e:00:00:01")
    assert r.rows("red", 0.0) is None
    r.detach("blue")
    assert r.rows("blue", 0.0) is None


def test_the_daemon_steers_the_room_for_front_ends() -> None:
    """frontend.Steer.neigh_set / neigh_delete (what the Docker plugin calls) reach the table."""
    from vxlan_dp.daemon import Daemon

    d = Daemon(parse_config('[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n'))
    net = d.dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1"), d.dp.add_endpoint("vxlan", -1))
    d.networks.neigh.attach("blue", net, CFG)       # as Networks.start does
    d.neigh_set("blue", "192.168.0.4", M1)
    assert [(r.ip, r.mac, r.static) for r in d.dp.neigh_dump(net, 0.0)] == [("192.168.0.4", M1, True)]
    assert d.networks.neigh.status("blue")["suppress_arp"] is True
    assert d.neigh_delete("blue", "192.168.0.4") and not d.neigh_delete("blue", "192.168.0.4")
    assert d.dp.neigh_size(net) == 0
    with pytest.raises(KeyError):
        d.neigh_set("red", "192.168.0.4", M1)
