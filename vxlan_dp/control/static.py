"""The static control plane: peers and FDB entries exactly as the config file states them."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config

__all__ = ["Desired", "desired_from_config"]


@dataclass(frozen=True)
class Desired:
    peers: tuple[str, ...]
    fdb: tuple[tuple[str, str], ...]  # (mac, remote)


def desired_from_config(config: Config) -> dict[str, Desired]:
    return {n.name: Desired(n.peers, tuple((f.mac, f.remote) for f in n.fdb)) for n in config.networks}
