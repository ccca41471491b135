"""`encrypt`, `key_file`, `cipher`, `rekey_delay` on a network: field-named errors, never key material.

Key files are created by the test; their owner must be root for the config to pass, so the
"good" cases need root (as every run of this suite in CI has) and are skipped without it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from test_config import net, red
from vxlan_dp.config import ConfigError, parse_config

KEY = "3 " + "c4" * 32 + "\n"


def _key(tmp_path: pathlib.Path, text: str = KEY, mode: int = 0o600) -> str:
    p = tmp_path / "blue.key"
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def _err(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        parse_config(text)
    return ei.value


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("key files must be owned by root: needs root")


def test_an_encrypted_network(tmp_path):
    _root()
    n = parse_config(net(encrypt="true", key_file=f'"{_key(tmp_path)}"', port="5555")).networks[0]
    assert (n.encrypt, n.cipher, n.rekey_delay, n.key_file) == (True, "aes-256-gcm", 10.0, _key(tmp_path))
    n = parse_config(net(encrypt="true", key_file=f'"{_key(tmp_path)}"', cipher='"ChaCha20-Poly1305"',
                         encap='"gre-udp"', rekey_delay="2.5")).networks[0]
    assert (n.cipher, n.encap, n.rekey_delay) == ("chacha20-poly1305", "gre-udp", 2.5)


@pytest.mark.parametrize("kv, field, words", [
    ({"encrypt": "true", "encap": '"gre"'}, "network[0].encrypt", "UDP"),
    ({"encrypt": "true"}, "network[0].key_file", "needs a key file"),
    ({"key_file": '"/x"'}, "network[0].key_file", "encrypt = true"),
    ({"cipher": '"aes-256-gcm"'}, "network[0].cipher", "encrypt = true"),
    ({"encrypt": "1"}, "network[0].encrypt", ""),
])
def test_field_named_errors(kv, field, words):
    e = _err(net(**kv))
    assert e.field == field and words in e.reason


def test_key_file_checks_name_the_field_and_never_the_key(tmp_path):
    _root()
    secret = "c4" * 32
    for text, mode, words in [(KEY, 0o644, "0600"), (KEY, 0o640, "0600"),
                              ("3 " + secret[:-2] + "\n", 0o600, "line 1"),
                              (KEY + KEY, 0o600, "twice"), ("0 " + secret + "\n", 0o600, "out of range"),
                              ("# nothing\n", 0o600, "no key")]:
        path = _key(tmp_path, text, mode)
        e = _err(net(encrypt="true", key_file=f'"{path}"'))
        assert e.field == "network[0].key_file" and words in e.reason, str(e)
        assert secret[:16] not in str(e)
    e = _err(net(encrypt="true", key_file=f'"{tmp_path}/missing"'))
    assert e.field == "network[0].key_file" and "cannot open" in e.reason
    path = _key(tmp_path)
    os.chown(path, 65534, 65534)
    e = _err(net(encrypt="true", key_file=f'"{path}"'))
    assert "owned by root" in e.reason


def test_an_encrypted_network_keeps_its_port_to_itself(tmp_path):
    _root()
    k = f'"{_key(tmp_path)}"'
    e = _err(net(encrypt="true", key_file=k) + red())
    assert e.field == "network[1].port" and "encrypted" in e.reason
    e = _err(net() + red(encrypt="true", key_file=k))
    assert e.field == "network[1].port"
    parse_config(net(encrypt="true", key_file=k) + red(port="4790"))


def test_check_prints_no_key_material(tmp_path):
    _root()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[daemon]\nmetrics = ""\n' + net(encrypt="true", key_file=f'"{_key(tmp_path)}"'))
    r = subprocess.run([sys.executable, "-m", "vxlan_dp", "check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "c4c4c4c4" not in r.stdout + r.stderr and "blue.key" in r.stdout + r.stderr
