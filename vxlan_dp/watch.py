"""Turning counters into log lines: one line when trouble starts, one when it ends.

Invariants:
- Nothing here changes the data plane; it only reads counters the fast path keeps anyway,
  once per check, on the daemon's event loop.
- Sends to the underlay that fail (the local address removed, no route, a full buffer) are
  counted by the fast path; `UnderlayWatch.check` logs the first failure of an episode per
  network and the recovery, never one line per packet.
- An offload that the data path turned off at run time (the path refused UDP_SEGMENT, a TAP
  refused a GSO frame) is logged once per new fallback, by `OffloadFallbacks.check`.
- Inner checksums a peer left partial (csum_completed, vxlan_dp/wire/csum.py): `PartialChecksums`
  logs the start of an episode per network, naming the sending peer and the likely cause, a
  new peer joining an episode, and its end after CSUM_QUIET seconds without one.
"""

from __future__ import annotations

import errno
import logging
import os

from .datapath.underlay import underlay_mtu
from .fastpath.api import GSO_REPROBE, Dataplane
from .networks import Networks

__all__ = ["OffloadFallbacks", "UnderlayWatch", "PartialChecksums", "CSUM_QUIET"]

CSUM_QUIET = 60.0       # seconds without a completed checksum that end an episode

log = logging.getLogger("vxlan_dp")


class UnderlayWatch:
    def __init__(self, networks: Networks) -> None:
        self.networks = networks
        self._seen: dict[int, tuple[int, int]] = {}   # by network handle (never reused)
        self._failing: set[int] = set()

    def check(self) -> None:
        dp = self.networks.dp
        gone: dict[str, bool] = {}  # local address -> not on this host: asked once per check
        for name, n in self.networks.items():
            c = dp.counters(n.handle)
            errs, sent = c["drop_socket_error"], c["tx_packets"]
            last = self._seen.get(n.handle, (0, 0))
            self._seen[n.handle] = (errs, sent)
            if errs > last[0] and n.handle not in self._failing:
                self._failing.add(n.handle)
                if n.cfg.local not in gone:     # a netlink dump: 1,000 failing networks, one dump
                    try:
                        gone[n.cfg.local] = underlay_mtu(n.cfg.local) is None
                    except Exception:  # noqa: BLE001 - the warning matters, not the detail
                        gone[n.cfg.local] = False
                log.warning("network %s: %d packets could not be sent to the underlay%s", name, errs - last[0],
                            f"; {n.cfg.local} is not an address of this host" if gone[n.cfg.local] else "")
            elif n.handle in self._failing and errs == last[0] and sent > last[1]:
                self._failing.discard(n.handle)
                log.info("network %s: sends to the underlay work again", name)
        live = {n.handle for _, n in self.networks.items()}
        for h in self._seen.keys() - live:
            del self._seen[h]
        self._failing &= live


class OffloadFallbacks:
    def __init__(self, dp: Dataplane) -> None:
        self.dp = dp
        self._seen = (0, 0)

    def check(self) -> None:
        """Say once when the data path turned an offload off because the path refused it."""
        st = self.dp.offload_stats()
        now = (st["tx_gso_fallbacks"], st["tap_gso_fallbacks"])
        if now[0] > self._seen[0]:
            err = st["tx_gso_errno"]
            if err in (errno.EINVAL, errno.EMSGSIZE):   # those sends only (csrc/fastpath.c)
                log.warning("%d UDP_SEGMENT sends refused (%s): sent datagram by datagram; "
                            "UDP_SEGMENT stays on", now[0] - self._seen[0], os.strerror(err))
            else:
                log.warning("UDP_SEGMENT refused by the path (%s): sending datagram by datagram, "
                            "trying it again in %d s", os.strerror(err), GSO_REPROBE)
        if now[1] > self._seen[1]:
            log.warning("a TAP refused a GSO frame (%s): writing frames one by one",
                        os.strerror(st["tap_gso_errno"]))
        self._seen = now


class PartialChecksums:
    """Say once per episode that a network completes checksums a peer left partial, and who."""

    def __init__(self, networks: Networks) -> None:
        self.networks = networks
        self._seen: dict[int, int] = {}             # handle -> csum_completed at the last check
        self._open: dict[int, tuple[int, float, set[str]]] = {}  # handle -> (count at start, last rise, peers)

    def check(self, now: float) -> None:
        dp = self.networks.dp
        for name, n in self.networks.items():
            done = dp.counters(n.handle)["csum_completed"]
            last = self._seen.get(n.handle, 0)
            self._seen[n.handle] = done
            ep = self._open.get(n.handle)
            if done > last:
                peer = dp.csum_peer(n.handle) or "an unknown source"
                if ep is None:
                    self._open[n.handle] = (last, now, {peer})
                    log.info("network %s: completing inner TCP/UDP checksums that peer %s left partial "
                             "(%d packets so far); likely a virtual link (veth, virtio-net, a virtual "
                             "switch) with TX checksum offload at the sender, which never fills them. "
                             "Nothing to do: vxlan-dp completes them (csum_completed)", name, peer, done - last)
                else:
                    if peer not in ep[2]:
                        ep[2].add(peer)
                        log.info("network %s: peer %s leaves inner checksums partial too", name, peer)
                    self._open[n.handle] = (ep[0], now, ep[2])
            elif ep is not None and now - ep[1] >= CSUM_QUIET:
                del self._open[n.handle]
                log.info("network %s: no partial checksums for %.0f s; %d completed in that episode",
                         name, CSUM_QUIET, done - ep[0])
        live = {n.handle for _, n in self.networks.items()}
        for h in self._seen.keys() - live:
            del self._seen[h]
        for h in self._open.keys() - live:
            del self._open[h]
