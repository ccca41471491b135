"""`[daemon] poll`: what each mode costs in CPU, measured from /proc/PID/stat of a live daemon.

- adaptive (the default) and interrupt: once traffic stops, the daemon sleeps: its CPU use
  falls to near zero within a second (a spin is bounded by poll_spin_us, then epoll blocks).
- busy: the daemon holds ONE core while idle, documented as such, and no more: one pump
  thread (C) or the event loop (Python) polls, nothing else spins. On this shared 2-core
  machine it may get less than a whole core, never more than one.
That every mode carries traffic is in test_overlay.py and interop/test_kernel_vxlan.py.
"""

from __future__ import annotations

import os
import time

import pytest

from helpers import lab_with_daemons
from vxlan_dp.lab import Lab

CLK_TCK = os.sysconf("SC_CLK_TCK")
pytestmark = pytest.mark.alone      # CPU use measured: no other test's load beside it


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cores(pid: int, seconds: float) -> float:
    """CPU seconds per second of the process (all its threads) over the next `seconds`."""
    c0, t0 = _cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_s(pid) - c0) / (time.monotonic() - t0)


def _lab(make_lab, backend: str, poll: str, other: str | None = None) -> Lab:
    def daemon(i: int) -> str:
        mode = other if i and other else poll
        return f'[daemon]\nmetrics = ""\npoll = "{mode}"\n'
    return lab_with_daemons(make_lab, backend, daemon_toml=daemon)


@pytest.mark.parametrize("poll", ["adaptive", "interrupt"])
def test_an_idle_daemon_uses_no_cpu_a_second_after_traffic(make_lab, backend, poll):
    lab = _lab(make_lab, backend, poll)
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    res = lab.iperf3(a, b, seconds=1.5)
    assert res["end"]["sum_received"]["bytes"] > 1_000_000
    for h in lab.hosts:                 # `vxlan-dp status` (and the pump metrics) show the mode at work
        st = lab.status(h)["poll"]
        assert st["mode"] == poll and st["queues"][0]["moved_bytes"] > 1_000_000
        assert st["queues"][0]["wakeups"] > 0
        if poll == "interrupt":
            assert st["queues"][0]["spin_polls"] == 0
    time.sleep(1.0)
    for h in lab.hosts:
        assert h.proc is not None
        used = _cores(h.proc.pid, 2.0)
        assert used < 0.05, f"{h.name} ({poll}) used {used:.3f} of a core while idle"


def _threads(pid: int) -> dict[int, tuple[float, int]]:
    """Thread id -> (CPU seconds, voluntary context switches), from /proc/PID/task."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                vol = next(int(ln.split()[1]) for ln in f if ln.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):
            continue
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / CLK_TCK, vol)
    return out


def test_busy_holds_one_core_and_no_more(make_lab, backend):
    """Exactly one thread never sleeps (no voluntary context switch while idle, CPU all the
    time it is given: on this shared machine, not necessarily a whole core), and the daemon
    as a whole uses at most one core."""
    lab = _lab(make_lab, backend, "busy", other="interrupt")
    a, b = lab.hosts[0].containers[0], lab.hosts[1].containers[0]
    assert lab.ping(a, b.ip, count=2).ok
    h = lab.hosts[0]
    assert h.proc is not None
    before, c0, t0 = _threads(h.proc.pid), _cpu_s(h.proc.pid), time.monotonic()
    time.sleep(2.0)
    after, c1, t1 = _threads(h.proc.pid), _cpu_s(h.proc.pid), time.monotonic()
    used = (c1 - c0) / (t1 - t0)
    spinning = [tid for tid in after.keys() & before.keys()
                if after[tid][1] - before[tid][1] <= 2 and after[tid][0] - before[tid][0] >= 0.1 * (t1 - t0)]
    assert len(spinning) == 1, (before, after)
    assert used < 1.1, f"busy daemon used {used:.2f} cores"
