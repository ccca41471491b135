"""Encapsulation / decapsulation micro-benchmark: C backend, Python backend and Scapy, one run.

Each case encapsulates batches of identical-size unicast frames (known destination MAC, so one
outer packet per frame) to VXLAN over IPv4, then decapsulates the results, for 64, 512 and
1400-byte frames. The C figures call the batch functions directly on preallocated buffers
(what a pump does per readiness event, minus the system calls); Python goes through the same
API it uses in the daemon; Scapy builds and dissects one packet at a time, as a harness would.
Rates are Mpps and Gbit/s of inner frames, on one core.

Encrypted rows (`c+esp aes-256-gcm`, `c+esp chacha20-poly1305`): the same C batches on an
encrypted network (ESP in UDP, csrc/esp.c), so encrypt+encap sits next to plain encap in one
run. Their decap side opens a pool of distinct sealed packets once per fresh receiver (the
anti-replay window refuses a packet seen before, so the plain rows' trick of decapsulating one
batch over and over would measure replay drops).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from ..fastpath import NetworkParams, PureDataplane, backends
from ..wire import ETH_HLEN
from .report import Progress, machine_info, write_results

__all__ = ["run_encap", "SIZES"]

SIZES = (64, 512, 1400)
BATCH = 64
LOCAL, REMOTE = "198.18.0.1", "198.18.0.2"
DST_MAC, SRC_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"


def _frame(size: int, i: int = 0) -> bytes:
    """An Ethernet/IPv4/UDP frame of `size` bytes, varying ports so flows hash differently."""
    import struct
    ip_len = size - ETH_HLEN
    eth = bytes.fromhex(DST_MAC.replace(":", "")) + bytes.fromhex(SRC_MAC.replace(":", "")) + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0, 64, 17, 0, bytes([192, 168, 0, 11]),
                     bytes([192, 168, 0, 21]))
    udp = struct.pack("!HHHH", 10000 + i, 5201, ip_len - 20, 0)
    return (eth + ip + udp).ljust(size, b"\xab")


def _timeit(fn: Callable[[], int], seconds: float) -> tuple[int, float]:
    """Call fn (which processes and returns a packet count) repeatedly for ~`seconds`."""
    fn()  # warm up
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        n += fn()
        t = time.perf_counter()
        if t >= deadline:
            return n, t - t0


def _setup(dp_cls: type) -> tuple[Any, int, int]:
    dp = dp_cls(batch=BATCH)
    ep = dp.add_endpoint("vxlan", -1)
    net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local=LOCAL, port=4789), ep)
    dp.set_peers(net, [REMOTE])
    dp.fdb_add(net, DST_MAC, REMOTE)
    return dp, ep, net


def _api_cases(dp_cls: type, size: int, seconds: float) -> dict[str, float]:
    dp, ep, net = _setup(dp_cls)
    frames = [_frame(size, i) for i in range(BATCH)]
    pkts = dp.encap(net, frames, 0.0)
    received = [(REMOTE, p[28:]) for _, p in pkts]  # what the UDP socket hands up
    enc = _timeit(lambda: len(dp.encap(net, frames, 1.0)), seconds)
    dec = _timeit(lambda: len(dp.decap(ep, received, 1.0)), seconds)
    return {"encap_pps": enc[0] / enc[1], "decap_pps": dec[0] / dec[1]}


def _c_encoder(cdp: Any, net: int, size: int, extra: int) -> tuple[Callable[[], int], Any, int, Any]:
    """BATCH frames of `size` bytes in headroomed buffers, and a call that encapsulates them all
    into `out` (each packet may grow by VXDP_HDR_MAX + `extra`): (encap, out, out_cap, out_lens)."""
    from .._fastpath import ffi, lib
    head = lib.VXDP_HEADROOM
    stride = head + size
    buf = ffi.new("uint8_t[]", stride * BATCH)
    offs = ffi.new("size_t[]", [head + i * stride for i in range(BATCH)])
    lens = ffi.new("uint32_t[]", [size] * BATCH)
    for i in range(BATCH):
        ffi.memmove(buf + head + i * stride, _frame(size, i), size)
    out_cap = (size + lib.VXDP_HDR_MAX + extra) * BATCH
    out = ffi.new("uint8_t[]", out_cap)
    out_lens = ffi.new("uint32_t[]", BATCH)

    def enc() -> int:
        return int(lib.vxdp_encap(cdp, net, buf, stride * BATCH, offs, lens, BATCH, 1.0, out, out_cap,
                                  out_lens, BATCH))
    return enc, out, out_cap, out_lens


def _c_cases(size: int, seconds: float) -> dict[str, float]:
    """The C batch functions on preallocated buffers: no Python objects per packet."""
    from .._fastpath import ffi, lib
    dp, ep, net = _setup(backends()["c"])
    cdp, cep = dp._dp, ep  # the bench drives the C handles directly
    enc, out, out_cap, out_lens = _c_encoder(cdp, net, size, 0)
    n = enc()
    assert n == BATCH, f"C encap produced {n} packets for {BATCH} frames"
    # decap input: the outer packets minus IPv4 + UDP (what the UDP socket returns)
    dbuf = ffi.new("uint8_t[]", out_cap)
    doffs = ffi.new("size_t[]", BATCH)
    dlens = ffi.new("uint32_t[]", BATCH)
    pos = src = 0
    for i in range(BATCH):
        ln = out_lens[i]
        ffi.memmove(dbuf + pos, out + src + 28, ln - 28)
        doffs[i], dlens[i] = pos, ln - 28
        pos += ln - 28
        src += ln
    srcs = ffi.new("struct vxdp_addr[]", BATCH)
    for i in range(BATCH):
        srcs[i].family = 4
        ffi.memmove(srcs[i].bytes, bytes([198, 18, 0, 2]), 4)
    out_idx = ffi.new("int32_t[]", BATCH)
    out_net = ffi.new("int32_t[]", BATCH)
    out_off = ffi.new("uint32_t[]", BATCH)
    out_len = ffi.new("uint32_t[]", BATCH)

    def dec() -> int:
        return int(lib.vxdp_decap(cdp, cep, dbuf, pos, doffs, dlens, srcs, BATCH, 1.0, out_idx, out_net, out_off,
                                  out_len))
    assert dec() == BATCH
    e = _timeit(enc, seconds)
    d = _timeit(dec, seconds)
    return {"encap_pps": e[0] / e[1], "decap_pps": d[0] / d[1]}


ESP_KEY = bytes(range(32))
ESP_POOL = 128          # batches of distinct sealed packets per decap pass


def _c_esp_cases(size: int, seconds: float, cipher: str) -> dict[str, float]:
    from .._fastpath import ffi, lib
    cls = backends()["c"]
    dp, ep, net = _setup(cls)
    dp.set_esp(net, cipher, {1: ESP_KEY}, 1, 0x0B0B0B)
    enc, out, _, out_lens = _c_encoder(dp._dp, net, size, 64)   # 64: room for the ESP overhead
    assert enc() == BATCH
    e = _timeit(enc, seconds)
    # a pool of distinct sealed packets, as the UDP socket hands them up (minus IPv4 + UDP)
    pool = []
    for _ in range(ESP_POOL):
        n = enc()
        raw = bytes(ffi.buffer(out, sum(out_lens[i] for i in range(n))))
        at = 0
        for i in range(n):
            pool.append(raw[at + 28:at + out_lens[i]])
            at += out_lens[i]
    dbuf = ffi.new("uint8_t[]", sum(len(p) for p in pool))
    doffs = ffi.new("size_t[]", len(pool))
    dlens = ffi.new("uint32_t[]", len(pool))
    pos = 0
    for i, p in enumerate(pool):
        ffi.memmove(dbuf + pos, p, len(p))
        doffs[i], dlens[i] = pos, len(p)
        pos += len(p)
    srcs = ffi.new("struct vxdp_addr[]", BATCH)
    for i in range(BATCH):
        srcs[i].family = 4
        ffi.memmove(srcs[i].bytes, bytes([198, 18, 0, 1]), 4)
    oi, on = ffi.new("int32_t[]", BATCH), ffi.new("int32_t[]", BATCH)
    oo, ol = ffi.new("uint32_t[]", BATCH), ffi.new("uint32_t[]", BATCH)
    done, spent, t_end = 0, 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or not done:
        rx = cls(batch=BATCH)
        rep = rx.add_endpoint("vxlan", -1)
        rnet = rx.add_network(NetworkParams(vni=42, encap="vxlan", local=REMOTE, port=4789), rep)
        rx.set_peers(rnet, [LOCAL])
        rx.set_esp(rnet, cipher, {1: ESP_KEY}, 1, 0x0C0C0C)
        pristine = bytes(ffi.buffer(dbuf, pos))     # decap decrypts in place
        t0 = time.perf_counter()
        for k in range(0, len(pool), BATCH):
            got = lib.vxdp_decap(rx._dp, rep, dbuf, pos, doffs + k, dlens + k, srcs, BATCH, 1.0, oi, on, oo, ol)
            assert got == BATCH, got
        spent += time.perf_counter() - t0
        done += len(pool)
        ffi.memmove(dbuf, pristine, pos)
    return {"encap_pps": e[0] / e[1], "decap_pps": done / spent}


def _esp_case(cipher: str, size: int, seconds: float) -> dict[str, float]:
    return _c_esp_cases(size, seconds, cipher)


def _scapy_cases(size: int, seconds: float) -> dict[str, float]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    frame = _frame(size)

    def enc() -> int:
        bytes(IP(src=LOCAL, dst=REMOTE) / UDP(sport=50000, dport=4789) / VXLAN(flags=0x08, vni=42) / Ether(frame))
        return 1
    wire = bytes(IP(src=LOCAL, dst=REMOTE) / UDP(sport=50000, dport=4789) / VXLAN(flags=0x08, vni=42) / Ether(frame))

    def dec() -> int:
        pkt = IP(wire)
        bytes(pkt[VXLAN].payload)
        return 1
    e = _timeit(enc, seconds)
    d = _timeit(dec, seconds)
    return {"encap_pps": e[0] / e[1], "decap_pps": d[0] / d[1]}


def run_encap(seconds: float = 1.0, out_dir: str = "bench/results", name: str = "encap") -> tuple[list[dict[str, Any]], list[str]]:
    impls: list[tuple[str, Callable[[int, float], dict[str, float]]]] = []
    if "c" in backends():
        impls.append(("c", _c_cases))
        for cipher in ("aes-256-gcm", "chacha20-poly1305"):
            impls.append((f"c+esp {cipher}", functools.partial(_esp_case, cipher)))
    impls.append(("python", lambda size, s: _api_cases(PureDataplane, size, s)))
    impls.append(("scapy", _scapy_cases))
    prog = Progress(len(impls) * len(SIZES))
    results = []
    try:
        for impl, fn in impls:
            for size in SIZES:
                prog.step(f"{impl} {size} B")
                r = fn(size, seconds)
                results.append({"impl": impl, "frame_bytes": size, **r,
                                "encap_gbps": r["encap_pps"] * size * 8 / 1e9,
                                "decap_gbps": r["decap_pps"] * size * 8 / 1e9})
    finally:
        prog.close()
    md = _markdown(results)
    paths = write_results(out_dir, name, {"machine": machine_info(), "seconds": seconds, "batch": BATCH,
                                          "results": results}, md, _chart(results))
    print(md)
    print("\nwrote " + ", ".join(paths))
    return results, paths


def _markdown(results: list[dict[str, Any]]) -> str:
    rows = ["| impl | frame B | encap Mpps | encap Gbit/s | decap Mpps | decap Gbit/s | encap x Python |"
            " encap x C plain |",
            "|---|---|---|---|---|---|---|---|"]
    c = {r["frame_bytes"]: r["encap_pps"] for r in results if r["impl"] == "c"}
    py = {r["frame_bytes"]: r["encap_pps"] for r in results if r["impl"] == "python"}
    for r in results:
        ratio = r["encap_pps"] / py[r["frame_bytes"]] if py.get(r["frame_bytes"]) else 0
        vs_c = r["encap_pps"] / c[r["frame_bytes"]] if c.get(r["frame_bytes"]) else 0
        rows.append(f"| {r['impl']} | {r['frame_bytes']} | {r['encap_pps'] / 1e6:.3f} | {r['encap_gbps']:.2f} | "
                    f"{r['decap_pps'] / 1e6:.3f} | {r['decap_gbps']:.2f} | {ratio:.1f} | {vs_c:.2f} |")
    return "\n".join(rows)


def _chart(results: list[dict[str, Any]]) -> Callable[[str], None]:
    def draw(path: str) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        impls = list(dict.fromkeys(r["impl"] for r in results))
        fig, ax = plt.subplots(figsize=(8, 4))
        w = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            rs = [r for r in results if r["impl"] == impl]
            ax.bar([i + k * w for i in range(len(rs))], [r["encap_pps"] / 1e6 for r in rs], w, label=impl)
        ax.set_xticks([i + w * (len(impls) - 1) / 2 for i in range(len(SIZES))], [f"{s} B" for s in SIZES])
        ax.set_yscale("log")
        ax.set_ylabel("encapsulation Mpps (log)")
        ax.set_title(f"VXLAN encapsulation, batches of {BATCH}, one core")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return draw
