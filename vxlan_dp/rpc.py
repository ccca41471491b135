"""The daemon's local status socket: one JSON request line in, one JSON document out.

A unix stream socket (mode 0600, root only) so `vxlan-dp status` and `vxlan-dp fdb` read a
running daemon from any network namespace. Requests: {"cmd": "status"} and
{"cmd": "fdb", "network": NAME}. Answers carry "ok": true/false; a bad request gets an error
answer, never a dropped daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["start", "request", "DEFAULT_SOCKET"]

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/vxlan-dp/vxlan-dp.sock"
_MAX_REQUEST = 4096


def _answer(daemon: "Daemon", req: Any) -> dict[str, Any]:
    if not isinstance(req, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    if req.get("cmd") == "status":
        return {"ok": True, **daemon.snapshot()}
    if req.get("cmd") == "fdb":
        name = req.get("network")
        rows = daemon.fdb_rows(name) if isinstance(name, str) else None
        if rows is None:
            return {"ok": False, "error": f"no network named {name!r}"}
        return {"ok": True, "network": name, "fdb": rows}
    return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}


async def start(daemon: "Daemon", path: str) -> asyncio.AbstractServer:
    """Listen on `path` (replacing a stale socket file); the caller closes the server."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):  # noqa: ASYNC240 - once at start-up, before anything is served
        os.unlink(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
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
