"""The plugin as a daemon front-end: start serving once the networks are up, stop with it.

Start-up order: the state file's networks run again first (so containers that kept running
through a restart are forwarding before Docker calls in), then the socket opens. At shutdown
the socket closes; networks, bridges and veths stay as they are for the next start (the TAPs
go with the daemon, and come back, re-enslaved to the same bridges, when it starts again).
"""

from __future__ import annotations

import logging
import os
from contextlib import AsyncExitStack
from typing import Any

from collections.abc import Callable

from ..config import Config, DockerConfig
from ..view import View
from .driver import NetworkSteer, Plugin
from .server import serve

__all__ = ["DockerFrontEnd"]

log = logging.getLogger("vxlan_dp.docker")


class DockerFrontEnd:
    name = "docker"

    def __init__(self, config: Config) -> None:
        assert config.docker is not None
        self.cfg: DockerConfig = config.docker
        self.config = config
        self.plugin: Plugin | None = None

    async def start(self, stack: AsyncExitStack, view: View, steer: NetworkSteer) -> None:
        # docker.local, else etcd.local, else (etcd) the address the control plane found
        self._local: Callable[[], str | None] = lambda: self.cfg.local or getattr(view.control, "local", None)
        book = None
        if self.config.daemon.control == "etcd" and self.config.etcd is not None:
            from .etcd_book import EtcdBook  # here: static control never loads grpc

            book = EtcdBook(self.config.etcd, self._local)
        share = None
        if book is not None and self.cfg.api is not None:
            from .share import NetworkShare  # here: only with [docker] api loads the Docker SDK

            assert self.config.etcd is not None
            share = NetworkShare(self.config.etcd, self.cfg.api, self._local)
        self.plugin = Plugin(self.cfg, steer, book=book, local=self._local, share=share)
        await self.plugin.restore()
        if book is not None:
            book.start()   # claims what the state file says we held, under a new lease
            stack.push_async_callback(book.stop)
        try:
            runner = await serve(self.plugin.routes(), self.cfg.socket)
        except OSError as e:
            from ..frontend import FrontEndError
            raise FrontEndError(f"docker.socket: cannot listen on {self.cfg.socket}: {e.strerror or e}") from None
        stack.push_async_callback(runner.cleanup)
        stack.callback(_unlink, self.cfg.socket)
        if share is not None:   # after the socket: creating a network here calls us back
            share.start()
            stack.push_async_callback(share.stop)
        log.info("docker plugin on %s (%d networks)", self.cfg.socket, len(self.plugin.networks))

    async def reconfigure(self, config: Config) -> None:
        if config.docker != self.cfg:
            log.warning("[docker] changes take effect at the next restart")

    def status(self) -> dict[str, Any]:
        p = self.plugin
        if p is None:
            return {}
        return {"docker": {"socket": self.cfg.socket, "networks": {
            n.id[:12]: {"network": n.cfg.name, "vni": n.cfg.vni, "bridge": n.cfg.bridge, "mtu": n.mtu,
                        "endpoints": sum(e.network == n.id for e in p.endpoints.values())}
            for n in p.networks.values()}}}


def _unlink(path: str) -> None:

    try:
        os.unlink(path)
    except OSError:
        pass
