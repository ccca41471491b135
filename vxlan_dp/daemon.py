"""The daemon's lifecycle: start networks, pump packets, reload on SIGHUP, stop on SIGTERM.

Ownership: the daemon opens every fd (TAPs, receive sockets, egress raw sockets) and closes
it; the fastpath Dataplane only borrows them. A receive endpoint is shared by every network
with the same (encap, local, port) and closed with the last of them. READY=1 goes to systemd
only once every network's TAP and socket are up. A TAP deleted under the running daemon is
noticed by its pump (negative errno), logged once, and re-created every second until it is
back; the other networks never stop. Sends to the underlay that fail (the local address
removed, no route) are counted by the fast path; a once-a-second look at those counters logs
the first failure of an episode and the recovery, never one line per packet.

Everything runs on one event loop: the pumps, the status socket, the Prometheus endpoint (a
scrape reads the counters between two pump calls, never concurrently), the WATCHDOG=1 pings
(so a stuck loop stops them and systemd restarts us) and the STATUS= refresh. A reload (SIGHUP)
re-reads the config, rejects it whole when it does not validate or its metrics address cannot
be bound (the running config stays in force), and otherwise touches only the networks that
changed; RELOADING=1 ... READY=1 brackets it for systemd.

Which networks run and what they hold comes from the control plane (`self.control`, static file
or etcd store): it calls back `converge` (the set of networks changed) and `apply` (a network's
peers / static FDB entries changed) on this loop, and reads `local_macs` to publish them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import __version__, rpc
from .config import Config, ConfigError, NetworkConfig, load_config
from .control import ControlPlane, Desired, make_control
from .datapath.tap import Tap
from .datapath.offload import OffloadPlan, flag_names, probe as probe_offloads
from .datapath.underlay import gro_enabled, open_endpoint, open_tx_socket, underlay_mtu
from .fastpath import BACKEND, Dataplane
from .metrics import EndpointView, MetricsServer, NetworkView, make_registry
from .systemd import Notifier, watchdog_interval
from .wire import encap_overhead

__all__ = ["Daemon", "derive_mtu"]

log = logging.getLogger("vxlan_dp")

DEFAULT_UNDERLAY_MTU = 1500
STATUS_INTERVAL = 5.0  # seconds between STATUS= refreshes to systemd
UNDERLAY_CHECK = 1.0   # seconds between looks at the egress error counters


class ReloadRejected(Exception):
    """A new config that validates but cannot be put in force (e.g. its metrics address)."""


def derive_mtu(net: NetworkConfig, underlay: int | None) -> int:
    """TAP MTU: underlay MTU minus outer IP, encapsulation and inner Ethernet (DESIGN.md)."""
    return (underlay or DEFAULT_UNDERLAY_MTU) - encap_overhead(net.encap, net.ipv6) - 14


@dataclass
class _Endpoint:
    sock: Any
    handle: int
    users: set[str] = field(default_factory=set)


@dataclass
class _Network:
    cfg: NetworkConfig
    handle: int
    tap: Tap | None
    mtu: int
    ep_key: tuple[str, str, int]
    desired: Desired
    recovering: asyncio.Task[None] | None = None


class Daemon:
    def __init__(self, config: Config, *, config_path: str | None = None,
                 notifier: Notifier | None = None, socket_path: str | None = None,
                 log_level_locked: bool = False) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.socket_path = socket_path
        self.dp = Dataplane(batch=config.daemon.batch)
        # offloads: probed once; a restart applies a changed `offload` (datapath/offload.py)
        self.offload: OffloadPlan = probe_offloads(enabled=config.daemon.offload, backend=BACKEND)
        self._offload_fallbacks = (0, 0)
        self.networks: dict[str, _Network] = {}
        self._endpoints: dict[tuple[str, str, int], _Endpoint] = {}
        self._tx: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = time.monotonic()
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_ok = True
        self.log_level_locked = log_level_locked  # --log-level given: config changes do not apply
        self.metrics = MetricsServer(make_registry(self))
        self._ready = False
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._sample: tuple[float, dict[str, int]] | None = None
        self.control: ControlPlane = make_control(config)
        self._no_local_macs = False

    # --- networks -------------------------------------------------------------------------
    def _endpoint(self, net: NetworkConfig) -> tuple[tuple[str, str, int], _Endpoint]:
        key = (net.encap, net.local, net.port)
        ep = self._endpoints.get(key)
        if ep is None:
            sock = open_endpoint(net.encap, net.local, net.port, gro=self.offload.rx_gro)
            ipv4_header = net.encap == "gre" and not net.ipv6
            handle = self.dp.add_endpoint(net.encap, sock.fileno(), ipv4_header=ipv4_header,
                                          gro=gro_enabled(sock))
            ep = self._endpoints[key] = _Endpoint(sock, handle)
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._on_endpoint, handle)
            log.info("listening for %s on %s", net.encap, f"{net.local}:{net.port}" if net.port else net.local)
        return key, ep

    def _release_endpoint(self, key: tuple[str, str, int], name: str) -> None:
        ep = self._endpoints[key]
        ep.users.discard(name)
        if not ep.users:
            assert self._loop is not None
            self._loop.remove_reader(ep.sock.fileno())
            self.dp.remove_endpoint(ep.handle)
            ep.sock.close()
            del self._endpoints[key]

    def _tx_socket(self, version: int) -> None:
        if version not in self._tx:
            sock = self._tx[version] = open_tx_socket(version)
            self.dp.set_tx_socket(version, sock.fileno())
            self.dp.set_tx_gso(version, self.offload.tx_gso)

    def start_network(self, cfg: NetworkConfig, desired: Desired) -> None:
        under = underlay_mtu(cfg.local)
        if under is None:
            log.warning("network %s: %s is not an address of this host (yet); assuming underlay MTU %d",
                        cfg.name, cfg.local, DEFAULT_UNDERLAY_MTU)
        mtu = cfg.mtu or derive_mtu(cfg, under)
        if cfg.mtu and under and cfg.mtu > derive_mtu(cfg, under):
            log.warning("network %s: mtu %d exceeds what underlay MTU %d carries (%d); large frames will be dropped "
                        "by the underlay", cfg.name, cfg.mtu, under, derive_mtu(cfg, under))
        self._tx_socket(6 if cfg.ipv6 else 4)
        key, ep = self._endpoint(cfg)
        tap = None
        try:
            tap = Tap.open(cfg.tap, mtu, cfg.bridge, offload=self._tap_offload())
            handle = self.dp.add_network(cfg.params(mtu), ep.handle, tap.fd, vnet_hdr=tap.vnet_hdr,
                                         offload=tap.offload)
        except Exception:
            if tap is not None:
                tap.close()
            if not ep.users:
                ep.users.add(cfg.name)
                self._release_endpoint(key, cfg.name)
            raise
        ep.users.add(cfg.name)
        net = self.networks[cfg.name] = _Network(cfg, handle, tap, mtu, key, Desired((), ()))
        self.apply(cfg.name, desired)
        assert self._loop is not None
        self._loop.add_reader(tap.fd, self._on_tap, net)
        log.info("network %s up: vni %d %s tap %s mtu %d peers %d", cfg.name, cfg.vni, cfg.encap, cfg.tap,
                 mtu, len(desired.peers))

    def stop_network(self, name: str) -> None:
        net = self.networks.pop(name)
        assert self._loop is not None
        if net.recovering:
            net.recovering.cancel()
        if net.tap is not None:
            if net.tap.fd >= 0:
                self._loop.remove_reader(net.tap.fd)
            net.tap.close()
        self.dp.remove_network(net.handle)
        self._release_endpoint(net.ep_key, name)
        log.info("network %s removed", name)

    def apply(self, name: str, desired: Desired) -> None:
        """Bring a network's peers and static FDB entries to `desired` (control plane output)."""
        net = self.networks[name]
        if desired.peers != net.desired.peers:
            self.dp.set_peers(net.handle, desired.peers)
        old, new = dict(net.desired.fdb), dict(desired.fdb)
        for mac in old.keys() - new.keys():
            self.dp.fdb_remove(net.handle, mac)
        for mac, remote in new.items():
            if old.get(mac) != remote:
                self.dp.fdb_add(net.handle, mac, remote)
        net.desired = desired

    # --- pumps ----------------------------------------------------------------------------
    def _on_tap(self, net: _Network) -> None:
        n = self.dp.pump_tap(net.handle, time.monotonic())
        if n < 0:
            self._tap_lost(net, -n)

    def _on_endpoint(self, handle: int) -> None:
        self.dp.pump_endpoint(handle, time.monotonic())

    def _tap_lost(self, net: _Network, err: int) -> None:
        assert self._loop is not None and net.tap is not None
        log.error("network %s: TAP %s failed (%s); re-creating it", net.cfg.name, net.cfg.tap, os.strerror(err))
        self._loop.remove_reader(net.tap.fd)
        self.dp.set_tap(net.handle, -1)
        net.tap.close()
        net.tap = None
        net.recovering = self._loop.create_task(self._recover_tap(net))

    async def _recover_tap(self, net: _Network) -> None:
        while True:
            try:
                tap = Tap.open(net.cfg.tap, net.mtu, net.cfg.bridge, offload=self._tap_offload())
            except Exception as e:  # noqa: BLE001 - keep trying; say why once a second at most
                log.debug("network %s: TAP not back yet: %s", net.cfg.name, e)
                await asyncio.sleep(1.0)
                continue
            net.tap = tap
            self.dp.set_tap(net.handle, tap.fd, vnet_hdr=tap.vnet_hdr, offload=tap.offload)
            assert self._loop is not None
            self._loop.add_reader(tap.fd, self._on_tap, net)
            net.recovering = None
            log.info("network %s: TAP %s is back", net.cfg.name, tap.name)
            return

    # --- offloads --------------------------------------------------------------------------
    def _tap_offload(self) -> int:
        return self.offload.tap_flags if self.offload.vnet_hdr else 0

    def offload_status(self) -> dict[str, Any]:
        """The plan, what is on now (runtime fallbacks included) and the offload counters."""
        nets = {name: {"vnet_hdr": bool(n.tap and n.tap.vnet_hdr),
                       "granted": flag_names(n.tap.offload if n.tap else 0),
                       "coalescing": flag_names(self.dp.tap_offload(n.handle))}
                for name, n in self.networks.items()}
        return {"plan": self.offload.as_dict(), "enabled": self.offload_features(), "networks": nets,
                "stats": self.dp.offload_stats()}

    def offload_features(self) -> dict[str, bool]:
        """Feature -> in use now: the plan, less what the data path turned off at run time."""
        f = self.offload.features()
        f["udp_segment"] = f["udp_segment"] and all(self.dp.tx_gso(v) for v in self._tx)
        taps = [(n.handle, n.tap) for n in self.networks.values() if n.tap is not None]
        if taps:
            f["vnet_hdr"] = f["vnet_hdr"] and all(tap.vnet_hdr for _, tap in taps)
            f["tap_gro"] = f["vnet_hdr"] and all(self.dp.tap_offload(handle) for handle, _ in taps)
        else:
            f["tap_gro"] = f["vnet_hdr"]
        return f

    def _log_offload_fallbacks(self) -> None:
        """Say once when the data path turned an offload off because the path refused it."""
        st = self.dp.offload_stats()
        now = (st["tx_gso_fallbacks"], st["tap_gso_fallbacks"])
        if now[0] > self._offload_fallbacks[0]:
            log.warning("UDP_SEGMENT refused by the path (%s): sending datagram by datagram",
                        os.strerror(st["tx_gso_errno"]))
        if now[1] > self._offload_fallbacks[1]:
            log.warning("a TAP refused a GSO frame (%s): writing frames one by one",
                        os.strerror(st["tap_gso_errno"]))
        self._offload_fallbacks = now

    # --- reload ---------------------------------------------------------------------------
    def reload(self, new: Config) -> None:
        """Apply the difference between the running config and `new`; untouched networks keep running."""
        self.control.update_config(new)
        self.converge(self.control.networks(), self.control.desired())
        self.config = new
        self.reloads += 1

    def converge(self, want: Mapping[str, NetworkConfig], desired: Mapping[str, Desired]) -> set[str]:
        """Run exactly the networks in `want`: stop the others, (re)start changed ones, apply the rest."""
        for name in self.networks.keys() - want.keys():
            self.stop_network(name)
        for name, cfg in want.items():
            net = self.networks.get(name)
            if net is not None:
                if _same_but_control(net.cfg, cfg):
                    net.cfg = cfg
                    self.apply(name, desired[name])
                    continue
                self.stop_network(name)
            try:
                self.start_network(cfg, desired[name])
            except Exception as e:  # noqa: BLE001 - one bad network must not stop the others
                log.error("network %s: cannot start: %s", name, e)
        return set(self.networks)

    def local_macs(self, name: str, now: float) -> list[tuple[str, float]]:
        """(mac, age) seen leaving network `name`'s TAP, for the control plane to publish."""
        net = self.networks.get(name)
        if net is None:
            return []
        try:
            macs: list[tuple[str, float]] = self.dp.local_macs(net.handle, now)
            return macs
        except AttributeError:  # a C build from before the local-MAC table
            if not self._no_local_macs:
                self._no_local_macs = True
                log.warning("the %s fast path does not report local MACs; they are not published", BACKEND)
            return []

    def _on_sighup(self) -> None:
        if not self.config_path:
            log.warning("SIGHUP: no config file to re-read")
            return
        if not self._ready or (self._reload_task is not None and not self._reload_task.done()):
            self._reload_again = True  # run once the start-up or the current reload is done
            return
        assert self._loop is not None
        self._reload_task = self._loop.create_task(self._run_reload())

    async def _run_reload(self) -> None:
        while True:
            self._reload_again = False
            await self.reload_from_file()
            if not self._reload_again:
                return

    async def reload_from_file(self) -> bool:
        """SIGHUP's work: re-read `config_path` and apply it, or reject it whole. True if applied."""
        assert self.config_path
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            await self._switch_metrics(new.daemon.metrics_address)
        except (ConfigError, ReloadRejected) as e:
            self.reload_failures += 1
            self.last_reload_ok = False
            log.error("reload rejected, keeping the running config: %s", e)
            applied = False
        else:
            log.info("reloading %s", self.config_path)
            try:
                self._reload_daemon_settings(new)
                self.reload(new)
                self.last_reload_ok = applied = True
            except Exception:  # systemd must see READY=1 again whatever happened
                log.exception("reload failed half-way; running networks: %s", ", ".join(self.networks) or "none")
                self.reload_failures += 1
                self.last_reload_ok = applied = False
        self.notifier.ready(self.status_line())
        return applied

    def _reload_daemon_settings(self, new: Config) -> None:
        old = self.config.daemon
        if new.daemon.batch != self.dp.batch:
            log.warning("daemon.batch %d -> %d takes effect at the next restart", self.dp.batch, new.daemon.batch)
        if new.daemon.offload != old.offload:
            log.warning("daemon.offload %s -> %s takes effect at the next restart",
                        str(old.offload).lower(), str(new.daemon.offload).lower())
        if new.daemon.control != old.control:
            log.warning("daemon.control %s -> %s takes effect at the next restart", old.control, new.daemon.control)
        if new.daemon.log_level != old.log_level and not self.log_level_locked:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
            log.info("log level now %s", new.daemon.log_level)

    async def _switch_metrics(self, want: tuple[str, int] | None) -> None:
        """Move the Prometheus endpoint to `want` (None: off); on failure keep the old one and raise."""
        have = self.metrics.requested
        if want == have:
            return
        await self.metrics.close()
        if want is None:
            log.info("metrics endpoint off")
            return
        try:
            await self.metrics.start(*want)
        except OSError as e:
            if have is not None:
                try:
                    await self.metrics.start(*have)
                except OSError as e2:
                    log.error("metrics: cannot listen on %s:%d again: %s", have[0], have[1], e2)
            raise ReloadRejected(f"daemon.metrics: cannot listen on {_show_addr(want)}: "
                                 f"{e.strerror or e}") from None
        log.info("metrics on http://%s/metrics", _show_addr(want))

    # --- status ---------------------------------------------------------------------------
    def status_line(self) -> str:
        """One line for systemd's STATUS=: networks, and rates since the previous call."""
        now = time.monotonic()
        tot = dict.fromkeys(("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "drops"), 0)
        down = 0
        for n in self.networks.values():
            c = self.dp.counters(n.handle)
            for k in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes"):
                tot[k] += c.get(k, 0)
            tot["drops"] += sum(v for k, v in c.items() if k.startswith("drop_"))
            down += n.tap is None
        for e in self._endpoints.values():
            tot["drops"] += sum(v for k, v in self.dp.endpoint_counters(e.handle).items() if k.startswith("drop_"))
        text = f"{len(self.networks)} networks" + (f" ({down} TAP down)" if down else "")
        prev, self._sample = self._sample, (now, tot)
        if prev is None or now - prev[0] < 0.5:
            return f"{text}, {tot['tx_packets']} tx / {tot['rx_packets']} rx packets"

        def rate(k: str) -> float:
            assert prev is not None
            return max(0, tot[k] - prev[1].get(k, 0)) / (now - prev[0])
        return (f"{text}; tx {_si(rate('tx_packets'))}pkt/s {_si(rate('tx_bytes') * 8)}bit/s; "
                f"rx {_si(rate('rx_packets'))}pkt/s {_si(rate('rx_bytes') * 8)}bit/s; "
                f"drops {_si(rate('drops'))}/s")

    def metric_networks(self) -> list[NetworkView]:
        return [NetworkView(name, n.handle, n.cfg.vni, n.cfg.encap, n.cfg.tap, n.tap is not None, n.mtu,
                            n.cfg.max_fdb_entries, len(dict(n.desired.fdb)))
                for name, n in self.networks.items()]

    def metric_endpoints(self) -> list[EndpointView]:
        return [EndpointView(k[0], k[1], k[2], e.handle) for k, e in self._endpoints.items()]

    def fdb_rows(self, name: str) -> list[dict[str, Any]] | None:
        """One network's forwarding entries, or None when there is no such network."""
        net = self.networks.get(name)
        if net is None:
            return None
        return [r._asdict() for r in self.dp.fdb_dump(net.handle, time.monotonic())]

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        nets = {}
        for name, n in self.networks.items():
            nets[name] = {
                "vni": n.cfg.vni, "encap": n.cfg.encap, "port": n.cfg.port, "local": n.cfg.local,
                "tap": n.cfg.tap, "tap_up": n.tap is not None, "mtu": n.mtu,
                "peers": self.dp.peers(n.handle),
                "fdb": [r._asdict() for r in self.dp.fdb_dump(n.handle, now)],
                "counters": self.dp.counters(n.handle),
            }
        eps = [{"encap": k[0], "local": k[1], "port": k[2], "networks": sorted(e.users),
                "counters": self.dp.endpoint_counters(e.handle)} for k, e in self._endpoints.items()]
        return {"version": __version__, "backend": BACKEND, "pid": os.getpid(),
                "uptime": now - self.started, "batch": self.dp.batch, "reloads": self.reloads,
                "reload_failures": self.reload_failures, "last_reload_ok": self.last_reload_ok,
                "metrics": _show_addr(self.metrics.address) if self.metrics.address else None,
                "control": self.control.health(), "networks": nets, "endpoints": eps,
                "offload": self.offload_status()}

    # --- lifecycle ------------------------------------------------------------------------
    async def _run_ageing(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.fdb_sweep)
            self.dp.age(time.monotonic())
            self._log_offload_fallbacks()

    async def _run_underlay_watch(self, interval: float) -> None:
        """Log once when a network's sends to the underlay start failing (its local address
        gone, no route, a full buffer) and once when they work again; counters hold the numbers."""
        seen: dict[int, tuple[int, int]] = {}      # by network handle (never reused)
        failing: set[int] = set()
        while True:
            await asyncio.sleep(interval)
            for name, n in list(self.networks.items()):
                c = self.dp.counters(n.handle)
                errs, sent = c["drop_socket_error"], c["tx_packets"]
                last = seen.get(n.handle, (0, 0))
                seen[n.handle] = (errs, sent)
                if errs > last[0] and n.handle not in failing:
                    failing.add(n.handle)
                    try:
                        gone = underlay_mtu(n.cfg.local) is None
                    except Exception:  # noqa: BLE001 - the warning matters, not the detail
                        gone = False
                    log.warning("network %s: %d packets could not be sent to the underlay%s", name,
                                errs - last[0], f"; {n.cfg.local} is not an address of this host" if gone else "")
                elif n.handle in failing and errs == last[0] and sent > last[1]:
                    failing.discard(n.handle)
                    log.info("network %s: sends to the underlay work again", name)
            live = {n.handle for n in self.networks.values()}
            for h in seen.keys() - live:
                del seen[h]
            failing &= live

    async def _run_watchdog(self, interval: float) -> None:
        # From the loop itself: if a pump or anything else blocks the loop, the pings stop.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _run_status(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.notifier.status(self.status_line())

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        log.info("vxlan-dp %s starting, %s backend, %d networks", __version__, BACKEND,
                 len(self.config.networks))
        log.info("offloads: %s", self.offload.describe())
        # SIGHUP before READY would kill us (default action): catch it now, reload once ready.
        self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self.control.start(self)  # etcd: the first read of the store (bounded wait)
        desired = self.control.desired()
        try:
            for name, cfg in self.control.networks().items():
                if name not in self.networks:
                    self.start_network(cfg, desired[name])
        except Exception as e:  # noqa: BLE001 - any start-up failure: tear down what started, exit 1
            log.error("start-up failed: %s", e)
            await self.control.stop()
            self._teardown()
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_stop)
        self._tasks.append(self._loop.create_task(self._run_ageing()))
        self._tasks.append(self._loop.create_task(self._run_underlay_watch(UNDERLAY_CHECK)))
        wd = watchdog_interval()
        if wd:
            self._tasks.append(self._loop.create_task(self._run_watchdog(wd)))
        server = None
        if self.socket_path:
            try:
                server = await rpc.start(self, self.socket_path)
            except OSError as e:
                log.error("cannot listen on the status socket %s: %s", self.socket_path, e)
                await self.control.stop()
                self._teardown()
                return 1
        addr = self.config.daemon.metrics_address
        if addr is not None:
            try:
                await self.metrics.start(*addr)
            except OSError as e:
                log.error("daemon.metrics: cannot listen on %s: %s", _show_addr(addr), e.strerror or e)
                if server is not None:
                    server.close()
                    _unlink(self.socket_path)
                await self.control.stop()
                self._teardown()
                return 1
            log.info("metrics on http://%s/metrics", _show_addr(addr))
        if self.notifier.enabled:
            self._tasks.append(self._loop.create_task(self._run_status(STATUS_INTERVAL)))
        self._ready = True
        self.notifier.ready(self.status_line())
        log.info("ready")
        if self._reload_again:
            self._on_sighup()
        await self._stop.wait()
        log.info("stopping")
        self.notifier.stopping()
        if self._reload_task is not None:
            self._tasks.append(self._reload_task)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.control.stop()  # etcd: revoke our lease, so the others drop us at once
        await self.metrics.close()
        if server is not None:
            server.close()
            _unlink(self.socket_path)
        self._teardown()
        return 0

    def _teardown(self) -> None:
        for name in list(self.networks):
            try:
                self.stop_network(name)
            except Exception as e:  # noqa: BLE001 - tear down the rest regardless
                log.error("network %s: teardown: %s", name, e)
        for sock in self._tx.values():
            sock.close()
        self._tx.clear()


def _unlink(path: str | None) -> None:
    try:
        os.unlink(path or "")
    except OSError:
        pass


def _show_addr(addr: tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _si(x: float) -> str:
    """1234567 -> '1.23M': rates in a status line."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _same_but_control(a: NetworkConfig, b: NetworkConfig) -> bool:
    """True when only peers / static FDB entries differ: those are applied in place."""
    return replace(a, peers=(), fdb=()) == replace(b, peers=(), fdb=())

