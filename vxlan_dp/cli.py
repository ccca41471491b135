"""`vxlan-dp run | check | demo | lab clean | status | fdb`: the command line users and tests share.

Exit status: 0 success, 1 runtime failure, 2 bad usage or a bad config (nothing is created on
the host when the config is bad).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

from . import __version__

__all__ = ["main"]

DEFAULT_CONFIG = "/etc/vxlan-dp/vxlan-dp.toml"
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        # journald adds its own timestamps; a <N> prefix sets the priority (sd-daemon(3))
        prio = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

        class _Journal(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return f"<{prio.get(record.levelname, 6)}>{record.getMessage()}"
        handler.setFormatter(_Journal())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def _load(path: str) -> Any:
    from .config import ConfigError, load_config  # noqa: PLC0415
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"vxlan-dp: {path}: {e}", file=sys.stderr)
        return None


def _event_loop_runner() -> Any:
    import asyncio  # noqa: PLC0415
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        logging.getLogger("vxlan_dp").warning("uvloop is not installed; using asyncio's own event loop")
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def cmd_run(a: argparse.Namespace) -> int:
    config = _load(a.config)
    if config is None:
        return EXIT_USAGE
    _setup_logging(a.log_level or config.daemon.log_level)
    from .daemon import Daemon  # noqa: PLC0415
    from .rpc import DEFAULT_SOCKET  # noqa: PLC0415
    daemon = Daemon(config, config_path=a.config, socket_path=a.socket or DEFAULT_SOCKET)
    with _event_loop_runner() as runner:
        return runner.run(daemon.run())


def cmd_check(a: argparse.Namespace) -> int:
    config = _load(a.config)
    if config is None:
        return EXIT_USAGE
    from .daemon import derive_mtu  # noqa: PLC0415
    from .datapath.underlay import underlay_mtu  # noqa: PLC0415
    from .fastpath import BACKEND, BACKEND_REASON  # noqa: PLC0415
    d = config.daemon
    print(f"{a.config}: OK")
    print(f"backend: {BACKEND} ({BACKEND_REASON}); batch {d.batch}; control {d.control}; "
          f"metrics {d.metrics or 'off'}")
    for n in config.networks:
        try:
            under = underlay_mtu(n.local)
        except Exception:  # noqa: BLE001 - check must not need the host's links
            under = None
        if n.mtu:
            mtu = f"{n.mtu} (configured)"
        elif under:
            mtu = f"{derive_mtu(n, under)} (underlay MTU {under})"
        else:
            mtu = f"{derive_mtu(n, None)} ({n.local} not on this host; assuming underlay MTU 1500)"
        where = n.local if n.encap == "gre" else f"{n.local}:{n.port}"
        print(f"network {n.name}: vni {n.vni}, {n.encap}{' (NVGRE)' if n.nvgre else ''} on {where}, "
              f"tap {n.tap}{' in bridge ' + n.bridge if n.bridge else ''}, mtu {mtu}")
        print(f"  peers: {', '.join(n.peers) or '(none)'}; learning {'on' if n.learning else 'off'}, "
              f"ageing {n.ageing:g}s; unknown sources {'allowed' if n.allow_unknown_sources else 'dropped'}; "
              f"source ports {n.source_ports[0]}-{n.source_ports[1]}")
        for f in n.fdb:
            print(f"  fdb: {f.mac} -> {f.remote} (static)")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("vxlan-dp demo: needs root (network namespaces, TAP devices)", file=sys.stderr)
        return EXIT_USAGE
    from .lab.demo import run_demo  # noqa: PLC0415
    return run_demo(a.hosts, port=a.port, encap=a.encap, ipv6=a.ipv6, keep=a.keep, backend=a.backend,
                    containers=a.containers)


def cmd_lab_clean(a: argparse.Namespace) -> int:
    from .lab import clean  # noqa: PLC0415
    removed = clean()
    print(f"removed {len(removed)} namespaces" + (": " + ", ".join(removed) if removed else ""))
    return 0


def _ask(a: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any] | None:
    from .rpc import request  # noqa: PLC0415
    try:
        ans = request(a.socket, req)
    except OSError as e:
        print(f"vxlan-dp: cannot reach the daemon at {a.socket}: {e.strerror or e}", file=sys.stderr)
        return None
    if not ans.get("ok"):
        print(f"vxlan-dp: {ans.get('error')}", file=sys.stderr)
        return None
    return ans


def cmd_status(a: argparse.Namespace) -> int:
    ans = _ask(a, {"cmd": "status"})
    if ans is None:
        return EXIT_RUNTIME
    if a.json:
        print(json.dumps(ans, indent=2))
        return 0
    print(f"vxlan-dp {ans['version']} pid {ans['pid']}, {ans['backend']} backend, up {ans['uptime']:.0f}s")
    for name, n in ans["networks"].items():
        c = n["counters"]
        drops = ", ".join(f"{k[5:]}={v}" for k, v in c.items() if k.startswith("drop_") and v) or "none"
        print(f"{name}: vni {n['vni']} {n['encap']} tap {n['tap']}{'' if n['tap_up'] else ' (DOWN)'} "
              f"mtu {n['mtu']} peers {len(n['peers'])} fdb {len(n['fdb'])}")
        print(f"  tx {c['tx_packets']} pkts {c['tx_bytes']} B, rx {c['rx_packets']} pkts {c['rx_bytes']} B, "
              f"flooded {c['flood_frames']}; drops: {drops}")
    return 0


def cmd_fdb(a: argparse.Namespace) -> int:
    ans = _ask(a, {"cmd": "fdb", "network": a.network})
    if ans is None:
        return EXIT_RUNTIME
    if a.json:
        print(json.dumps(ans["fdb"], indent=2))
        return 0
    print(f"{'mac':<17}  {'remote':<39}  {'type':<7}  age")
    for r in ans["fdb"]:
        age = "-" if r["static"] else f"{r['age']:.0f}s"
        kind = "static" if r["static"] else "learned"
        print(f"{r['mac']:<17}  {r['remote']:<39}  {kind:<7}  {age}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .rpc import DEFAULT_SOCKET  # noqa: PLC0415
    p = argparse.ArgumentParser(prog="vxlan-dp", description="Userspace overlay data plane (VXLAN, GRE, GRE-in-UDP)")
    p.add_argument("--version", action="version", version=f"vxlan-dp {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the daemon in the foreground (what systemd runs)")
    r.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    r.add_argument("--socket", help=f"status socket (default {DEFAULT_SOCKET})")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a config and print what it would build")
    c.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    c.set_defaults(func=cmd_check)

    d = sub.add_parser("demo", help="build a multi-host lab on this machine and show traffic crossing it")
    d.add_argument("--hosts", type=int, default=2, choices=range(2, 9), metavar="N", help="hosts, 2..8 (default 2)")
    d.add_argument("--containers", type=int, default=2, choices=range(1, 9), metavar="N", help="containers per host")
    d.add_argument("--port", type=int, help="UDP port of the overlay (default 4789 vxlan, 4754 gre-udp)")
    d.add_argument("--encap", choices=["vxlan", "gre", "gre-udp"], default="vxlan")
    d.add_argument("--ipv6", action="store_true", help="IPv6 underlay")
    d.add_argument("--backend", choices=["c", "python"], help="fast path backend of the daemons")
    d.add_argument("--keep", action="store_true", help="leave the lab up")
    d.set_defaults(func=cmd_demo)

    lab = sub.add_parser("lab", help="lab housekeeping")
    lsub = lab.add_subparsers(dest="labcmd", required=True)
    lc = lsub.add_parser("clean", help="remove namespaces and daemons left by labs")
    lc.set_defaults(func=cmd_lab_clean)

    s = sub.add_parser("status", help="live view of a running daemon")
    s.add_argument("--socket", default=DEFAULT_SOCKET)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    f = sub.add_parser("fdb", help="a network's forwarding entries")
    f.add_argument("network")
    f.add_argument("--socket", default=DEFAULT_SOCKET)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fdb)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "demo" and args.port is not None and not 1 <= args.port <= 65535:
        print("vxlan-dp demo: --port must be 1..65535", file=sys.stderr)
        return EXIT_USAGE
    return int(args.func(args))
