"""The static control plane: peers and FDB entries exactly as the config file states them."""

from __future__ import annotations

from typing import Any

from ..config import Config, NetworkConfig
from ..core.fdbtable import FdbTable
from .base import ControlSink, Desired

__all__ = ["Desired", "StaticControl", "desired_from_config"]


def desired_from_config(config: Config) -> dict[str, Desired]:
    # a parsed config's FdbTable goes on as it is: packed, never one object per entry
    return {n.name: Desired(n.peers, n.fdb if isinstance(n.fdb, FdbTable) else tuple(n.fdb), n.neigh_entries())
            for n in config.networks}


class StaticControl:
    """The file is the whole truth; it changes only on SIGHUP (`update_config`)."""

    backend = "static"

    def __init__(self, config: Config) -> None:
        self.config = config

    async def start(self, sink: ControlSink) -> None:
        pass

    async def stop(self) -> None:
        pass

    def networks(self) -> dict[str, NetworkConfig]:
        return {n.name: n for n in self.config.networks}

    def desired(self) -> dict[str, Desired]:
        return desired_from_config(self.config)

    def update_config(self, config: Config) -> None:
        self.config = config

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "connected": True}

    async def ensure_keys(self, name: str) -> None:
        raise ValueError(f"network {name}: encrypted without a key file needs keys from the store "
                         '(control = "etcd")')
