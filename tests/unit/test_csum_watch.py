"""Operators see partial-checksum completion: the metric, `vxlan-dp status`, and one log line
per episode naming the peer (vxlan_dp/watch.py PartialChecksums), with injected time."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers import c_backend
from vxlan_dp.cli import render_status
from vxlan_dp.fastpath import NetworkParams, PureDataplane
from vxlan_dp.metrics import NetworkView, make_registry
from vxlan_dp.watch import CSUM_QUIET, PartialChecksums
from vxlan_dp.wire import encode_vxlan

A, B, C = "198.18.0.1", "198.18.0.2", "198.18.0.3"


def _partial_udp(data: bytes = b"x" * 32) -> bytes:
    """An inner UDP datagram as a Linux sender leaves it: checksum = pseudo-header sum."""
    src, dst = bytes([192, 168, 0, 2]), bytes([192, 168, 0, 1])
    l4len = 8 + len(data)
    words = src + dst + struct.pack("!BBH", 0, 17, l4len)
    s = sum(struct.unpack("!6H", words))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4len, 1, 0, 64, 17, 0, src, dst)
    return (bytes.fromhex("02000000000a02000000000b0800") + ip + struct.pack("!HHHH", 7, 9, l4len, s) + data)


@dataclass
class _Net:
    handle: int


@dataclass
class FakeNetworks:
    dp: Any
    nets: dict[str, _Net] = field(default_factory=dict)

    def items(self) -> list[tuple[str, _Net]]:
        return list(self.nets.items())


def _setup(dp_class: type) -> tuple[Any, int, int]:
    dp = dp_class()
    ep = dp.add_endpoint("vxlan", -1)
    net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local=A), ep)
    dp.set_peers(net, [B, C])
    return dp, ep, net


@pytest.fixture(params=["python", "c"])
def dp_class(request: pytest.FixtureRequest) -> type:
    return PureDataplane if request.param == "python" else c_backend()


def test_one_log_line_per_episode_naming_the_peer(dp_class: type, caplog: pytest.LogCaptureFixture) -> None:
    dp, ep, net = _setup(dp_class)
    nets = FakeNetworks(dp, {"blue": _Net(net)})
    w = PartialChecksums(nets)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="vxlan_dp")
    t = 100.0
    w.check(t)
    assert not caplog.records
    for _ in range(50):                         # a burst, checked every second: one line
        dp.decap(ep, [(B, encode_vxlan(42) + _partial_udp())] * 20, t)
        t += 1.0
        w.check(t)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "peer 198.18.0.2" in lines[0] and "TX checksum offload" in lines[0]
    dp.decap(ep, [(C, encode_vxlan(42) + _partial_udp())], t)   # a second peer joins: one line
    w.check(t + 1)
    dp.decap(ep, [(C, encode_vxlan(42) + _partial_udp())], t + 1)
    w.check(t + 2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "peer 198.18.0.3" in lines[1], lines
    w.check(t + 2 + CSUM_QUIET - 1)             # quiet, not yet long enough
    assert len(caplog.records) == 2
    w.check(t + 2 + CSUM_QUIET)                 # the episode ends: one line, with its count
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "1002 completed" in lines[2], lines
    dp.decap(ep, [(B, encode_vxlan(42) + _partial_udp())], t + 100)   # a new episode
    w.check(t + 100)
    assert len(caplog.records) == 4 and "peer 198.18.0.2" in caplog.records[3].getMessage()


def test_metric_and_status_line(dp_class: type) -> None:
    dp, ep, net = _setup(dp_class)
    dp.decap(ep, [(B, encode_vxlan(42) + _partial_udp())] * 3, 1.0)

    class Source:
        reloads, reload_failures, last_reload_ok = 0, 0, True

        def __init__(self) -> None:
            self.dp = dp

        def metric_networks(self) -> list[NetworkView]:
            return [NetworkView("blue", net, 42, "vxlan", "vxdp-blue", True, 1450, 65536, 0)]

        def metric_endpoints(self) -> list[Any]:
            return []

    text = generate_latest(make_registry(Source(), process=False)).decode()  # type: ignore[arg-type]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    got = [s.value for s in fams["vxlan_dp_checksums_completed"].samples
           if s.name == "vxlan_dp_checksums_completed_total" and s.labels == {"network": "blue"}]
    assert got == [3.0]
    snap = {"version": "x", "pid": 1, "backend": dp.backend, "batch": 64, "uptime": 5.0, "reloads": 0,
            "networks": {"blue": {"vni": 42, "encap": "vxlan", "tap": "vxdp-blue", "tap_up": True, "mtu": 1450,
                                  "peers": [B, C], "fdb": [], "counters": dp.counters(net),
                                  "csum_peer": dp.csum_peer(net)}},
            "endpoints": []}
    out = render_status(snap)
    assert "partial checksums completed: 3" in out and "last from 198.18.0.2" in out, out
