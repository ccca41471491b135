"""Run by tests/unit/test_fastpath_c.py inside `unshare -n`: both backends' pumps on a real TAP and
raw sockets; prints each backend's results and counters as JSON for the test to compare."""

import fcntl, json, os, select, socket, struct, subprocess
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.linux import ETH_P_ALL, IFF_NO_PI, IFF_TAP, TUNSETIFF
from vxlan_dp.wire import encapsulate, flow_hash, source_port

def sh(*cmd):
    subprocess.run(cmd, check=True)

sh("ip", "link", "set", "lo", "up")
with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
    f.write("1")                                    # no RS/MLD noise on the TAP
for a in ("198.18.0.1/32", "198.18.0.2/32"):
    sh("ip", "addr", "add", a, "dev", "lo")
for a in ("2001:2::1/128", "2001:2::2/128"):
    sh("ip", "-6", "addr", "add", a, "dev", "lo", "nodad")
tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"vxdp0", IFF_TAP | IFF_NO_PI))
sh("ip", "link", "set", "vxdp0", "up")
pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
pkt.bind(("vxdp0", 0))
pkt.setblocking(False)

def drain_tap():
    while True:
        try:
            os.read(tun, 70000)
        except BlockingIOError:
            return

def wait(sock, n, t=2.0):
    got = []
    while len(got) < n and select.select([sock], [], [], t)[0]:
        data, addr = sock.recvfrom(70000)
        if sock is pkt and addr[2] == socket.PACKET_OUTGOING:
            continue
        if sock.type == socket.SOCK_RAW and sock.family == socket.AF_INET:
            # IP_HDRINCL: the kernel picks the Identification (we send 0) and so rewrites
            # the header checksum (raw(7)); compare from the GRE header on
            data = data[(data[0] & 15) * 4:]
        got.append((data.hex(), addr[1] if sock.family != socket.AF_PACKET else 0))
    return got

def frame(dst, i, src="02000000000a"):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i, 0, 64, 17, 0, bytes([192, 168, 0, 1]),
                     bytes([192, 168, 0, 2])) + struct.pack("!HHHH", 1000 + i, 53, 20, 0)
    return bytes.fromhex(dst) + bytes.fromhex(src) + b"\x08\x00" + ip + bytes(12)

def run(cls, kind, fam, unroutable=()):
    local, remote = ("198.18.0.1", "198.18.0.2") if fam == 4 else ("2001:2::1", "2001:2::2")
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    port = 4789 if kind == "vxlan" else 4754
    if kind == "gre":
        ep_sock = socket.socket(af, socket.SOCK_RAW, 47)
        ep_sock.bind((local, 0))
        far = socket.socket(af, socket.SOCK_RAW, 47)
        far.bind((remote, 0))
    else:
        ep_sock = socket.socket(af, socket.SOCK_DGRAM)
        ep_sock.bind((local, port))
        far = socket.socket(af, socket.SOCK_DGRAM)
        far.bind((remote, port))
    ep_sock.setblocking(False)
    tx = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
    tx.setblocking(False)
    dp = cls(batch=8)
    dp.set_tx_socket(fam, tx.fileno())
    ep = dp.add_endpoint(kind, ep_sock.fileno(), ipv4_header=kind == "gre" and fam == 4)
    net = dp.add_network(NetworkParams(vni=42, encap=kind, local=local, port=port), ep, tun)
    dp.set_peers(net, [remote, *unroutable])
    drain_tap()
    wait(pkt, 100, 0.05)
    # egress: frames the kernel transmits on the TAP leave as outer packets to the peer
    frames = [frame("ffffffffffff", 1), frame("020000000099", 2), frame("01005e000001", 3)]
    for f in frames:
        pkt.send(f)
    n_tap = dp.pump_tap(net, 1.0)
    egress = wait(far, len(frames))
    # ingress: the peer sends encapsulated frames; they come out of the TAP, src learned
    inner = [frame("02000000000a", 10, "020000000077"), frame("ffffffffffff", 11, "020000000078")]
    iphl = 20 if fam == 4 else 40
    for f in inner:
        outer = encapsulate(kind, socket.inet_pton(af, remote), socket.inet_pton(af, local), 42, f,
                            dport=port)
        if kind == "gre":
            far.sendto(outer[iphl:], (local, 0))
        else:
            far.sendto(outer[iphl + 8:], (local, port))
    select.select([ep_sock], [], [], 2.0)
    n_ep = dp.pump_endpoint(ep, 2.0)
    delivered = wait(pkt, len(inner))
    expect_egress = []
    for f in frames:
        outer = encapsulate(kind, socket.inet_pton(af, local), socket.inet_pton(af, remote), 42, f,
                            dport=port)
        if kind == "gre":
            expect_egress.append((outer[iphl:].hex(), 0))
        else:
            expect_egress.append((outer[iphl + 8:].hex(), source_port(flow_hash(f))))
    for s in (ep_sock, far, tx):
        s.close()
    return {"n_tap": n_tap, "n_ep": n_ep, "egress": egress, "expect_egress": expect_egress,
            "delivered": [d for d, _ in delivered], "inner": [f.hex() for f in inner],
            "counters": dp.counters(net), "ep": dp.endpoint_counters(ep),
            "fdb": [list(r) for r in dp.fdb_dump(net, 2.0)]}

out = {}
for name, cls in sorted(backends().items()):
    for kind, fam in (("vxlan", 4), ("vxlan", 6), ("gre-udp", 4), ("gre-udp", 6), ("gre", 4)):
        out[f"{name}/{kind}/{fam}"] = run(cls, kind, fam)
    # every other copy of the flood has no route: sendmmsg stops at each, the batch goes on
    out[f"{name}/partial"] = run(cls, "vxlan", 4, unroutable=["198.19.9.9"])
print(json.dumps(out))
