"""The lab's own Docker: a dockerd per lab host that survives its restart and leaves nothing behind."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def docker_ok() -> None:
    from tests.netns.test_docker import gate

    gate("python")


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if path in line.split()[4]]


def _procs_mentioning(path: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_dockerd_per_host_restart_and_teardown(make_lab, docker_ok) -> None:  # type: ignore[no-untyped-def]  # pytest fixtures
    from vxlan_dp.lab import netns

    lab = make_lab(1)
    h = lab.hosts[0]
    d = lab.start_dockerd(h)
    # dockerd sits in the host's network namespace, its plugin directory is the host's own
    assert os.stat(f"/proc/{d.proc.pid}/ns/net").st_ino == os.stat(f"/run/netns/{h.ns}").st_ino
    with open(f"/proc/{d.proc.pid}/mountinfo") as f:
        assert any(line.split()[4] == "/run/docker/plugins" for line in f)
    d.check("run", "-d", "--name", "c1", "--network", "none", "vxdp-busybox", "sleep", "600")
    pid = d.container_pid("c1")
    assert os.stat(f"/proc/{pid}/ns/net").st_ino not in (os.stat(f"/run/netns/{h.ns}").st_ino,
                                                        os.stat("/proc/self/ns/net").st_ino)
    # --live-restore: the container outlives its dockerd, and the next one adopts it
    lab.stop_dockerd(h)
    assert os.path.exists(f"/proc/{pid}")
    lab.start_dockerd(h)
    assert d.container_pid("c1") == pid
    assert d.check("exec", "c1", "echo", "alive") == "alive"
    root = d.root
    lab.close()
    assert _mounts_under(root) == []
    assert _procs_mentioning(root) == []
    assert not os.path.exists(root)
    assert not netns.exists(h.ns)


def test_demo_docker_passes_and_leaves_nothing(docker_ok) -> None:  # type: ignore[no-untyped-def]
    """`vxlan-dp demo --docker`: the walk-through as a user runs it, and nothing left after."""
    import re
    import subprocess
    import sys

    from vxlan_dp.lab import netns

    r = subprocess.run([sys.executable, "-m", "vxlan_dp", "demo", "--docker", "--hosts", "2", "--port", "4791"],
                       capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "over UDP 4791" in r.stdout and "2/2 busybox pairs" in r.stdout and "PASS" in r.stdout
    sfx = re.search(r"^lab (\w+):", r.stdout, re.M)
    assert sfx is not None
    assert not [ns for ns in netns.listing() if f"-{sfx.group(1)}-" in ns]
    assert _mounts_under(f"vxdp-{sfx.group(1)}-") == []
    assert _procs_mentioning(f"vxdp-{sfx.group(1)}-") == []


def test_lab_clean_finishes_a_dead_docker_lab(make_lab, docker_ok) -> None:  # type: ignore[no-untyped-def]
    """The lab process died with dockerd, a running container and its mounts up: `lab clean`
    (here limited to this lab's state file; other labs run on this machine) removes them all."""
    from vxlan_dp.lab import netns
    from vxlan_dp.lab.lab import clean

    lab = make_lab(1)
    h = lab.hosts[0]
    d = lab.start_dockerd(h)
    d.check("run", "-d", "--name", "c1", "--network", "none", "vxdp-busybox", "sleep", "600")
    pid, root = d.container_pid("c1"), d.root
    assert _procs_mentioning(root) and _mounts_under(root)
    removed = clean(only=lab._state)
    assert h.ns in removed and not netns.exists(h.ns)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert _procs_mentioning(root) == [] and _mounts_under(root) == []
    assert not os.path.exists(root)
