"""Faults under a running overlay: each ends in a clear log line and a working data plane, or a
clean exit with a non-zero status; never a hang, a traceback loop or a leaked namespace.

- a peer host vanishes (its daemon killed, its namespaces deleted) and comes back: the other
  daemon carries on without an error, the returning one logs "ready", pings recover;
- the TAP device is deleted under the daemon (twice): "TAP ... failed", re-created, back in
  its bridge, "TAP ... is back";
- the underlay address goes away and returns: sends fail and are counted, one warning names
  the missing address, "sends to the underlay work again" once it is back;
- the daemon is killed with SIGKILL and restarted with its old TAPs (VXLAN and GRE) still
  there: "adopting existing TAP ...", same devices, same bridges, pings recover;
- a device that is not a TAP holds the TAP's name: start-up fails cleanly, exit status 1.
The metrics port being taken is tests/netns/test_service.py::
test_a_metrics_address_in_use_fails_the_start_and_leaves_nothing (exit 1, the log names
daemon.metrics, nothing left behind); bad config files are tests/unit/test_config.py (97
cases) and tests/netns/test_bad_configs.py (run for real: exit 2, nothing created).
Every test ends by closing its lab and checking that none of its namespaces is left.
"""

from __future__ import annotations

import os
import signal


from helpers import until
from vxlan_dp.lab import Lab, netns


def _lab_with_daemons(make_lab, backend: str) -> Lab:
    lab = make_lab(2)
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu("vxlan"))
    lab.settle()
    for h in lab.hosts:
        lab.start_daemon(h, lab.network_toml(h), backend=backend)
    return lab


def _log(h) -> str:
    with open(h.log_path, errors="replace") as f:
        return f.read()


def _log_has(h, text: str, timeout: float = 10.0) -> bool:
    return until(lambda: text in _log(h), timeout)


def _pings_recover(lab: Lab, a, b, timeout: float = 20.0) -> None:
    assert until(lambda: lab.ping(a, b.ip, count=1, wait=0.5).ok, timeout), f"{a.name} -> {b.name} did not recover"
    assert lab.ping(a, b.ip).ok and lab.ping(b, a.ip).ok


def _link(ns: str, name: str) -> dict | None:
    with netns.ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        return {"index": idx[0], "master": link.get("IFLA_MASTER"), "state": link.get("IFLA_OPERSTATE")}


def _healthy(lab: Lab, h) -> None:
    """Still running, no traceback in its log."""
    assert h.proc is not None and h.proc.poll() is None, lab.log_tail(h)
    assert "Traceback" not in _log(h), lab.log_tail(h, 80)


def _no_leftovers(lab: Lab) -> None:
    lab.close()
    assert not [ns for ns in netns.listing() if lab.sfx in ns]


def test_a_peer_host_vanishes_and_comes_back(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    h1, h2 = lab.hosts
    a, b = h1.containers[0], h2.containers[0]
    assert lab.ping(a, b.ip).ok
    lab.remove_host(h2)
    assert not netns.exists(h2.ns) and not netns.exists(b.ns)
    assert lab.ping(a, b.ip, count=3, wait=0.5).received == 0
    _healthy(lab, h1)
    lab.restore_host(h2)
    lab.settle()
    lab.start_daemon(h2, lab.network_toml(h2), backend=backend)
    _pings_recover(lab, a, b)
    assert "INFO ready" in _log(h2)
    # a peer going silent is not an error of h1's: UDP has no connection to lose
    assert " ERROR " not in _log(h1), lab.log_tail(h1, 50)
    _healthy(lab, h1)
    _healthy(lab, h2)
    _no_leftovers(lab)


def test_the_tap_deleted_under_the_daemon_comes_back_in_its_bridge(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    h1, h2 = lab.hosts
    a, b = h1.containers[0], h2.containers[0]
    assert lab.ping(a, b.ip).ok
    bridge = _link(h1.ns, "br-blue")
    for round_ in (1, 2):
        before = _link(h1.ns, "vxdp-blue")
        with netns.ipr(h1.ns) as ipr:
            ipr.link("del", index=before["index"])
        assert _log_has(h1, "TAP vxdp-blue is back", 15) if round_ == 1 else \
            until(lambda: _log(h1).count("TAP vxdp-blue is back") == 2, 15), lab.log_tail(h1)
        tap = _link(h1.ns, "vxdp-blue")
        assert tap and tap["index"] != before["index"] and tap["master"] == bridge["index"], tap
        _pings_recover(lab, a, b)
    log = _log(h1)
    assert log.count("network blue: TAP vxdp-blue failed") == 2, log[-3000:]
    st = lab.status(h1)["networks"]["blue"]
    assert st["tap_up"]
    _healthy(lab, h1)
    _no_leftovers(lab)


def test_the_underlay_address_goes_away_and_returns(make_lab, backend):
    lab = _lab_with_daemons(make_lab, backend)
    h1, h2 = lab.hosts
    a, b = h1.containers[0], h2.containers[0]
    assert lab.ping(a, b.ip).ok
    with netns.ipr(h1.ns) as ipr:
        idx = ipr.link_lookup(ifname="ul0")[0]
        ipr.addr("del", index=idx, address=h1.ip4, prefixlen=24)
    assert lab.ping(a, b.ip, count=3, wait=0.5).received == 0
    assert lab.ping(b, a.ip, count=3, wait=0.5).received == 0
    assert _log_has(h1, f"packets could not be sent to the underlay; {h1.ip4} is not an address of this host"), \
        lab.log_tail(h1)
    assert lab.status(h1)["networks"]["blue"]["counters"]["drop_socket_error"] > 0
    _healthy(lab, h1)
    with netns.ipr(h1.ns) as ipr:
        ipr.addr("add", index=idx, address=h1.ip4, prefixlen=24)
    _pings_recover(lab, a, b)
    _pings_recover(lab, b, a)
    assert _log_has(h1, "network blue: sends to the underlay work again"), lab.log_tail(h1)
    log = _log(h1)
    assert log.count("could not be sent to the underlay") == 1, log[-3000:]
    _healthy(lab, h1)
    _no_leftovers(lab)


def test_sigkill_then_restart_adopts_the_old_taps(make_lab, backend):
    lab = make_lab(2)
    for h in lab.hosts:
        lab.add_container(h, "br-blue", mtu=lab.overlay_mtu("vxlan"))
        lab.add_container(h, "br-red", mtu=lab.overlay_mtu("gre"), subnet=1)
    lab.settle()
    toml = {h.name: lab.network_toml(h) + lab.network_toml(h, name="red", vni=43, encap="gre", tap="vxdp-red",
                                                           bridge="br-red") for h in lab.hosts}
    for h in lab.hosts:
        lab.start_daemon(h, toml[h.name], backend=backend)
    h1, h2 = lab.hosts
    pairs = list(zip(h1.containers, h2.containers))
    for a, b in pairs:
        assert lab.ping(a, b.ip).ok
    taps = ("vxdp-blue", "vxdp-red")
    old = {t: _link(h1.ns, t) for t in taps}
    assert lab.stop_daemon(h1, signal.SIGKILL) == -signal.SIGKILL
    for t in taps:                          # left behind, still in their bridges
        assert _link(h1.ns, t)["index"] == old[t]["index"]
    lab.start_daemon(h1, toml[h1.name], backend=backend)
    for t in taps:
        assert f"adopting existing TAP {t}" in _log(h1)
        now = _link(h1.ns, t)
        assert (now["index"], now["master"]) == (old[t]["index"], old[t]["master"]), (t, now, old[t])
    for a, b in pairs:
        _pings_recover(lab, a, b)
    _healthy(lab, h1)
    assert lab.stop_daemon(h1) == 0
    assert [t for t in taps if _link(h1.ns, t)] == []
    _no_leftovers(lab)


def test_a_bridge_the_daemon_made_does_not_outlive_a_sigkill_and_restart(make_lab):
    lab: Lab = make_lab(1)
    h = lab.hosts[0]
    toml = lab.network_toml(h, peers=[], bridge="br-own")   # no such bridge: the daemon makes it
    lab.start_daemon(h, toml)
    assert _link(h.ns, "br-own") is not None
    lab.stop_daemon(h, signal.SIGKILL)
    lab.start_daemon(h, toml)
    assert lab.stop_daemon(h) == 0
    assert _link(h.ns, "vxdp-blue") is None
    assert _link(h.ns, "br-own") is None


def test_a_device_squatting_the_tap_name_fails_the_start_cleanly(make_lab, backend):
    lab: Lab = make_lab(1)
    h = lab.hosts[0]
    with netns.ipr(h.ns) as ipr:
        ipr.link("add", ifname="vxdp-blue", kind="bridge")   # no dummy module here
    proc = lab.start_daemon(h, lab.network_toml(h, peers=[]), backend=backend, wait_ready=False)
    assert proc.wait(20) == 1
    log = _log(h)
    assert "start-up failed: vxdp-blue exists and is not a TAP device" in log, log[-2000:]
    assert "Traceback" not in log
    assert _link(h.ns, "vxdp-blue") is not None          # not ours: left alone
    assert not os.path.exists(h.socket_path)
    _no_leftovers(lab)
