"""The outside programs a lab command runs, and the Debian packages that ship them.

Invariant: a command that needs tools checks them all before it creates anything, and a
missing tool is reported by name with the one `apt-get install` line that brings every
missing one, never as an errno from deep inside the lab.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

__all__ = ["PACKAGES", "missing", "missing_message"]

# tool -> Debian 12 package
PACKAGES = {
    "ping": "iputils-ping",
    "iperf3": "iperf3",
    "perf": "linux-perf",
    "socat": "socat",
    "etcd": "etcd-server",
    "etcdctl": "etcd-client",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "nsenter": "util-linux",
    "unshare": "util-linux",
}


def missing(tools: Iterable[str]) -> list[str]:
    """The tools in `tools` that are not on PATH, in the order asked."""
    return [t for t in dict.fromkeys(tools) if shutil.which(t) is None]


def missing_message(command: str, tools: Iterable[str]) -> str | None:
    """None when every tool is on PATH; else what to tell the user."""
    gone = missing(tools)
    if not gone:
        return None
    pkgs = " ".join(dict.fromkeys(PACKAGES.get(t, t) for t in gone))
    return (f"{command}: missing tool{'s' if len(gone) > 1 else ''}: {', '.join(gone)}; "
            f"install with: apt-get install {pkgs}")
