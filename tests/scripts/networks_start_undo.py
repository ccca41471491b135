"""Run by tests/netns/test_start_undo.py inside `unshare -n`: `Networks.start` with two queues
(a real two-queue TAP, two SO_REUSEPORT endpoint sockets) on the backend named in argv[1], made
to fail after the network is in the Dataplane: in `set_tap_queue` (queue 1's fd refused), in
applying the control plane's peers, and encrypted with no key to install. After each failure, what is left: whether the
Dataplane still knows the network and its endpoint, whether the TAP link and any fd of it or of
the endpoint is still open; then the same network started for real; its TAP deleted and the
first one made again refused by the fast path (recovery tries again); stopped, and every fd of
ours closed. Prints JSON.
"""

import asyncio
import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

from pyroute2 import IPRoute

from vxlan_dp.config import parse_config
from vxlan_dp.control import Desired
from vxlan_dp.datapath.offload import OffloadPlan
from vxlan_dp.fastpath import backends
from vxlan_dp.networks import Networks

TAP = "vxdpundo0"
CFG = parse_config(f"""
[[network]]
name = "blue"
vni = 42
local = "127.0.0.1"
port = 4789
tap = "{TAP}"
mtu = 1400
peers = ["127.0.0.2"]
""").networks[0]
DESIRED = Desired(("127.0.0.2",), ())


def fds() -> dict[int, str]:
    out = {}
    for n in os.listdir("/proc/self/fd"):
        try:
            out[int(n)] = os.readlink(f"/proc/self/fd/{n}")
        except FileNotFoundError:       # the listing's own fd
            pass
    return out


def tap_link() -> bool:
    with IPRoute() as ipr:      # off the loop's thread: pyroute2's sync API runs a loop of its own
        return bool(ipr.link_lookup(ifname=TAP))


def known(fn, handle) -> bool:
    try:
        fn(handle)
        return True
    except KeyError:
        return False


class Log(logging.Handler):
    """What the daemon logs (INFO and up; an error's message starts with "ERROR ")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(("ERROR " if record.levelno >= logging.ERROR else "") + record.getMessage())


async def recover_through_a_refusal(dp, nets, net, log) -> dict[str, object]:
    """The running network's TAP is deleted; the first TAP made again has queue 1's fd refused
    by the fast path. The next one, a second later, must be taken and pumped."""
    real = dp.set_tap_queue
    refusals = []

    def refused_once(*a, **kw):
        if not refusals:
            refusals.append(a)
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real(*a, **kw)

    dp.set_tap_queue = refused_once
    await asyncio.to_thread(delete_tap)
    said_back = await until(lambda: f"network blue: TAP {TAP} is back" in log.messages, 5)
    del dp.set_tap_queue
    back = said_back and net.tap is not None and net.recovering is None
    rx = dp.counters(net.handle)["tap_rx_frames"]
    if back:                        # a frame sent through the TAP is read by a pump
        await asyncio.to_thread(send_through_tap)
        await until(lambda: dp.counters(net.handle)["tap_rx_frames"] > rx, 2)
    return {"refusals": len(refusals), "back": back,
            "said": [m for m in log.messages if "ERROR " in m and "is back" in m],
            "tun_fds": sum(t == "/dev/net/tun" for t in fds().values()),
            "pumped": dp.counters(net.handle)["tap_rx_frames"] - rx}


async def until(cond, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


def delete_tap() -> None:
    with IPRoute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=TAP)[0])


def send_through_tap() -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as pkt:
        pkt.bind((TAP, 0))
        pkt.send(b"\xff" * 6 + bytes.fromhex("02000000000a") + b"\x08\x00" + bytes(50))


async def main() -> dict[str, object]:
    log = Log()
    logging.getLogger("vxlan_dp").addHandler(log)
    logging.getLogger("vxlan_dp").setLevel(logging.INFO)
    dp = backends()[sys.argv[1]](batch=8)
    nets = Networks(dp, OffloadPlan(), queues=2)
    before = fds()
    handles: dict[str, list[int]] = {"net": [], "ep": []}
    real_add_network, real_add_endpoint = dp.add_network, dp.add_endpoint

    def add_network(*a, **kw):
        handles["net"].append(real_add_network(*a, **kw))
        return handles["net"][-1]

    def add_endpoint(*a, **kw):
        handles["ep"].append(real_add_endpoint(*a, **kw))
        return handles["ep"][-1]

    def refused(*a, **kw):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    dp.add_network, dp.add_endpoint = add_network, add_endpoint
    out: dict[str, object] = {}
    for where in ("set_tap_queue", "set_peers", "keys"):
        if where == "keys":         # encrypted, keyed by the store, which has none yet
            cfg = replace(CFG, encrypt=True, key_file=None)
        else:
            cfg = CFG
            setattr(dp, where, refused)
        try:
            nets.start(cfg, DESIRED)
            raised = None
        except Exception as e:      # noqa: BLE001 - reported to the test
            raised = f"{type(e).__name__}: {e}"
        if where != "keys":
            delattr(dp, where)      # the backend's own method again
        now = fds()
        link = await asyncio.to_thread(tap_link)
        out[where] = {
            "raised": raised,
            "dp_knows_network": known(dp.counters, handles["net"][-1]),
            "dp_knows_endpoint": known(dp.endpoint_counters, handles["ep"][-1]),
            "running": "blue" in nets, "endpoints": len(nets.endpoints()), "tap_link": link,
            "tun_fds": sum(t == "/dev/net/tun" for t in now.values()),
            # new sockets beyond the egress sockets Networks keeps until close()
            "sockets": sum(t.startswith("socket:") for n, t in now.items() if n not in before)
            - len(nets.tx_versions()),
        }
    try:
        nets.start(CFG, DESIRED)    # nothing in the way: it starts
        raised = None
    except Exception as e:          # noqa: BLE001 - reported to the test
        raised = f"{type(e).__name__}: {e}"
    net = nets.get("blue")
    out["again"] = {"raised": raised, "running": net is not None and known(dp.counters, net.handle),
                    "peers": dp.peers(net.handle) if net is not None else None}
    if net is not None:
        out["recovery"] = await recover_through_a_refusal(dp, nets, net, log)
    nets.close()
    out["left_open"] = sorted(t for n, t in fds().items() if n not in before)
    out["undo_errors"] = [m for m in log.messages if "undoing" in m]
    return out


subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
print(json.dumps(asyncio.run(main())))
