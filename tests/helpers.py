"""What several test files share: the CI rule, frame and packet builders, waiting, captures.

The CI rule (tests/conftest.py's docstring): under CI=true a test that cannot run (no root, a
tool missing, the C backend not built) fails instead of skipping, so that CI proves the data
plane rather than quietly passing without it. `require()` is that rule, the one copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vxlan_dp.wire import encode_vxlan

__all__ = ["ones_sum", "CI", "SCRIPTS", "require", "need_tool", "c_backend", "both_impls", "mac", "eth_frame",
           "vxlan_payload",
           "wait_for", "until", "tshark_capture",
           "lab_with_daemons", "in_private_netns"]

CI = os.environ.get("CI", "").lower() == "true"
SCRIPTS = Path(__file__).resolve().parent / "scripts"   # programs tests run in a namespace or child


def in_private_netns(script: str, *args: str, timeout: float = 60) -> Any:
    """Run SCRIPTS/`script` with this Python in a network namespace of its own (`unshare -n`:
    it goes with the process, nothing to clean up); the JSON it prints, or fail with its stderr."""
    proc = subprocess.run(["unshare", "-n", sys.executable, str(SCRIPTS / script), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def require(missing: str | None, *, module: bool = False, elsewhere: str = "skip") -> None:
    """Nothing if `missing` is empty; else fail under CI=true and skip elsewhere, saying why.

    `module=True` where it is called at import time, to skip (or fail) the whole module;
    `elsewhere="run"` where the test can still do part of its job without the thing (only CI
    insists on it)."""
    if not missing:
        return
    if CI:
        pytest.fail(f"CI=true and {missing}", pytrace=False)
    if elsewhere == "skip":
        pytest.skip(missing, allow_module_level=module)


def need_tool(name: str, package: str, *, module: bool = False) -> str:
    """The path of program `name`; if it is missing, `require` says which Debian package has it."""
    path = shutil.which(name)
    require(None if path else f"{name} is missing (apt-get install {package})", module=module)
    assert path is not None
    return path


def c_backend(*, module: bool = False, elsewhere: str = "skip") -> Any:
    """The C backend's Dataplane class (None where it is not built and `elsewhere="run"`);
    CI has a compiler, so a missing build fails there."""
    from vxlan_dp.fastpath import backends

    cls = backends().get("c")
    require(None if cls else "the C fast path is not built (pip install -e .)", module=module,
            elsewhere=elsewhere)
    return cls


def both_impls(reference: Any) -> Any:
    """A fixture `impl`, run once as `reference` (a pure-Python module of vxlan_dp.wire) and once
    as the C module that mirrors it (vxlan_dp.fastpath._c); in a test file: `impl = both_impls(W)`."""
    @pytest.fixture(params=["python", "c"], name="impl")
    def impl(request: pytest.FixtureRequest) -> Any:
        if request.param == "python":
            return reference
        c_backend()         # not built: skip here, fail under CI=true
        from vxlan_dp.fastpath import _c
        return _c
    return impl


# --- frames and packets ------------------------------------------------------------------------

def mac(text: str) -> bytes:
    """"02:00:00:00:00:0a" -> its 6 bytes."""
    return bytes.fromhex(text.replace(":", ""))


def eth_frame(dst: str | bytes, src: str | bytes, size: int = 64, *, tag: int = 0, vlan: bool = False) -> bytes:
    """A frame of exactly `size` bytes (truncated where that is shorter than a header): the MACs (text or bytes), an 802.1Q tag (VLAN 7)
    if `vlan`, the IPv4 ethertype, `tag` in two bytes (to tell frames apart), then a counting fill."""
    d = mac(dst) if isinstance(dst, str) else dst
    s = mac(src) if isinstance(src, str) else src
    hdr = d + s + (b"\x81\x00\x00\x07\x08\x00" if vlan else b"\x08\x00") + struct.pack("!H", tag)
    return (hdr + bytes(i & 0xFF for i in range(max(0, size - len(hdr)))))[:size]   # short: truncated


def vxlan_payload(vni: int, inner: bytes) -> bytes:
    """The UDP payload carrying `inner` in VNI `vni` (RFC 7348: I flag set, reserved bits zero)."""
    return encode_vxlan(vni) + inner


# --- waiting -----------------------------------------------------------------------------------

def until(cond: Callable[[], Any], timeout: float, step: float = 0.1) -> bool:
    """Whether `cond()` turned true within `timeout` seconds (asked at least once, and once more
    at the deadline, so a slow machine is not failed by the last sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 10.0, step: float = 0.1) -> Any:
    """`probe()`'s first truthy answer within `timeout` seconds; else fail naming `what` and the
    last answer."""
    last: list[Any] = [None]

    def ask() -> Any:
        last[0] = probe()
        return last[0]
    if until(ask, timeout, step):
        return last[0]
    raise AssertionError(f"{what}: not within {timeout}s (last: {last[0]!r})")


