"""The `alone` marker under pytest-xdist: a test that must have the machine to itself.

The suite runs on several xdist workers at once (the README's command). That is safe because
every lab has names of its own (namespaces, state file, workdir: vxlan_dp.lab), so tests never
share ports, TAPs or files. A test marked `alone` measures something another test's load beside
it would change (a daemon's CPU use, a flood that must lose nothing to a full socket buffer,
watchdog intervals): it holds an exclusive flock(2) on one file for its whole run (set-up, call,
teardown) while every other test holds a shared one, so nothing runs beside it. The file is
made per run by the controller and handed to the workers; without xdist nothing is locked.

tests/conftest.py imports these hooks; tests/unit/test_xdist_alone.py runs them for real.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["pytest_configure", "pytest_unconfigure", "pytest_configure_node", "pytest_runtest_protocol"]

_LOCK_KEY = "vxlan_dp_alone_lock"
_LOCK_STASH = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "alone: nothing else runs beside it under xdist (xdist_alone.py)")
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        fd, path = tempfile.mkstemp(prefix="vxlan-dp-tests-", suffix=".lock")
        os.close(fd)
        config.stash[_LOCK_STASH] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_LOCK_STASH, None)
    if path:
        os.unlink(path)


@pytest.hookimpl(optionalhook=True)       # an xdist hook: the controller hands the lock to workers
def pytest_configure_node(node: Any) -> None:
    path = node.config.stash.get(_LOCK_STASH, None)
    if path:
        node.workerinput[_LOCK_KEY] = path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Exclusive around an `alone` test, shared around every other, over the whole protocol, so
    a module-scoped set-up or teardown (a Docker lab) is inside it too."""
    path = getattr(item.config, "workerinput", {}).get(_LOCK_KEY)
    if not path:
        yield
        return
    alone = item.get_closest_marker("alone") is not None
    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
