"""The daemon's lifecycle: start, reload on SIGHUP, stop on SIGTERM; the control plane's callbacks.

Rooms (docs/ARCHITECTURE.md): `Networks` (networks.py) opens and closes every data-plane fd
and runs the pumps; `View` (view.py) is what status, metrics and any other front-end read;
each `FrontEnd` (frontend.py: rpc.py, metrics.py, the next one) is handed in by the caller
and plugs in beside the others. This module only orders them in time.

Invariants:
- One teardown path: everything started is pushed on one `AsyncExitStack` as it starts, so a
  start-up failure and a normal stop undo exactly what was done, in reverse order (front-ends
  and periodic tasks, then the control plane, then the networks and their fds).
- READY=1 goes to systemd only once every network's TAP and socket and every front-end are up.
- Everything but the pumps runs on one event loop: the front-ends, the WATCHDOG=1 pings (so
  a stuck loop stops them and systemd restarts us) and the STATUS= refresh. The pumps run
  where `[daemon] poll` puts them (datapath/poll.py): with the C backend, in a thread of
  their own in C; with the Python backend, on this loop. A scrape or a status request reads
  the counters between two pump batches either way (the Dataplane's own lock), never
  concurrently with one.
- A reload (SIGHUP) re-reads the config and rejects it whole when it does not validate or a
  front-end refuses it (e.g. the metrics address cannot be bound): the running config stays
  in force. Otherwise only the networks that changed are touched. RELOADING=1 ... READY=1
  brackets it for systemd, whatever happens.
- Which networks run and what they hold comes from the control plane (static file or etcd
  store): it calls back `converge` and `apply` on this loop, and reads `local_macs`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from . import __version__
from .config import Config, ConfigError, NetworkConfig, check_networks, load_config
from .control import ControlPlane, Desired, make_control
from .core.fdbtable import FdbTable
from .datapath.offload import OffloadPlan
from .datapath.offload import probe as probe_offloads
from .fastpath import BACKEND, Dataplane
from .fastpath.api import Dataplane as DataplaneAPI
from .frontend import FrontEnd, FrontEndError, ReloadRejected
from .networks import Networks
from .systemd import Notifier, watchdog_interval
from .view import ReloadStats, View
from .watch import OffloadFallbacks, PartialChecksums, UnderlayWatch

__all__ = ["Daemon"]

log = logging.getLogger("vxlan_dp")

STATUS_INTERVAL = 5.0  # seconds between STATUS= refreshes to systemd
UNDERLAY_CHECK = 1.0   # seconds between looks at the egress error counters


class Daemon:
    def __init__(self, config: Config, *, config_path: str | None = None,
                 notifier: Notifier | None = None, front_ends: Sequence[FrontEnd] = (),
                 log_level_locked: bool = False) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.front_ends = list(front_ends)
        self.log_level_locked = log_level_locked  # --log-level given: config changes do not apply
        self.dp: DataplaneAPI = Dataplane(batch=config.daemon.batch)
        # offloads: probed once; a restart applies a changed `offload` (datapath/offload.py)
        self.offload: OffloadPlan = probe_offloads(enabled=config.daemon.offload, backend=BACKEND)
        self.networks = Networks(self.dp, self.offload, poll=config.daemon.poll,
                                 poll_spin_us=config.daemon.poll_spin_us, queues=config.daemon.queues)
        self.runtime: dict[str, NetworkConfig] = {}  # added by front-ends (add_network): Docker's
        self.control: ControlPlane = make_control(config)
        self.reload_stats = ReloadStats()
        self.view = View(self.networks, self.offload, self.control, self.reload_stats, self.front_ends)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._ready = False
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False

    # --- the control plane's callbacks (control.ControlSink) ------------------------------
    def converge(self, want: Mapping[str, NetworkConfig], desired: Mapping[str, Desired]) -> set[str]:
        return self.networks.converge(want, desired)

    def apply(self, name: str, desired: Desired) -> None:
        self.networks.apply(name, desired)

    def local_macs(self, name: str, now: float) -> list[tuple[str, float]]:
        return self.networks.local_macs(name, now)

    def update_entries(self, name: str, fdb: FdbTable, fdb_remove: bytes = b"",
                       neigh: Sequence[tuple[str, str]] = (), neigh_remove: Sequence[str] = (), *,
                       replace: bool = False) -> None:
        self.networks.update_entries(name, fdb, fdb_remove, neigh, neigh_remove, replace=replace)

    def local_neigh(self, name: str, now: float) -> list[tuple[str, str, float]]:
        return self.networks.local_neigh(name, now)

    def key_state(self, name: str) -> tuple[tuple[int, ...], int] | None:
        return self.networks.key_state(name)

    # --- steering (frontend.Steer) --------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        if not self.config_path:
            log.warning("SIGHUP: no config file to re-read")
            return
        if not self._ready or (self._reload_task is not None and not self._reload_task.done()):
            self._reload_again = True  # run once the start-up or the current reload is done
            return
        assert self._loop is not None
        self._reload_task = self._loop.create_task(self._run_reload())

    def add_network(self, cfg: NetworkConfig) -> int:
        """Run `cfg` beside the file's networks, as if it were one of them: the control plane
        gives its peers (static: its own list; etcd: the store's members of its name)."""
        others = [n for n in self._effective(self.config).networks if n.name != cfg.name]
        try:
            check_networks([*others, cfg])
        except ConfigError as e:  # the new network is the last one: name its own field
            raise ConfigError(f"-o {e.field.rsplit('.', 1)[-1]}", e.reason) from None
        self.runtime[cfg.name] = cfg
        self.control.update_config(self._effective(self.config))  # etcd converges here
        if cfg.name not in self.networks:
            try:
                self.networks.start(cfg, self.control.desired().get(cfg.name, Desired((), ())))
            except Exception:
                del self.runtime[cfg.name]
                self.control.update_config(self._effective(self.config))
                raise
            self.control.update_config(self._effective(self.config))  # etcd: now it runs: publish
        net = self.networks.get(cfg.name)
        assert net is not None
        return net.mtu

    async def ensure_keys(self, cfg: NetworkConfig) -> None:
        """The store holds a key for encrypted network `cfg` (keyed by the store) once this returns."""
        await self.control.ensure_keys(cfg.name)

    def neigh_set(self, network: str, ip: str, mac: str) -> None:
        self.networks.neigh.set(network, ip, mac)

    def neigh_delete(self, network: str, ip: str) -> bool:
        return self.networks.neigh.delete(network, ip)

    def remove_network(self, name: str) -> None:
        if self.runtime.pop(name, None) is None:
            return
        self.control.update_config(self._effective(self.config))  # etcd converges here
        if name in self.networks:
            self.networks.stop(name)

    def _effective(self, config: Config) -> Config:
        """The file's networks and those added at run time: what the control plane runs."""
        return replace(config, networks=(*config.networks, *self.runtime.values()))

    # --- reload ---------------------------------------------------------------------------
    async def _run_reload(self) -> None:
        while True:
            self._reload_again = False
            await self.reload_from_file()
            if not self._reload_again:
                return

    async def reload_from_file(self) -> bool:
        """SIGHUP's work: re-read `config_path` and apply it, or reject it whole. True if applied."""
        assert self.config_path
        stats = self.reload_stats
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            for fe in self.front_ends:
                await fe.reconfigure(new)
        except (ConfigError, ReloadRejected) as e:
            stats.failures += 1
            stats.last_ok = False
            problems = e.problems if isinstance(e, ConfigError) else (e,)
            log.error("reload rejected, keeping the running config: %s", "; ".join(map(str, problems)))
            applied = False
        else:
            log.info("reloading %s", self.config_path)
            try:
                self._reload_daemon_settings(new)
                self.reload(new)
                stats.last_ok = applied = True
            except Exception:  # systemd must see READY=1 again whatever happened
                log.exception("reload failed half-way; running networks: %s", ", ".join(self.networks) or "none")
                stats.failures += 1
                stats.last_ok = applied = False
        self.notifier.ready(self.view.status_line())
        return applied

    def reload(self, new: Config) -> None:
        """Apply the difference between the running config and `new`; untouched networks keep running."""
        self.control.update_config(self._effective(new))
        self.converge(self.control.networks(), self.control.desired())
        self.networks.reload_keys()
        self.config = new
        self.reload_stats.reloads += 1

    def _reload_daemon_settings(self, new: Config) -> None:
        old = self.config.daemon
        if new.daemon.batch != self.dp.batch:
            log.warning("daemon.batch %d -> %d takes effect at the next restart", self.dp.batch, new.daemon.batch)
        if new.daemon.offload != old.offload:
            log.warning("daemon.offload %s -> %s takes effect at the next restart",
                        str(old.offload).lower(), str(new.daemon.offload).lower())
        if (new.daemon.poll, new.daemon.poll_spin_us) != (old.poll, old.poll_spin_us):
            log.warning("daemon.poll %s (spin %d us) -> %s (spin %d us) takes effect at the next restart",
                        old.poll, old.poll_spin_us, new.daemon.poll, new.daemon.poll_spin_us)
        if new.daemon.queues != old.queues:
            log.warning("daemon.queues %d -> %d takes effect at the next restart", old.queues, new.daemon.queues)
        if new.daemon.control != old.control:
            log.warning("daemon.control %s -> %s takes effect at the next restart", old.control, new.daemon.control)
        if new.daemon.log_level != old.log_level and not self.log_level_locked:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
            log.info("log level now %s", new.daemon.log_level)

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        log.info("vxlan-dp %s starting, %s backend, %d networks", __version__, BACKEND,
                 len(self.config.networks))
        log.info("offloads: %s", self.offload.describe())
        # SIGHUP before READY would kill us (default action): catch it now, reload once ready.
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        async with AsyncExitStack() as stack:
            try:
                await self._start(stack)
            except FrontEndError as e:
                log.error("%s", e)
                return 1
            except Exception as e:  # noqa: BLE001 - a network that cannot start: say which, exit 1
                log.error("start-up failed: %s", e)
                return 1
            self._ready = True
            self.notifier.ready(self.view.status_line())
            log.info("ready")
            if self._reload_again:
                self.request_reload()
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
        return 0

    async def _start(self, stack: AsyncExitStack) -> None:
        """Bring everything up, pushing each teardown on `stack` as its part comes up."""
        loop = asyncio.get_running_loop()
        stack.callback(self.networks.close)
        await self.control.start(self)  # etcd: the first read of the store (bounded wait)
        stack.push_async_callback(self.control.stop)  # etcd: revoke our lease, the others drop us at once
        desired = self.control.desired()
        self.networks.start_many([(cfg, desired[name]) for name, cfg in self.control.networks().items()
                                  if name not in self.networks], strict=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        for fe in self.front_ends:
            await fe.start(stack, self.view, self)
        fallbacks, underlay = OffloadFallbacks(self.dp), UnderlayWatch(self.networks)
        partial = PartialChecksums(self.networks)

        def ageing() -> None:
            self.dp.age(time.monotonic())
            fallbacks.check()
        tasks = [_every(lambda: self.config.daemon.fdb_sweep, ageing),
                 _every(lambda: UNDERLAY_CHECK, underlay.check),
                 _every(lambda: UNDERLAY_CHECK, lambda: partial.check(time.monotonic())),
                 _every(lambda: 1.0, lambda: self.networks.rekey_due(time.monotonic()))]
        wd = watchdog_interval()
        if wd:
            tasks.append(_every(lambda: wd, self.notifier.watchdog, first=True))
        if self.notifier.enabled:
            tasks.append(_every(lambda: STATUS_INTERVAL, lambda: self.notifier.status(self.view.status_line())))
        stack.push_async_callback(self._cancel, [loop.create_task(t) for t in tasks])

    async def _cancel(self, tasks: list[asyncio.Task[Any]]) -> None:
        if self._reload_task is not None:
            tasks.append(self._reload_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _every(interval: Callable[[], float], fn: Callable[[], Any], *, first: bool = False) -> None:
    """Call `fn` every `interval()` seconds until cancelled (`interval` is re-read each time: a
    reload may change it); `first`: once at once too (the watchdog: from the loop itself, so a
    blocked loop stops the pings)."""
    if first:
        fn()
    while True:
        await asyncio.sleep(interval())
        fn()

