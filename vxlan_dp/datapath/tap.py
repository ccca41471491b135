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

import errno
import fcntl
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import rtnl_batch
from .netlink import netlink_call
from ..linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF, TUNSETPERSIST, TUNSETVNETHDRSZ
from ..wire.offload import VNET_HDR_LEN
from .offload import set_tap_offload

__all__ = ["Tap", "TapError"]

log = logging.getLogger(__name__)

BRIDGE_MARK = "created by vxlan-dp"  # IFLA_IFALIAS of a bridge we made and may remove


class TapError(RuntimeError):
    pass


@dataclass(frozen=True)
class _Link:
    index: int
    kind: str | None
    alias: str | None
    multi_queue: bool = False

    @staticmethod
    def of(link: rtnl_batch.LinkInfo) -> "_Link":
        return _Link(link.index, link.kind, link.alias, link.multi_queue)


def _wait_all_up(taps: Sequence["Tap"], timeout: float = 3.0) -> None:
    """Return once the kernel reports every TAP operationally up.

    The carrier that TUNSETIFF turns on reaches operstate through linkwatch, up to a second
    later (net/core/link_watch.c), and a bridge enables the port only then (br_port_carrier_check):
    frames sent before that are lost. Waiting here keeps READY=1 truthful. The TAPs still
    waited for are asked for by index, their answers read for the operstate only
    (rtnl_batch.operstates): a link dump per look decoded every link of the host.
    """
    pending = {t.index: t.name for t in taps}
    deadline = time.monotonic() + timeout
    cache: dict[int, bytes] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        while pending and time.monotonic() < deadline:
            states = rtnl_batch.operstates(list(pending), s, cache)
            for index in list(pending):
                if states.get(index, rtnl_batch.IF_OPER_UP) == rtnl_batch.IF_OPER_UP:
                    pending.pop(index)      # up, or gone (its pump will say so)
            if pending:
                time.sleep(0.02)
    for name in sorted(pending.values()):
        log.warning("TAP %s not operationally up after %.0fs; continuing", name, timeout)


def _attach(name: str, offload: int, queues: int = 1, *, create: bool = False) -> tuple[list[int], bool, int]:
    """Open /dev/net/tun on TAP `name` `queues` times: (fds, vnet_hdr, offload flags granted).
    With `create`, first make it as `ip tuntap add` does: a persistent TAP, its making fd
    closed again, so its carrier goes off and on and linkwatch reports it operationally up (a
    TAP born with the carrier on stays "unknown" for good)."""
    plain = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0))
    if create:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, plain)
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
    try:
        return _attach_fds(name, offload, queues)
    except Exception:
        if create:      # leave nothing behind: a persistent TAP goes with its last fd
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, TUNSETIFF, plain)
                fcntl.ioctl(fd, TUNSETPERSIST, 0)
            except OSError:
                pass
            finally:
                os.close(fd)
        raise


