"""sd_notify(3) over $NOTIFY_SOCKET: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

No libsystemd: the protocol is one datagram of newline-separated KEY=VALUE to a unix socket
(abstract when the path starts with '@'). Outside systemd every call is a no-op. The watchdog
interval comes from $WATCHDOG_USEC (checked against $WATCHDOG_PID when set); we ping at half
of it, from the event loop itself, so a stuck loop stops the pings and systemd notices.

The socket is non-blocking: a receiver that stops reading (its queue holds a handful of
datagrams) costs us a lost notification, never a blocked event loop.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier", "watchdog_interval"]


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        self._sock: socket.socket | None = None
        if address:
            self._addr = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *states: str) -> bool:
        if self._sock is None or self._addr is None:
            return False
        try:
            self._sock.sendto("\n".join(states).encode(), self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload)
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
