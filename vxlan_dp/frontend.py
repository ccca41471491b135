"""Where a front-end plugs in: the status socket, the metrics endpoint, and the next ones
(the Docker plugin, key management) are all a `FrontEnd` handed to `Daemon(front_ends=...)`.

Invariants:
- A front-end reads the daemon only through the `View` it is given (view.py: status, snapshot,
  FDB rows, metric views) and steers it only through `Steer` (stop, reload). It never imports
  daemon.py and never reaches into the networks' fds: imports point cli -> front-ends -> daemon.
- `start` runs once the networks are up; whatever it opens it closes through a callback pushed
  on `stack`, so start-up failure and shutdown tear it down on the same path. To refuse start-up
  it raises `FrontEndError` with a message naming the field or the socket; the daemon logs it
  and exits 1 with everything already opened torn down.
- `reconfigure` runs at a reload before any network changes; raising `ReloadRejected` refuses
  the whole new config, and the front-end must then be serving as it was before the call.
- `status` adds keys to the status snapshot (e.g. {"metrics": "127.0.0.1:9469"}); {} if none.
Everything runs on the daemon's one event loop: never concurrently with a pump.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol

from .config import Config, NetworkConfig

if TYPE_CHECKING:
    from .view import View

__all__ = ["FrontEnd", "FrontEndError", "ReloadRejected", "Steer"]


class FrontEndError(Exception):
    """A front-end cannot start (e.g. its socket cannot be bound); the message is logged as is."""


class ReloadRejected(Exception):
    """A new config that validates but cannot be put in force (e.g. its metrics address)."""


class Steer(Protocol):
    """What a front-end may ask of the daemon besides reading the view."""

    def request_stop(self) -> None:
        """Stop as SIGTERM does."""
        ...

    def request_reload(self) -> None:
        """Re-read the config file as SIGHUP does (queued while start-up or a reload runs)."""
        ...

    def add_network(self, cfg: NetworkConfig) -> int:
        """Run a network beside the config file's (the Docker plugin's); its MTU. Raises
        ConfigError when it clashes with a running one, another exception if it cannot start."""
        ...

    def remove_network(self, name: str) -> None:
        """Stop a network `add_network` started; no-op if it does not run."""
        ...

    def neigh_set(self, network: str, ip: str, mac: str) -> None:
        """Tell ARP / ND suppression that `ip` is at `mac` in running network `network` (an
        endpoint the front-end knows). KeyError: no such network; ValueError names what is
        wrong with the address or MAC. The control plane's entry wins for the same address."""
        ...

    def neigh_delete(self, network: str, ip: str) -> bool:
        """Withdraw an entry `neigh_set` made; False if there was none."""
        ...


class FrontEnd(Protocol):
    name: str

    async def start(self, stack: AsyncExitStack, view: "View", steer: Steer) -> None:
        """Begin serving; push the matching teardown on `stack`; raise FrontEndError to refuse."""
        ...

    async def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config, or raise ReloadRejected leaving things as they were."""
        ...

    def status(self) -> dict[str, Any]:
        """Keys this front-end adds to the status snapshot."""
        ...
