"""sd_notify without systemd: the datagrams a Notifier sends, and the watchdog interval it derives.

The daemon-level sequence (READY after the networks, WATCHDOG from the loop, RELOADING/READY,
STOPPING) is tested against a real daemon in tests/netns/test_service.py; here, the protocol.
"""

from __future__ import annotations

import os
import secrets
import socket

import pytest

from vxlan_dp.systemd import Notifier, watchdog_interval


@pytest.fixture
def receiver(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_each_state_is_one_datagram(receiver):
    path, sock = receiver
    n = Notifier(path)
    assert n.enabled
    assert n.ready("2 networks")
    assert _recv(sock) == ["READY=1", "STATUS=2 networks"]
    assert n.ready()
    assert _recv(sock) == ["READY=1"]
    assert n.reloading()
    msg = _recv(sock)
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=") and int(msg[1].split("=")[1]) > 0
    assert n.watchdog() and _recv(sock) == ["WATCHDOG=1"]
    assert n.status("busy") and _recv(sock) == ["STATUS=busy"]
    assert n.stopping() and _recv(sock) == ["STOPPING=1"]
    n.close()
    assert not n.enabled and not n.watchdog()


def test_abstract_socket_address():
    name = f"vxdp-test-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier("@" + name).ready()
        assert _recv(sock) == ["READY=1"]
    finally:
        sock.close()


def test_outside_systemd_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not n.ready("x") and not n.watchdog() and not n.stopping()


def test_a_gone_or_stuck_receiver_never_blocks_or_raises(receiver, tmp_path):
    path, sock = receiver
    n = Notifier(path)
    # nobody reads: the queue fills, then sends fail at once instead of blocking the loop
    results = [n.watchdog() for _ in range(2000)]
    assert results[0] and not all(results)
    sock.close()
    os.unlink(path)
    assert not n.watchdog()                                  # the receiver is gone
    assert not Notifier(str(tmp_path / "missing")).ready()


@pytest.mark.parametrize("usec,pid,expected", [
    ("30000000", None, 15.0),           # ping at half the timeout
    ("400000", None, 0.2),
    ("400000", "self", 0.2),            # WATCHDOG_PID is us
    ("400000", "1", None),              # meant for another process (we are a child of the service)
    ("0", None, None),
    ("", None, None),
    ("bogus", None, None),
])
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert watchdog_interval() == expected
