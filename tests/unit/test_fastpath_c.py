"""The C backend itself: build stamp, struct layout, FDB edge cases, and the pumps on real fds.

What a user would check: the compiled module refuses to run against another package version;
its counters are the shared names in the shared order; FDB learning, refreshing, moving,
ageing and static entries end exactly as in the Python reference; and the pumps move real
frames between a TAP (or a datagram socketpair standing in for one) and underlay sockets,
with the same results and counters as the pure-Python backend, errors included.

The last test needs root: it runs in a private network namespace (`unshare -n`, gone when
its process exits) with a real TAP device and raw sockets on 198.18.0.0/15 and 2001:2::/48.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import SCRIPTS, c_backend, eth_frame, need_tool, vxlan_payload
import vxlan_dp
from vxlan_dp.core.counters import EP_COUNTERS, NET_COUNTERS
from vxlan_dp.fastpath import NetworkParams, PureDataplane
from vxlan_dp.fastpath.api import check_shared_with_c, shared_with_c

CDataplane = c_backend(module=True)

from vxlan_dp.fastpath._c import ffi, lib

BOTH = [CDataplane, PureDataplane]
LO_A, LO_B = "127.0.0.1", "127.0.0.2"
MAC_A, MAC_B, MAC_X = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:99"
VNI = 42


def frame(dst: str, src: str, size: int = 64, tag: int = 0) -> bytes:
    return eth_frame(dst, src, size, tag=tag)


# --- the build ---------------------------------------------------------------------------------

def test_counter_structs_list_the_shared_names_in_order():
    assert tuple(n for n, _ in ffi.typeof("struct vxdp_net_counters").fields) == NET_COUNTERS
    assert tuple(n for n, _ in ffi.typeof("struct vxdp_ep_counters").fields) == EP_COUNTERS
    assert ffi.sizeof("struct vxdp_net_counters") == 8 * len(NET_COUNTERS)


def test_build_carries_the_package_version():
    assert ffi.string(lib.vxdp_version()).decode() == vxlan_dp.__version__


def _import_fastpath_after(setup: str) -> tuple[str, str, str]:
    """(backend, how many warnings, the first one) of a fresh `import vxlan_dp.fastpath`
    in a child Python that first runs `setup`."""
    code = textwrap.dedent(setup) + textwrap.dedent("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import vxlan_dp.fastpath as f
        print(f.BACKEND, len(w), str(w[0].message) if w else "")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=_env()).stdout
    backend, warnings, message = out.split(" ", 2)
    return backend, warnings, message


def test_stale_build_is_refused_with_one_warning():
    backend, warnings, message = _import_fastpath_after("""
        import vxlan_dp
        vxlan_dp.__version__ = "0.0.0-stale"
    """)
    assert (backend, warnings) == ("python", "1")
    assert "stale C fast path" in message and "0.0.0-stale" in message


def test_shared_limits_are_the_cdefs():
    shared = shared_with_c()
    assert {name: getattr(lib, name) for name in shared} == shared
    assert {"VXDP_SUPER_MAX", "VXDP_HDR_MAX", "VXDP_GSO_SEGS", "VXDP_GSO_SOCKS", "VXDP_BATCH_MAX"} <= set(shared)
    check_shared_with_c(lib)


def test_a_build_disagreeing_on_a_shared_limit_is_refused_naming_it():
    fake = {name: getattr(lib, name) for name in shared_with_c()}
    fake["VXDP_SUPER_MAX"] += 1
    del fake["VXDP_GSO_SOCKS"]
    with pytest.raises(ImportError) as e:
        check_shared_with_c(SimpleNamespace(**fake))
    msg = str(e.value)
    assert f"VXDP_SUPER_MAX is {lib.VXDP_SUPER_MAX + 1} in C, {lib.VXDP_SUPER_MAX} in Python" in msg
    assert "VXDP_GSO_SOCKS is missing in C" in msg
    assert "VXDP_GSO_SEGS" not in msg


def test_python_reference_disagreeing_with_the_cdef_refuses_the_c_build_with_one_warning():
    backend, warnings, message = _import_fastpath_after("""
        import vxlan_dp.wire.offload as w
        w.COALESCE_MAX_SEGS = 63          # the reference drifts from csrc/fastpath.h
    """)
    assert (backend, warnings) == ("python", "1")
    assert "VXDP_GRO_MAX_SEGS is 64 in C, 63 in Python" in message


def _env() -> dict[str, str]:
    root = str(Path(vxlan_dp.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("VXLAN_DP_PUREPYTHON", None)
    return env


# --- the same answers as the reference, where hypothesis rarely goes ----------------------------

def make(cls, *, peers=(LO_B,), local=LO_A, kind="vxlan", fd=-1, tap=-1, batch=64, **kw):
    dp = cls(batch=batch)
    ep = dp.add_endpoint(kind, fd)
    net = dp.add_network(NetworkParams(vni=VNI, encap=kind, local=local, **kw), ep, tap)
    dp.set_peers(net, list(peers))
    return dp, ep, net


def state(dp, ep, net, now):
    return dp.counters(net), dp.endpoint_counters(ep), dp.fdb_dump(net, now)


def test_flood_larger_than_one_send_queue_matches_python():
    """64 frames x 16 peers = 1024 outer packets: the C queue (512) flushes mid-batch."""
    peers = [f"198.18.1.{i}" for i in range(1, 17)]
    frames = [frame("ff:ff:ff:ff:ff:ff", MAC_A, 100, tag=i) for i in range(64)]
    results = []
    for cls in BOTH:
        dp, ep, net = make(cls, peers=peers, local="198.18.0.1")
        results.append((dp.encap(net, frames, 1.0), state(dp, ep, net, 1.0)))
    assert results[0] == results[1]
    assert len(results[0][0]) == 1024 and results[0][1][0]["flood_copies"] == 1024


def test_fdb_refresh_move_age_boundary_and_statics_match_python():
    b, c = "198.18.0.2", "198.18.0.3"
    runs = []
    for cls in BOTH:
        dp, ep, net = make(cls, peers=(b, c), local="198.18.0.1", ageing=10.0, max_fdb_entries=3)
        log = []
        step = lambda src, m, now, dp=dp, ep=ep, net=net, log=log: log.append((dp.decap(ep, [(src, vxlan_payload(VNI, frame(MAC_A, m)))], now),
                                               dp.fdb_dump(net, now)))
        step(b, MAC_X, 0.0)                 # learned
        step(b, MAC_X, 4.0)                 # refreshed: age restarts
        step(c, MAC_X, 6.0)                 # moved to c
        step(b, MAC_B, 6.5)
        dp.fdb_add(net, "02:00:00:00:00:01", c)      # static: the table is now full (3)
        step(b, "02:00:00:00:00:02", 7.0)   # refused: fdb_full
        dp.fdb_add(net, "02:00:00:00:00:03", b)      # statics always fit
        step(c, "02:00:00:00:00:01", 8.0)   # learning never moves a static entry
        log.append(dp.age(15.999))          # MAC_X seen at 6.0: 9.999 < 10, stays
        log.append(dp.age(16.0))            # now - seen == ageing: removed (>=)
        log.append(dp.age(16.5))            # MAC_B seen at 6.5
        log.append((dp.fdb_remove(net, "02:00:00:00:00:03"), dp.fdb_remove(net, MAC_X)))
        log.append(state(dp, ep, net, 100.0))
        runs.append(log)
    assert runs[0] == runs[1]
    counters = runs[0][-1][0]
    assert (counters["fdb_learned"], counters["fdb_moved"], counters["fdb_full"],
            counters["fdb_aged"]) == (2, 1, 1, 2)
    assert [(r.mac, r.static) for r in runs[0][-1][2]] == [("02:00:00:00:00:01", True)]


def test_big_fdb_churn_matches_python():
    """Thousands of learn / age / remove cycles through the C hash table's deletion path."""
    peers = [f"198.18.0.{i}" for i in range(2, 10)]
    runs = []
    for cls in BOTH:
        dp, ep, net = make(cls, peers=peers, local="198.18.0.1", ageing=5.0, max_fdb_entries=450)
        out = []
        for rnd in range(12):
            now = rnd * 2.0
            window = range(rnd * 50, rnd * 50 + 400)    # overlapping MAC windows ...
            mac_of = lambda i: "02:%02x:%02x:00:00:01" % (i % 256, i // 256)
            dgrams = [(peers[(i + rnd) % len(peers)],   # ... seen from another peer: moves
                       vxlan_payload(VNI, frame(MAC_A, mac_of(i)))) for i in window]
            out.append(len(dp.decap(ep, dgrams, now)))
            out.append(dp.age(now))
            out.extend(dp.fdb_remove(net, mac_of(i)) for i in window[::9])
            out.append(dp.fdb_dump(net, now))
        out.append(state(dp, ep, net, 30.0))
        runs.append(out)
    assert runs[0] == runs[1]
    c = runs[0][-1][0]
    assert c["fdb_full"] > 0 and c["fdb_aged"] > 0 and c["fdb_moved"] > 0


def test_management_misuse_raises_like_python():
    for cls in BOTH:
        dp, ep, net = make(cls)
        with pytest.raises(ValueError):
            dp.add_network(NetworkParams(vni=VNI, encap="vxlan", local=LO_A), ep)
        with pytest.raises(ValueError):
            dp.set_peers(net, ["2001:2::1"])
        with pytest.raises(ValueError):
            dp.fdb_add(net, "02:00:00:00:00:01", "2001:2::1")
        with pytest.raises(ValueError):
            dp.fdb_add(net, "nope", LO_B)
        with pytest.raises(ValueError):
            dp.remove_endpoint(ep)
        with pytest.raises(KeyError):
            dp.counters(net + 1)
        dp.remove_network(net)
        with pytest.raises(KeyError):
            dp.pump_tap(net, 0.0)
        dp.remove_endpoint(ep)
    with pytest.raises(ValueError):         # only a raw IPv4 GRE socket delivers IP headers
        CDataplane().add_endpoint("vxlan", -1, ipv4_header=True)


# --- the pumps on real fds, without root --------------------------------------------------------

def tap_pair() -> tuple[socket.socket, socket.socket]:
    """A datagram socketpair behaves like a TAP fd: one read or write is one whole frame."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(70000))
        except BlockingIOError:
            return got


def udp(addr: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.setblocking(False)
    return s


def test_pump_endpoint_over_loopback_udp_matches_python():
    good = [vxlan_payload(VNI, frame(MAC_A, MAC_X, 60 + i)) for i in range(9)]
    bad = [b"junk", vxlan_payload(VNI + 1, frame(MAC_A, MAC_X)), struct.pack("!II", 0, VNI << 8)]
    results = []
    for cls in BOTH:
        tap, host = tap_pair()
        ep_sock, peer = udp(LO_A), udp(LO_B)
        port = ep_sock.getsockname()[1]
        dp, ep, net = make(cls, fd=ep_sock.fileno(), tap=tap.fileno(), batch=4, port=port)
        for p in good[:5] + bad + good[5:]:
            peer.sendto(p, (LO_A, port))
        counts = [dp.pump_endpoint(ep, 5.0) for _ in range(5)]
        results.append((counts, drain(host), state(dp, ep, net, 5.0)))
        for s in (tap, host, ep_sock, peer):
            s.close()
    assert results[0] == results[1]
    counts, delivered, (c, e, fdb) = results[0]
    assert counts == [4, 4, 4, 0, 0]
    assert delivered == [p[8:] for p in good]
    assert (c["tap_tx_frames"], e["rx_batches"], e["drop_unknown_vni"], e["drop_bad_flags"],
            e["drop_malformed"]) == (9, 3, 1, 1, 1)
    assert [(r.mac, r.remote) for r in fdb] == [(MAC_X, LO_B)]


def test_pump_tap_counts_refused_sends_per_packet_like_python():
    """No egress socket, then one that refuses every send (UDP to port 0: EINVAL)."""
    frames = [frame("ff:ff:ff:ff:ff:ff", MAC_A, 80, tag=i) for i in range(10)]
    results = []
    for cls in BOTH:
        tap, host = tap_pair()
        refuser = udp(LO_A)
        dp, ep, net = make(cls, peers=(LO_B, "127.0.0.3"), tap=tap.fileno(), batch=4)
        for f in frames:
            host.send(f)
        counts = [dp.pump_tap(net, 1.0) for _ in range(2)]
        dp.set_tx_socket(4, refuser.fileno())
        counts += [dp.pump_tap(net, 1.0) for _ in range(3)]
        results.append((counts, dp.counters(net)))
        for s in (tap, host, refuser):
            s.close()
    assert results[0] == results[1]
    counts, c = results[0]
    assert counts == [4, 4, 2, 0, 0]
    assert (c["tap_rx_frames"], c["tap_rx_batches"], c["flood_copies"], c["drop_socket_error"],
            c["tx_packets"]) == (10, 3, 20, 20, 0)


def test_pump_errors_are_negative_errno_like_python():
    for cls in BOTH:
        dp, ep, net = make(cls, tap=-1)
        assert dp.pump_tap(net, 0.0) == -errno.EBADF
        assert dp.pump_endpoint(ep, 0.0) == -errno.ENOTCONN


def test_pump_endpoint_receive_error_and_tap_write_error_like_python():
    results = []
    for cls in BOTH:
        sock = udp(LO_A)
        closed = udp(LO_B)                      # a port nobody will be listening on
        target = closed.getsockname()
        closed.close()
        sock.connect(target)
        sock.send(b"x")                         # ICMP port unreachable -> ECONNREFUSED
        peer = udp(LO_B)
        dp, ep, net = make(cls, fd=sock.fileno(), tap=-1, port=sock.getsockname()[1])
        first = dp.pump_endpoint(ep, 0.0)
        sock.connect(peer.getsockname())        # now accept the peer's datagrams
        peer.sendto(vxlan_payload(VNI, frame(MAC_A, MAC_X)), sock.getsockname())
        second = dp.pump_endpoint(ep, 0.0)      # delivered to a network without a TAP
        results.append((first, second, dp.counters(net), dp.endpoint_counters(ep)))
        sock.close()
        peer.close()
    assert results[0] == results[1]
    first, second, c, e = results[0]
    assert (first, second) == (-errno.ECONNREFUSED, 1)
    assert e["drop_socket_error"] == 1 and c["drop_tap_write_error"] == 1


# --- root: a real TAP and raw sockets in a private network namespace ---------------------------



@pytest.mark.root
def test_pumps_with_a_real_tap_and_raw_sockets_in_a_private_netns():
    need_tool("unshare", "util-linux")     # root and /dev/net/tun: the `root` marker (conftest)
    # `unshare -n`: the namespace lives exactly as long as the child, so nothing can leak
    proc = subprocess.run(["unshare", "-n", sys.executable, str(SCRIPTS / "fastpath_netns_pumps.py")],
                          check=False, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for case in ("vxlan/4", "vxlan/6", "gre-udp/4", "gre-udp/6", "gre/4"):
        c, py = out[f"c/{case}"], out[f"python/{case}"]
        assert c == py, case
        # independent of both backends: the bytes the wire codecs build, at the flow's port
        assert c["egress"] == [list(e) for e in c["expect_egress"]], case
        assert (c["n_tap"], c["n_ep"]) == (3, 2), case
        assert c["delivered"] == c["inner"], case
        assert c["counters"]["tx_packets"] == 3 and c["counters"]["tap_tx_frames"] == 2, case
        assert sorted(r[0] for r in c["fdb"]) == ["02:00:00:00:00:77", "02:00:00:00:00:78"], case
    c, py = out["c/partial"], out["python/partial"]
    assert c == py
    assert c["egress"] == [list(e) for e in c["expect_egress"]]
    assert (c["counters"]["flood_copies"], c["counters"]["tx_packets"],
            c["counters"]["drop_socket_error"]) == (6, 3, 3)