def _attach_fds(name: str, offload: int, queues: int = 1) -> tuple[list[int], bool, int]:
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
        """`open` for many TAPs at once, (name, mtu, bridge) each: one dump of the links, the
        TAPs made or adopted with TUNSETIFF, the missing bridges made in one batch of requests
        and every MTU + master + up in another (rtnl_batch.py: pipelined, not one round trip
        after another), and one wait for all of them to come up (linkwatch reports carrier
        changes up to a second late, net/core/link_watch.c: waiting once for all saves that
        per TAP). Each result is a Tap, or the exception that TAP's open raised, leaving
        nothing of it (a bridge made for it stays only while another TAP uses it)."""
        links = {name: _Link.of(link) for name, link in rtnl_batch.links().items()}
        out: list[Tap | Exception] = []
        made: list[bool] = []               # per spec: we created its TAP
        for name, _, _ in specs:
            try:
                out.append(cls._attach_one(links, name, offload, queues))
                made.append(links[name].alias == _MADE)
            except Exception as e:  # noqa: BLE001 - handed back: one TAP must not sink the batch
                out.append(e)
                made.append(False)
        # the bridges: ours to make where missing, one batch
        wanted = [(k, b) for k, (_, _, b) in enumerate(specs) if b and isinstance(out[k], Tap)]
        missing = sorted({b for _, b in wanted if b not in links})
        own: set[str] = set()
        for b, err in zip(missing, rtnl_batch.run([rtnl_batch.new_bridge(b) for b in missing])):
            try:
                if err:
                    raise OSError(err, os.strerror(err))
                links[b] = _Link(socket.if_nametoindex(b), "bridge", BRIDGE_MARK)
                own.add(b)
            except OSError as e:
                links[b] = _Link(-1, None, f"bridge {b} could not be created: {e.strerror or e}")
        # MTU, master and up for every TAP; up and our mark for the bridges we made, one batch
        reqs = [rtnl_batch.set_link(links[b].index, up=True, ifalias=BRIDGE_MARK) for b in sorted(own)]
        who: list[int] = []
        for k, (_, mtu, bridge) in enumerate(specs):
            tap = out[k]
            if not isinstance(tap, Tap):
                continue
            change: dict[str, Any] = {"mtu": mtu}
            if bridge:
                link = links[bridge]
                if link.index < 0 or link.kind != "bridge":
                    out[k] = TapError(link.alias if link.index < 0 else f"{bridge} exists and is not a bridge")
                    tap._discard(made[k])
                    continue
                tap.bridge, tap._own_bridge = bridge, link.alias == BRIDGE_MARK
                change["master"] = link.index
            reqs.append(rtnl_batch.set_link(tap.index, up=True, **change))  # do_setlink: MTU, master, up
            who.append(k)
        errs = rtnl_batch.run(reqs)
        for b, err in zip(sorted(own), errs):
            if err:
                log.warning("bridge %s: could not set it up: %s", b, os.strerror(err))
        for k, err in zip(who, errs[len(own):]):
            tap = out[k]
            if err and isinstance(tap, Tap):
                out[k] = TapError(f"TAP {tap.name}: could not set mtu {specs[k][1]}, bridge, up: {os.strerror(err)}")
                tap._discard(made[k])
        up = [t for t in out if isinstance(t, Tap)]
        _wait_all_up(up)
        gone = [b for b in own if not any(t.bridge == b for t in up)]
        if gone:        # made for TAPs that failed after all
            _delete_links([links[b].index for b in gone])
        return out

    @classmethod
    def _attach_one(cls, links: dict[str, "_Link"], name: str, offload: int, queues: int) -> "Tap":
        mq = queues > 1
        have = links.get(name)
        if have is not None and have.kind == "tun" and have.multi_queue != mq:
            log.info("TAP %s was left %s; making it again %s", name,
                     *(("multi-queue", "single-queue") if have.multi_queue else ("single-queue", "multi-queue")))
            _delete_links([have.index])
            links.pop(name)
            have = None
        if have is not None:
            if have.kind != "tun":
                raise TapError(f"{name} exists and is not a TAP device")
            log.info("adopting existing TAP %s", name)
        fds, vnet_hdr, granted = _attach(name, offload, queues, create=have is None)
        try:
            index = have.index if have is not None else socket.if_nametoindex(name)
        except OSError:
            for q in fds:
                os.close(q)
            raise TapError(f"TAP {name} vanished right after creation") from None
        if have is None:
            links[name] = _Link(index, "tun", _MADE, mq)
        return cls(name, fds[0], index, None, False, vnet_hdr, granted, fds[1:])

    def _discard(self, created: bool) -> None:
        """Undo an attach that failed later: close the fd, and remove the TAP if we made it."""
        if created:
            try:
                fcntl.ioctl(self.fd, TUNSETPERSIST, 0)  # the close below then removes it
            except OSError as e:
                log.warning("could not remove TAP %s: %s", self.name, e.strerror or e)
        for q in self.fds:
            os.close(q)
        self.fd, self.queue_fds = -1, []

    @netlink_call
    def close(self) -> None:
        """Close the fd and remove the TAP; remove the bridge too if we made it and it is empty."""
        Tap.close_many([self])

    @staticmethod
    @netlink_call
    def close_many(taps: Sequence["Tap"]) -> None:
        """`close` for many TAPs at once: the fds closed, one dump to see which of our bridges
        will have no port left, and the TAPs and those bridges removed in one unregister batch
        (_delete_links). One deletion after another waited for RCU grace periods per device:
        about a minute for 1,000 networks."""
        for t in taps:
            if t.fd >= 0:
                os.close(t.fd)
                t.fd = -1
            for q in t.queue_fds:
                os.close(q)
            t.queue_fds = []
        links = rtnl_batch.links()
        victims = {links[t.name].index for t in taps if t.name in links}
        busy = {link.master for link in links.values() if link.index not in victims}
        bridges = {t.bridge for t in taps if t.bridge and t._own_bridge}
        victims |= {links[b].index for b in bridges if b in links and links[b].index not in busy}
        _delete_links(sorted(victims), {link.group for link in links.values()})


_MADE = "made here"     # _Link.alias of a TAP this open_many created (never a kernel alias)


def _delete_links(indexes: Sequence[int], groups_in_use: set[int] | None = None) -> None:
    """Remove these links in one unregister batch: each joins a link group no other link is in,
    and the group is deleted (`ip link delete group`); where that fails, one by one."""
    if not indexes:
        return
    used = groups_in_use if groups_in_use is not None else {link.group for link in rtnl_batch.links().values()}
    group = next(g for g in iter(lambda: random.randrange(1 << 30, 1 << 31), None) if g not in used)
    errs = rtnl_batch.run([rtnl_batch.set_link(i, group=group) for i in indexes])
    if not any(err == 0 for err in errs):
        return                          # all gone already (or none ours to move)
    if rtnl_batch.run([rtnl_batch.delete_group(group)])[0] == 0:
        return
    for i, err in zip(indexes, rtnl_batch.run([rtnl_batch.delete_link(i) for i in indexes])):
        if err and err != errno.ENODEV:
            log.warning("could not remove link %d: %s", i, os.strerror(err))
