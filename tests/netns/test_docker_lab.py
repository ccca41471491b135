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