# --- captures ----------------------------------------------------------------------------------

@contextmanager
def tshark_capture(ns: str, ifname: str, bpf: str, pcap: str, *, duration: int = 30, count: int | None = None,
                   check: bool = False) -> Iterator[None]:
    """tshark on `ifname` inside namespace `ns` for the duration of the block, into `pcap`;
    bounded by `duration` seconds (and `count` packets). `check`: tshark must exit 0."""
    from vxlan_dp.lab import netns

    tshark = need_tool("tshark", "tshark")
    argv = [tshark, "-n", "-i", ifname, "-f", bpf, "-a", f"duration:{duration}"]
    argv += ["-c", str(count)] if count else []
    p = netns.popen(ns, argv + ["-w", pcap], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        assert p.stderr is not None
        for line in p.stderr:   # "Capture started" comes once dumpcap really captures
            seen.append(line)
            if "Capture started" in line:
                break
        else:
            pytest.fail("tshark did not start capturing:\n" + "".join(seen))
        yield
        # dumpcap hands packets on per ring block, retired every 250 ms (CAP_READ_TIMEOUT in
        # dumpcap.c); an interrupt before then loses the last block, so let it retire first
        time.sleep(1.0)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        if check:
            assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


# --- labs --------------------------------------------------------------------------------------

def lab_with_daemons(make_lab: Callable[..., Any], backend: str, hosts: int = 2, *, encap: str = "vxlan",
                     ipv6: bool = False, daemon_toml: Callable[[int], str] | str = '[daemon]\nmetrics = ""\n',
                     **network: Any) -> Any:
    """The usual lab: `hosts` hosts with one container each (the overlay MTU of `encap`),
    settled, then a daemon on every host with the lab's network for it (`network`: network_toml's
    keywords, e.g. port, vni) and `daemon_toml` (text, or a function of the host's position)."""
    lab = make_lab(hosts, ipv6=ipv6)
    for h in lab.hosts:
        lab.add_container(h, mtu=lab.overlay_mtu(encap))
    lab.settle()
    for i, h in enumerate(lab.hosts):
        lab.start_daemon(h, lab.network_toml(h, encap=encap, **network), backend=backend,
                         daemon_toml=daemon_toml(i) if callable(daemon_toml) else daemon_toml)
    return lab


def flush_neighbours(ns: str) -> None:
    """Empty the ARP / ND cache of a lab container's eth0 (its next packet asks again)."""
    from vxlan_dp.lab import netns

    with netns.ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        for n in ipr.get_neighbours(ifindex=idx):
            ipr.neigh("del", ifindex=idx, dst=n.get("NDA_DST"))


def ones_sum(data: bytes) -> int:
    """The folded 16-bit ones'-complement sum of `data` (RFC 1071), an odd byte padded with zero:
    the tests' own model of what a sender puts in a partial checksum field."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s
