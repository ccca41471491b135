"""Shared fixtures: root/netns gating, the backend matrix and labs that always tear down.

Under CI=true a test that needs root, network namespaces or the C backend fails instead of
skipping: CI must prove the data plane, not quietly pass without it (helpers.require).
Every test under tests/netns/ and tests/interop/ builds real namespaces and TAP devices: it
is marked `root` by its path, here, and so is any test elsewhere marked `root` by hand.

The suite runs on several pytest-xdist workers at once; a test marked `alone` runs with nothing
beside it (tests/xdist_alone.py, whose hooks are imported here).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator

import pytest

import vxlan_dp
from helpers import require
from xdist_alone import (pytest_configure, pytest_configure_node, pytest_runtest_protocol,  # noqa: F401 - hooks
                         pytest_unconfigure)

# Hypothesis (>= 6.131) draws some values from the literals of every local module loaded so far,
# and keeps adding as modules load: a test's examples then depend on which tests ran before it
# (seen: the derandomized generator guards in test_differential / test_esp_fastpath passing
# alone and failing after test_control_etcd). Loading every vxlan_dp module up front makes the
# pool the same whatever the order. A module that cannot load here fails its own tests later.
for _m in pkgutil.walk_packages(vxlan_dp.__path__, "vxlan_dp."):
    if _m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(_m.name)
    except Exception:  # noqa: BLE001 - e.g. the C module not built: its tests say so
        pass

ROOT_DIRS = ("netns", "interop")


@pytest.hookimpl(tryfirst=True)   # before `-m "not root"` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name in ROOT_DIRS:
            item.add_marker(pytest.mark.root)


def _netns_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


@pytest.fixture(autouse=True)
def _root_tests_need_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is not None:
        require(_netns_missing())


@pytest.fixture(params=["c", "python"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every lab test runs on both fastpath backends."""
    from vxlan_dp.fastpath import backends

    require(None if request.param in backends() else f"the {request.param} backend is not built (pip install -e .)")
    return str(request.param)


@pytest.fixture
def make_lab() -> Iterator[Callable[..., object]]:
    from vxlan_dp.lab import Lab

    labs: list[Lab] = []

    def make(hosts: int = 2, **kw: object) -> Lab:
        lab = Lab(hosts, **kw)  # type: ignore[arg-type]  # each test passes Lab's own keywords
        labs.append(lab)
        lab.build()
        return lab

    yield make
    for lab in labs:
        lab.close()
