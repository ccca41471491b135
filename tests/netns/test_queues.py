"""`[daemon] queues = 2` on both hosts, both backends: multi-queue TAPs, SO_REUSEPORT endpoint
sockets and (C backend) a pump thread per queue, as a user runs them.

One lab per backend checks what a user would: the kernel reports the TAP with two queues,
ping and TCP cross the overlay both ways (two streams each way, so that flows can land on
both queues), nothing is dropped as malformed or refused, and a TAP deleted under the daemon
comes back with its two queues and carries pings again.

A frame on either queue of a real TAP is tunnelled: tests/scripts/tap_queues.py, in a private
namespace, detaches one queue so that the kernel must pick the other, for each queue in turn,
on both backends (after replacing a single-queue TAP left under the same name). Counters adding up over queues with two C pump threads at once, and fake
TAP queues fed one by one, are tests/unit/test_poll.py.
"""

from __future__ import annotations

from helpers import in_private_netns, lab_with_daemons, until
from vxlan_dp.lab import netns
from vxlan_dp.wire import encode_vxlan

def test_a_frame_on_either_queue_of_a_real_tap_is_tunnelled(backend):
    got = in_private_netns("tap_queues.py", backend)
    remade = got["remade"]      # the single-queue TAP in the way was replaced, with two queues
    assert remade["index"] != remade["old_index"] and remade["queues"] == 2, remade
    for q in (0, 1):
        r = got[f"queue{q}"]
        assert r["pumped"] == 1, got
        assert r["payload"] == (encode_vxlan(42) + bytes.fromhex(r["frame"])).hex(), got
    c = got["counters"]
    assert (c["tap_rx_frames"], c["flood_frames"], c["tx_packets"]) == (2, 2, 2), c


def _tun_queues(ns: str, name: str) -> tuple[int, int] | None:
    """(ifindex, IFLA_TUN_NUM_QUEUES) of TAP `name`, as the kernel reports them."""
    with netns.ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        return idx[0], int(link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_TUN_NUM_QUEUES") or 0)


def test_two_queues_carry_ping_and_tcp_both_ways_and_survive_a_tap_loss(make_lab, backend):
    lab = lab_with_daemons(make_lab, backend, daemon_toml='[daemon]\nmetrics = ""\nqueues = 2\n')
    h1, h2 = lab.hosts
    a, b = h1.containers[0], h2.containers[0]
    for h in lab.hosts:
        got = _tun_queues(h.ns, "vxdp-blue")
        assert got is not None and got[1] == 2, got
    assert lab.ping(a, b.ip).ok and lab.ping(b, a.ip).ok
    for reverse in (False, True):
        res = lab.iperf3(a, b, seconds=1, streams=2, reverse=reverse)
        assert "error" not in res, res.get("error")
        assert res["end"]["sum_received"]["bytes"] > 1_000_000
    for h in lab.hosts:
        st = lab.status(h)
        assert st["queues"] == 2 and [e["sockets"] for e in st["endpoints"]] == [2], st["endpoints"]
        c = st["networks"]["blue"]["counters"]
        assert c["rx_packets"] > 0 and c["tx_packets"] > 0, c
        assert c["drop_malformed"] == c["drop_socket_error"] == c["drop_tap_write_error"] == 0, c
    # the TAP vanishes: every queue's fd fails, the TAP is made again with both queues
    before = _tun_queues(h1.ns, "vxdp-blue")
    assert before is not None
    with netns.ipr(h1.ns) as ipr:
        ipr.link("del", index=before[0])
    assert until(lambda: "TAP vxdp-blue is back" in open(h1.log_path, errors="replace").read(), 15), lab.log_tail(h1)
    after = _tun_queues(h1.ns, "vxdp-blue")
    assert after is not None and after[0] != before[0] and after[1] == 2, (before, after)
    assert until(lambda: lab.ping(a, b.ip, count=1, wait=0.5).ok, 15)
    assert lab.ping(b, a.ip).ok
    log = open(h1.log_path, errors="replace").read()
    assert log.count("TAP vxdp-blue failed") == 1 and "Traceback" not in log, log[-3000:]
