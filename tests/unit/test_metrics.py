"""The Prometheus collector against a fake daemon that drives a real Dataplane without I/O.

Counters are moved with the fastpath's own `encap` / `decap`, so the test checks what a user
would see on a dashboard: the families exist with the label sets we document, the values are
the data plane's counters, and `promtool check metrics` accepts the exposition (promtool is
optional on a developer machine, mandatory under CI=true).
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers import c_backend, eth_frame, need_tool
from vxlan_dp.core.counters import EP_DROP_REASONS, NET_DROP_REASONS
from vxlan_dp.fastpath import NetworkParams, PureDataplane, backends
from vxlan_dp.metrics import EndpointView, MetricsServer, NetworkView, make_registry
from vxlan_dp.wire import encode_vxlan

A, B, C, STRANGER = "198.18.0.1", "198.18.0.2", "198.18.0.3", "203.0.113.66"
MAC_A, MAC_B, MAC_S = "02:42:c0:a8:00:0a", "02:42:c0:a8:00:0b", "02:42:c0:a8:00:05"
NOW = 100.0


@dataclass
class FakeDaemon:
    """Just what `MetricsSource` asks of the daemon, around a real Dataplane."""
    dp: Any
    nets: dict[str, NetworkView] = field(default_factory=dict)
    eps: list[EndpointView] = field(default_factory=list)
    reloads: int = 0
    reload_failures: int = 0
    last_reload_ok: bool = True

    def metric_networks(self) -> list[NetworkView]:
        return list(self.nets.values())

    def metric_endpoints(self) -> list[EndpointView]:
        return self.eps

    def offload_features(self) -> dict[str, bool]:
        return {"vnet_hdr": True, "udp_segment": False}

    def poll_stats(self) -> tuple[str, list[dict[str, int]]]:
        return "adaptive", [self.dp.poll_stats(0)]


def _fake(dp_class: type = PureDataplane) -> FakeDaemon:
    """Two networks on one VXLAN endpoint; traffic, flooding, learning and drops on "blue"."""
    dp = dp_class(batch=32)
    ep = dp.add_endpoint("vxlan", -1)
    blue = dp.add_network(NetworkParams(vni=42, encap="vxlan", local=A, mtu=1450), ep)
    red = dp.add_network(NetworkParams(vni=43, encap="vxlan", local=A, mtu=1400), ep)
    dp.set_peers(blue, [B, C])
    dp.set_peers(red, [B])
    dp.fdb_add(blue, MAC_S, C)                                   # one static entry
    d = FakeDaemon(dp)
    d.nets["blue"] = NetworkView("blue", blue, 42, "vxlan", "vxdp-blue", True, 1450, 65536, 1)
    d.nets["red"] = NetworkView("red", red, 43, "vxlan", "vxdp-red", False, 1400, 100, 0)
    d.eps.append(EndpointView("vxlan", A, 4789, ep))
    dp.encap(blue, [eth_frame("ff:ff:ff:ff:ff:ff", MAC_A, 100)], NOW)       # flooded to 2 peers
    dp.encap(blue, [eth_frame(MAC_S, MAC_A, 200)], NOW)                 # unicast to the static entry
    dp.encap(blue, [eth_frame(MAC_S, MAC_A, 3000)], NOW)                # too big
    dp.decap(ep, [(B, encode_vxlan(42) + eth_frame(MAC_A, MAC_B, 120))], NOW)   # learns MAC_B
    dp.decap(ep, [(STRANGER, encode_vxlan(42) + eth_frame(MAC_A, MAC_B, 100))], NOW)  # unknown source
    dp.decap(ep, [(B, encode_vxlan(999) + eth_frame(MAC_A, MAC_B, 100))], NOW)       # unknown VNI
    return d


def _families(d: FakeDaemon) -> dict[str, Any]:
    text = generate_latest(make_registry(d, process=False)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, Any], family: str, **labels: str) -> float:
    sample_name = family + "_total" if fams[family].type == "counter" else family
    got = [s.value for s in fams[family].samples if s.name == sample_name and s.labels == labels]
    assert len(got) == 1, (family, labels, fams[family].samples)
    return got[0]


# family (as the parser names it) -> (type, label names); the documented contract
EXPECTED = {
    "vxlan_dp_build_info": ("gauge", {"version", "python_version"}),
    "vxlan_dp_backend_info": ("gauge", {"backend"}),
    "vxlan_dp_batch_max_packets": ("gauge", set()),
    "vxlan_dp_networks": ("gauge", set()),
    "vxlan_dp_reloads": ("counter", {"result"}),
    "vxlan_dp_config_last_reload_successful": ("gauge", set()),
    "vxlan_dp_network_info": ("gauge", {"network", "vni", "encap", "tap"}),
    "vxlan_dp_network_tap_up": ("gauge", {"network"}),
    "vxlan_dp_network_mtu_bytes": ("gauge", {"network"}),
    "vxlan_dp_peers": ("gauge", {"network"}),
    "vxlan_dp_tap_frames": ("counter", {"network", "direction"}),
    "vxlan_dp_tap_bytes": ("counter", {"network", "direction"}),
    "vxlan_dp_tunnel_packets": ("counter", {"network", "direction"}),
    "vxlan_dp_tunnel_bytes": ("counter", {"network", "direction"}),
    "vxlan_dp_tap_read_batches": ("counter", {"network"}),
    "vxlan_dp_drops": ("counter", {"network", "reason"}),
    "vxlan_dp_flood_frames": ("counter", {"network"}),
    "vxlan_dp_flood_replications": ("counter", {"network"}),
    "vxlan_dp_checksums_completed": ("counter", {"network"}),
    "vxlan_dp_fdb_entries": ("gauge", {"network", "type"}),
    "vxlan_dp_fdb_max_entries": ("gauge", {"network"}),
    "vxlan_dp_fdb_learned": ("counter", {"network"}),
    "vxlan_dp_fdb_moved": ("counter", {"network"}),
    "vxlan_dp_fdb_aged": ("counter", {"network"}),
    "vxlan_dp_fdb_learning_refused": ("counter", {"network"}),
    "vxlan_dp_endpoint_datagrams": ("counter", {"endpoint"}),
    "vxlan_dp_endpoint_bytes": ("counter", {"endpoint"}),
    "vxlan_dp_endpoint_receive_batches": ("counter", {"endpoint"}),
    "vxlan_dp_endpoint_drops": ("counter", {"endpoint", "reason"}),
    "vxlan_dp_offload_enabled": ("gauge", {"feature"}),
    "vxlan_dp_offload_events": ("counter", {"event"}),
    "vxlan_dp_poll_info": ("gauge", {"mode"}),
    "vxlan_dp_pump_moved_bytes": ("counter", {"queue"}),
    "vxlan_dp_pump_wakeups": ("counter", {"queue"}),
    "vxlan_dp_pump_spin_windows": ("counter", {"queue"}),
    "vxlan_dp_pump_spin_polls": ("counter", {"queue"}),
    "vxlan_dp_neigh_entries": ("gauge", {"network"}),
    "vxlan_dp_neigh_suppressed": ("counter", {"network", "protocol"}),
    "vxlan_dp_neigh_replies": ("counter", {"network", "result"}),
    "vxlan_dp_neigh_unknown_flooded": ("counter", {"network"}),
    "vxlan_dp_neigh_snooped": ("counter", {"network"}),
    "vxlan_dp_neigh_snoop_refused": ("counter", {"network"}),
    "vxlan_dp_neigh_aged": ("counter", {"network"}),
}


@pytest.mark.parametrize("dp_class", sorted(backends().items()), ids=lambda kv: kv[0])
def test_neigh_suppression_counters(dp_class: tuple[str, type]) -> None:
    """An ARP request for a known address, answered (the TAP write fails: no TAP here), and
    one for an unknown address, flooded: both show on the dashboard."""
    d = _fake(dp_class[1])
    blue = d.nets["blue"].handle
    d.dp.neigh_set(blue, "192.168.0.11", MAC_B)
    d.dp.neigh_mode(blue, suppress=True)

    def arp(tpa: bytes) -> bytes:
        return (b"\xff" * 6 + bytes.fromhex(MAC_A.replace(":", "")) + b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x01"
                + bytes.fromhex(MAC_A.replace(":", "")) + bytes([192, 168, 0, 10]) + bytes(6) + tpa)
    d.dp.encap(blue, [arp(bytes([192, 168, 0, 11])), arp(bytes([192, 168, 0, 99]))], NOW)
    fams = _families(d)
    assert _value(fams, "vxlan_dp_neigh_entries", network="blue") == 1
    assert _value(fams, "vxlan_dp_neigh_suppressed", network="blue", protocol="arp") == 1
    assert _value(fams, "vxlan_dp_neigh_suppressed", network="blue", protocol="nd") == 0
    assert _value(fams, "vxlan_dp_neigh_replies", network="blue", result="error") == 1
    assert _value(fams, "vxlan_dp_neigh_unknown_flooded", network="blue") == 1
    assert _value(fams, "vxlan_dp_neigh_entries", network="red") == 0


def test_families_types_and_label_sets():
    fams = _families(_fake())
    assert set(fams) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        f = fams[name]
        assert f.type == kind, name
        assert f.documentation, name
        assert f.samples, name
        for s in f.samples:
            assert set(s.labels) == labels, (name, s)
            if kind == "counter":
                assert s.name == name + "_total", s.name  # no _created series for our counters


def test_every_reason_and_direction_is_exported_even_at_zero():
    fams = _families(_fake())
    for net in ("blue", "red"):
        reasons = {s.labels["reason"] for s in fams["vxlan_dp_drops"].samples if s.labels["network"] == net}
        assert reasons == set(NET_DROP_REASONS)
        for fam in ("vxlan_dp_tap_frames", "vxlan_dp_tap_bytes", "vxlan_dp_tunnel_packets", "vxlan_dp_tunnel_bytes"):
            dirs = {s.labels["direction"] for s in fams[fam].samples if s.labels["network"] == net}
            assert dirs == {"egress", "ingress"}, fam
    assert {s.labels["reason"] for s in fams["vxlan_dp_endpoint_drops"].samples} == set(EP_DROP_REASONS)


def test_values_are_the_dataplane_counters():
    d = _fake()
    fams = _families(d)
    c = d.dp.counters(d.nets["blue"].handle)
    assert _value(fams, "vxlan_dp_tap_frames", network="blue", direction="egress") == 3
    assert _value(fams, "vxlan_dp_tap_bytes", network="blue", direction="egress") == 100 + 200 + 3000
    # encap() without I/O builds packets; sending them (and counting tx_*) is the pump's part
    assert _value(fams, "vxlan_dp_tunnel_packets", network="blue", direction="egress") == c["tx_packets"]
    assert _value(fams, "vxlan_dp_tunnel_packets", network="blue", direction="ingress") == 1
    assert _value(fams, "vxlan_dp_tunnel_bytes", network="blue", direction="ingress") == c["rx_bytes"] > 120
    assert _value(fams, "vxlan_dp_tunnel_packets", network="red", direction="egress") == 0
    assert _value(fams, "vxlan_dp_flood_frames", network="blue") == 1
    assert _value(fams, "vxlan_dp_flood_replications", network="blue") == 2
    assert _value(fams, "vxlan_dp_drops", network="blue", reason="too_big") == 1
    assert _value(fams, "vxlan_dp_drops", network="blue", reason="unknown_source") == 1
    assert _value(fams, "vxlan_dp_drops", network="blue", reason="malformed") == 0
    ep = "vxlan://198.18.0.1:4789"
    assert _value(fams, "vxlan_dp_endpoint_drops", endpoint=ep, reason="unknown_vni") == 1
    assert _value(fams, "vxlan_dp_endpoint_datagrams", endpoint=ep) == 3
    assert _value(fams, "vxlan_dp_fdb_entries", network="blue", type="static") == 1
    assert _value(fams, "vxlan_dp_fdb_entries", network="blue", type="learned") == 1
    assert _value(fams, "vxlan_dp_fdb_entries", network="red", type="learned") == 0
    assert _value(fams, "vxlan_dp_fdb_learned", network="blue") == 1
    assert _value(fams, "vxlan_dp_fdb_max_entries", network="red") == 100
    assert _value(fams, "vxlan_dp_peers", network="blue") == 2
    assert _value(fams, "vxlan_dp_peers", network="red") == 1
    assert _value(fams, "vxlan_dp_network_tap_up", network="red") == 0
    assert _value(fams, "vxlan_dp_network_mtu_bytes", network="blue") == 1450
    assert _value(fams, "vxlan_dp_network_info", network="blue", vni="42", encap="vxlan", tap="vxdp-blue") == 1
    assert _value(fams, "vxlan_dp_networks") == 2
    assert _value(fams, "vxlan_dp_batch_max_packets") == 32
    assert _value(fams, "vxlan_dp_backend_info", backend="python") == 1


def test_values_are_read_at_scrape_time_not_cached():
    d = _fake()
    reg = make_registry(d, process=False)

    def egress() -> float:
        fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
        return _value(fams, "vxlan_dp_tap_frames", network="blue", direction="egress")
    before = egress()
    d.dp.encap(d.nets["blue"].handle, [eth_frame(MAC_S, MAC_A, 100)] * 5, NOW)
    assert egress() == before + 5
    del d.nets["red"]                                # a removed network disappears
    assert "red" not in {s.labels.get("network") for s in
                         _families(d)["vxlan_dp_network_info"].samples}


def test_reload_results_and_last_reload_gauge():
    d = _fake()
    d.reloads, d.reload_failures, d.last_reload_ok = 3, 1, False
    fams = _families(d)
    assert _value(fams, "vxlan_dp_reloads", result="applied") == 3
    assert _value(fams, "vxlan_dp_reloads", result="rejected") == 1
    assert _value(fams, "vxlan_dp_config_last_reload_successful") == 0


def test_fdb_size_api_is_used_when_the_backend_has_it():
    """With `fdb_size(net)` the collector counts entries without dumping the table."""
    d = _fake()

    class Sized:
        def __init__(self, dp: Any) -> None:
            self._dp = dp

        def __getattr__(self, name: str) -> Any:
            if name == "fdb_dump":
                raise AssertionError("fdb_dump called although fdb_size exists")
            return getattr(self._dp, name)

        def fdb_size(self, net: int) -> int:
            return len(self._dp.fdb_dump(net, NOW))
    d.dp = Sized(d.dp)
    fams = _families(d)
    assert _value(fams, "vxlan_dp_fdb_entries", network="blue", type="learned") == 1
    assert _value(fams, "vxlan_dp_fdb_entries", network="blue", type="static") == 1


def test_the_c_backend_exports_the_same_values():
    py, c = _families(_fake()), _families(_fake(c_backend()))
    skip = {"vxlan_dp_backend_info"}

    def samples(fams: dict[str, Any]) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for n, f in fams.items() if n not in skip for s in f.samples}
    assert samples(py) == samples(c)


def test_promtool_check_metrics_passes():
    tool = need_tool("promtool", "prometheus")
    text = generate_latest(make_registry(_fake(), process=True))
    r = subprocess.run([tool, "check", "metrics"], input=text, check=False, capture_output=True, timeout=30)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert not (r.stdout + r.stderr).strip(), (r.stdout + r.stderr).decode()  # no lint warnings either


def test_http_endpoint_serves_metrics_and_rejects_the_rest():
    d = _fake()

    async def scenario() -> list[bytes]:
        srv = MetricsServer(make_registry(d, process=False))
        await srv.start("127.0.0.1", 0)
        assert srv.address is not None
        port = srv.address[1]
        out = []
        for req in (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
                    b"HEAD /metrics HTTP/1.1\r\n\r\n", b"GET /nope HTTP/1.1\r\n\r\n",
                    b"POST /metrics HTTP/1.1\r\n\r\n", b"garbage\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(req)
            await writer.drain()
            out.append(await asyncio.wait_for(reader.read(), 5))
            writer.close()
        await srv.close()
        assert srv.address is None
        return out

    ok, head, missing, post, bad = asyncio.run(scenario())
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4" in ok
    assert b'vxlan_dp_tap_frames_total{direction="egress",network="blue"} 3.0' in ok
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404")
    assert post.startswith(b"HTTP/1.1 405")
    assert bad.startswith(b"HTTP/1.1 400")


def test_offloads_in_use_and_their_events():
    d = _fake()
    frame = bytes.fromhex("02000000000b02000000000a0800") + bytes(200)   # not IP: sent as it is
    d.dp.encap(d.nets["blue"].handle, [bytes(10) + frame], NOW, vnet_hdr=True)
    fams = _families(d)
    assert _value(fams, "vxlan_dp_offload_enabled", feature="vnet_hdr") == 1
    assert _value(fams, "vxlan_dp_offload_enabled", feature="udp_segment") == 0
    events = {s.labels["event"] for s in fams["vxlan_dp_offload_events"].samples}
    assert "tso_frames" in events and "coalesced_frames" in events and not any(e.endswith("errno") for e in events)
    assert _value(fams, "vxlan_dp_offload_events", event="tso_frames") == 0
