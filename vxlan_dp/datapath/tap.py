"""TAP devices: created and configured through pyroute2, attached with TUNSETIFF for the fd.

Invariants: the fd is non-blocking and delivers whole Ethernet frames without a packet-info
prefix (IFF_NO_PI); a TAP that already exists under our name (a daemon killed with SIGKILL
leaves its TAPs behind) is adopted, not an error; `close()` removes the device and, if we
created it, the bridge, so nothing the daemon made outlives it.

Offloads (datapath/offload.py): asked for with `offload=` (TUN_F_* flags), the fd is attached
with IFF_VNET_HDR and TUNSETOFFLOAD gets the flags or the largest fallback the kernel takes;
`vnet_hdr` and `offload` say what the TAP really has. If it takes not even TUN_F_CSUM, the fd
is re-attached without the header. Without offloads the TAP's offload flags are cleared, so an
adopted TAP never keeps handing out super-frames from an earlier daemon's settings.

Queues (`queues=` N > 1, [daemon] queues): the device is made with IFF_MULTI_QUEUE and attached
N times, `fd` being queue 0 and `queue_fds` queues 1..N-1; the kernel spreads the frames it
sends through the TAP over the queues by flow (drivers/net/tun.c tun_automq_select_queue), and
a frame written to any queue enters the stack alike. Header, offloads and vnet header size are
the device's, not a queue's: queue 0 settles them, the others attach with the same flags. A TAP
left with the other queue mode (a daemon run with another `queues`) cannot be attached
(tun_set_iff refuses a mismatch with EINVAL): it is removed and made again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from .netlink import netlink_call
from ..linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF, TUNSETVNETHDRSZ
from ..wire.offload import VNET_HDR_LEN
from .offload import set_tap_offload

__all__ = ["Tap", "TapError"]

log = logging.getLogger(__name__)

BRIDGE_MARK = "created by vxlan-dp"  # IFLA_IFALIAS of a bridge we made and may remove


class TapError(RuntimeError):
    pass


def _link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


@dataclass(frozen=True)
class _Link:
    index: int
    kind: str | None
    alias: str | None
    multi_queue: bool = False

    @staticmethod
    def of(link: Any) -> "_Link":
        kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        alias = link.get("IFLA_IFALIAS")
        mq = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_TUN_MULTI_QUEUE")
        return _Link(int(link["index"]), None if kind is None else str(kind), None if alias is None else str(alias),
                     bool(mq))


def _wait_all_up(ipr: IPRoute, taps: Sequence["Tap"], timeout: float = 3.0) -> None:
    """Return once the kernel reports every TAP operationally up.

    The carrier that TUNSETIFF turns on reaches operstate through linkwatch, up to a second
    later (net/core/link_watch.c), and a bridge enables the port only then (br_port_carrier_check):
    frames sent before that are lost. Waiting here keeps READY=1 truthful.
    """
    pending = {t.index: t.name for t in taps}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        if len(pending) == 1:
            links = ipr.get_links(next(iter(pending)))
        else:
            links = ipr.get_links()
        for link in links:
            if link.get("IFLA_OPERSTATE") == "UP":
                pending.pop(int(link["index"]), None)
        if pending:
            time.sleep(0.02)
    for name in pending.values():
        log.warning("TAP %s not operationally up after %.0fs; continuing", name, timeout)


def _attach(name: str, offload: int, queues: int = 1) -> tuple[list[int], bool, int]:
    """Open /dev/net/tun on TAP `name` `queues` times: (fds, vnet_hdr, offload flags granted)."""
    mq = IFF_MULTI_QUEUE if queues > 1 else 0
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if offload:
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(),
                                                       IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | mq))
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                granted = set_tap_offload(fd, offload)
                if granted:
                    return _more_queues(name, fd, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | mq, queues), True, granted
            except OSError as e:
                log.info("TAP %s: no virtio-net header (%s); offloads off", name, e.strerror or e)
            os.close(fd)        # the header without offloads is no use: attach plainly
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | mq))
        set_tap_offload(fd, 0)
    except Exception:
        os.close(fd)
        raise
    return _more_queues(name, fd, IFF_TAP | IFF_NO_PI | mq, queues), False, 0


def _more_queues(name: str, fd: int, flags: int, queues: int) -> list[int]:
    """[fd] and queues 1..queues-1 of the same device, attached with the same flags."""
    fds = [fd]
    try:
        for _ in range(1, queues):
            q = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fds.append(q)
            fcntl.ioctl(q, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except Exception:
        for q in fds:
            os.close(q)
        raise
    return fds


class Tap:
    def __init__(self, name: str, fd: int, index: int, bridge: str | None, own_bridge: bool,
                 vnet_hdr: bool = False, offload: int = 0, queue_fds: Sequence[int] = ()) -> None:
        self.name = name
        self.fd = fd                        # queue 0
        self.queue_fds = list(queue_fds)    # queues 1.. of a multi-queue TAP
        self.index = index
        self.bridge = bridge
        self._own_bridge = own_bridge
        self.vnet_hdr = vnet_hdr
        self.offload = offload

    @property
    def fds(self) -> list[int]:
        """Every queue's fd, queue 0 first."""
        return [self.fd, *self.queue_fds]

    @classmethod
    def open(cls, name: str, mtu: int, bridge: str | None = None, *, offload: int = 0,
             queues: int = 1) -> "Tap":
        got = cls.open_many([(name, mtu, bridge)], offload=offload, queues=queues)[0]
        if isinstance(got, Exception):
            raise got
        return got

    @classmethod
    @netlink_call
    def open_many(cls, specs: Sequence[tuple[str, int, str | None]], *,
                  offload: int = 0, queues: int = 1) -> list["Tap | Exception"]:
        """`open` for many TAPs at once, (name, mtu, bridge) each, in one netlink session: one
        dump of the links instead of a lookup per device, MTU + master + up in one request
        per TAP, and one wait for all of them to come up (linkwatch reports carrier changes
        up to a second late, net/core/link_watch.c: waiting once for all saves that per TAP).
        Each result is a Tap, or the exception that TAP's open raised, leaving nothing of it."""
        out: list[Tap | Exception] = []
        with IPRoute() as ipr:
            links = {str(link.get("IFLA_IFNAME")): _Link.of(link) for link in ipr.get_links()}
            for name, mtu, bridge in specs:
                try:
                    out.append(cls._open_one(ipr, links, name, mtu, bridge, offload, queues))
                except Exception as e:  # noqa: BLE001 - handed back: one TAP must not sink the batch
                    out.append(e)
            _wait_all_up(ipr, [t for t in out if isinstance(t, Tap)])
        return out

    @classmethod
    def _open_one(cls, ipr: IPRoute, links: dict[str, "_Link"], name: str, mtu: int, bridge: str | None,
                  offload: int, queues: int = 1) -> "Tap":
        own_bridge = False
        mq = queues > 1
        have = links.get(name)
        if have is not None and have.kind == "tun" and have.multi_queue != mq:
            log.info("TAP %s was left %s; making it again %s", name,
                     *(("multi-queue", "single-queue") if have.multi_queue else ("single-queue", "multi-queue")))
            _delete(ipr, name)
            links.pop(name)
            have = None
        if have is not None:
            if have.kind != "tun":
                raise TapError(f"{name} exists and is not a TAP device")
            index = have.index
            log.info("adopting existing TAP %s", name)
        else:
            if mq:
                ipr.link("add", ifname=name, kind="tuntap", mode="tap", ifr={"multi_queue": 1})
            else:
                ipr.link("add", ifname=name, kind="tuntap", mode="tap")
            found = _link_index(ipr, name)
            if found is None:
                raise TapError(f"TAP {name} vanished right after creation")
            index = found
            links[name] = _Link(index, "tun", None, mq)
        fds, vnet_hdr, granted = _attach(name, offload, queues)
        fd = fds[0]
        try:
            change: dict[str, Any] = {"mtu": mtu, "state": "up"}
            if bridge:
                b = links.get(bridge)
                if b is None:
                    ipr.link("add", ifname=bridge, kind="bridge")
                    bidx = _link_index(ipr, bridge)
                    if bidx is None:
                        raise TapError(f"bridge {bridge} vanished right after creation")
                    own_bridge = True
                    # the mark outlives us: a daemon restarted after SIGKILL knows it is ours
                    ipr.link("set", index=bidx, state="up", ifalias=BRIDGE_MARK)
                    links[bridge] = _Link(bidx, "bridge", BRIDGE_MARK)
                elif b.kind != "bridge":
                    raise TapError(f"{bridge} exists and is not a bridge")
                else:
                    bidx = b.index
                    own_bridge = b.alias == BRIDGE_MARK
                change["master"] = bidx
            ipr.link("set", index=index, **change)   # do_setlink: MTU, then master, then up
        except Exception:
            for q in fds:
                os.close(q)
            raise
        return cls(name, fd, index, bridge, own_bridge, vnet_hdr, granted, fds[1:])

    @netlink_call
    def close(self) -> None:
        """Close the fd and remove the TAP; remove the bridge too if we made it and it is empty."""
        Tap.close_many([self])

    @staticmethod
    @netlink_call
    def close_many(taps: Sequence["Tap"]) -> None:
        """`close` for many TAPs in one netlink session: the TAPs first, then one look at which
        of our bridges are left without ports (a dump per TAP made closing 1,000 networks
        quadratic: seconds each)."""
        for t in taps:
            if t.fd >= 0:
                os.close(t.fd)
                t.fd = -1
            for q in t.queue_fds:
                os.close(q)
            t.queue_fds = []
        with IPRoute() as ipr:
            for t in taps:
                _delete(ipr, t.name)
            bridges = {t.bridge for t in taps if t.bridge and t._own_bridge}
            if not bridges:
                return
            links = ipr.get_links()
            index = {str(link.get("IFLA_IFNAME")): int(link["index"]) for link in links}
            busy = {link.get("IFLA_MASTER") for link in links}
            for b in sorted(bridges):
                if b in index and index[b] not in busy:
                    _delete(ipr, b)


def _delete(ipr: IPRoute, name: str) -> None:
    idx = _link_index(ipr, name)
    if idx is None:
        return
    try:
        ipr.link("del", index=idx)
    except Exception as e:  # noqa: BLE001 - best effort at teardown, never mask the exit path
        log.warning("could not remove %s: %s", name, e)
