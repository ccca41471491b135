"""Every bad config in the unit table, run for real: exit status 2, the field named, nothing created.

The unit table (tests/unit/test_config.py BAD) is the spec of the messages; this runs the same
files through `vxlan-dp run` inside a fresh namespace, as systemd would, and checks the host
(the namespace) is left exactly as it was: no TAP, no bridge, no socket file.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from vxlan_dp.lab import netns

_spec = importlib.util.spec_from_file_location(
    "_config_table", pathlib.Path(__file__).parent.parent / "unit" / "test_config.py")
assert _spec and _spec.loader
_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_table)
BAD: list[tuple[str, str, str]] = _table.BAD


def _links(ns: str) -> set[str]:
    with netns.ipr(ns) as ipr:
        return {link.get("IFLA_IFNAME") for link in ipr.get_links()}


@pytest.mark.alone     # 16 interpreters starting at once: a CPU storm for any test beside it
def test_every_bad_config_exits_2_names_the_field_and_creates_nothing(make_lab, tmp_path):
    assert len(BAD) >= 30
    lab = make_lab(1)
    ns = lab.hosts[0].ns
    before = _links(ns)
    procs = []
    for i, (text, field, _reason) in enumerate(BAD):
        path = tmp_path / f"bad{i}.toml"
        path.write_text(text)
        sock = tmp_path / f"bad{i}.sock"
        procs.append((i, field, sock, netns.popen(ns, [sys.executable, "-m", "vxlan_dp", "run", "-c", str(path),
                                                       "--socket", str(sock)],
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        if len(procs) % 16 == 0:  # bounded concurrency on a 2-core machine
            procs[-16][3].wait(60)
    failures = []
    for i, field, sock, p in procs:
        _out, err = p.communicate(timeout=60)
        if p.returncode != 2 or (field and f"{field}:" not in err) or os.path.exists(sock):
            failures.append(f"#{i} {field}: rc={p.returncode} stderr={err.strip()[-200:]!r}")
    assert not failures, "\n".join(failures)
    assert _links(ns) == before
