"""Run pyroute2 calls where they work: off the daemon's event loop thread.

pyroute2 >= 0.9 drives its sync API with an asyncio loop of its own, which cannot run inside
a thread whose loop is already running (and uvloop cannot host its netlink endpoints at all).
Management operations are rare and short, so the loop thread hands them to one worker thread
and waits: netlink work stays ordered and no pyroute2 object crosses threads.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, ParamSpec, TypeVar

__all__ = ["netlink_call"]

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        return _executor


def netlink_call(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run `fn` directly, or in the netlink thread when an event loop runs here."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        return _pool().submit(fn, *args, **kwargs).result()
    return wrapper
