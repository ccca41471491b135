"""The daemon's local status socket: one JSON request line in, one JSON document out.

A unix stream socket (mode 0600, root only) so `vxlan-dp status` and `vxlan-dp fdb` read a
running daemon from any network namespace. Requests: {"cmd": "status"} and
{"cmd": "fdb", "network": NAME} (with "neigh": true, the network's ARP / ND suppression
table instead of its forwarding entries), {"cmd": "summary"} (per network: counts only) and
{"cmd": "lookup", "items": [[NET, "mac", MAC] | [NET, "peer", ADDR], ...]} (what benches poll:
one entry or flood-list member each, without a dump). Answers carry "ok": true/false; a bad request gets an error
answer, never a dropped daemon.

`RpcFrontEnd` is the daemon's front-end (frontend.py): it reads the daemon only through
`StatusSource` (view.View satisfies it), and removes its socket file when it stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from contextlib import AsyncExitStack
from typing import Any, Protocol

from .config import Config
from .frontend import FrontEndError, Steer

__all__ = ["RpcFrontEnd", "StatusSource", "start", "request", "DEFAULT_SOCKET"]

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/vxlan-dp/vxlan-dp.sock"
_MAX_REQUEST = 65536  # a lookup of a few hundred items; asyncio readline stops at 64 KiB anyway


class StatusSource(Protocol):
    """The daemon as the status socket sees it."""

    def snapshot(self) -> dict[str, Any]: ...

    def fdb_rows(self, name: str) -> list[dict[str, Any]] | None: ...

    def neigh_rows(self, name: str) -> list[dict[str, Any]] | None: ...

    def summary(self) -> dict[str, Any]: ...

    def lookup(self, items: list[Any]) -> list[Any]: ...


def _answer(daemon: StatusSource, req: Any) -> dict[str, Any]:
    if req == "too long":
        return {"ok": False, "error": f"request longer than {_MAX_REQUEST} bytes"}
    if not isinstance(req, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    if req.get("cmd") == "status":
        return {"ok": True, **daemon.snapshot()}
    if req.get("cmd") == "fdb":
        name = req.get("network")
        neigh = req.get("neigh") is True
        rows = (daemon.neigh_rows(name) if neigh else daemon.fdb_rows(name)) if isinstance(name, str) else None
        if rows is None:
            return {"ok": False, "error": f"no network named {name!r}"}
        return {"ok": True, "network": name, "neigh" if neigh else "fdb": rows}
    if req.get("cmd") == "summary":
        return {"ok": True, **daemon.summary()}
    if req.get("cmd") == "lookup":
        items = req.get("items")
        if not isinstance(items, list) or not all(
                isinstance(i, list) and len(i) == 3 and i[1] in ("mac", "peer") and all(isinstance(x, str) for x in i)
                for i in items):
            return {"ok": False, "error": 'items: expected [[network, "mac" | "peer", value], ...]'}
        try:
            return {"ok": True, "found": daemon.lookup(items)}
        except ValueError as e:
            return {"ok": False, "error": f"items: {e}"}
    return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}


async def start(daemon: StatusSource, path: str) -> asyncio.AbstractServer:
    """Listen on `path` (replacing a stale socket file); the caller closes the server."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):  # noqa: ASYNC240 - once at start-up, before anything is served
        os.unlink(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 5.0)
            except ValueError:      # longer than the stream's limit (64 KiB): say so, do not drop
                line = b'"too long"'
            try:
                ans = _answer(daemon, json.loads(line[:_MAX_REQUEST] or b"null"))
            except ValueError as e:
                ans = {"ok": False, "error": f"bad JSON: {e}"}
            writer.write(json.dumps(ans).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    old = os.umask(0o077)
    try:
        return await asyncio.start_unix_server(handle, path)
    finally:
        os.umask(old)


class RpcFrontEnd:
    """The status socket at `path`, for the daemon's lifetime."""

    name = "rpc"

    def __init__(self, path: str) -> None:
        self.path = path

    async def start(self, stack: AsyncExitStack, view: StatusSource, steer: Steer) -> None:
        try:
            server = await start(view, self.path)
        except OSError as e:
            raise FrontEndError(f"cannot listen on the status socket {self.path}: {e}") from None
        stack.callback(_unlink, self.path)
        stack.callback(server.close)

    async def reconfigure(self, config: Config) -> None:
        pass  # the socket path is a command-line option, not a config field

    def status(self) -> dict[str, Any]:
        return {}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def request(path: str, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Client side: send one request to a daemon's socket and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply
