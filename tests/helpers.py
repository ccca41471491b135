"""What several test files share: the CI rule, frame and packet builders, waiting, captures.

The CI rule (tests/conftest.py's docstring): under CI=true a test that cannot run (no root, a
tool missing, the C backend not built) fails instead of skipping, so that CI proves the data
plane rather than quietly passing without it. `require()` is that rule, the one copy of it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CI", "SCRIPTS", "require", "need_tool", "c_backend"]

CI = os.environ.get("CI", "").lower() == "true"
SCRIPTS = Path(__file__).resolve().parent / "scripts"   # programs tests run in a namespace or child


def require(missing: str | None, *, module: bool = False, elsewhere: str = "skip") -> None:
    """Nothing if `missing` is empty; else fail under CI=true and skip elsewhere, saying why.

    `module=True` where it is called at import time, to skip (or fail) the whole module;
    `elsewhere="run"` where the test can still do part of its job without the thing (only CI
    insists on it)."""
    if not missing:
        return
    if CI:
        pytest.fail(f"CI=true and {missing}", pytrace=False)
    if elsewhere == "skip":
        pytest.skip(missing, allow_module_level=module)


def need_tool(name: str, package: str, *, module: bool = False) -> str:
    """The path of program `name`; if it is missing, `require` says which Debian package has it."""
    path = shutil.which(name)
    require(None if path else f"{name} is missing (apt-get install {package})", module=module)
    assert path is not None
    return path


def c_backend(*, module: bool = False, elsewhere: str = "skip") -> Any:
    """The C backend's Dataplane class (None where it is not built and `elsewhere="run"`);
    CI has a compiler, so a missing build fails there."""
    from vxlan_dp.fastpath import backends

    cls = backends().get("c")
    require(None if cls else "the C fast path is not built (pip install -e .)", module=module,
            elsewhere=elsewhere)
    return cls
