"""Prometheus metrics: a collector that reads the data plane's counters at scrape time.

Invariants:
- Nothing here runs per packet. The fast path keeps plain counters (C struct fields or ints);
  `DataplaneCollector.collect()` reads them through the Dataplane API (`counters`,
  `endpoint_counters`, `peers`, FDB size) only when Prometheus scrapes.
- Scrapes are served from the daemon's own event loop (`MetricsServer`), never from a thread:
  the counters and the FDB are read between two pump calls, so a read never races a batch
  (the pure backend's dicts and the C backend's hash table are not thread-safe).
- Every counter of a network or endpoint is exported from the moment it exists, zero or not,
  so `rate()` and `increase()` see the first packet. Names follow the Prometheus conventions:
  `vxlan_dp_` prefix, `_total` on counters, base units (bytes, seconds), `direction` and `reason`
  as labels; `promtool check metrics` passes on the exposition (tests/unit/test_metrics.py).

Directions: "egress" is host -> overlay (frames read from the TAP, encapsulated packets sent),
"ingress" is overlay -> host (packets accepted from the underlay, frames written to the TAP).
Mean batch size = rate(vxlan_dp_tap_frames_total{direction="egress"}) /
rate(vxlan_dp_tap_read_batches_total), and likewise for the endpoint receive batches.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Iterable, Iterator
from contextlib import AsyncExitStack
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from . import __version__
from .config import Config
from .core.counters import EP_DROP_REASONS, NET_DROP_REASONS
from .frontend import FrontEndError, ReloadRejected, Steer
from .view import EndpointView, NetworkView, show_addr

__all__ = ["DataplaneCollector", "MetricsFrontEnd", "MetricsServer", "MetricsSource", "NetworkView",
           "EndpointView", "make_registry", "PREFIX"]

log = logging.getLogger(__name__)

PREFIX = "vxlan_dp"
_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0
# The classic text format, which every Prometheus since 2.0 parses (prometheus_client's own
# "latest" moved on to 1.0.0, whose name escaping our legacy-valid names do not need).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """The daemon as the collector sees it (view.View; tests pass a fake with a real PureDataplane)."""
    dp: Any
    reloads: int
    reload_failures: int
    last_reload_ok: bool

    def metric_networks(self) -> Iterable[NetworkView]: ...
    def metric_endpoints(self) -> Iterable[EndpointView]: ...


def _name(suffix: str) -> str:
    return f"{PREFIX}_{suffix}"


class DataplaneCollector:
    """A prometheus_client custom collector; register it once, it reads live state per scrape."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        # Registering must not read the data plane (it may not exist yet): describe nothing
        # and let the registry skip its duplicate-name check for us.
        return []

    def _fdb_counts(self, net: NetworkView) -> tuple[int, int]:
        """(static, learned) entries, from the size alone: a scrape never dumps a big table."""
        total = int(self.source.dp.fdb_size(net.handle))
        static = min(net.static_fdb, total)
        return static, total - static

    def collect(self) -> Iterator[Metric]:
        src, dp = self.source, self.source.dp
        nets = list(src.metric_networks())
        eps = list(src.metric_endpoints())

        build = InfoMetricFamily(_name("build"), "vxlan-dp version and the Python running it.")
        build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
        yield build
        backend = InfoMetricFamily(_name("backend"), 'The active fast path backend: "c" or "python".')
        backend.add_metric([], {"backend": str(getattr(dp, "backend", "unknown"))})
        yield backend
        yield GaugeMetricFamily(_name("batch_max_packets"), "Packets handled per fast path call at most.",
                                value=int(getattr(dp, "batch", 0)))
        yield GaugeMetricFamily(_name("networks"), "Overlay networks running.", value=len(nets))
        yield from self._offload()
        yield from self._poll()
        reloads = CounterMetricFamily(_name("reloads"), "Config reloads (SIGHUP) by result.",
                                      labels=["result"])
        reloads.add_metric(["applied"], src.reloads)
        reloads.add_metric(["rejected"], src.reload_failures)
        yield reloads
        yield GaugeMetricFamily(_name("config_last_reload_successful"),
                                "1 if the last reload was applied (or none was asked), 0 if rejected.",
                                value=1 if src.last_reload_ok else 0)

        yield from self._control()
        yield from self._networks(nets)
        yield from self._neigh(nets)
        yield from self._endpoints(eps)

    def _offload(self) -> Iterator[Metric]:
        """Offloads in use, by feature (runtime fallbacks included), and what they did."""
        features = getattr(self.source, "offload_features", None)
        if features is not None:
            on = GaugeMetricFamily(_name("offload_enabled"), "1 if the offload is in use (probed at start-up, "
                                   "0 once a refusal turned it off).", labels=["feature"])
            for feature, enabled in features().items():
                on.add_metric([feature], 1 if enabled else 0)
            yield on
        stats = getattr(self.source.dp, "offload_stats", None)
        if stats is not None:
            ev = CounterMetricFamily(_name("offload_events"), "Offload work: super-frames split (tso_frames) into "
                                     "segments, UDP_SEGMENT sends, coalesced TAP writes, fallbacks.",
                                     labels=["event"])
            for event, n in stats().items():
                if not event.endswith("_errno"):
                    ev.add_metric([event], n)
            yield ev

    def _poll(self) -> Iterator[Metric]:
        """Each queue's pump ([daemon] poll): what it moved, how often it slept and was woken,
        how often it polled instead (adaptive's windows, busy)."""
        get = getattr(self.source, "poll_stats", None)
        if get is None:
            return
        mode, queues = get()
        info = InfoMetricFamily(_name("poll"), '[daemon] poll: "interrupt", "adaptive" or "busy".')
        info.add_metric([], {"mode": mode})
        yield info
        helps = {"moved_bytes": "Bytes the queue's pumps read from TAPs and underlay sockets.",
                 "wakeups": "Sleeps of the queue's pump that ended with work: one scheduler wake-up each.",
                 "spin_windows": 'poll = "adaptive": times the pump kept polling after traffic instead of sleeping.',
                 "spin_polls": "Polls that did not sleep (adaptive's windows, busy)."}
        for key, text in helps.items():
            fam = CounterMetricFamily(_name(f"pump_{key}"), text, labels=["queue"])
            for q, st in enumerate(queues):
                fam.add_metric([str(q)], st[key])
            yield fam

    def _control(self) -> Iterator[Metric]:
        """The control plane's health (the daemon's `control`; absent in a bare test source)."""
        control = getattr(self.source, "control", None)
        if control is None:
            return
        h = control.health()
        backend = str(h.get("backend", "unknown"))
        up = GaugeMetricFamily(_name("control_connected"), "1 if the control plane's source is reachable "
                               "(always 1 for static); 0: forwarding on the last known state.",
                               labels=["backend"])
        up.add_metric([backend], 1 if h.get("connected") else 0)
        yield up
        if "resyncs" in h:
            yield CounterMetricFamily(_name("control_resyncs"), "Full reads of the store (start-up and after "
                                      "every reconnection).", value=int(h["resyncs"]))
            yield CounterMetricFamily(_name("control_outages"), "Times the store became unreachable.",
                                      value=int(h.get("outages", 0)))
        if h.get("last_sync") is not None:
            yield GaugeMetricFamily(_name("control_last_sync_timestamp_seconds"), "Unix time of the last full "
                                    "read of the store.", value=float(h["last_sync"]))

    def _networks(self, nets: list[NetworkView]) -> Iterator[Metric]:
        dp = self.source.dp
        info = GaugeMetricFamily(_name("network_info"), "Static facts of a network; value 1.",
                                 labels=["network", "vni", "encap", "tap"])
        tap_up = GaugeMetricFamily(_name("network_tap_up"), "1 if the network's TAP device is attached.",
                                   labels=["network"])
        mtu = GaugeMetricFamily(_name("network_mtu_bytes"), "The network's inner (TAP) MTU.",
                                labels=["network"])
        peers = GaugeMetricFamily(_name("peers"), "Remote hosts in the network's flood list.",
                                  labels=["network"])
        tap_frames = CounterMetricFamily(
            _name("tap_frames"), "Inner Ethernet frames read from the TAP (egress) or written to it (ingress).",
            labels=["network", "direction"])
        tap_bytes = CounterMetricFamily(
            _name("tap_bytes"), "Bytes of inner Ethernet frames read from the TAP (egress) or written to it "
            "(ingress).", labels=["network", "direction"])
        tun_packets = CounterMetricFamily(
            _name("tunnel_packets"), "Encapsulated packets sent to peers (egress, flood copies included) or "
            "accepted from the underlay (ingress).", labels=["network", "direction"])
        tun_bytes = CounterMetricFamily(
            _name("tunnel_bytes"), "Bytes of encapsulated packets: whole outer IP packets sent (egress); "
            "underlay payloads accepted (ingress).", labels=["network", "direction"])
        batches = CounterMetricFamily(_name("tap_read_batches"), "Fast path calls that read frames from the TAP.",
                                      labels=["network"])
        drops = CounterMetricFamily(_name("drops"), "Packets or frames dropped, by network and reason.",
                                    labels=["network", "reason"])
        flood = CounterMetricFamily(_name("flood_frames"), "Frames flooded (unknown unicast, broadcast, "
                                    "multicast) by head-end replication.", labels=["network"])
        copies = CounterMetricFamily(_name("flood_replications"), "Packets sent as flood copies, one per peer.",
                                     labels=["network"])
        fdb = GaugeMetricFamily(_name("fdb_entries"), "Forwarding entries by type.", labels=["network", "type"])
        fdb_max = GaugeMetricFamily(_name("fdb_max_entries"), "Forwarding entries allowed before learning stops.",
                                    labels=["network"])
        learned = CounterMetricFamily(_name("fdb_learned"), "Source MACs learned.", labels=["network"])
        moved = CounterMetricFamily(_name("fdb_moved"), "Learned MACs that moved to another remote.",
                                    labels=["network"])
        aged = CounterMetricFamily(_name("fdb_aged"), "Learned entries removed by ageing.", labels=["network"])
        refused = CounterMetricFamily(_name("fdb_learning_refused"), "Source MACs not learned because the table "
                                      "was full (max_fdb_entries).", labels=["network"])
        csum = CounterMetricFamily(_name("checksums_completed"), "Inner TCP/UDP packets from peers whose checksum "
                                   "the sender left partial (a virtual link with TX checksum offload), completed "
                                   "before the TAP.", labels=["network"])
        for n in nets:
            c = dp.counters(n.handle)
            name = n.name
            info.add_metric([name, str(n.vni), n.encap, n.tap], 1)
            tap_up.add_metric([name], 1 if n.tap_up else 0)
            mtu.add_metric([name], n.mtu)
            peers.add_metric([name], len(dp.peers(n.handle)))
            tap_frames.add_metric([name, "egress"], c.get("tap_rx_frames", 0))
            tap_frames.add_metric([name, "ingress"], c.get("tap_tx_frames", 0))
            tap_bytes.add_metric([name, "egress"], c.get("tap_rx_bytes", 0))
            tap_bytes.add_metric([name, "ingress"], c.get("tap_tx_bytes", 0))
            tun_packets.add_metric([name, "egress"], c.get("tx_packets", 0))
            tun_packets.add_metric([name, "ingress"], c.get("rx_packets", 0))
            tun_bytes.add_metric([name, "egress"], c.get("tx_bytes", 0))
            tun_bytes.add_metric([name, "ingress"], c.get("rx_bytes", 0))
            batches.add_metric([name], c.get("tap_rx_batches", 0))
            for reason in NET_DROP_REASONS:
                drops.add_metric([name, reason], c.get("drop_" + reason, 0))
            flood.add_metric([name], c.get("flood_frames", 0))
            copies.add_metric([name], c.get("flood_copies", 0))
            static, dynamic = self._fdb_counts(n)
            fdb.add_metric([name, "static"], static)
            fdb.add_metric([name, "learned"], dynamic)
            fdb_max.add_metric([name], n.max_fdb_entries)
            learned.add_metric([name], c.get("fdb_learned", 0))
            moved.add_metric([name], c.get("fdb_moved", 0))
            aged.add_metric([name], c.get("fdb_aged", 0))
            refused.add_metric([name], c.get("fdb_full", 0))
            csum.add_metric([name], c.get("csum_completed", 0))
        yield from (info, tap_up, mtu, peers, tap_frames, tap_bytes, tun_packets, tun_bytes, batches, drops,
                    flood, copies, fdb, fdb_max, learned, moved, aged, refused, csum)

    def _neigh(self, nets: list[NetworkView]) -> Iterator[Metric]:
        """ARP / ND suppression (vxlan_dp/neighbours.py), per network."""
        dp = self.source.dp
        entries = GaugeMetricFamily(_name("neigh_entries"), "IP -> MAC entries ARP / ND suppression answers "
                                    "from (static and snooped).", labels=["network"])
        suppressed = CounterMetricFamily(_name("neigh_suppressed"), "ARP requests (arp) and IPv6 neighbour "
                                         "solicitations (nd) answered on the TAP instead of flooded.",
                                         labels=["network", "protocol"])
        replies = CounterMetricFamily(_name("neigh_replies"), "Answers written to the TAP, by result.",
                                      labels=["network", "result"])
        unknown = CounterMetricFamily(_name("neigh_unknown_flooded"), "Requests for addresses not in the table, "
                                      "flooded as without suppression.", labels=["network"])
        snooped = CounterMetricFamily(_name("neigh_snooped"), "Entries learned or moved by snooping ARP replies "
                                      "and NAs from the TAP.", labels=["network"])
        refused = CounterMetricFamily(_name("neigh_snoop_refused"), "Snooped entries not learned: the table "
                                      "held its maximum of learned entries.", labels=["network"])
        aged = CounterMetricFamily(_name("neigh_aged"), "Snooped entries removed by ageing.", labels=["network"])
        for n in nets:
            c = dp.neigh_counters(n.handle)
            entries.add_metric([n.name], dp.neigh_size(n.handle))
            suppressed.add_metric([n.name, "arp"], c["arp_suppressed"])
            suppressed.add_metric([n.name, "nd"], c["nd_suppressed"])
            replies.add_metric([n.name, "sent"], c["replies_sent"])
            replies.add_metric([n.name, "error"], c["reply_errors"])
            unknown.add_metric([n.name], c["unknown_flooded"])
            snooped.add_metric([n.name], c["snooped"])
            refused.add_metric([n.name], c["snoop_full"])
            aged.add_metric([n.name], c["aged"])
        yield from (entries, suppressed, replies, unknown, snooped, refused, aged)

    def _endpoints(self, eps: list[EndpointView]) -> Iterator[Metric]:
        dp = self.source.dp
        dgrams = CounterMetricFamily(_name("endpoint_datagrams"), "Datagrams received on an underlay endpoint "
                                     "(before they are matched to a network).", labels=["endpoint"])
        nbytes = CounterMetricFamily(_name("endpoint_bytes"), "Bytes received on an underlay endpoint.",
                                     labels=["endpoint"])
        batches = CounterMetricFamily(_name("endpoint_receive_batches"), "Fast path calls that received "
                                      "datagrams on the endpoint.", labels=["endpoint"])
        drops = CounterMetricFamily(_name("endpoint_drops"), "Datagrams dropped before a network was known "
                                    "(unknown VNI, bad header, receive error), by reason.",
                                    labels=["endpoint", "reason"])
        for e in eps:
            c = dp.endpoint_counters(e.handle)
            label = e.label
            dgrams.add_metric([label], c.get("rx_datagrams", 0))
            nbytes.add_metric([label], c.get("rx_bytes", 0))
            batches.add_metric([label], c.get("rx_batches", 0))
            for reason in EP_DROP_REASONS:
                drops.add_metric([label, reason], c.get("drop_" + reason, 0))
        yield from (dgrams, nbytes, batches, drops)


def make_registry(source: MetricsSource, *, process: bool = True) -> CollectorRegistry:
    """A registry of our own (not the global one): the data plane, plus process_* and python_info."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DataplaneCollector(source))
    if process:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
    return reg


class MetricsServer:
    """A minimal HTTP/1.x endpoint on the event loop: GET /metrics, one request per connection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: asyncio.AbstractServer | None = None
        self.requested: tuple[str, int] | None = None   # as configured (port may be 0)
        self.address: tuple[str, int] | None = None     # as bound

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True,
                                                  limit=_MAX_REQUEST)
        sockname = self._server.sockets[0].getsockname()
        self.requested, self.address = (host, port), (host, int(sockname[1]))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()  # the listening socket is closed now; a reload may rebind at once
            try:
                # waits for open scrapes to finish; each one times out by itself anyway
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
            self._server = None
            self.requested = self.address = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
            status, ctype, body, method = self._respond(head)
        except asyncio.LimitOverrunError:
            status, ctype, body, method = "431 Request Header Fields Too Large", "text/plain", b"", "GET"
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        try:
            hdr = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode()
            writer.write(hdr + (body if method != "HEAD" else b""))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, str, bytes, str]:
        line = head[:_MAX_REQUEST].split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request\n", "GET"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n", method
        if target == "/metrics":
            try:
                return "200 OK", CONTENT_TYPE, generate_latest(self.registry), method
            except Exception:  # a collector bug must not take the daemon down
                log.exception("metrics: collecting failed")
                return "500 Internal Server Error", "text/plain", b"collecting failed\n", method
        if target == "/":
            return ("200 OK", "text/html; charset=utf-8",
                    b"<html><body><a href=\"/metrics\">vxlan-dp metrics</a></body></html>\n", method)
        return "404 Not Found", "text/plain", b"not found\n", method


