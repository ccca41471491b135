"""Network namespaces for the lab: create, delete, open IPRoute inside, run a program inside.

Programs run inside a namespace by entering it between fork and exec (setns(2) through libc),
so nothing here shells out to `ip`. Names are the files under /run/netns, as iproute2 keeps them.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from typing import Any, Sequence

from pyroute2 import NetNS, netns

from ..linux import CLONE_NEWNET, ETHTOOL_STXCSUM, SIOCETHTOOL

__all__ = ["tx_checksum_off", "tx_checksum", "create", "remove", "exists", "listing", "ipr", "enter", "popen", "run",
           "stop", "NETNS_DIR"]

NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)




def tx_checksum_off(name: str, ifname: str) -> None:
    """`ethtool -K IFNAME tx off` inside namespace `name`, through the SIOCETHTOOL ioctl.

    veth passes CHECKSUM_PARTIAL packets on without ever computing the checksum (the receiver
    trusts them), so a kernel vxlan peer's inner TCP checksums reach a userspace VTEP unfilled,
    as they do between VMs over virtio-net. With TX checksum offload off the kernel computes
    them in software. The lab does this only when asked (`Lab(tx_csum_off=True)`), so that
    both cases stay testable; by default its links keep the kernel's offloads.
    """
    tx_checksum(name, ifname, False)


def tx_checksum(name: str, ifname: str, on: bool) -> None:
    """`ethtool -K IFNAME tx on|off` inside namespace `name` (SIOCETHTOOL, ETHTOOL_STXCSUM)."""
    import fcntl
    import socket
    import struct

    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, int(on)))
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    sock = netns.create_socket(name, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    finally:
        sock.close()


def create(name: str) -> None:
    """A new network namespace bound to /run/netns/NAME, made by a short-lived thread of ours.

    pyroute2's `netns.create` forks this whole process for it and gives the child 2 s to answer
    (pyroute2.config.default_communicate_timeout): a big process on a loaded machine misses
    that, the lab fails with TimeoutError, and the late child may still leave the namespace
    behind, unrecorded. A network namespace is per thread (unshare(2)), so one thread of ours
    unshares it and pyroute2's `attach` bind-mounts that thread's /proc/TID/ns/net as `create`
    would, in this process's mount namespace; the thread then ends, nothing else ever ran in it."""
    failed: list[BaseException] = []

    def make() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET) for {name}: {os.strerror(err)}")
            netns.attach(name, threading.get_native_id())
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            failed.append(e)

    t = threading.Thread(target=make, name=f"netns-create-{name}")
    t.start()
    t.join()
    if failed:
        raise failed[0]


def remove(name: str) -> None:
    try:
        netns.remove(name)
    except OSError:
        pass


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def listing() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def ipr(name: str) -> Any:
    """An IPRoute bound to namespace `name` (use as a context manager)."""
    return NetNS(name, flags=0)


def enter(name: str) -> None:
    """setns(2) the calling process (or the child, in preexec_fn) into namespace `name`."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def popen(name: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen(list(argv), preexec_fn=lambda: enter(name), **kw)  # noqa: PLW1509 - setns() must run between fork and exec


def run(name: str, argv: Sequence[str], timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(list(argv), preexec_fn=lambda: enter(name), timeout=timeout, check=False, **kw)


def stop(p: subprocess.Popen[Any], sig: int, timeout: float) -> int:
    """Signal a process the lab started and reap it; SIGKILL if it does not go in time."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return p.returncode
