"""`vxlan-dp bench soak` end to end, briefly: the figures it reports exist and add up.

The real run is ten minutes (bench/results/*-soak.md); this one is 10 seconds, enough to
prove the sampling, the warm-up, the counter equations and the report files.
"""

from __future__ import annotations

import json

from vxlan_dp.bench.soak import fate_check, run_soak


def test_a_short_soak_passes_and_writes_its_report(tmp_path, backend):
    r, paths = run_soak(1 / 6, backend=backend, out_dir=str(tmp_path))
    assert r["ok"], json.dumps({k: r[k] for k in ("hosts", "checks")}, indent=1)
    assert len(r["samples"]) >= 4 and r["start_t"] < r["end_t"]
    for h in r["hosts"].values():
        assert h["rss_kb"]["start"] > 0 and h["fds"]["start"] > 0 and h["tracebacks"] == 0
        assert h["counters"]["tx_packets"] > 10_000          # it was under load
    assert [p.rsplit(".", 1)[1] for p in paths][:2] == ["json", "md"]
    data = json.loads(open(paths[0]).read())
    assert data["machine"]["commit"] and data["checks"] == r["checks"]


def test_the_fate_equation_catches_a_lost_frame():
    t = dict.fromkeys(["tap_rx_frames", "ep_rx_datagrams", "drop_malformed", "drop_too_big", "drop_no_peers",
                       "tx_packets", "drop_socket_error", "flood_copies", "flood_frames", "ep_drops",
                       "drop_unknown_source", "rx_packets", "tap_tx_frames", "drop_tap_write_error"], 0)
    t.update(tap_rx_frames=10, tx_packets=12, flood_frames=2, flood_copies=4, ep_rx_datagrams=5, rx_packets=4,
             ep_drops=1, tap_tx_frames=3, drop_tap_write_error=1)
    assert fate_check(t)["one_fate_each"]["ok"] and fate_check(t)["accepted_written"]["ok"]
    t["tap_rx_frames"] += 1
    assert not fate_check(t)["one_fate_each"]["ok"]
