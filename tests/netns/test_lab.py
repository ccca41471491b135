"""The lab itself: labs built side by side (parallel test workers, a demo beside the tests)
never draw the same name suffix, since a lab's state file reserves its suffix when it is made."""

from __future__ import annotations

import os

from vxlan_dp.lab import Lab, netns
from vxlan_dp.lab import lab as lab_module


def test_two_labs_side_by_side_never_share_a_suffix(monkeypatch):
    draws = ["0bad", "0bad"]            # the second lab first draws what the first one holds
    real = lab_module.secrets.token_hex
    monkeypatch.setattr(lab_module.secrets, "token_hex", lambda n: draws.pop(0) if draws else real(n))
    with Lab(1) as a, Lab(1) as b:
        assert a.sfx != b.sfx and not draws
        assert os.path.exists(a._state) and os.path.exists(b._state)
        assert netns.exists(a.ul_ns) and netns.exists(b.ul_ns) and a.ul_ns != b.ul_ns
    assert not os.path.exists(a._state) and not os.path.exists(b._state)
    assert not [ns for ns in netns.listing() if f"-{a.sfx}-" in ns or f"-{b.sfx}-" in ns]


def test_a_namespace_is_made_without_forking_this_process(monkeypatch):
    """pyroute2's netns.create forks the caller and gives the child 2 s to answer: a big test
    process on a loaded machine missed that (TimeoutError, seen with two workers). Ours makes
    it in a thread: it works with pyroute2's child process unavailable, and the namespace is a
    new one, not this process's own."""
    import pyroute2.netns

    def no_child(*a, **kw):
        raise AssertionError("netns.create forked a child process")
    monkeypatch.setattr(pyroute2.netns, "ChildProcess", no_child)
    name = f"vxdp-{os.getpid():x}-nsmade"
    root = os.stat("/proc/self/ns/net").st_ino
    netns.create(name)
    monkeypatch.undo()
    try:
        assert os.stat(f"/run/netns/{name}").st_ino != root
        assert os.stat("/proc/self/ns/net").st_ino == root          # this process stays where it was
        with netns.ipr(name) as ipr:
            assert [link.get("IFLA_IFNAME") for link in ipr.get_links()] == ["lo"]
    finally:
        netns.remove(name)
    assert not netns.exists(name)
