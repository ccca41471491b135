"""Shared fixtures: root/netns gating, the backend matrix and labs that always tear down.

Under CI=true a test that needs root, network namespaces or the C backend fails instead of
skipping: CI must prove the data plane, not quietly pass without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

CI = os.environ.get("CI", "").lower() == "true"


def _cannot_run(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _netns_ok() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


@pytest.fixture
def root_netns() -> None:
    why = _netns_ok()
    if why:
        _cannot_run(why)


@pytest.fixture(params=["c", "python"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every lab test runs on both fastpath backends."""
    from vxlan_dp.fastpath import backends

    if request.param not in backends():
        _cannot_run(f"the {request.param} backend is not built (pip install -e .)")
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
