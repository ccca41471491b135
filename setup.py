"""Build glue only: everything else about the package is in pyproject.toml.

`cffi_modules` compiles vxlan_dp._fastpath (csrc/build_fastpath.py). The build is optional:
where no working C compiler exists, `pip install .` still succeeds, prints one warning, and
vxlan_dp.fastpath runs on the pure-Python backend (it says so once at import).
"""

from __future__ import annotations

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

WARNING = ("WARNING: vxlan-dp's C fast path could not be compiled ({}); installing without it. "
           "The pure-Python backend will be used (same behaviour, far slower). Install a C "
           "compiler and the Python headers (Debian: gcc python3-dev) and reinstall to get it.")


class OptionalBuildExt(build_ext):
    """build_ext that turns a compiler failure into a warning instead of a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - no compiler at all: distutils' errors vary
            self._skip(e)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]  # setuptools' Extension is untyped
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - CompileError, LinkError, VerificationError...
            self._skip(e)

    def _skip(self, e: BaseException) -> None:
        print(WARNING.format(str(e).strip() or type(e).__name__), file=sys.stderr)


setup(
    cffi_modules=["csrc/build_fastpath.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
