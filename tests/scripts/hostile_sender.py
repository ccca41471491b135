"""Run by tests/netns/test_hostile.py in the attacker's namespace: streams of precomputed packets
paced by sendmmsg(2), counting exactly how many copies the kernel accepted (JSON on stdin and stdout)."""

import ctypes, json, random, socket, struct, sys, time
spec = json.load(sys.stdin)
libc = ctypes.CDLL(None, use_errno=True)

class IOV(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

class MSGHDR(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p),
                ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]

class MMSG(ctypes.Structure):
    _fields_ = [("hdr", MSGHDR), ("len", ctypes.c_uint)]

BATCH = 64
keep = []

def sock(kind, bind):
    if kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((bind, 0))
    elif kind == "gre":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
        s.bind((bind, 0))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    keep.append(s)
    return s

def sockaddr(ip, port):
    sa = ctypes.create_string_buffer(struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
                                     + socket.inet_aton(ip) + bytes(8), 16)
    keep.append(sa)
    return sa

streams = []
for st in spec["streams"]:
    s = sock(st["kind"], st["bind"])
    sa = sockaddr(st["dst"], st.get("port", 0))
    ring = [i for i, w in enumerate(st["weights"]) for _ in range(w)]
    random.Random(7).shuffle(ring)
    bufs = [ctypes.create_string_buffer(bytes.fromhex(t), max(1, len(t) // 2)) for t in st["templates"]]
    keep.extend(bufs)
    iovs = (IOV * len(bufs))()
    for i, b in enumerate(bufs):
        iovs[i].base = ctypes.addressof(b)
        iovs[i].len = len(st["templates"][i]) // 2
    msgs = (MMSG * len(ring))()
    for k, i in enumerate(ring):
        m = msgs[k].hdr
        m.name, m.namelen = ctypes.addressof(sa), 16
        m.iov, m.iovlen = ctypes.addressof(iovs) + i * ctypes.sizeof(IOV), 1
    keep.extend([iovs, msgs])
    streams.append({"fd": s.fileno(), "ring": ring, "msgs": msgs, "pos": 0, "left": st["total"],
                    "counts": [0] * len(bufs)})

rate = spec["rate"]
start = time.monotonic()
sent = 0
errors = 0
while any(st["left"] for st in streams):
    for st in streams:
        k = min(BATCH, st["left"], len(st["ring"]) - st["pos"])
        if not k:
            continue
        n = libc.sendmmsg(st["fd"], ctypes.byref(st["msgs"], st["pos"] * ctypes.sizeof(MMSG)), k, 0)
        if n < 0:
            errors += 1
            time.sleep(0.001)
            continue
        for i in st["ring"][st["pos"]:st["pos"] + n]:
            st["counts"][i] += 1
        st["pos"] = (st["pos"] + n) % len(st["ring"])
        st["left"] -= n
        sent += n
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
raw = sock("raw", None)
once = 0
for p in spec["once"]:
    raw.sendto(bytes.fromhex(p), (spec["once_dst"], 0))
    once += 1
    if once % 200 == 0:
        time.sleep(0.01)
print(json.dumps({"counts": [st["counts"] for st in streams], "once": once, "errors": errors,
                  "seconds": time.monotonic() - start}))
