"""Where networks, peers and static forwarding entries come from: the static config, or etcd.

A control plane (`ControlPlane`, base.py) turns its source into network definitions and
`Desired` state per network; the daemon (a `ControlSink`) applies the difference to the data
plane. Static (static.py): the TOML file, re-read on SIGHUP. etcd (etcd.py, with its I/O-free
half in etcd_state.py): membership, FDB entries and network definitions from an etcd v3 store.
"""

from ..config import Config
from .base import ControlPlane, ControlSink, Desired
from .static import StaticControl, desired_from_config

__all__ = ["ControlPlane", "ControlSink", "Desired", "StaticControl", "desired_from_config", "make_control"]


def make_control(config: Config) -> ControlPlane:
    """The control plane `config.daemon.control` names (etcd's client is imported only for it)."""
    if config.daemon.control == "etcd":
        from .etcd import EtcdControl

        return EtcdControl(config)
    return StaticControl(config)
