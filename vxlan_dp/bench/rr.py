"""TCP request/response latency, netperf TCP_RR style: 1-byte request, 1-byte response.

netperf is not packaged in Debian and iperf3 measures bulk transfer only, so the e2e bench
runs this small pair in the lab's containers:

    python -m vxlan_dp.bench.rr server ADDR PORT          # echoes every byte it receives
    python -m vxlan_dp.bench.rr client ADDR PORT SECONDS  # prints one JSON line

One connection, TCP_NODELAY on both ends, one transaction in flight (like TCP_RR's default),
each timed with a monotonic nanosecond clock. The Python overhead of both ends is the same
on every tunnel and on the bare underlay, so the bench reports the RTT a tunnel ADDS over
the underlay measured the same way in the same run.
"""

from __future__ import annotations

import json
import socket
import sys
import time

__all__ = ["serve", "client"]


def serve(addr: str, port: int, accept_timeout: float = 30.0) -> None:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port))
        ls.listen(1)
        ls.settimeout(accept_timeout)
        print("listening", flush=True)
        conn, _ = ls.accept()
        with conn:
            conn.settimeout(accept_timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                b = conn.recv(1)
                if not b:
                    return
                conn.sendall(b)


def client(addr: str, port: int, seconds: float, connect_timeout: float = 10.0) -> dict[str, float]:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    deadline = time.monotonic() + connect_timeout
    while True:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect((addr, port))
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    rtts: list[int] = []
    with s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clock = time.perf_counter_ns
        end = clock() + int(seconds * 1e9)
        t = clock()
        while t < end:
            s.sendall(b"x")
            if not s.recv(1):
                break
            t2 = clock()
            rtts.append(t2 - t)
            t = t2
    rtts.sort()
    n = len(rtts)

    def pct(p: float) -> float:
        return rtts[min(n - 1, int(round(p / 100 * (n - 1))))] / 1e3 if n else float("nan")
    return {"transactions": n, "tps": n / seconds, "p50_us": pct(50), "p99_us": pct(99), "mean_us":
            (sum(rtts) / n / 1e3) if n else float("nan")}


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "server":
        serve(argv[1], int(argv[2]))
        return 0
    if len(argv) >= 4 and argv[0] == "client":
        print(json.dumps(client(argv[1], int(argv[2]), float(argv[3]))))
        return 0
    print("usage: python -m vxlan_dp.bench.rr server ADDR PORT | client ADDR PORT SECONDS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
