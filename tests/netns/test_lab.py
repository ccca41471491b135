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
