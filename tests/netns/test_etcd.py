"""The etcd control plane for real: daemons that know only the store find each other.

Each lab gets an etcd server (Debian's etcd-server) on a host of its own on the underlay; the
daemons' configs hold nothing but the store's endpoint and their own address, and the network
itself ("blue", VNI 42) is declared in the store. Every wait is bounded; leases are short (3 s)
so that a dead host's departure is seen within the test's time.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from helpers import c_backend, flush_neighbours, need_tool, wait_for
from vxlan_dp.lab import Container, Host, Lab, netns
from vxlan_dp.wire.esp import ESP_EXTRA

TTL = 3          # seconds: the daemons' lease TTL in these labs
PREFIX = "/vxlan-dp"
NET = json.dumps({"vni": 42, "encap": "vxlan", "port": 4789})


@pytest.fixture(autouse=True)
def _needs_etcd() -> None:
    need_tool("etcd", "etcd-server")
    need_tool("etcdctl", "etcd-client")


def _peers(lab: Lab, h: Host) -> list[str]:
    return lab.status(h)["networks"].get("blue", {}).get("peers", [])


def _fdb(lab: Lab, h: Host) -> dict[str, tuple[str, bool]]:
    rows = lab.status(h)["networks"].get("blue", {}).get("fdb", [])
    return {r["mac"]: (r["remote"], r["static"]) for r in rows}


def _store(lab: Lab) -> dict[str, Any]:
    r = lab.etcdctl("get", "--prefix", PREFIX + "/")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    return {k: json.loads(v) for k, v in zip(lines[0::2], lines[1::2])}


def _start(lab: Lab, h: Host, backend: str, ttl: int = TTL, extra: str = "") -> None:
    lab.start_daemon(h, "", daemon_toml=lab.etcd_toml(h, lease_ttl=ttl, extra=extra), backend=backend)


def _etcd_lab(make_lab: Callable[..., Lab], backend: str, hosts: int = 3, ttl: int = TTL) -> Lab:
    lab = make_lab(hosts)
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu())
    lab.settle()
    lab.add_etcd_host()
    assert lab.etcdctl("put", f"{PREFIX}/networks/blue", NET).returncode == 0
    for h in lab.hosts:
        _start(lab, h, backend, ttl)
    return lab


def _all_ping(lab: Lab) -> None:
    bad = [(r.src, r.dst, r.received) for r in lab.ping_all(count=2) if not r.ok]
    assert not bad, f"pairs that did not reach each other: {bad}"


def _container(lab: Lab, host: Host, name: str, mac: str, ip: str) -> Container:
    """A container with a chosen MAC and IP (one that moved here from another host)."""
    ns = lab._ns(f"{lab.ul_ns.rsplit('-', 1)[0]}-{name}")
    port = f"v{name}"[:15]
    with netns.ipr(host.ns) as ipr:
        ipr.link("add", ifname=port, kind="veth", peer=f"{port}p"[:15])
        ipr.link("set", index=ipr.link_lookup(ifname=f"{port}p"[:15])[0], net_ns_fd=ns)
        ipr.link("set", index=ipr.link_lookup(ifname=port)[0], mtu=lab.overlay_mtu(),
                 master=ipr.link_lookup(ifname="br-blue")[0], state="up")
    with netns.ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=f"{port}p"[:15])[0]
        ipr.link("set", index=idx, ifname="eth0", address=mac, mtu=lab.overlay_mtu())
        ipr.addr("add", index=idx, address=ip, prefixlen=24)
        ipr.link("set", index=idx, state="up")
    c = Container(name, ns, host, ip, mac)
    host.containers.append(c)
    return c


def test_hosts_that_know_only_the_store_find_each_other_join_and_drop_out(make_lab, backend):
    lab = _etcd_lab(make_lab, backend)
    h1, h2, h3 = lab.hosts
    addrs = [h.ip4 for h in lab.hosts]
    for h in lab.hosts:
        wait_for(f"{h.name}'s flood list", lambda h=h: _peers(lab, h) == [a for a in addrs if a != h.ip4], 5)
        assert lab.status(h)["control"]["connected"] is True
    _all_ping(lab)
    # every container's MAC was published by its own host, and the others installed it
    wait_for("container MACs in h1's FDB from the store",
          lambda: all(_fdb(lab, h1).get(c.mac) == (c.host.ip4, True) for c in h2.containers + h3.containers), 5)
    store = _store(lab)
    assert {k for k in store if "/members/" in k} == {f"{PREFIX}/members/blue/{a}" for a in addrs}
    assert store[f"{PREFIX}/fdb/blue/{h2.containers[0].mac}"] == {"remote": h2.ip4}

    # a fourth host joins, knowing only the store: everybody reaches it within seconds
    h4 = lab.add_host()
    c4 = lab.add_container(h4, mtu=lab.overlay_mtu())
    lab.settle()
    t0 = time.monotonic()
    _start(lab, h4, backend)
    for h in (h1, h2, h3):
        wait_for(f"h4 in {h.name}'s flood list", lambda h=h: h4.ip4 in _peers(lab, h), 5)
    joined = time.monotonic() - t0
    for h in (h1, h2, h3):
        assert lab.ping(h.containers[0], c4.ip).ok, f"{h.name} -> h4"
        assert lab.ping(c4, h.containers[0].ip).ok, f"h4 -> {h.name}"
    assert joined < 5

    # SIGKILL h2: no goodbye, its lease runs out and everybody drops it (flood list and FDB)
    lab.stop_daemon(h2, signal.SIGKILL)
    t0 = time.monotonic()
    for h in (h1, h3, h4):
        wait_for(f"h2 gone from {h.name}'s flood list", lambda h=h: h2.ip4 not in _peers(lab, h), TTL + 3)
    gone = time.monotonic() - t0
    assert gone <= TTL + 3
    assert h2.containers[0].mac not in {m for m, (_, static) in _fdb(lab, h1).items() if static}
    assert not any(f"/{h2.ip4}" in k for k in _store(lab))

    # SIGTERM h3: a clean stop revokes its lease, so it leaves at once
    lab.stop_daemon(h3)
    wait_for("h3 gone from h1's flood list", lambda: h3.ip4 not in _peers(lab, h1), 1.5)


def test_a_mac_that_moves_to_another_host_is_followed(make_lab, backend):
    lab = _etcd_lab(make_lab, backend)
    h1, h2, h3 = lab.hosts
    mover, watcher = h1.containers[0], h3.containers[0]
    stay = lab.add_container(h1, mtu=lab.overlay_mtu())  # h1 keeps a container of its own
    assert lab.ping(watcher, mover.ip).ok
    wait_for("the mover's MAC at h1, in h3's FDB", lambda: _fdb(lab, h3).get(mover.mac) == (h1.ip4, True), 5)

    # the container moves: gone from h1, back on h2 with the same MAC and address
    with netns.ipr(h1.ns) as ipr:  # its link to h1's bridge goes (the namespace stays, unplugged)
        ipr.link("del", index=ipr.link_lookup(ifname=f"v{mover.name}"[:15])[0])
    h1.containers.remove(mover)
    moved = _container(lab, h2, "mv", mover.mac, mover.ip)
    lab.settle()
    t0 = time.monotonic()
    assert lab.ping(moved, watcher.ip, count=2).ok  # its first frames announce it at h2
    wait_for("the moved MAC at h2, in h3's FDB", lambda: _fdb(lab, h3).get(mover.mac) == (h2.ip4, True), 5)
    assert time.monotonic() - t0 < 5
    assert lab.ping(watcher, moved.ip).ok
    assert lab.ping(stay, moved.ip).ok
    # h1 saw the MAC before the move and must not take it back
    time.sleep(2.5)
    assert _store(lab)[f"{PREFIX}/fdb/blue/{mover.mac}"] == {"remote": h2.ip4}
    assert _fdb(lab, h1).get(mover.mac) == (h2.ip4, True)


def test_store_outage_keeps_forwarding_and_resynchronises(make_lab, backend):
    lab = _etcd_lab(make_lab, backend, ttl=5)
    h1, h2, h3 = lab.hosts
    _all_ping(lab)

    lab.stop_etcd()
    for h in lab.hosts:
        wait_for(f"{h.name} notices the outage", lambda h=h: not lab.status(h)["control"]["connected"], 6)
    # forwarding goes on with the last known state
    _all_ping(lab)
    assert sorted(_peers(lab, h1)) == [h2.ip4, h3.ip4]
    r = subprocess.run([sys.executable, "-m", "vxlan_dp", "status", "--socket", h1.socket_path, "--interval", "0"],
                       check=False, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "DISCONNECTED" in r.stdout and "last known state" in r.stdout, r.stdout
    assert "lost" in lab.log_tail(h1, 200)
    # a change during the outage: a new container on h3, which talks (its host cannot publish it yet)
    late = lab.add_container(h3, mtu=lab.overlay_mtu())
    lab.settle()
    assert lab.ping(late, h1.containers[0].ip).ok

    lab.start_etcd()
    t0 = time.monotonic()
    for h in lab.hosts:
        wait_for(f"{h.name} reconnects", lambda h=h: lab.status(h)["control"]["connected"], 8)
    wait_for("the outage's change reaches h1 through the store",
          lambda: _fdb(lab, h1).get(late.mac) == (h3.ip4, True), 6)
    assert time.monotonic() - t0 < 12
    assert _store(lab)[f"{PREFIX}/fdb/blue/{late.mac}"] == {"remote": h3.ip4}
    assert lab.status(h1)["control"]["resyncs"] >= 2
    _all_ping(lab)


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def test_tls_client_certificates_and_user_password(make_lab, tmp_path):
    """mTLS to the store plus etcd's own users: the daemon's [etcd] ca/cert/key/username/password."""
    need_tool("openssl", "openssl")         # was a plain skip: CI=true would have passed without this test
    d = str(tmp_path)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lab-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, san in (("server", "IP:198.18.0.254,IP:2001:2::fe"), ("client", "DNS:client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-addext", f"subjectAltName={san}", cwd=d)
        (tmp_path / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    lab = make_lab(2)
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu())
    lab.settle()
    lab.add_etcd_host(scheme="https", extra_args=[
        "--cert-file", f"{d}/server.pem", "--key-file", f"{d}/server.key",
        "--trusted-ca-file", f"{d}/ca.pem", "--client-cert-auth"])
    tls = ["--cacert", f"{d}/ca.pem", "--cert", f"{d}/client.pem", "--key", f"{d}/client.key"]
    for cmd in (["user", "add", "root:rootpw"], ["user", "add", "vxdp:s3cret"], ["role", "add", "vxdp"],
                ["role", "grant-permission", "vxdp", "--prefix=true", "readwrite", PREFIX + "/"],
                ["user", "grant-role", "vxdp", "vxdp"], ["auth", "enable"],
                ["--user", "root:rootpw", "put", f"{PREFIX}/networks/blue", NET]):
        r = lab.etcdctl(*tls, *cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    extra = (f'ca = "{d}/ca.pem"\ncert = "{d}/client.pem"\nkey = "{d}/client.key"\n'
             'username = "vxdp"\npassword = "s3cret"\n')
    for h in lab.hosts:
        _start(lab, h, "python", extra=extra)
    h1, h2 = lab.hosts
    wait_for("h1 learns h2 from the TLS store", lambda: _peers(lab, h1) == [h2.ip4], 5)
    assert lab.status(h1)["control"]["endpoint"].startswith("https://")
    assert lab.ping(h1.containers[0], h2.containers[0].ip).ok
    # a wrong password is refused, logged, and shows in status
    h3 = lab.add_host()
    lab.settle()
    lab.start_daemon(h3, "", daemon_toml=lab.etcd_toml(h3, lease_ttl=TTL, extra=extra.replace("s3cret", "nope")),
                     backend="python")
    st = wait_for("h3's refusal in its status", lambda: lab.status(h3)["control"]["last_error"], 8)
    assert not lab.status(h3)["control"]["connected"] and "authentication failed" in st.lower(), st


def test_neigh_keys_in_the_store_answer_arp_on_the_host(make_lab, backend):
    """ARP suppression fed by the store (issue 16): P/neigh/blue/<ip> = {"mac": ...} written by
    whoever knows the addresses; the daemon answers ARP for it on the host, and a MAC move in
    the store moves the answer. Then the hosts publish their own endpoints (snooped): another
    host answers for them, and a new MAC announced by the endpoint updates that answer."""
    lab = _etcd_lab(make_lab, backend, hosts=2)
    h1, h2 = lab.hosts
    a, b = h1.containers[0], h2.containers[0]
    for c in (a, b):
        assert lab.etcdctl("put", f"{PREFIX}/neigh/blue/{c.ip}", json.dumps({"mac": c.mac})).returncode == 0
    wait_for("b's neigh entry on h1", lambda: _neigh_rows(lab, h1).get(b.ip) == b.mac)
    assert lab.ping(a, b.ip).ok
    st = lab.status(h1)["networks"]["blue"]["neigh"]
    assert st["suppress_arp"] and st["counters"]["arp_suppressed"] >= 1, st
    moved = "02:42:c0:a8:00:7f"
    assert lab.etcdctl("put", f"{PREFIX}/neigh/blue/{b.ip}", json.dumps({"mac": moved})).returncode == 0
    wait_for("the moved MAC on h1", lambda: _neigh_rows(lab, h1).get(b.ip) == moved)
    assert lab.etcdctl("del", f"{PREFIX}/neigh/blue/{b.ip}").returncode == 0
    wait_for("the delete on h1", lambda: b.ip not in _neigh_rows(lab, h1))

    if backend != "c":
        return  # publishing is the control plane's (one Python code path); CI time is short
    # hosts publish their own endpoints' addresses: with snooping, b's ARP reply leaving h2's
    # TAP puts b's address in the store (h2's, on its lease) and h1 answers for it
    snoop = json.loads(NET) | {"neigh_snoop": True}
    assert lab.etcdctl("put", f"{PREFIX}/networks/blue", json.dumps(snoop)).returncode == 0
    wait_for("snooping on at h2", lambda: lab.status(h2)["networks"]["blue"]["neigh"]["snoop"])
    flush_neighbours(a.ns)
    assert lab.ping(a, b.ip).ok          # unknown at h1 now: flooded, b answers, h2 snoops it
    key = f"{PREFIX}/neigh/blue/{b.ip}"
    wait_for("b's address published by h2", lambda: _store(lab).get(key) == {"mac": b.mac, "host": h2.ip4})
    wait_for("b's published address at h1", lambda: _neigh_rows(lab, h1).get(b.ip) == b.mac)
    before = lab.status(h1)["networks"]["blue"]["neigh"]["counters"]["arp_suppressed"]
    flush_neighbours(a.ns)
    assert lab.ping(a, b.ip).ok
    assert lab.status(h1)["networks"]["blue"]["neigh"]["counters"]["arp_suppressed"] > before
    # b comes back with another MAC and announces it (gratuitous ARP): the answer follows
    new = "02:42:c0:a8:00:7d"
    with netns.ipr(b.ns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], address=new)
    garp = ("from scapy.all import ARP, Ether, sendp; "
            f"sendp(Ether(src='{new}', dst='ff:ff:ff:ff:ff:ff') / ARP(op=2, hwsrc='{new}', psrc='{b.ip}', "
            f"hwdst='ff:ff:ff:ff:ff:ff', pdst='{b.ip}'), iface='eth0', verbose=False)")
    assert lab.run(b.ns, [sys.executable, "-c", garp]).returncode == 0
    wait_for("the new MAC in the store", lambda: _store(lab).get(key) == {"mac": new, "host": h2.ip4})
    wait_for("the new MAC answered at h1", lambda: _neigh_rows(lab, h1).get(b.ip) == new)
    flush_neighbours(a.ns)
    assert lab.ping(a, b.ip).ok


def _neigh_rows(lab: Lab, h: Host) -> dict[str, str]:
    r = lab.run(h.ns, [sys.executable, "-m", "vxlan_dp", "fdb", "blue", "--neigh", "--json",
                       "--socket", h.socket_path])
    return {row["ip"]: row["mac"] for row in json.loads(r.stdout or "[]")} if r.returncode == 0 else {}


def _ping_load(src: Container, dst: str) -> subprocess.Popen[str]:
    return netns.popen(src.ns, ["ping", "-n", "-i", "0.01", "-W", "2", dst], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)


def _ping_end(p: subprocess.Popen[str]) -> tuple[int, list[int], str]:
    """(requests judged, their sequence numbers that got no reply) of a load ping stopped now.
    ping's own summary counts the requests still in flight at the interrupt as lost; those
    after the last reply are not judged (bounded: at most 50, half a second at 10 ms)."""
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    m = re.search(r"(\d+) packets transmitted", out)
    assert m, out
    seqs = {int(x) for x in re.findall(r"bytes from .* icmp_seq=(\d+)", out)}
    assert seqs and int(m.group(1)) - max(seqs) <= 50, out[-300:]
    return max(seqs), sorted(set(range(1, max(seqs) + 1)) - seqs), out


def _logged_at(h: Host, pattern: str) -> datetime.datetime:
    """When `h`'s daemon first logged a line matching `pattern` (the logs' asctime, to the ms)."""
    for line in open(h.log_path, errors="replace"):
        if re.search(pattern, line):
            return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"{h.name} never logged {pattern!r}")


def _enc(lab: Lab, h: Host) -> dict[str, Any]:
    return lab.status(h)["networks"].get("blue", {}).get("encryption") or {}


def test_encrypted_network_keyed_by_the_store_rotates_under_load(make_lab):
    """Issue 14's etcd path, one lab (C backend): keys live in the store (the first put by
    `vxlan-dp keys rotate` itself, while the network waits for it); the three daemons install them,
    acknowledge them in their
    member values and warn that the store is reached without TLS. Under ping load,
    `vxlan-dp keys rotate blue` from host 1 puts key 2, every host installs it, then sends with
    it once every member acknowledged it, and key 1 is retired: 0 lost, all on key 2. Then
    `rekey_interval` on the store's definition: exactly one host (the lowest address) makes each
    new key, still 0 lost. No key material in any log, status or output."""
    c_backend()
    lab = make_lab(3)
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu() - ESP_EXTRA)
    lab.settle()
    lab.add_etcd_host()
    h1, h2, h3 = lab.hosts
    net = {"vni": 42, "encap": "vxlan", "port": 4789, "encrypt": True}
    assert lab.etcdctl("put", f"{PREFIX}/networks/blue", json.dumps(net)).returncode == 0
    cfg = f"{lab.workdir}/keys.toml"
    with open(cfg, "w") as f:
        f.write(lab.etcd_toml(h1))

    def rotate() -> subprocess.CompletedProcess[str]:
        return lab.run(h1.ns, [sys.executable, "-m", "vxlan_dp", "keys", "rotate", "blue", "-c", cfg,
                               "--grace", "15"], timeout=40)
    for h in lab.hosts:
        _start(lab, h, "c")
    # no key in the store yet: the network waits rather than run in the clear
    assert "holds no key yet" in lab.status(h1)["control"]["problems"]["blue"]
    assert "blue" not in lab.status(h1)["networks"]
    first = rotate()
    assert first.returncode == 0 and "key 1 put in the store" in first.stdout, first.stdout + first.stderr
    assert "without TLS" in first.stdout
    key1 = _store(lab)[f"{PREFIX}/keys/blue/1"]["key"]
    for h in lab.hosts:
        wait_for(f"{h.name} acknowledges key 1", lambda h=h: _store(lab).get(f"{PREFIX}/members/blue/{h.ip4}", {})
                 .get("keys") == [1], 5)
    a, b, c = (h.containers[0] for h in lab.hosts)
    _all_ping(lab)

    load = [_ping_load(a, b.ip), _ping_load(c, a.ip)]
    time.sleep(0.3)
    r = rotate()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "key 2 put in the store" in r.stdout and "3 members send with key 2; keys 1 retired" in r.stdout, r.stdout
    for h in lab.hosts:
        wait_for(f"{h.name} holds key 2 only", lambda h=h: _enc(lab, h) == {"cipher": "aes-256-gcm",
                                                                            "key_ids": [2], "send_key": 2}, 5)
        log = open(h.log_path, errors="replace").read()
        assert re.search(r"WARNING etcd http://\S+ is reached without TLS and the encryption keys of network\(s\) "
                         "blue come from it", log), log
    # the acknowledgements at work: no host sent with key 2 before every host had installed it
    installed = max(_logged_at(h, r"keys 1 2 installed") for h in lab.hosts)
    sending = min(_logged_at(h, r"installed, sending with key 2") for h in lab.hosts)
    assert installed <= sending, (installed, sending)
    assert f"{PREFIX}/keys/blue/1" not in _store(lab)
    key2 = _store(lab)[f"{PREFIX}/keys/blue/2"]["key"]

    # automatic rotation, on the store's definition: no restart (the pings go on)
    assert lab.etcdctl("put", f"{PREFIX}/networks/blue", json.dumps(net | {"rekey_interval": 2})).returncode == 0
    wait_for("an automatic rotation to key 3, key 2 retired",   # (key 4 may follow 2 s later)
             lambda: all(2 not in ids and max(ids) >= 3 for ids in (_enc(lab, h).get("key_ids") or [0]
                                                                    for h in lab.hosts)), 12)
    assert lab.etcdctl("put", f"{PREFIX}/networks/blue", json.dumps(net)).returncode == 0
    for p in load:
        sent, lost, out = _ping_end(p)
        assert sent > 150 and lost == [], (lost, out[-300:])
    drivers = [h.name for h in lab.hosts if "automatic rotation" in open(h.log_path, errors="replace").read()]
    assert drivers == [h1.name], drivers      # the lowest member address, and only it
    now = next(v["key"] for k, v in _store(lab).items() if k.startswith(f"{PREFIX}/keys/blue/"))
    said = first.stdout + first.stderr + r.stdout + r.stderr
    for h in lab.hosts:
        seen = open(h.log_path, errors="replace").read() + json.dumps(lab.status(h)) + said
        assert key1[:16] not in seen and key2[:16] not in seen and now[:16] not in seen
        drops = {k: v for k, v in lab.status(h)["endpoints"][0]["counters"].items() if k.startswith("drop_") and v}
        assert drops == {}, (h.name, drops)
