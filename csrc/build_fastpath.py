"""cffi API-mode build of `vxlan_dp._fastpath` from the real C files in csrc/.

Used by setup.py (`cffi_modules = ["csrc/build_fastpath.py:ffibuilder"]`; `pip install -e .`
is the way to build in place). Also runnable on its own while developing:
`python csrc/build_fastpath.py OUTDIR` leaves OUTDIR/vxlan_dp/_fastpath*.so (default
OUTDIR: build/standalone) for a test tree to copy.

Invariants:
- the cdef is the blocks of csrc/fastpath.h and csrc/neigh.h between the cdef-begin/cdef-end markers, so
  the header the C compiler sees and the declarations cffi binds cannot drift apart;
- the package version from vxlan_dp/__init__.py is compiled in (`vxdp_version()`), and
  vxlan_dp/fastpath/_c.py refuses to import a module built for another version.

`VXLAN_DP_SANITIZE=1` in the environment builds with AddressSanitizer and
UndefinedBehaviorSanitizer (any UB report aborts: -fno-sanitize-recover), for .ci/sanitize;
such a module only loads into a Python started with the sanitizer runtimes in LD_PRELOAD.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCES = ("fastpath.c", "manage.c", "fdb.c", "outer.c", "wire.c", "flowhash.c", "offload.c",
           "gsosock.c", "poll.c", "neigh.c", "esp.c", "csum.c")
HEADERS = ("fastpath.h", "internal.h", "neigh.h")
CDEF_HEADERS = ("fastpath.h", "neigh.h")   # their cdef-begin/end blocks, in this order


def package_version() -> str:
    text = (ROOT / "vxlan_dp" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if m is None:
        raise RuntimeError("no __version__ in vxlan_dp/__init__.py")
    return m.group(1)


def cdef_text() -> str:
    blocks = []
    for name in CDEF_HEADERS:
        text = (HERE / name).read_text(encoding="utf-8")
        m = re.search(r"/\* cdef-begin \*/(.*?)/\* cdef-end \*/", text, re.DOTALL)
        if m is None:
            raise RuntimeError(f"csrc/{name} lacks the cdef-begin/cdef-end markers")
        blocks.append(m.group(1))
    return "\n".join(blocks)


def _rel(p: Path) -> str:
    # setuptools wants source paths relative to the project root (where setup.py runs);
    # ffibuilder.compile() changes into its tmpdir, so standalone builds use absolute ones
    if __name__ == "__main__":
        return str(p)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
SANITIZE = os.environ.get("VXLAN_DP_SANITIZE", "") not in ("", "0")

ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "vxlan_dp._fastpath",
    '#include "fastpath.h"\n#include "neigh.h"\n',
    sources=[_rel(HERE / s) for s in SOURCES],
    depends=[_rel(HERE / h) for h in HEADERS],
    include_dirs=[_rel(HERE)],
    libraries=["crypto"],       # OpenSSL libcrypto (Debian libssl-dev): csrc/esp.c
    define_macros=[("VXDP_VERSION", '"%s"' % package_version()), ("_GNU_SOURCE", "1")],
    extra_compile_args=["-std=gnu11", "-O1" if SANITIZE else "-O2", "-Wall", "-Wextra",
                        "-Wno-unused-parameter", "-fno-strict-aliasing"]
    + (SANITIZE_FLAGS + ["-g"] if SANITIZE else []),
    extra_link_args=SANITIZE_FLAGS if SANITIZE else [],
)

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "build" / "standalone")
    os.makedirs(out, exist_ok=True)
    ffibuilder.compile(tmpdir=out, verbose=bool(os.environ.get("VERBOSE")))
