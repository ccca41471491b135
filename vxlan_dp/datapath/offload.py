"""Which offloads the kernel and the backend support: probed once at start-up, with fallbacks.

Three independent offloads, each tried and dropped on its own (wireguard-go's tun and conn
packages do the same), so that every combination still moves frames:
- TAP side: IFF_VNET_HDR plus TUNSETOFFLOAD (linux/if_tun.h). TUN_F_CSUM lets the stack hand
  us frames with the L4 checksum left partial; TUN_F_TSO4/TSO6 lets it hand us 64 KiB TCP
  super-frames; TUN_F_USO4|USO6 (Linux 6.2+, only together) UDP ones. Whatever the TAP takes
  also tells the data path which GSO frames it may write back (coalesced receive). The
  kernel refuses a set it does not know with EINVAL, so we try the full set, then without
  USO, then checksums alone, then no vnet header at all.
- UDP_SEGMENT (udp(7), Linux 4.18+) on send sockets: one sendmsg for up to 64 datagrams.
- UDP_GRO (Linux 5.0+) on the endpoint sockets: one receive may return many datagrams.
IFF_MULTI_QUEUE is probed and reported (`multi_queue`, informational): `[daemon] queues`
uses it (datapath/tap.py), with a pump thread per queue (datapath/poll.py).

`probe()` finds what this kernel accepts without touching the host: socket options on
throwaway sockets, and the TAP flags on a TAP made inside a network namespace of a short-lived
child process (unshare(CLONE_NEWNET)), which vanishes with it. The daemon then asks for
exactly that; `Tap.open` still falls back if the real TAP refuses, and the data path turns tx
GSO or TAP coalescing off if a send or write is refused at run time (counted in
`offload_stats()`, logged once by the daemon).

The pure-Python backend is not offered the TAP offloads: splitting and coalescing in Python
costs more than the system calls it saves (bench/README.md). `VXLAN_DP_OFFLOAD=all` in the environment offers them anyway (the tests
use it to run the Python pumps with virtio-net headers); `VXLAN_DP_OFFLOAD=off` turns every
offload off whatever the config says.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from ..linux import (CLONE_NEWNET, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, SOL_UDP, TUN_F_CSUM,
                     TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6, TUNGETFEATURES, TUNSETIFF, TUNSETOFFLOAD,
                     UDP_GRO, UDP_SEGMENT)

__all__ = ["OffloadPlan", "probe", "set_tap_offload", "tun_features", "FULL", "flag_names"]

FULL = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6
_FALLBACKS = (FULL, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM)


def flag_names(flags: int) -> str:
    names = [n for bit, n in ((TUN_F_CSUM, "csum"), (TUN_F_TSO4, "tso4"), (TUN_F_TSO6, "tso6"),
                              (TUN_F_USO4 | TUN_F_USO6, "uso")) if flags & bit == bit]
    return "+".join(names) or "none"


def tun_features() -> int:
    """TUNGETFEATURES: the IFF_* flags /dev/net/tun supports (0 if it cannot be opened)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return int(struct.unpack("I", fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4))[0])
    except OSError:
        return 0
    finally:
        os.close(fd)


def set_tap_offload(fd: int, want: int) -> int:
    """TUNSETOFFLOAD on an attached TAP fd: the first of `want` and its fallbacks the kernel
    takes, or 0 (then offloads are cleared: a TAP adopted from a daemon that had them on must
    not go on handing out super-frames to a reader without a vnet header)."""
    for flags in (want,) + tuple(f & want for f in _FALLBACKS if f & want != want):
        if not flags:
            continue
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags
        except OSError as e:
            if e.errno != errno.EINVAL:
                break
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    except OSError:
        pass
    return 0


