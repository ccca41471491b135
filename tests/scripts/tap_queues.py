"""Run by tests/netns/test_queues.py inside `unshare -n`: a real two-queue TAP (datapath/tap.py,
queues=2) and a two-queue Dataplane of the backend named in argv[1]. The kernel hands a frame
sent through the TAP to one of its enabled queues; detaching one queue (TUNSETQUEUE,
IFF_DETACH_QUEUE, linux/if_tun.h) makes the other the only choice, so each queue in turn is
fed a frame on purpose. First, a single-queue TAP of the same name is left in the way, as a
daemon run with `queues = 1` leaves it: it must be made again with two queues. Prints JSON: per queue, what that queue's pump returned and the VXLAN
payload the peer socket received; then the network's counters.
"""

import fcntl
import json
import select
import socket
import struct
import subprocess
import sys
import time

from pyroute2 import IPRoute

from vxlan_dp.datapath.tap import Tap
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.linux import ETH_P_ALL

TUNSETQUEUE = 0x400454D9            # _IOW('T', 217, int)
IFF_ATTACH_QUEUE, IFF_DETACH_QUEUE = 0x0200, 0x0400


def queue_ctl(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, TUNSETQUEUE, struct.pack("16sH", b"", flags))


subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
    f.write("1")                    # no RS/MLD frames on the TAP: only ours
# a single-queue TAP left under the name (a daemon that ran with queues = 1): made again
with IPRoute() as ipr:
    ipr.link("add", ifname="vxdpq0", kind="tuntap", mode="tap")
    old_index = ipr.link_lookup(ifname="vxdpq0")[0]
tap = Tap.open("vxdpq0", 1400, queues=2)
fds = tap.fds
with IPRoute() as ipr:
    link = ipr.get_links(ipr.link_lookup(ifname="vxdpq0")[0])[0]
    remade = {"old_index": old_index, "index": link["index"],
              "queues": link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_TUN_NUM_QUEUES")}
dp = backends()[sys.argv[1]](batch=8)
dp.set_queues(2)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
for s in rx:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 4789))
    s.setblocking(False)
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind(("127.0.0.2", 4789))
dp.set_tx_socket(4, tx.fileno())
ep = dp.add_endpoint("vxlan", rx[0].fileno())
dp.set_endpoint_queue(ep, 1, rx[1].fileno())
net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="127.0.0.1", port=4789), ep, fds[0])
dp.set_tap_queue(net, 1, fds[1])
dp.set_peers(net, ["127.0.0.2"])
pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
pkt.bind(("vxdpq0", 0))

out: dict[str, object] = {"remade": remade}
for q in (1, 0):
    other = fds[1 - q]
    queue_ctl(other, IFF_DETACH_QUEUE)          # the kernel can only pick queue q now
    frame = b"\xff" * 6 + bytes.fromhex("02000000000a") + b"\x08\x00" + bytes([q]) * 50
    pkt.send(frame)
    moved = 0
    deadline = time.monotonic() + 2
    while not moved and time.monotonic() < deadline:
        select.select([fds[q]], [], [], 0.2)
        moved = dp.pump_tap(net, time.monotonic(), q)
    got = peer.recv(2000).hex() if select.select([peer], [], [], 2)[0] else ""
    queue_ctl(other, IFF_ATTACH_QUEUE)
    out[f"queue{q}"] = {"pumped": moved, "payload": got, "frame": frame.hex()}
out["counters"] = dp.counters(net)
print(json.dumps(out))
