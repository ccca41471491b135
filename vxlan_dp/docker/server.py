"""The plugin's HTTP side: libnetwork's JSON-over-HTTP calls on a unix socket, with aiohttp.

Docker finds the plugin by its socket's name in /run/docker/plugins ("vxlan-dp.sock" ->
`-d vxlan-dp`, `--ipam-driver vxlan-dp`) and POSTs to /<Interface>.<Method> (docs/remote.md):
- an unknown path answers 404, so Docker knows the method is not implemented;
- a body that is not a JSON object answers 400;
- a request the plugin cannot meet answers 200 with {"Err": "..."}, which Docker shows the user;
- anything unexpected is logged with its traceback and answered {"Err": "internal error ..."}.
The server runs on the daemon's own event loop; aiohttp parses HTTP (no parser of ours).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..config import ConfigError
from .driver import PluginError
from .ipam import IpamError

__all__ = ["make_app", "serve", "CONTENT_TYPE"]

log = logging.getLogger("vxlan_dp.docker")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _answer(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), headers={"Content-Type": CONTENT_TYPE})


def make_app(routes: dict[str, Handler]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        fn = routes.get(method)
        if fn is None:
            return _answer({"Err": f"{method} is not implemented"}, 404)
        raw = await request.read()
        try:
            req = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            return _answer({"Err": f"{method}: body is not JSON: {e}"}, 400)
        if req is None:
            req = {}
        if not isinstance(req, dict):
            return _answer({"Err": f"{method}: body is not a JSON object"}, 400)
        try:
            out = await fn(req)
        except (PluginError, IpamError, ConfigError) as e:
            log.warning("docker %s refused: %s", method, e)
            return _answer({"Err": str(e)})
        except Exception as e:
            log.exception("docker %s failed", method)
            return _answer({"Err": f"internal error in vxlan-dp ({type(e).__name__}: {e})"})
        log.debug("docker %s -> %s", method, out)
        return _answer(out)

    app = web.Application()
    app.router.add_post("/{method}", handle)
    return app


async def serve(routes: dict[str, Handler], path: str) -> web.AppRunner:
    """Listen on the unix socket `path` (a stale one is replaced); the runner's cleanup() stops it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    runner = web.AppRunner(make_app(routes), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.UnixSite(runner, path)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