def _sockopt_ok(family: int, opt: int, value: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setsockopt(SOL_UDP, opt, value)
        return True
    except OSError:
        return False


def _probe_tap_flags() -> tuple[int, str]:
    """The TUNSETOFFLOAD flags a TAP takes here, found in a throwaway network namespace."""
    if os.geteuid() != 0:
        return 0, "not root: TAP offloads not probed"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:    # child: only system calls from here to _exit
        code = 0
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"vxdpprobe0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
            code = set_tap_offload(fd, FULL)
            os.write(w, struct.pack("i", code))
        except BaseException as e:  # noqa: BLE001 - report, never unwind into the parent's code
            os.write(w, struct.pack("i", -(getattr(e, "errno", 0) or errno.EIO)))
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 4)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    got = struct.unpack("i", data)[0] if len(data) == 4 else -errno.EIO
    if got < 0:
        return 0, f"TAP probe failed: {os.strerror(-got)}"
    return got, ""


@dataclass(frozen=True)
class OffloadPlan:
    """What the daemon asks for; `notes` say why anything is off."""
    vnet_hdr: bool = False
    tap_flags: int = 0          # TUN_F_* to request on every TAP (it may grant less)
    tx_gso: bool = False        # UDP_SEGMENT sends of split super-frames
    rx_gro: bool = False        # UDP_GRO on endpoint sockets
    multi_queue: bool = False   # /dev/net/tun supports IFF_MULTI_QUEUE (informational)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        tap = f"vnet header, {flag_names(self.tap_flags)}" if self.vnet_hdr else "off"
        text = (f"TAP {tap}; UDP_SEGMENT {'on' if self.tx_gso else 'off'}; "
                f"UDP_GRO {'on' if self.rx_gro else 'off'}")
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def features(self) -> dict[str, bool]:
        """Feature -> on, for metrics and status (the plan; fallbacks are in the Dataplane)."""
        f = self.tap_flags if self.vnet_hdr else 0
        return {"vnet_hdr": self.vnet_hdr, "tap_csum": bool(f & TUN_F_CSUM),
                "tap_tso4": bool(f & TUN_F_TSO4), "tap_tso6": bool(f & TUN_F_TSO6),
                "tap_uso": f & (TUN_F_USO4 | TUN_F_USO6) == TUN_F_USO4 | TUN_F_USO6,
                "udp_segment": self.tx_gso, "udp_gro": self.rx_gro}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tap_flags"] = flag_names(self.tap_flags)
        d["notes"] = list(self.notes)
        return d


_cache: dict[tuple[bool, str, bool, str], OffloadPlan] = {}


def probe(*, enabled: bool = True, backend: str = "c", tap_test: bool = True) -> OffloadPlan:
    """Decide the offloads for `backend` on this kernel; cached per process."""
    override = os.environ.get("VXLAN_DP_OFFLOAD", "").strip().lower()
    key = (enabled, backend, tap_test, override)
    if key in _cache:
        return _cache[key]
    if not enabled or override == "off":
        why = "VXLAN_DP_OFFLOAD=off" if override == "off" else "[daemon] offload = false"
        plan = OffloadPlan(notes=(f"off by {why}",))
        _cache[key] = plan
        return plan
    notes: list[str] = []
    feats = tun_features()
    mq = bool(feats & IFF_MULTI_QUEUE)
    gso = _sockopt_ok(socket.AF_INET, UDP_SEGMENT, 1400) and _sockopt_ok(socket.AF_INET6, UDP_SEGMENT, 1400)
    gro = _sockopt_ok(socket.AF_INET, UDP_GRO, 1) and _sockopt_ok(socket.AF_INET6, UDP_GRO, 1)
    if not gso:
        notes.append("kernel refuses UDP_SEGMENT")
    if not gro:
        notes.append("kernel refuses UDP_GRO")
    flags = 0
    if backend != "c" and override != "all":
        notes.append("TAP offloads only on the C backend: in Python they cost more than they save")
    elif not feats & IFF_VNET_HDR:
        notes.append("/dev/net/tun has no IFF_VNET_HDR")
    elif tap_test:
        flags, why = _probe_tap_flags()
        if why:
            notes.append(why)
        elif not flags:
            notes.append("TUNSETOFFLOAD refuses even TUN_F_CSUM")
    else:
        flags = FULL        # untested: Tap.open falls back on the real TAP
    plan = OffloadPlan(vnet_hdr=bool(flags), tap_flags=flags, tx_gso=gso, rx_gro=gro,
                       multi_queue=mq, notes=tuple(notes))
    _cache[key] = plan
    return plan
