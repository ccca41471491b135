"""I/O-free data-plane state: FDB (learning, aging, static), counter names, MTU arithmetic."""

from .counters import DROP_REASONS, EP_COUNTERS, EP_DROP_REASONS, NET_COUNTERS, NET_DROP_REASONS
from .fdb import LEARN_FULL, LEARN_MOVED, LEARN_NEW, LEARN_REFRESHED, LEARN_STATIC, Fdb, FdbEntry

__all__ = ["DROP_REASONS", "EP_COUNTERS", "EP_DROP_REASONS", "NET_COUNTERS", "NET_DROP_REASONS",
           "Fdb", "FdbEntry", "LEARN_FULL", "LEARN_MOVED", "LEARN_NEW", "LEARN_REFRESHED",
           "LEARN_STATIC"]
