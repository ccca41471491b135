"""Static FDB entries stay packed from the config file to the C table (issue 16).

- FdbTable behaves as the tuple of (mac, remote) entries it stands for;
- `fdb_load` gives the same table as one `fdb_add` per entry, on both backends, and refuses a
  bad table whole;
- `fdb_update` (a control plane's batch: removals, installs, replace) is the same in C and
  Python, learned entries included;
- with the C backend, what the daemon keeps of a config with 20,000 static entries (the parsed
  Config, the control plane's Desired, the Dataplane) holds no Python object per entry: the
  allocated-block count after loading grows by far less than one block per entry;
- and the C table itself costs memory for the entries it holds, not for `max_fdb_entries`:
  its hash index starts small and doubles as entries come (csrc/fdb.c).
"""

from __future__ import annotations

import gc
import os
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import c_backend, eth_frame
from vxlan_dp.config import FdbStatic, parse_config
from vxlan_dp.control import StaticControl
from vxlan_dp.core.fdbtable import FdbTable
from vxlan_dp.fastpath import NetworkParams, backends
from vxlan_dp.wire import encode_vxlan

M1, M2, M3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
B, C = "198.18.0.2", "198.18.0.3"


def test_table_is_the_sequence_it_packs() -> None:
    t = FdbTable.from_pairs([(M1, B), (M2, C), (M3, B), (M1, C)])     # the last M1 wins
    assert len(t) == 3 and t.remotes == (C, B) and t[1] == FdbStatic(M2, C) and t[-1].mac == M3
    assert list(t) == [(M1, C), (M2, C), (M3, B)] and dict(t) == {M1: C, M2: C, M3: B}
    assert t == ((M1, C), (M2, C), (M3, B)) and ((M1, C), (M2, C), (M3, B)) == t
    assert t != ((M1, C),) and t == FdbTable.from_pairs([(M1, C), (M2, C), (M3, B)])
    assert hash(t) == hash(FdbTable.from_pairs(list(t)))
    with pytest.raises(IndexError):
        t[3]
    with pytest.raises(ValueError, match="do not fit"):
        FdbTable(bytes(12), array("I", [0, 1]), (B,))


@pytest.mark.parametrize("name", sorted(backends()))
def test_load_equals_one_add_per_entry_and_refuses_bad_tables_whole(name: str) -> None:
    pairs = [(f"02:00:00:00:{i >> 8:02x}:{i & 0xff:02x}", (B, C)[i % 2]) for i in range(300)]
    dumps = []
    for bulk in (True, False):
        dp = backends()[name]()
        net = dp.add_network(NetworkParams(vni=1, encap="vxlan", local="198.18.0.1", max_fdb_entries=100),
                             dp.add_endpoint("vxlan", -1))
        if bulk:
            dp.fdb_load(net, FdbTable.from_pairs(pairs))
            with pytest.raises(ValueError, match="address family"):
                dp.fdb_load(net, FdbTable.from_pairs([(M1, "2001:2::1")]))
            with pytest.raises(ValueError, match="group address"):
                dp.fdb_load(net, FdbTable.from_pairs([(M2, B), ("03:00:00:00:00:01", B)]))
            dp.fdb_load(net, FdbTable())
        else:
            for mac, remote in pairs:
                dp.fdb_add(net, mac, remote)
        dumps.append(dp.fdb_dump(net, 0.0))
    assert dumps[0] == dumps[1] and len(dumps[0]) == 300     # statics beyond max_fdb_entries fit


def _config(entries: int) -> str:
    rows = ",\n".join(f'  {{ mac = "02:00:00:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}", '
                      f'remote = "198.18.1.{1 + i % 3}" }}' for i in range(entries))
    return ('[[network]]\nname = "blue"\nvni = 42\nlocal = "198.18.0.1"\ntap = "t0"\n'
            f'peers = ["198.18.1.1"]\nfdb = [\n{rows}\n]\n')


def test_c_backend_python_side_holds_no_object_per_entry() -> None:
    entries = 20_000
    text = _config(entries)
    dp = c_backend()()
    net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1"), dp.add_endpoint("vxlan", -1))
    gc.collect()
    before = sys.getallocatedblocks()
    config = parse_config(text)                         # what the daemon keeps: the config ...
    desired = StaticControl(config).desired()           # ... the control plane's Desired ...
    dp.fdb_load(net, desired["blue"].fdb)               # ... and the data plane
    del text
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert dp.fdb_size(net) == entries
    assert isinstance(desired["blue"].fdb, FdbTable) and desired["blue"].fdb is config.networks[0].fdb
    assert grown < entries // 10, f"{grown} blocks still allocated for {entries} entries"


_MACS = st.sampled_from([f"02:00:00:00:00:{i:02x}" for i in range(12)])
_REMOTES = st.sampled_from(["198.18.0.2", "198.18.0.3", "198.18.0.4"])
_BATCH = st.tuples(st.lists(st.tuples(_MACS, _REMOTES), max_size=8), st.lists(_MACS, max_size=4),
                   st.booleans(), st.lists(_MACS, max_size=3))


@settings(max_examples=60, deadline=None)
@given(st.lists(_BATCH, min_size=1, max_size=6))
def test_fdb_update_is_the_same_in_c_and_python(batches: list) -> None:
    """A control plane's batches (installs, removals, replace) against learned entries too:
    both backends end with the same table, static count and single-entry answers."""
    ends = []
    for cls in backends().values():
        dp = cls()
        net = dp.add_network(NetworkParams(vni=42, encap="vxlan", local="198.18.0.1", learning=True),
                             dp.add_endpoint("vxlan", -1))
        dp.set_peers(net, [B])
        got = []
        for pairs, removes, replace, learned in batches:
            for mac in learned:     # a frame from `mac` arrives from B: a learned entry
                dp.decap(0, [(B, encode_vxlan(42) + eth_frame(M1, mac, 60))], 5.0)
            rm = b"".join(bytes.fromhex(m.replace(":", "")) for m in removes)
            got.append(dp.fdb_update(net, FdbTable.from_pairs(pairs), rm, replace=replace))
        got += [dp.fdb_dump(net, 9.0), dp.fdb_statics(net), [dp.fdb_get(net, m, 9.0) for m in (M1, M2, M3)]]
        ends.append(got)
    assert all(e == ends[0] for e in ends)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_c_table_memory_follows_the_entries_not_max_fdb_entries() -> None:
    """50 networks x 1,000 static entries under the default max_fdb_entries (65,536): an index
    sized for the maximum at once had the 1,000 entries hashed across all of its 512 KiB
    (25 MiB for 50 networks); grown on demand it needs a few KiB each. Lookups still find
    every entry, and learning up to the cap still works (test_fastpath_c's churn test)."""
    nets, entries = 50, 1000
    dp = c_backend()()
    ep = dp.add_endpoint("vxlan", -1)
    tables = [FdbTable.from_pairs((f"02:00:{n:02x}:00:{i >> 8:02x}:{i & 0xff:02x}", B) for i in range(entries))
              for n in range(nets)]
    before = _rss_bytes()
    handles = []
    for n, table in enumerate(tables):
        h = dp.add_network(NetworkParams(vni=100 + n, encap="vxlan", local="198.18.0.1", max_fdb_entries=65536), ep)
        dp.fdb_load(h, table)
        handles.append(h)
    grown = _rss_bytes() - before
    assert grown < 8 << 20, f"RSS grew {grown >> 20} MiB for {nets} x {entries} entries"
    assert all(dp.fdb_size(h) == entries for h in handles)
    assert {e.mac for e in dp.fdb_dump(handles[-1], 0.0)} == {t.mac for t in tables[-1]}
