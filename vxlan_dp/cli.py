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
import time
from typing import Any, Callable, Sequence

from . import __version__
from .wire import ENCAPS

__all__ = ["main"]

DEFAULT_CONFIG = "/etc/vxlan-dp/vxlan-dp.toml"
EXIT_RUNTIME = 1
EXIT_USAGE = 2


_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}  # syslog levels


class JournalFormatter(logging.Formatter):
    """`<N>message` per line (sd-daemon(3)): journald takes N as the priority and adds the time.

    Every line of a multi-line record (a traceback) carries the prefix, so journald does not
    file the continuation lines at the default priority.
    """

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelname, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


def _stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd gave us (JOURNAL_STREAM = its dev:inode).

    The variable alone is not enough: it is inherited, e.g. by a shell in a terminal that runs
    as a systemd user service, whose stderr is a pty (systemd.exec(5), $JOURNAL_STREAM).
    """
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    # pyroute2's debug lines (one per netlink message) would drown ours at debug level. A
    # filter on our handler, not a level on its logger: importing pyroute2 (which we do late)
    # resets that logger's level to NOTSET (pyroute2/config/log.py).
    handler.addFilter(_quiet_pyroute2)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _quiet_pyroute2(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith("pyroute2")


def _load(path: str, *, isolated: bool = False, meanwhile: Callable[[], Any] = lambda: None) -> Any:
    """The validated config, or None after printing every problem (one line each). `isolated`:
    parsed in a forked child (_load_in_child), while this process runs `meanwhile`."""
    from .config import ConfigError, load_config
    got = _load_in_child(path, meanwhile) if isolated else None
    if got is not None and got[0] == "ok":
        return got[1]
    if got is not None:
        problems = list(got[1])
    else:
        try:
            return load_config(path)
        except ConfigError as e:
            problems = list(e.problems)
    prio = "<3>" if _stderr_is_journal() else ""  # journald: an error, not an info line
    for problem in problems:
        print(f"{prio}vxlan-dp: {path}: {problem}", file=sys.stderr)
    return None


def _load_in_child(path: str, meanwhile: Callable[[], Any] = lambda: None) -> tuple[str, Any] | None:
    """Parse the config in a forked child and take back only the result; `meanwhile` runs here
    while the child parses (the daemon's imports: the two overlap on a second core).

    The TOML parser builds a dict per inline table: a file with 100,000 static FDB entries leaves
    ~40 MB of freed-but-fragmented heap in whoever parsed it (measured: bench scale 100x1k).
    The long-running daemon parses it once at start, so the child does the parsing and sends
    the validated Config (static FDB entries packed, core/fdbtable.py) or the problems back
    pickled. None: fork or the child failed; the caller parses in-process instead.
    """
    import pickle
    from .config import ConfigError, load_config
    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:                        # the child: never returns
        code = 0
        try:
            os.close(r)
            try:
                payload: tuple[str, Any] = ("ok", load_config(path))
            except ConfigError as e:
                payload = ("err", [str(p) for p in e.problems])
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:  # noqa: BLE001 - the parent falls back to parsing itself
            code = 1
        os._exit(code)
    os.close(w)
    meanwhile()
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return None
    got: tuple[str, Any] = pickle.loads(data)   # our own child's bytes, never outside input
    return got


def _event_loop_runner() -> Any:
    import asyncio
    try:
        import uvloop
    except ImportError:
        logging.getLogger("vxlan_dp").warning("uvloop is not installed; using asyncio's own event loop")
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _front_ends(a: argparse.Namespace, config: Any) -> list[Any]:
    """The daemon's front-ends, started in this order once the networks are up. A new one
    (a Docker plugin, key management) is a class implementing frontend.FrontEnd, added here."""
    from .metrics import MetricsFrontEnd
    from .rpc import DEFAULT_SOCKET, RpcFrontEnd
    fes: list[Any] = [RpcFrontEnd(a.socket or DEFAULT_SOCKET), MetricsFrontEnd(config.daemon.metrics_address)]
    if config.docker is not None:
        from .docker import DockerFrontEnd
        fes.append(DockerFrontEnd(config))
    return fes


def _import_daemon() -> None:
    """What `run` needs next, imported while the config is parsed."""
    from . import daemon, metrics, rpc  # noqa: F401 - imported now, used below
    try:
        import uvloop  # noqa: F401 - the same
    except ImportError:
        pass            # _event_loop_runner says so


def cmd_run(a: argparse.Namespace) -> int:
    config = _load(a.config, isolated=True, meanwhile=_import_daemon)
    if config is None:
        return EXIT_USAGE
    _setup_logging(a.log_level or config.daemon.log_level)
    from .daemon import Daemon
    daemon = Daemon(config, config_path=a.config, front_ends=_front_ends(a, config),
                    log_level_locked=bool(a.log_level))
    with _event_loop_runner() as runner:
        code: int = runner.run(daemon.run())
        return code


def cmd_check(a: argparse.Namespace) -> int:
    config = _load(a.config)
    if config is None:
        return EXIT_USAGE
    from .datapath.underlay import underlay_mtu
    from .fastpath import BACKEND, BACKEND_REASON
    from .networks import derive_mtu
    d = config.daemon
    print(f"{a.config}: OK")
    print(f"backend: {BACKEND} ({BACKEND_REASON}); batch {d.batch}; queues {d.queues}; poll {d.poll}; "
          f"control {d.control}; metrics {d.metrics or 'off'}")
    from .datapath.offload import probe
    print(f"offloads: {probe(enabled=d.offload, backend=BACKEND).describe()}")
    if d.control == "etcd" and config.etcd is not None:
        e = config.etcd
        tls = e.ca or e.cert or any(x.startswith("https:") for x in e.endpoints)
        auth = ", ".join(x for x in ("TLS" if tls else "", f"user {e.username}" if e.username else "") if x)
        print(f"etcd: {', '.join(e.endpoints)}, prefix {e.prefix}, lease ttl {e.lease_ttl}s"
              f"{'; ' + auth if auth else ''}; store networks run with local "
              f"{e.local or '(the route towards the store)'}, tap {e.tap}, bridge {e.bridge or '(none)'}")
    if config.docker is not None:
        k = config.docker
        where = ("addresses claimed in etcd" if d.control == "etcd" else
                 f"addresses from part {k.slice[0]} of {k.slice[1]} of each subnet; peers "
                 f"{', '.join(k.peers) or '(none; -o peers=)'}")
        print(f"docker plugin: {k.socket} (-d vxlan-dp --ipam-driver vxlan-dp), local "
              f"{k.local or '(from the control plane)'}; {where}; state {k.state}")
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
        if n.encrypt and n.key_file:    # the path and the ids, never a key
            print(f"  encrypted: ESP in UDP, {n.cipher}, key file {n.key_file}; new keys used after "
                  f"{n.rekey_delay:g}s")
        elif n.encrypt:
            every = f"every {n.rekey_interval:g}s" if n.rekey_interval else "by `vxlan-dp keys rotate` only"
            print(f"  encrypted: ESP in UDP, {n.cipher}, keys from the etcd store, used once every member has "
                  f"them; rotated {every}")
        for f in n.fdb:
            print(f"  fdb: {f.mac} -> {f.remote} (static)")
    return 0


def _tools_missing(command: str, tools: list[str]) -> bool:
    """Say which tools `command` lacks and how to install them (before anything is created)."""
    from .lab.tools import missing_message
    msg = missing_message(command, tools)
    if msg:
        print(msg, file=sys.stderr)
    return msg is not None


def cmd_demo(a: argparse.Namespace) -> int:
    if a.docker:
        tools = ["dockerd", "docker", "nsenter", "unshare"]  # pings run inside the busybox containers
    else:
        tools = ["ping"] + (["etcd", "etcdctl"] if a.control == "etcd" else [])
    if _tools_missing("vxlan-dp demo", tools):
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("vxlan-dp demo: needs root (network namespaces, TAP devices)", file=sys.stderr)
        return EXIT_USAGE
    if a.docker:
        from .lab.docker_demo import run_docker_demo
        return run_docker_demo(a.hosts, port=a.port, backend=a.backend, keep=a.keep)
    from .lab.demo import run_demo
    return run_demo(a.hosts, port=a.port, encap=a.encap, ipv6=a.ipv6, keep=a.keep, backend=a.backend,
                    containers=a.containers, control=a.control, encrypt=a.encrypt,
                    tx_csum_off=a.tx_csum_off)


def cmd_bench(a: argparse.Namespace) -> int:
    if a.what == "encap":
        from .bench.encap import run_encap
        run_encap(a.seconds or 1.0, out_dir=a.out)
        return 0
    if os.geteuid() != 0:
        print(f"vxlan-dp bench {a.what}: needs root (network namespaces, TAP devices)", file=sys.stderr)
        return EXIT_USAGE
    if a.what == "scale":
        from .bench.scale import CASES, run_scale
        cases = a.cases.split(",") if a.cases else list(CASES) + ["replication"]
        bad = [c for c in cases if c not in CASES and c != "replication"]
        if bad:
            print(f"vxlan-dp bench scale: unknown case {', '.join(bad)}; choose from "
                  f"{', '.join(list(CASES) + ['replication'])}", file=sys.stderr)
            return EXIT_USAGE
        backends = ["c", "python"] if a.backend_all else [a.backend]
        data, _ = run_scale(cases, backends, peers=a.peers, seconds=a.seconds or 2.0, repeat=a.repeat,
                            out_dir=a.out)
        return 0 if all("error" not in r for r in data["static"]) else EXIT_RUNTIME
    if a.what == "etcd":
        if _tools_missing("vxlan-dp bench etcd", ["etcd", "etcdctl"]):
            return EXIT_USAGE
        if a.fleet:
            from .bench.etcd_fleet import run_fleet
            run_fleet(networks=a.networks, hosts=a.hosts, per=a.members_per_network,
                             entries=a.entries, rate=a.rate, seconds=a.seconds or 60.0,
                             bridge=not a.no_bridges, out_dir=a.out, profile=a.py_spy)
            return 0
        from .bench.etcd import run_etcd
        try:
            run_etcd(["c", "python"] if a.backend_all else [a.backend], members=a.members,
                     per_member=a.per_member, out_dir=a.out)
        except ValueError as e:
            print(f"vxlan-dp bench etcd: {e}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    if a.what == "kernel-peer":
        if _tools_missing("vxlan-dp bench kernel-peer", ["ping", "iperf3"]):
            return EXIT_USAGE
        from .bench.kernel_peer import run_kernel_peer
        return 0 if run_kernel_peer(a.seconds or 3.0, a.out) else EXIT_RUNTIME
    if a.what == "profile":
        if _tools_missing("vxlan-dp bench profile", ["ping", "iperf3", "perf"]):
            return EXIT_USAGE
        from .bench.profile import run_profile
        print(run_profile(a.seconds or 8.0, a.poll or "", a.out))
        return 0
    if a.what == "soak":
        if a.minutes <= 0:
            print("vxlan-dp bench soak: --minutes must be positive", file=sys.stderr)
            return EXIT_USAGE
        if _tools_missing("vxlan-dp bench soak", ["ping", "iperf3"]):
            return EXIT_USAGE
        from .bench.soak import run_soak
        result, _ = run_soak(a.minutes, backend=a.backend, out_dir=a.out, tx_csum_off=a.tx_csum_off)
        return 0 if result["ok"] else EXIT_RUNTIME
    from .bench.e2e import DEFAULT_VARIANTS, VARIANTS, run_e2e
    variants = tuple(a.variants.split(",")) if a.variants else DEFAULT_VARIANTS
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"vxlan-dp bench e2e: unknown tunnel {', '.join(bad)}; choose from {', '.join(VARIANTS)}",
              file=sys.stderr)
        return EXIT_USAGE
    if _tools_missing("vxlan-dp bench e2e", ["ping", "iperf3"] + (["socat"] if "socat" in variants else [])):
        return EXIT_USAGE
    results, _ = run_e2e(variants, seconds=a.seconds or 5.0, out_dir=a.out, tx_csum_off=a.tx_csum_off)
    return 0 if all("error" not in r for r in results) else EXIT_RUNTIME


def cmd_lab_clean(a: argparse.Namespace) -> int:
    from .lab import clean
    removed = clean()
    print(f"removed {len(removed)} namespaces" + (": " + ", ".join(removed) if removed else ""))
    return 0


def _ask(a: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any] | None:
    from .rpc import request
    try:
        ans = request(a.socket, req)
    except OSError as e:
        print(f"vxlan-dp: cannot reach the daemon at {a.socket}: {e.strerror or e}", file=sys.stderr)
        return None
    if not ans.get("ok"):
        print(f"vxlan-dp: {ans.get('error')}", file=sys.stderr)
        return None
    return ans


def _rates(old: dict[str, int], new: dict[str, int], dt: float) -> dict[str, float]:
    """Per-second rate of every counter between two samples (a restarted counter reads 0)."""
    return {k: max(0, v - old.get(k, 0)) / dt for k, v in new.items()} if dt > 0 else {}


def add_rates(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, Any]:
    """`cur` with "rates" (per second since `prev`) added to each network and endpoint."""
    dt = cur["uptime"] - prev["uptime"] if prev and prev.get("pid") == cur.get("pid") else 0.0
    cur["interval"] = dt
    for name, n in cur["networks"].items():
        p = prev["networks"].get(name) if prev and dt > 0 else None
        n["rates"] = _rates(p["counters"], n["counters"], dt) if p else {}
    old_eps = {(e["encap"], e["local"], e["port"]): e for e in prev["endpoints"]} if prev and dt > 0 else {}
    for e in cur["endpoints"]:
        p = old_eps.get((e["encap"], e["local"], e["port"]))
        e["rates"] = _rates(p["counters"], e["counters"], dt) if p else {}
    return cur


def _si(x: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}" if x else "0"


def _duration(s: float) -> str:
    s = int(s)
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s"


def _drops(c: dict[str, int], r: dict[str, float]) -> str:
    out = []
    for k, v in c.items():
        if k.startswith("drop_") and v:
            rate = r.get(k, 0.0)
            out.append(f"{k[5:]} {v}" + (f" ({_si(rate)}/s)" if rate else ""))
    return ", ".join(out) or "none"


def render_status(ans: dict[str, Any]) -> str:
    """One screen: a header, a line per network with rates, its drops, then the endpoints."""
    dt = ans.get("interval", 0.0)
    reloads = f"reloads {ans['reloads']}"
    if ans.get("reload_failures"):
        reloads += f" ({ans['reload_failures']} rejected{'' if ans.get('last_reload_ok', True) else ', last one'})"
    lines = [f"vxlan-dp {ans['version']}  pid {ans['pid']}  {ans['backend']} backend  batch {ans['batch']}  "
             f"queues {ans.get('queues', 1)}  "
             f"up {_duration(ans['uptime'])}  {reloads}  metrics {ans.get('metrics') or 'off'}",
             f"rates over {dt:.1f}s" if dt > 0 else "rates: none (one sample)"]
    control = render_control(ans.get("control"))
    if control:
        lines.append(control)
    docker = ans.get("docker")
    if docker:
        nets = ", ".join(f"{n['network']} = {i} ({n['endpoints']} containers)" for i, n in docker["networks"].items())
        lines.append(f"docker plugin on {docker['socket']}: {len(docker['networks'])} networks"
                     + (f": {nets}" if nets else ""))
    lines.append("")
    head = (f"{'NETWORK':<12} {'VNI':>8} {'ENCAP':<7} {'TAP':<15} {'MTU':>5} {'PEERS':>5} {'FDB':>6} "
            f"{'TX pkt/s':>9} {'TX bit/s':>9} {'RX pkt/s':>9} {'RX bit/s':>9}")
    lines.append(head)

    def rate(r: dict[str, float], k: str, scale: float = 1.0) -> str:
        return _si(r[k] * scale) if k in r else "-"
    for name, n in ans["networks"].items():
        c, r = n["counters"], n.get("rates", {})
        tap = n["tap"] + ("" if n["tap_up"] else " DOWN")
        static = sum(1 for e in n["fdb"] if e["static"])
        lines.append(f"{name:<12} {n['vni']:>8} {n['encap']:<7} {tap:<15} {n['mtu']:>5} {len(n['peers']):>5} "
                     f"{len(n['fdb']):>6} {rate(r, 'tx_packets'):>9} {rate(r, 'tx_bytes', 8):>9} "
                     f"{rate(r, 'rx_packets'):>9} {rate(r, 'rx_bytes', 8):>9}")
        lines.append(f"  fdb {static} static / {len(n['fdb']) - static} learned; flooded {c.get('flood_frames', 0)}"
                     f" frames ({c.get('flood_copies', 0)} copies); tx {c.get('tx_packets', 0)} pkts "
                     f"{c.get('tx_bytes', 0)} B, rx {c.get('rx_packets', 0)} pkts {c.get('rx_bytes', 0)} B")
        nb = n.get("neigh")
        if nb and (nb["suppress_arp"] or nb["snoop"] or nb["entries"]):
            nc = nb["counters"]
            lines.append(f"  arp/nd suppression {'on' if nb['suppress_arp'] else 'off'}"
                         f"{', snooping' if nb['snoop'] else ''}: {nb['entries']} entries; answered "
                         f"{nc['arp_suppressed']} arp / {nc['nd_suppressed']} nd, {nc['unknown_flooded']} "
                         f"unknown flooded")
        if c.get("csum_completed"):
            lines.append(f"  partial checksums completed: {c['csum_completed']} "
                         f"({rate(r, 'csum_completed')}/s), last from {n.get('csum_peer') or '?'}: the "
                         f"sender's virtual link leaves them to a TX checksum offload")
        lines.append(f"  drops: {_drops(c, r)}")
    if not ans["networks"]:
        lines.append("(no networks)")
    if ans["endpoints"]:
        lines += ["", f"{'ENDPOINT':<34} {'NETWORKS':<20} {'RX pkt/s':>9} {'RX bit/s':>9}  drops"]
        for e in ans["endpoints"]:
            where = f"{e['local']}:{e['port']}" if e["encap"] != "gre" else e["local"]
            r = e.get("rates", {})
            lines.append(f"{e['encap'] + ' ' + where:<34} {','.join(e['networks']):<20} "
                         f"{rate(r, 'rx_datagrams'):>9} {rate(r, 'rx_bytes', 8):>9}  {_drops(e['counters'], r)}")
    return "\n".join(lines)


def render_control(h: dict[str, Any] | None) -> str:
    """One line on the control plane; "" for static (the file needs no health line)."""
    if not h or h.get("backend") == "static":
        return ""
    if h.get("connected"):
        ago = f"{max(0.0, time.time() - h['last_sync']):.0f}s ago" if h.get("last_sync") else "never"
        line = (f"control {h['backend']}: connected to {h.get('endpoint')}, prefix {h.get('prefix')}, "
                f"{h.get('store_keys', 0)} keys, last full sync {ago}, {h.get('resyncs', 0)} syncs, "
                f"{h.get('claimed_macs', 0)} local MACs published")
    else:
        since = h.get("down_since")
        for_ = f" for {_duration(time.time() - since)}" if since else ""
        line = (f"control {h['backend']}: DISCONNECTED{for_} ({h.get('last_error') or 'not connected yet'}); "
                f"forwarding on the last known state")
    for name, why in (h.get("problems") or {}).items():
        line += f"\n  store network {name} not joined: {why}"
    return line


def cmd_status(a: argparse.Namespace) -> int:
    if a.interval < 0:
        print("vxlan-dp status: --interval must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    prev = None
    if a.interval > 0:
        prev = _ask(a, {"cmd": "status"})
        if prev is None:
            return EXIT_RUNTIME
        time.sleep(a.interval)
    while True:
        ans = _ask(a, {"cmd": "status"})
        if ans is None:
            return EXIT_RUNTIME
        ans = add_rates(prev, ans)
        if a.json:
            print(json.dumps(ans, indent=2))
        else:
            if a.watch and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            print(render_status(ans), flush=True)
        if not a.watch:
            return 0
        prev = ans
        try:
            time.sleep(a.interval or 1.0)
        except KeyboardInterrupt:
            return 0


def render_fdb(network: str, rows: list[dict[str, Any]]) -> str:
    rows = sorted(rows, key=lambda r: (not r["static"], r["mac"]))
    static = sum(1 for r in rows if r["static"])
    lines = [f"network {network}: {len(rows)} entries ({static} static, {len(rows) - static} learned)"]
    if rows:
        lines.append(f"{'MAC':<17}  {'REMOTE':<39}  {'TYPE':<7}  AGE")
    for r in rows:
        age = "-" if r["static"] else f"{r['age']:.0f}s"
        kind = "static" if r["static"] else "learned"
        lines.append(f"{r['mac']:<17}  {r['remote']:<39}  {kind:<7}  {age}")
    return "\n".join(lines)


def render_neigh(network: str, rows: list[dict[str, Any]]) -> str:
    """The ARP / ND suppression table: IPv4 first, each family by address (as the data plane sorts)."""
    snooped = sum(1 for r in rows if not r["static"])
    lines = [f"network {network}: {len(rows)} neighbour entries ({len(rows) - snooped} static, {snooped} snooped)"]
    if rows:
        lines.append(f"{'IP':<39}  {'MAC':<17}  {'SOURCE':<8}  AGE")
    for r in rows:
        age = "-" if r["static"] else f"{r['age']:.0f}s"
        lines.append(f"{r['ip']:<39}  {r['mac']:<17}  {r.get('source', ''):<8}  {age}")
    return "\n".join(lines)


def cmd_fdb(a: argparse.Namespace) -> int:
    req: dict[str, Any] = {"cmd": "fdb", "network": a.network}
    if a.neigh:
        req["neigh"] = True
    ans = _ask(a, req)
    if ans is None:
        return EXIT_RUNTIME
    key = "neigh" if a.neigh else "fdb"
    if key not in ans:      # a daemon from before the neighbour table answered with its FDB
        print("vxlan-dp fdb --neigh: the running daemon has no neighbour table", file=sys.stderr)
        return EXIT_RUNTIME
    if a.json:
        print(json.dumps(ans[key], indent=2))
        return 0
    print(render_neigh(a.network, ans[key]) if a.neigh else render_fdb(a.network, ans[key]))
    return 0


def cmd_keys(a: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .core.keys import KeyFileError
    from .keyman import new_key_file, rotate, rotate_store
    from .rpc import DEFAULT_SOCKET
    try:
        if a.keyscmd == "new":
            new_key_file(a.path, a.id)
            print(f"{a.path}: key {a.id} written (mode 0600)")
            return 0
        cfg = load_config(a.config)
        net = next((n for n in cfg.networks if n.name == a.network), None)
        if cfg.daemon.control == "etcd" and (net is None or (net.encrypt and net.key_file is None)):
            # keys in the store: the store is the distribution, the daemons acknowledge there
            rotate_store(cfg, a.network, grace=a.grace if a.grace is not None else 30.0)
            return 0
        if net is None or not net.encrypt or not net.key_file:
            print(f"vxlan-dp keys rotate: {a.config} has no encrypted network {a.network!r}", file=sys.stderr)
            return EXIT_USAGE
        grace = a.grace if a.grace is not None else 2 * net.rekey_delay + 5
        rotate(net.key_file, net.name, a.socket or [DEFAULT_SOCKET], grace=grace)
        return 0
    except (KeyFileError, ConfigError) as e:
        print(f"vxlan-dp keys: {e}", file=sys.stderr)
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    from .rpc import DEFAULT_SOCKET
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
    d.add_argument("--encap", choices=ENCAPS, default="vxlan")
    d.add_argument("--ipv6", action="store_true", help="IPv6 underlay")
    d.add_argument("--backend", choices=["c", "python"], help="fast path backend of the daemons")
    d.add_argument("--keep", action="store_true", help="leave the lab up")
    d.add_argument("--encrypt", action="store_true",
                   help="ESP in UDP (AES-256-GCM) on the overlay, under a key file the demo generates")
    d.add_argument("--tx-csum-off", action="store_true",
                   help="lab option: TX checksum offload off on the underlay veths (ethtool -K tx off); "
                        "default: the kernel's offloads, as on users' links")
    d.add_argument("--control", choices=["static", "etcd"], default="static",
                   help="where peers come from: per-host config files, or an etcd server on its own lab host")
    d.add_argument("--docker", action="store_true",
                   help="a dockerd per host: docker network create -d vxlan-dp, busybox containers pinging across "
                        "hosts (port 4790 unless --port), docker network connect/disconnect live")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="encapsulation micro-bench, end-to-end throughput against the kernel, "
                                     "a soak under load, scale (many networks, entries, peers), or the etcd "
                                     "control plane at scale")
    b.add_argument("what", choices=["encap", "e2e", "soak", "scale", "etcd", "kernel-peer", "profile"])
    b.add_argument("--seconds", type=float, help="per measurement (default 1 for encap, 5 for e2e)")
    b.add_argument("--variants", help="e2e tunnels, comma-separated (default kernel,kernel-txoff,c,c-mq2,c-adaptive,"
                                          "c-busy,python,socat)")
    b.add_argument("--minutes", type=float, default=10.0,
                   help="soak: how long to run under full iperf3 load (default 10)")
    b.add_argument("--backend", choices=["c", "python"], default="c", help="soak, scale, etcd: the daemons' fast path")
    b.add_argument("--both-backends", dest="backend_all", action="store_true",
                   help="scale, etcd: run each case on c and python")
    b.add_argument("--members", type=int, default=200, help="etcd: simulated member hosts in the store (default 200)")
    b.add_argument("--per-member", type=int, default=100, help="etcd: MACs each member publishes (default 100)")
    b.add_argument("--fleet", action="store_true",
                   help="etcd: the fleet-scale run (issue 16): networks, members, entries, a churn minute")
    b.add_argument("--networks", type=int, default=1000, help="etcd --fleet: networks (default 1000)")
    b.add_argument("--hosts", type=int, default=1000, help="etcd --fleet: simulated hosts (default 1000)")
    b.add_argument("--members-per-network", type=int, default=100,
                   help="etcd --fleet: members of each network, out of --hosts hosts (default 100)")
    b.add_argument("--entries", type=int, default=1_000_000, help="etcd --fleet: FDB entries in all (default 1000000)")
    b.add_argument("--rate", type=int, default=1000, help="etcd --fleet: changes per second in the churn (default 1000)")
    b.add_argument("--no-bridges", action="store_true", help="etcd --fleet: networks without a bridge (TAPs only)")
    b.add_argument("--py-spy", action="store_true",
                   help="etcd --fleet: sample the daemon with py-spy (when installed) at start and in the churn")
    b.add_argument("--cases", help="scale: comma-separated cases (default all: 1x0,100x0,1x100k,100x1k,1000x0,"
                                   "replication; NxE = N networks with E static FDB entries each)")
    b.add_argument("--peers", type=int, default=1000, help="scale: peers of the replication case (default 1000)")
    b.add_argument("--repeat", type=int, default=1, help="scale: runs of each case (the machine is noisy)")
    b.add_argument("--poll", choices=["interrupt", "adaptive", "busy"],
                   help="profile: the daemons' [daemon] poll mode (default: the daemon's default)")
    b.add_argument("--out", default="bench/results", help="where the .json/.md/.png results go")
    b.add_argument("--tx-csum-off", action="store_true",
                   help="lab option: TX checksum offload off on the underlay veths (ethtool -K tx off); "
                        "default: the kernel's offloads, as on users' links")
    b.set_defaults(func=cmd_bench)

    lab = sub.add_parser("lab", help="lab housekeeping")
    lsub = lab.add_subparsers(dest="labcmd", required=True)
    lc = lsub.add_parser("clean", help="remove namespaces and daemons left by labs")
    lc.set_defaults(func=cmd_lab_clean)

    s = sub.add_parser("status", help="live view of a running daemon")
    s.add_argument("--socket", default=DEFAULT_SOCKET)
    s.add_argument("--json", action="store_true", help="the daemon's snapshot with per-second rates, as JSON")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="measure rates over this long (default 1; 0: one sample, no rates)")
    s.add_argument("--watch", action="store_true", help="refresh every interval until interrupted")
    s.set_defaults(func=cmd_status)

    k = sub.add_parser("keys", help="encrypted networks' key files: make one, rotate a network's key")
    ksub = k.add_subparsers(dest="keyscmd", required=True)
    kn = ksub.add_parser("new", help="write a new key file (mode 0600) holding one random key")
    kn.add_argument("path")
    kn.add_argument("--id", type=int, default=1, help="key id, 1..255 (default 1)")
    kn.set_defaults(func=cmd_keys)
    kr = ksub.add_parser("rotate", help="add a new key to NET's key file (or, control = \"etcd\" without "
                                        "key_file, to the store), retire the old keys once every daemon "
                                        "sends with the new one")
    kr.add_argument("network")
    kr.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    kr.add_argument("--socket", action="append",
                    help=f"status socket of a daemon to reload; repeat for several (default {DEFAULT_SOCKET})")
    kr.add_argument("--grace", type=float, help="seconds to wait for every daemon to send with the new key "
                                                 "before retiring the old ones (default: key file 2 x "
                                                 "rekey_delay + 5; etcd store 30)")
    kr.set_defaults(func=cmd_keys)

    f = sub.add_parser("fdb", help="a network's forwarding entries (--neigh: its ARP / ND table)")
    f.add_argument("network")
    f.add_argument("--neigh", action="store_true",
                   help="the IP -> MAC table ARP / ND suppression answers from, instead of MAC -> remote")
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
