"""`vxlan-dp demo`: build the lab, start one daemon per host, ping everything, show counters.

With `control="etcd"` the lab gets an etcd server on a host of its own; the network is declared
once in the store and each daemon's config holds only the store's endpoint and its own address.
With `encrypt=True` the overlay is ESP in UDP under a key file the demo generates (mode 0600).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TextIO

from ..keyman import new_key_file
from ..wire.esp import ESP_EXTRA
from .lab import Lab, LabError

__all__ = ["run_demo"]


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)), file=out)
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths), file=out)


def run_demo(hosts: int = 2, *, port: int | None = None, encap: str = "vxlan", ipv6: bool = False,
             keep: bool = False, backend: str | None = None, containers: int = 2,
             control: str = "static", encrypt: bool = False, tx_csum_off: bool = False,
             out: TextIO = sys.stdout) -> int:
    if encrypt and (encap == "gre" or control == "etcd"):
        print("demo --encrypt: ESP in UDP needs --encap vxlan or gre-udp, and keys come from files "
              "(--control static)", file=out)
        return 2
    lab = Lab(hosts, ipv6=ipv6, tx_csum_off=tx_csum_off)
    ok = False
    try:
        t0 = time.monotonic()
        lab.build()
        mtu = lab.overlay_mtu(encap) - (ESP_EXTRA if encrypt else 0)
        extra = ""
        if encrypt:         # one key file for every lab host: what copying it to each gives
            key_file = os.path.join(lab.workdir, "overlay.key")
            new_key_file(key_file, 1)
            extra = f'encrypt = true\nkey_file = "{key_file}"'
        for h in lab.hosts:
            for _ in range(containers):
                lab.add_container(h, mtu=mtu)
        lab.settle()
        where = "" if encap == "gre" else f" port {port or (4754 if encap == 'gre-udp' else 4789)}"
        print(f"lab {lab.sfx}: {hosts} hosts, {hosts * containers} containers, {encap}{where}, "
              f"underlay {'IPv6' if ipv6 else 'IPv4'}"
              f"{' (tx checksum offload off)' if tx_csum_off else ''}, overlay MTU {mtu}"
              + (f", encrypted (ESP in UDP, AES-256-GCM, generated key file {extra.split(chr(34))[1]})"
                 if encrypt else ""), file=out)
        if control == "etcd":
            _store_up(lab, encap, port, out)
        for h in lab.hosts:
            if control == "etcd":
                lab.start_daemon(h, "", daemon_toml=lab.etcd_toml(h), backend=backend)
            else:
                lab.start_daemon(h, lab.network_toml(h, encap=encap, port=port, extra=extra), backend=backend)
            st = lab.status(h)
            print(f"  {h.name} ({h.address(ipv6)}): vxlan-dp pid {st['pid']}, {st['backend']} backend, "
                  f"containers " + ", ".join(f"{c.name}={c.ip}" for c in h.containers), file=out)
        if control == "etcd":
            _wait_for_members(lab, out)
        print(f"lab up in {time.monotonic() - t0:.1f}s; pinging every container from every other host ...", file=out)
        results = lab.ping_all(count=3)
        rows = [["from", "to", "sent", "recv", "avg rtt", "result"]]
        for r in results:
            rows.append([r.src, r.dst, str(r.sent), str(r.received),
                         f"{r.avg_ms:.3f} ms" if r.avg_ms is not None else "-", "ok" if r.ok else "FAIL"])
        _table(rows, out)
        print("per-network counters:", file=out)
        crow = [["host", "network", "tap->tx", "tx pkts", "flood", "rx pkts", "rx->tap", "fdb", "drops"]]
        for h in lab.hosts:
            for name, n in lab.status(h)["networks"].items():
                c = n["counters"]
                drops = {k[5:]: v for k, v in c.items() if k.startswith("drop_") and v}
                crow.append([h.name, name, str(c["tap_rx_frames"]), str(c["tx_packets"]),
                             str(c["flood_copies"]), str(c["rx_packets"]), str(c["tap_tx_frames"]),
                             str(len(n["fdb"])), ", ".join(f"{k}={v}" for k, v in drops.items()) or "0"])
        _table(crow, out)
        if encrypt:
            erow = [["host", "cipher", "keys", "send key", "esp drops"]]
            for h in lab.hosts:
                st = lab.status(h)
                enc = st["networks"]["blue"]["encryption"] or {}
                eds = {k[5:]: v for e in st["endpoints"] for k, v in e["counters"].items()
                       if k.startswith("drop_esp") and v}
                erow.append([h.name, str(enc.get("cipher")), " ".join(map(str, enc.get("key_ids", []))),
                             str(enc.get("send_key")), ", ".join(f"{k}={v}" for k, v in eds.items()) or "0"])
            _table(erow, out)
        if control == "etcd":
            _show_store(lab, out)
        ok = all(r.ok for r in results) and bool(results)
        good = sum(r.ok for r in results)
        print(f"{good}/{len(results)} container pairs reached each other across the overlay: "
              f"{'PASS' if ok else 'FAIL'}", file=out)
        if keep:
            print(f"--keep: lab left up; namespaces {lab.ul_ns.rsplit('-', 1)[0]}-*, remove with "
                  f"`vxlan-dp lab clean`", file=out)
    except (LabError, OSError) as e:
        print(f"demo failed: {e}", file=out)
    finally:
        if not keep:
            lab.close()
    return 0 if ok else 1



def _store_up(lab: Lab, encap: str, port: int | None, out: TextIO) -> None:
    """etcd on its own lab host, and the one network declared in it."""
    t0 = time.monotonic()
    lab.add_etcd_host()
    net: dict[str, object] = {"vni": 42, "encap": encap}
    if port is not None and encap != "gre":
        net["port"] = port
    r = lab.etcdctl("put", "/vxlan-dp/networks/blue", json.dumps(net))
    if r.returncode != 0:
        raise LabError(f"etcdctl put failed: {r.stderr.strip()}")
    print(f"  etcd ({lab.etcd_endpoint}) up in {time.monotonic() - t0:.1f}s; declared "
          f"/vxlan-dp/networks/blue = {json.dumps(net)}; each host's config: the endpoint and its address",
          file=out)


def _wait_for_members(lab: Lab, out: TextIO, timeout: float = 10.0) -> None:
    """Until every daemon has every other host in its flood list (bounded)."""
    t0 = time.monotonic()
    want = len(lab.hosts) - 1
    while time.monotonic() - t0 < timeout:
        if all(len(lab.status(h)["networks"].get("blue", {}).get("peers", [])) == want for h in lab.hosts):
            print(f"  every host found the {want} others through the store in {time.monotonic() - t0:.1f}s",
                  file=out)
            return
        time.sleep(0.1)
    print(f"  not every host found the others within {timeout:.0f}s", file=out)


def _show_store(lab: Lab, out: TextIO) -> None:
    r = lab.etcdctl("get", "--prefix", "--keys-only", "/vxlan-dp/")
    keys = [k for k in r.stdout.splitlines() if k]
    members = [k.rsplit("/", 1)[1] for k in keys if "/members/" in k]
    fdb = [k for k in keys if "/fdb/" in k]
    print(f"the store: {len(keys)} keys; members of blue: {', '.join(members)}; {len(fdb)} MACs published",
          file=out)
    for h in lab.hosts:
        c = lab.status(h)["control"]
        print(f"  {h.name}: control {c['backend']} {'connected' if c['connected'] else 'DISCONNECTED'}, "
              f"{c.get('claimed_macs', 0)} local MACs published, {c.get('store_keys', 0)} keys known", file=out)
