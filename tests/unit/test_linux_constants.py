"""vxlan_dp.linux holds the kernel's numbers: each one checked against the system's headers.

A tiny C program prints every constant as the C compiler sees it (the same headers csrc/ is
built with); a number retyped wrong in Python would pass every test that only uses it on a
kernel that ignores it, so it is compared here once. Needs gcc (mandatory under CI=true).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import require
from vxlan_dp import linux

HEADERS = ("sched.h", "limits.h", "sys/ioctl.h", "sys/socket.h", "netinet/in.h", "netinet/udp.h", "net/if.h",
           "linux/if_tun.h", "linux/sockios.h", "linux/ethtool.h", "linux/if_addr.h",
           "linux/if_ether.h")
# Python name -> C expression, where the two differ (or C has it under another header's name)
C_NAME = {"UIO_MAXIOV": "IOV_MAX"}
# In include/linux/udp.h, which is not exported to user space; its value is udp(7)'s "64".
KERNEL_ONLY = {"UDP_MAX_SEGMENTS"}


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    require(None if gcc else "needs gcc (apt-get install gcc)")
    names = [n for n in linux.__all__ if n not in KERNEL_ONLY]
    src = "#define _GNU_SOURCE\n#include <stdio.h>\n"
    src += "".join(f"#include <{h}>\n" for h in HEADERS)
    src += "int main(void) {\n"
    # A name the headers lack (older than the kernel feature: TUN_F_USO4 is Linux 6.2) prints nothing.
    src += "".join(f'#ifdef {C_NAME.get(n, n)}\n    printf("{n} %lld\\n", (long long)({C_NAME.get(n, n)}));\n#endif\n'
                   for n in names)
    src += "    return 0;\n}\n"
    d = tmp_path_factory.mktemp("linux")
    (d / "c.c").write_text(src)
    subprocess.run([str(gcc), "-o", str(d / "c"), str(d / "c.c")], check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(d / "c")], check=True, capture_output=True, text=True, timeout=10).stdout
    return {name: int(v) for name, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("name", [n for n in linux.__all__ if n not in KERNEL_ONLY])
def test_constant_is_the_kernels(c_values: dict[str, int], name: str) -> None:
    if name not in c_values:
        pytest.skip(f"this system's headers predate {name}")
    assert getattr(linux, name) == c_values[name], name


def test_the_headers_know_nearly_every_constant(c_values: dict[str, int]) -> None:
    """Guards the check above against an #include gone missing (every test would skip)."""
    assert set(linux.__all__) - KERNEL_ONLY - set(c_values) <= {"TUN_F_USO4", "TUN_F_USO6"}


def test_every_constant_is_exported_and_nothing_else() -> None:
    public = {n for n in vars(linux) if n.isupper()}
    assert public == set(linux.__all__)
