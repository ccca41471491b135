"""`vxlan-dp keys`: key ids wrap and skip installed ones; files are written whole, mode 0600."""

from __future__ import annotations

import os
import stat

import pytest

from vxlan_dp.core.keys import KeyFileError, load_key_file, parse_keys
from vxlan_dp.keyman import new_key_file, next_key_id, rotate, write_key_file


def test_next_key_id_follows_the_newest_wraps_and_skips():
    assert next_key_id([]) == 1
    assert next_key_id([3, 9]) == 10
    assert next_key_id([9, 3]) == 4         # the newest is the last line, not the highest id
    assert next_key_id([254, 255]) == 1
    assert next_key_id([1, 255]) == 2
    with pytest.raises(KeyFileError):
        next_key_id(list(range(1, 256)))


def test_new_key_file_is_0600_random_and_never_overwrites(tmp_path):
    p = str(tmp_path / "k")
    new_key_file(p, 5)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    keys = parse_keys(open(p).read())
    assert list(keys) == [5] and keys[5] != bytearray(32)
    with pytest.raises(KeyFileError, match="exists"):
        new_key_file(p)
    new_key_file(str(tmp_path / "k2"))
    assert parse_keys(open(tmp_path / "k2").read())[1] != keys[5]


def test_rotate_without_daemons_adds_and_keeps_the_old_key(tmp_path):
    """No daemon answers: nobody is known to send with the new key, so the old one stays."""
    p = str(tmp_path / "k")
    write_key_file(p, {7: bytes(range(32))})
    said: list[str] = []
    r = rotate(p, "blue", [str(tmp_path / "nobody.sock")], grace=0.1, say=said.append, owner=os.getuid())
    assert r["new"] == 8 and r["retired"] == []
    keys = load_key_file(p, owner=os.getuid())
    assert list(keys) == [7, 8] and keys[8] != bytearray(range(32)) and keys[7] == bytearray(range(32))
    assert any("no daemon reloaded" in s for s in said)
    assert not any(bytes(range(32)).hex()[:16] in s for s in said)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".new")]
