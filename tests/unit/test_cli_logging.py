"""`--log-level debug` shows our debug lines, not pyroute2's (one per netlink message).

pyroute2 resets its own logger's level when it is imported, and the daemon imports it after
the logging is set up; so the test imports it late too, in a fresh interpreter, and makes real
netlink requests (no root needed: reading links).
"""

from __future__ import annotations

import logging
import subprocess
import sys

from vxlan_dp.cli import _quiet_pyroute2

SCRIPT = """
import logging
from vxlan_dp.cli import _setup_logging
_setup_logging("debug")
from pyroute2 import IPRoute
with IPRoute() as ipr:
    ipr.get_links()
    ipr.link_lookup(ifname="lo")
logging.getLogger("pyroute2.netlink.core").warning("a pyroute2 warning")
logging.getLogger("vxlan_dp").debug("our debug line")
"""


def test_debug_log_has_our_lines_and_not_pyroute2_debug_lines() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any(line.endswith("DEBUG our debug line") for line in lines), lines
    assert any(line.endswith("WARNING a pyroute2 warning") for line in lines), lines
    # pyroute2 logs its marshal set-up and every message at DEBUG; none of it may show
    assert not any("marshal" in line for line in lines), lines
    assert len(lines) <= 3, lines     # ours, the warning, and asyncio's "Using selector" at most


def test_filter_passes_pyroute2_warnings_and_everything_of_ours() -> None:
    def rec(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "m", None, None)
    assert not _quiet_pyroute2(rec("pyroute2.netlink.core", logging.DEBUG))
    assert not _quiet_pyroute2(rec("pyroute2", logging.INFO))
    assert _quiet_pyroute2(rec("pyroute2.ndb", logging.WARNING))
    assert _quiet_pyroute2(rec("vxlan_dp", logging.DEBUG))
    assert _quiet_pyroute2(rec("vxlan_dp.networks", logging.DEBUG))
