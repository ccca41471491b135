"""What several test files share: the CI rule, frame and packet builders, waiting, captures.

The CI rule (tests/conftest.py's docstring): under CI=true a test that cannot run (no root, a
tool missing, the C backend not built) fails instead of skipping, so that CI proves the data
plane rather than quietly passing without it. `require()` is that rule, the one copy of it.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["CI", "require"]

CI = os.environ.get("CI", "").lower() == "true"


def require(missing: str | None, *, module: bool = False) -> None:
    """Nothing if `missing` is empty; else fail under CI=true and skip elsewhere, saying why.

    `module=True` where it is called at import time, to skip (or fail) the whole module."""
    if not missing:
        return
    if CI:
        pytest.fail(f"CI=true and {missing}", pytrace=False)
    pytest.skip(missing, allow_module_level=module)
