"""Where peers and static forwarding entries come from: the static config, or (later) etcd.

A control plane turns its source into `Desired` state per network; the daemon applies the
difference to the data plane. Static: the TOML file, re-read on SIGHUP.
"""

from .static import Desired, desired_from_config

__all__ = ["Desired", "desired_from_config"]
