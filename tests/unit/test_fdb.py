"""The forwarding database with injected time: learning, moving, static entries, ageing, limits.

No clock is read anywhere: `now` is a plain float the test chooses, so the ageing boundary is
tested exactly rather than by sleeping.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from vxlan_dp.core import (LEARN_FULL, LEARN_MOVED, LEARN_NEW, LEARN_REFRESHED, LEARN_STATIC, Fdb,
                           FdbEntry)

M1 = bytes.fromhex("02420000aa01")
M2 = bytes.fromhex("02420000aa02")
M3 = bytes.fromhex("02420000aa03")
R1, R2, R3 = "198.18.0.2", "198.18.0.3", "198.18.0.4"


def test_learn_new_refresh_move():
    fdb = Fdb(ageing=300)
    assert fdb.lookup(M1) is None
    # (time, remote, expected result, expected lookup afterwards)
    steps = [
        (10.0, R1, LEARN_NEW, R1),
        (20.0, R1, LEARN_REFRESHED, R1),
        (30.0, R2, LEARN_MOVED, R2),
        (40.0, R2, LEARN_REFRESHED, R2),
        (50.0, R1, LEARN_MOVED, R1),
    ]
    for now, remote, result, where in steps:
        assert fdb.learn(M1, remote, now) == result, (now, remote)
        assert fdb.lookup(M1) == where
        assert fdb.entries(now) == [FdbEntry(M1, where, False, 0.0)]
    assert len(fdb) == 1


@pytest.mark.parametrize("last_seen_by", ["refresh", "move"])
def test_refresh_and_move_both_restart_the_ageing_clock(last_seen_by):
    fdb = Fdb(ageing=100)
    fdb.learn(M1, R1, 0.0)
    fdb.learn(M1, R1 if last_seen_by == "refresh" else R2, 90.0)
    assert fdb.age(150.0) == []
    assert fdb.entries(150.0)[0].age == 60.0
    assert fdb.age(190.0) == [M1]


@pytest.mark.parametrize("now,aged", [
    (100.0, False), (399.0, False), (399.999, False),
    (400.0, True),  # exactly `ageing` seconds since last seen: gone (like the Linux bridge)
    (400.001, True), (10_000.0, True),
])
def test_ageing_boundary(now, aged):
    fdb = Fdb(ageing=300.0)
    fdb.learn(M1, R1, 100.0)
    assert fdb.age(now) == ([M1] if aged else [])
    assert fdb.lookup(M1) == (None if aged else R1)
    assert len(fdb) == (0 if aged else 1)


def test_age_returns_only_the_expired_macs():
    fdb = Fdb(ageing=10)
    fdb.learn(M1, R1, 0.0)
    fdb.learn(M2, R1, 5.0)
    fdb.learn(M3, R2, 9.0)
    assert fdb.age(10.0) == [M1]
    assert sorted(fdb.age(15.0)) == [M2]
    assert fdb.age(15.0) == []
    assert [e.mac for e in fdb.entries(15.0)] == [M3]


def test_static_is_never_aged_nor_moved():
    fdb = Fdb(ageing=1)
    fdb.add_static(M1, R1)
    for now, remote in [(0.0, R2), (5.0, R3), (1e9, R2)]:
        assert fdb.learn(M1, remote, now) == LEARN_STATIC
        assert fdb.lookup(M1) == R1
        assert fdb.age(now) == []
    assert fdb.entries(1e9) == [FdbEntry(M1, R1, True, 0.0)]


def test_static_replaces_a_learned_entry():
    fdb = Fdb(ageing=10)
    fdb.learn(M1, R1, 0.0)
    fdb.add_static(M1, R2)
    assert fdb.lookup(M1) == R2
    assert fdb.age(1000.0) == []
    assert fdb.learn(M1, R1, 1000.0) == LEARN_STATIC
    assert fdb.entries(1000.0) == [FdbEntry(M1, R2, True, 0.0)]


def test_static_is_removed_only_explicitly():
    fdb = Fdb()
    fdb.add_static(M1, R1)
    assert fdb.remove(M1) is True
    assert fdb.lookup(M1) is None
    assert fdb.remove(M1) is False
    assert fdb.learn(M1, R2, 0.0) == LEARN_NEW  # once removed, learning may take it


def test_remove_learned_and_unknown():
    fdb = Fdb()
    fdb.learn(M1, R1, 0.0)
    assert fdb.remove(M1) is True
    assert fdb.remove(M2) is False
    assert len(fdb) == 0


def test_max_entries_refuses_new_macs_only():
    fdb = Fdb(ageing=100, max_entries=2)
    assert fdb.learn(M1, R1, 0.0) == LEARN_NEW
    assert fdb.learn(M2, R1, 0.0) == LEARN_NEW
    assert fdb.learn(M3, R1, 0.0) == LEARN_FULL
    assert fdb.lookup(M3) is None and len(fdb) == 2
    # Known MACs keep refreshing and moving while full.
    assert fdb.learn(M1, R1, 1.0) == LEARN_REFRESHED
    assert fdb.learn(M2, R2, 1.0) == LEARN_MOVED
    # A freed slot is usable again.
    assert fdb.remove(M1)
    assert fdb.learn(M3, R3, 2.0) == LEARN_NEW
    assert fdb.lookup(M3) == R3


def test_ageing_frees_room_when_full():
    fdb = Fdb(ageing=10, max_entries=1)
    fdb.learn(M1, R1, 0.0)
    assert fdb.learn(M2, R1, 5.0) == LEARN_FULL
    assert fdb.age(10.0) == [M1]
    assert fdb.learn(M2, R1, 10.0) == LEARN_NEW


def test_static_entries_always_fit():
    fdb = Fdb(max_entries=1)
    fdb.learn(M1, R1, 0.0)
    fdb.add_static(M2, R2)
    fdb.add_static(M3, R3)
    assert len(fdb) == 3
    assert fdb.lookup(M2) == R2 and fdb.lookup(M3) == R3


def test_entries_report_ages_sorted_by_mac():
    fdb = Fdb(ageing=300)
    fdb.learn(M3, R1, 10.0)
    fdb.add_static(M2, R2)
    fdb.learn(M1, R3, 40.0)
    assert fdb.entries(100.0) == [
        FdbEntry(M1, R3, False, 60.0),
        FdbEntry(M2, R2, True, 0.0),
        FdbEntry(M3, R1, False, 90.0),
    ]
    # A clock read before the last sighting never yields a negative age.
    assert fdb.entries(0.0)[0].age == 0.0
    # entries() only reports; removing is age()'s job.
    assert len(fdb.entries(1e6)) == 3
    assert fdb.entries(1e6)[0].age == 1e6 - 40.0


@pytest.mark.parametrize("kwargs", [dict(ageing=0), dict(ageing=-1), dict(max_entries=0), dict(max_entries=-5)])
def test_rejects_nonsense_limits(kwargs):
    with pytest.raises(ValueError):
        Fdb(**kwargs)


# --- invariants under any sequence of operations ------------------------------------------------

MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(6)]
REMOTES = [R1, R2, R3]
ops = st.lists(st.tuples(st.sampled_from(["learn", "static", "remove", "age"]),
                         st.sampled_from(MACS), st.sampled_from(REMOTES), st.floats(0, 5)),
               max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops=ops)
def test_invariants(ops):
    fdb = Fdb(ageing=10, max_entries=3)
    static: dict[bytes, str] = {}
    now = 0.0
    for op, mac, remote, dt in ops:
        now += dt
        if op == "learn":
            before = len(fdb)
            r = fdb.learn(mac, remote, now)
            if mac in static:
                assert r == LEARN_STATIC
            elif r == LEARN_FULL:
                assert before >= 3 and fdb.lookup(mac) is None
            else:
                assert fdb.lookup(mac) == remote
        elif op == "static":
            fdb.add_static(mac, remote)
            static[mac] = remote
        elif op == "remove":
            fdb.remove(mac)
            static.pop(mac, None)
        else:
            for gone in fdb.age(now):
                assert gone not in static
        learned = [e for e in fdb.entries(now) if not e.static]
        assert len(learned) <= 3
        assert {e.mac: e.remote for e in fdb.entries(now) if e.static} == static
        assert all(e.age < 10 or op != "age" for e in learned)