class MetricsFrontEnd:
    """The Prometheus endpoint as a daemon front-end: `daemon.metrics` at start-up, moved (or
    turned off) by a reload; a reload whose address cannot be bound is rejected whole, and the
    endpoint stays where it was."""

    name = "metrics"

    def __init__(self, address: tuple[str, int] | None) -> None:
        self.address = address
        self.server: MetricsServer | None = None

    async def start(self, stack: AsyncExitStack, view: MetricsSource, steer: Steer) -> None:
        server = self.server = MetricsServer(make_registry(view))
        stack.push_async_callback(server.close)
        if self.address is None:
            return
        try:
            await server.start(*self.address)
        except OSError as e:
            raise FrontEndError(f"daemon.metrics: cannot listen on {show_addr(self.address)}: "
                                f"{e.strerror or e}") from None
        log.info("metrics on http://%s/metrics", show_addr(self.address))

    async def reconfigure(self, config: Config) -> None:
        """Move the endpoint to `daemon.metrics` (None: off); on failure keep the old one and raise."""
        assert self.server is not None, "reconfigure before start"
        want, have = config.daemon.metrics_address, self.server.requested
        if want == have:
            return
        await self.server.close()
        if want is None:
            log.info("metrics endpoint off")
            return
        try:
            await self.server.start(*want)
        except OSError as e:
            if have is not None:
                try:
                    await self.server.start(*have)
                except OSError as e2:
                    log.error("metrics: cannot listen on %s:%d again: %s", have[0], have[1], e2)
            raise ReloadRejected(f"daemon.metrics: cannot listen on {show_addr(want)}: "
                                 f"{e.strerror or e}") from None
        log.info("metrics on http://%s/metrics", show_addr(want))

    def status(self) -> dict[str, Any]:
        bound = self.server.address if self.server is not None else None
        return {"metrics": show_addr(bound) if bound else None}
