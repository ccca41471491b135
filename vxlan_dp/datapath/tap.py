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
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time

from pyroute2 import IPRoute

from .netlink import netlink_call
from ..linux import IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF, TUNSETVNETHDRSZ
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


def _wait_oper_up(ipr: IPRoute, index: int, name: str, timeout: float = 3.0) -> None:
    """Return once the kernel reports the TAP operationally up.

    The carrier that TUNSETIFF turns on reaches operstate through linkwatch, up to a second
    later (net/core/link_watch.c), and a bridge enables the port only then (br_port_carrier_check):
    frames sent before that are lost. Waiting here keeps READY=1 truthful.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ipr.get_links(index)[0].get("IFLA_OPERSTATE") == "UP":
            return
        time.sleep(0.02)
    log.warning("TAP %s not operationally up after %.0fs; continuing", name, timeout)


def _link_kind(ipr: IPRoute, index: int) -> str | None:
    kind = ipr.get_links(index)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return None if kind is None else str(kind)


def _attach(name: str, offload: int) -> tuple[int, bool, int]:
    """Open /dev/net/tun on TAP `name`: (fd, vnet_hdr, offload flags granted)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if offload:
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(),
                                                       IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                granted = set_tap_offload(fd, offload)
                if granted:
                    return fd, True, granted
            except OSError as e:
                log.info("TAP %s: no virtio-net header (%s); offloads off", name, e.strerror or e)
            os.close(fd)        # the header without offloads is no use: attach plainly
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        set_tap_offload(fd, 0)
    except Exception:
        os.close(fd)
        raise
    return fd, False, 0


class Tap:
    def __init__(self, name: str, fd: int, index: int, bridge: str | None, own_bridge: bool,
                 vnet_hdr: bool = False, offload: int = 0) -> None:
        self.name = name
        self.fd = fd
        self.index = index
        self.bridge = bridge
        self._own_bridge = own_bridge
        self.vnet_hdr = vnet_hdr
        self.offload = offload

    @classmethod
    @netlink_call
    def open(cls, name: str, mtu: int, bridge: str | None = None, *, offload: int = 0) -> "Tap":
        own_bridge = False
        with IPRoute() as ipr:
            index = _link_index(ipr, name)
            if index is not None:
                if _link_kind(ipr, index) != "tun":
                    raise TapError(f"{name} exists and is not a TAP device")
                log.info("adopting existing TAP %s", name)
            else:
                ipr.link("add", ifname=name, kind="tuntap", mode="tap")
                index = _link_index(ipr, name)
                if index is None:
                    raise TapError(f"TAP {name} vanished right after creation")
            fd, vnet_hdr, granted = _attach(name, offload)
            try:
                ipr.link("set", index=index, mtu=mtu)
                if bridge:
                    bidx = _link_index(ipr, bridge)
                    if bidx is None:
                        ipr.link("add", ifname=bridge, kind="bridge")
                        bidx = _link_index(ipr, bridge)
                        own_bridge = True
                        # the mark outlives us: a daemon restarted after SIGKILL knows it is ours
                        ipr.link("set", index=bidx, state="up", ifalias=BRIDGE_MARK)
                    elif _link_kind(ipr, bidx) != "bridge":
                        raise TapError(f"{bridge} exists and is not a bridge")
                    else:
                        own_bridge = ipr.get_links(bidx)[0].get("IFLA_IFALIAS") == BRIDGE_MARK
                    ipr.link("set", index=index, master=bidx)
                ipr.link("set", index=index, state="up")
                _wait_oper_up(ipr, index, name)
            except Exception:
                os.close(fd)
                raise
        return cls(name, fd, index, bridge, own_bridge, vnet_hdr, granted)

    @netlink_call
    def close(self) -> None:
        """Close the fd and remove the TAP; remove the bridge too if we made it and it is empty."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with IPRoute() as ipr:
            _delete(ipr, self.name)
            if self.bridge and self._own_bridge:
                bidx = _link_index(ipr, self.bridge)
                if bidx is not None and not any(l.get("IFLA_MASTER") == bidx for l in ipr.get_links()):
                    _delete(ipr, self.bridge)


def _delete(ipr: IPRoute, name: str) -> None:
    idx = _link_index(ipr, name)
    if idx is None:
        return
    try:
        ipr.link("del", index=idx)
    except Exception as e:  # noqa: BLE001 - best effort at teardown, never mask the exit path
        log.warning("could not remove %s: %s", name, e)
