"""Where the time goes (not a test): `perf record -g` on both daemons under single-stream TCP.

A two-host lab with default offloads, vxlan-dp (C backend) on both hosts, iperf3 from the
container on h1 to the one on h2 for --seconds, while Debian's perf (linux-perf) samples both
daemon processes with call graphs. Writes <out>/<date>-profile.txt: the iperf3 rate, then per
daemon the top symbols by self time (`perf report --no-children`) and by total time
(children included). Usage (root):

    vxlan-dp bench profile [--seconds 8] [--poll adaptive] [--out bench/results]
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
import tempfile
import time

from ..lab import Lab


def _report(data: str, children: bool, lines: int, sort: str = "comm,dso,symbol") -> str:
    argv = ["perf", "report", "-i", data, "--stdio", "--percent-limit", "1.5", "--sort", sort,
            "-g", "none", "--children" if children else "--no-children"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    keep = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return "\n".join(keep[:lines])


def run_profile(seconds: float, poll: str, out_dir: str) -> str:
    """Profile both daemons for `seconds`; returns the path of the written report."""

    tmp = tempfile.mkdtemp(prefix="vxdp-profile-")
    sections = []
    with Lab(2) as lab:
        for h in lab.hosts:
            lab.add_container(h, mtu=lab.overlay_mtu("vxlan"))     # default offloads, as users run it
        lab.settle()
        extra = f'poll = "{poll}"\n' if poll else ""
        for h in lab.hosts:
            lab.start_daemon(h, lab.network_toml(h), backend="c",
                             daemon_toml='[daemon]\nmetrics = ""\nlog_level = "info"\n' + extra)
        c1, c2 = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
        assert lab.ping(c1, c2.ip, count=3).ok
        perfs = []
        for h in lab.hosts:
            assert h.proc is not None
            data = os.path.join(tmp, f"{h.name}.data")
            perfs.append((h.name, data, subprocess.Popen(
                ["perf", "record", "-g", "-F", "999", "-o", data, "-p", str(h.proc.pid), "--",
                 "sleep", str(seconds + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        time.sleep(0.5)
        r = lab.iperf3(c1, c2, seconds=seconds)
        bps = r.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)
        for name, data, p in perfs:
            p.wait(seconds + 60)
            role = "sender (TAP -> underlay)" if name == "h1" else "receiver (underlay -> TAP)"
            sections.append(f"## {name}: {role}\n\n### self time by object\n\n```\n{_report(data, False, 12, 'dso')}"
                            f"\n```\n\n### self time\n\n```\n{_report(data, False, 25)}\n```\n\n"
                            f"### with children\n\n```\n{_report(data, True, 25)}\n```\n")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{_dt.datetime.now():%Y-%m-%d-%H%M}-profile.txt")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                            ).stdout.strip()
    with open(path, "w") as f:
        f.write(f"# perf profile, single-stream TCP through vxlan-dp (C), commit {commit}\n\n"
                f"`vxlan-dp bench profile --seconds {seconds:g}{' --poll ' + poll if poll else ''}`; iperf3: {bps / 1e9:.2f} Gbit/s\n\n"
                + "\n".join(sections))
    return path
