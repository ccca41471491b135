"""The daemon's TOML config -> frozen dataclasses, validated once, at load.

Invariants:
- `parse_config`, `load_config` and `config_from_dict` either return a `Config` that the
  daemon can run as-is, or raise one `ConfigError` that holds every problem found
  (`problems`: each table's in file order, then the rules across networks; `field`, `reason`
  and `str()` are the first one's, the one a first-error reader would have raised), each naming
  the field by its TOML path (`network[1].vni`, `network[0].fdb[2].mac`, `daemon.metrics`;
  indexes are 0-based in file order) and the reason. Nothing else escapes them.
- Unknown keys are errors everywhere (a typo must not silently fall back to a default), and a
  table's unknown keys are reported before anything else in it.
- Every bad value is reported, not only the first: a bad field is recorded and reading goes
  on (`_record`). What depends on a value that could not be read is not judged: a table
  missing a required key, or breaking a rule between its fields, ends there; rules across
  networks skip the networks that did not read; the whole-file rules (control needs etcd or
  networks) are judged once everything else reads. `store_network`, `docker_network` and
  `check_networks` (run-time input, one item at a time) raise at the first problem.
- Types are exact: a TOML boolean is not an integer; an integer is accepted where seconds are.
- Values come out normalised: addresses as `ipaddress` compressed text, MACs in lower case,
  defaults filled in per encapsulation (port 4789 vxlan, 4754 gre-udp, 0 for gre).
- Rules that span networks (unique name, VNI, TAP; no shared bridge; one encapsulation per
  UDP port) are reported on the later network, the one whose line the user just added.
- No I/O other than reading the file in `load_config`: an MTU left out is derived by the
  daemon from the underlay at start, and certificate paths are opened by whoever uses them.
- A network declared in the etcd store (`store_network`) goes through the same checks as a
  [[network]] table, its fields named after the store key (`/vxlan-dp/networks/blue.vni`);
  only the host's own parts (local address, TAP and bridge names) come from the [etcd] table.

Dataclasses built by hand skip validation; build them through this module.
"""

from __future__ import annotations

import contextvars
import difflib
import ipaddress
import json
import math
import os
import re
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from .core.fdbtable import FdbStatic, FdbTable, FdbBuilder

try:    # tomli is what the standard library's tomllib was taken from, with the same errors; its
    # wheels are compiled (mypyc) and parse a config of 100,000 static entries in half the time
    import tomli as toml
except ImportError:     # pragma: no cover - a dependency; tomllib still reads every config
    import tomllib as toml  # type: ignore[no-redef]  # the same API
from .linux import IFNAMSIZ, UIO_MAXIOV
from .wire import ENCAPS, GRE_UDP_PORT, VNI_MAX, VXLAN_PORT, is_multicast, mac_to_bytes

if TYPE_CHECKING:
    from .fastpath.api import NetworkParams

__all__ = ["ConfigError", "FdbStatic", "NeighStatic", "NetworkConfig", "EtcdConfig", "DaemonConfig", "Config",
           "parse_config", "load_config", "config_from_dict", "store_network", "check_networks",
           "STORE_NETWORK_KEYS", "EMBEDDED_DEFAULT", "DockerConfig", "docker_network", "docker_key_file",
           "DOCKER_OPTION_KEYS"]

T = TypeVar("T")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"vxlan": VXLAN_PORT, "gre-udp": GRE_UDP_PORT, "gre": 0}
MTU_MIN, MTU_MAX = 68, 65535        # RFC 791: every IPv4 link carries 68 bytes
IFNAME_MAX = IFNAMSIZ - 1
POLL_MODES = ("interrupt", "adaptive", "busy")
POLL_SPIN_MAX_US = 10_000   # a spin is a latency aid, never a way to hold a core: busy does that
BATCH_MAX = UIO_MAXIOV              # fastpath.api.BATCH_MAX (not imported: checking a config loads no backend)
QUEUES_MAX = 16                     # fastpath.api.QUEUES_MAX, likewise (tests/unit/test_config.py compares)
QUEUES_AUTO_MAX = 4                 # "auto": one queue per usable CPU, at most this many (README: why)
FDB_ENTRIES_MAX = 1 << 24
LOG_LEVELS = ("debug", "info", "warning", "error")
CONTROLS = ("static", "etcd")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_MISSING: Any = object()


class ConfigError(Exception):
    """A config that cannot run. `field` is the TOML path ("" for the whole file).

    `problems` holds every problem found (this one first); `str()` is the first one alone."""

    def __init__(self, field: str, reason: str, problems: tuple[ConfigError, ...] = ()) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason
        self.problems: tuple[ConfigError, ...] = problems or (self,)

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason

    @classmethod
    def of(cls, problems: list[ConfigError]) -> ConfigError:
        return cls(problems[0].field, problems[0].reason, tuple(problems))


# Problems of the config being read (None: raise at the first one). Set by config_from_dict.
_PROBLEMS: contextvars.ContextVar[list[ConfigError] | None] = contextvars.ContextVar("problems", default=None)


class _Skip(Exception):
    """A table cannot be read further (its problem is recorded already)."""


def _record(err: ConfigError) -> None:
    """Note a problem and go on reading, or raise it when nobody collects."""
    problems = _PROBLEMS.get()
    if problems is None:
        raise err
    problems.append(err)


def _unit(fn: Callable[..., T], *args: Any) -> T | None:
    """Read one independent part (a table, a network); None if it could not be read."""
    try:
        return fn(*args)
    except _Skip:
        return None
    except ConfigError as e:
        _record(e)
        return None


# --- the dataclasses ---------------------------------------------------------------------

@dataclass(frozen=True)
class NeighStatic:
    ip: str                         # overlay address, compressed text, unicast
    mac: str                        # lower-case, unicast


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    vni: int
    encap: str                      # "vxlan" | "gre" | "gre-udp"
    port: int                       # outer UDP destination port; 0 for gre
    local: str
    tap: str
    bridge: str | None = None
    mtu: int | None = None          # None: derived from the underlay at start
    learning: bool = True
    peers: tuple[str, ...] = ()
    fdb: FdbTable | tuple[FdbStatic, ...] = ()   # parsed configs hold a packed FdbTable
    ageing: float = 300.0
    source_ports: tuple[int, int] = (49152, 65535)
    allow_unknown_sources: bool = False
    strict: bool = False
    nvgre: bool = False
    max_fdb_entries: int = 65536
    encrypt: bool = False           # ESP in UDP (vxlan_dp/wire/esp.py); vxlan / gre-udp only
    key_file: str | None = None     # `<id> <64 hex>` per line; root-owned, mode 0600;
                                    # None with encrypt: keys from the etcd store (P/keys/<name>/)
    cipher: str = "aes-256-gcm"     # or "chacha20-poly1305"
    rekey_delay: float = 10.0       # key file: seconds a new key waits before senders use it
    rekey_interval: float | None = None  # store keys: make a new key this often (None: never)
    neigh: tuple[NeighStatic, ...] = ()     # IP -> MAC for ARP / ND suppression (+ fdb[].ip)
    suppress_arp: bool | None = None        # None: on where the neighbour table has entries
    neigh_snoop: bool = False               # learn IP -> MAC from ARP replies / NAs on the TAP
    fdb_ips: tuple[NeighStatic, ...] = ()   # the `ip` of `fdb` entries, in file order

    def neigh_entries(self) -> tuple[tuple[str, str], ...]:
        """(ip, mac) of the static neighbour table: `neigh`, then the `ip`s of `fdb` entries."""
        return tuple((e.ip, e.mac) for e in self.neigh + self.fdb_ips)

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.local).version == 6

    def params(self, mtu: int | None = None) -> NetworkParams:
        """What the fast path needs; `mtu` is the effective one (required if not configured)."""
        # Imported here so that checking a config never loads (or warns about) the C backend.
        from .fastpath.api import NetworkParams

        mtu = self.mtu if mtu is None else mtu
        if mtu is None or not MTU_MIN <= mtu <= MTU_MAX:
            raise ValueError(f"network {self.name}: need an MTU in {MTU_MIN}..{MTU_MAX}, got {mtu}")
        return NetworkParams(
            vni=self.vni, encap=self.encap, local=self.local, port=self.port,
            sport_min=self.source_ports[0], sport_max=self.source_ports[1], mtu=mtu,
            learning=self.learning, allow_unknown_sources=self.allow_unknown_sources,
            ageing=self.ageing, max_fdb_entries=self.max_fdb_entries, nvgre=self.nvgre,
            strict=self.strict)


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...]      # "host:port" or "http(s)://host:port"
    prefix: str = "/vxlan-dp"       # starts with "/", no trailing "/"
    lease_ttl: int = 10             # seconds
    ca: str | None = None
    cert: str | None = None         # cert and key come together
    key: str | None = None
    username: str | None = None     # username and password come together
    password: str | None = None
    local: str | None = None        # this host's underlay address for store-declared networks;
                                    # None: the source address the kernel picks towards the store
    tap: str = "vxdp-{name}"        # TAP of a store-declared network, "{name}" = network name
    bridge: str | None = "br-{name}"  # its bridge (None: the TAP is left unbridged)

    def tap_for(self, name: str) -> str:
        return self.tap.replace("{name}", name)

    def bridge_for(self, name: str) -> str | None:
        return None if self.bridge is None else self.bridge.replace("{name}", name)


@dataclass(frozen=True)
class DaemonConfig:
    metrics: str | None = "127.0.0.1:9469"  # normalised "host:port" / "[v6]:port"; None = off
    control: str = "static"                 # "static" | "etcd"
    batch: int = 64
    log_level: str = "info"
    fdb_sweep: float = 5.0                  # seconds between FDB ageing sweeps
    offload: bool = True                    # TAP TSO/GRO, UDP_SEGMENT, UDP_GRO where probed to work
    poll: str = "adaptive"                  # "interrupt" | "adaptive" | "busy" (datapath/poll.py)
    poll_spin_us: int = 300                 # adaptive: how long to keep polling after sparse traffic
    queues: int = 1                         # TAP queues and pump threads ("auto" resolved at parse)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return None if self.metrics is None else _host_port(self.metrics)


@dataclass(frozen=True)
class DockerConfig:
    """[docker]: the Docker network plugin (vxlan_dp/docker/), served when the table is present."""
    socket: str = "/run/docker/plugins/vxlan-dp.sock"  # where dockerd discovers plugins by name
    state: str = "/var/lib/vxlan-dp/docker.json"       # networks and endpoints, for restarts
    local: str | None = None        # underlay address of Docker networks (None: etcd.local)
    peers: tuple[str, ...] = ()     # static control: the flood list of every Docker network
    slice: tuple[int, int] = (1, 1)  # static control: (i, n) = this host allocates from the
                                     # i-th of n equal parts of every subnet
    api: str | None = None          # etcd control: the local Docker API ("unix:///var/run/docker.sock"):
                                    # networks created on one host are created on every host


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    networks: tuple[NetworkConfig, ...]
    etcd: EtcdConfig | None = None
    source: str = "<string>"
    docker: DockerConfig | None = None

    def network(self, name: str) -> NetworkConfig:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(f"no network named {name!r}")


EMBEDDED_DEFAULT = """\
# vxlan-dp example: one VXLAN network between this host (198.18.0.1) and two peers.
# Check a config with `vxlan-dp check -c FILE`; run it with `vxlan-dp run -c FILE`.

[daemon]
metrics = "127.0.0.1:9469"      # Prometheus endpoint; "" or false turns it off
control = "static"              # peers and FDB entries come from this file

[[network]]
name = "blue"
vni = 42
encap = "vxlan"                 # vxlan | gre | gre-udp
port = 4789                     # UDP destination port (vxlan 4789, gre-udp 4754; none for gre)
local = "198.18.0.1"            # this host's underlay address
tap = "vxdp-blue"
# bridge = "br-blue"            # enslave the TAP to this bridge
# mtu = 1450                    # default: underlay MTU minus the encapsulation overhead
peers = ["198.18.0.2", "198.18.0.3"]
fdb = [{ mac = "02:42:c0:a8:00:04", remote = "198.18.0.2" }]
"""


# --- entry points --------------------------------------------------------------------------

def parse_config(text: str, source: str = "<string>") -> Config:
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}") from None
    return config_from_dict(data, source)


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read {os.fspath(path)}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"cannot read {os.fspath(path)}: not UTF-8 text ({e.reason} "
                              f"at byte {e.start})") from None
    return parse_config(text, os.fspath(path))


def config_from_dict(d: Mapping[str, Any], source: str = "<dict>") -> Config:
    problems: list[ConfigError] = []
    token = _PROBLEMS.set(problems)
    try:
        config = _unit(_config, d, source)
    finally:
        _PROBLEMS.reset(token)
    if problems:
        raise ConfigError.of(problems)
    assert config is not None
    return config


def _config(d: Mapping[str, Any], source: str) -> Config | None:
    top = _Table(d, "", ("daemon", "network", "etcd", "docker"))
    daemon = _unit(_daemon, top.take("daemon", lambda v: v, {}))
    etcd = _unit(_etcd, d["etcd"]) if "etcd" in d else None
    networks = _unit(_networks, top.take("network", lambda v: v, []))
    docker = _unit(_docker, d["docker"], etcd) if "docker" in d and (etcd or "etcd" not in d) else None
    if _PROBLEMS.get():
        return None     # the whole-file rules below assume every table read well
    assert daemon is not None and networks is not None
    if daemon.control == "etcd" and etcd is None:
        raise ConfigError("etcd", 'control = "etcd" needs an [etcd] table with endpoints')
    if daemon.control == "static" and not networks and docker is None:
        raise ConfigError("network", 'control = "static" needs at least one [[network]] table '
                                     '(or a [docker] table: networks made with docker network create)')
    if daemon.control != "etcd":
        for i, n in enumerate(networks):
            if n.encrypt and n.key_file is None:
                raise ConfigError(f"network[{i}].key_file", 'an encrypted network needs a key file '
                                  '(keys come from the store only with control = "etcd")')
    if docker is not None and docker.api is not None and daemon.control != "etcd":
        raise ConfigError("docker.api", 'shares networks through the store: needs control = "etcd"')
    if docker is not None and docker.local is None and daemon.control == "static":
        raise ConfigError("docker.local", "required with static control: this host's underlay address")
    return Config(daemon, networks, etcd, source, docker)


# --- tables --------------------------------------------------------------------------------

class _Table:
    """One TOML table being read: unknown keys rejected up front, each value converted once.

    Converters take the raw value and raise ValueError(reason); `take` names the field.
    """

    def __init__(self, data: Any, path: str, keys: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"expected a table, got {_show(data)}")
        for key in data:
            if key not in keys:
                near = difflib.get_close_matches(str(key), keys, n=1)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                _record(ConfigError(self._join(path, key), f"unknown key{hint}"))
        self.data, self.path = data, path
        self.bad: set[str] = set()      # keys whose value was recorded as a problem

    @staticmethod
    def _join(path: str, key: Any) -> str:
        key = str(key)
        name = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
        return f"{path}.{name}" if path else name

    def field(self, key: str) -> str:
        return self._join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def take(self, key: str, convert: Callable[[Any], T], default: Any = _MISSING) -> T:
        """The converted value; a bad one is recorded and the default stands in for it (no
        default: the table ends here)."""
        if key not in self.data:
            if default is _MISSING:
                _record(ConfigError(self.field(key), "required key missing"))
                raise _Skip
            return cast(T, default)  # a caller's default is of its converter's type (or None)
        try:
            return _convert(self.field(key), convert, self.data[key])
        except ConfigError as e:
            _record(e)
            self.bad.add(key)
            if default is _MISSING:
                raise _Skip from None
            return cast(T, default)


    def need(self, key: str, convert: Callable[[Any], T]) -> T:
        """A required value; a bad or missing one is recorded and `_BAD` stands in for it, so the
        table's other fields are still judged (the caller must not build with `_BAD`)."""
        try:
            return self.take(key, convert)
        except _Skip:
            self.bad.add(key)
            return cast(T, _BAD)


_BAD: Any = object()


def _convert(field: str, convert: Callable[[Any], T], value: Any) -> T:
    try:
        return convert(value)
    except ValueError as e:
        raise ConfigError(field, str(e)) from None


def _daemon(raw: Any) -> DaemonConfig:
    t = _Table(raw, "daemon", ("metrics", "control", "batch", "log_level", "fdb_sweep", "offload", "poll",
                               "poll_spin_us", "queues"))
    return DaemonConfig(
        metrics=t.take("metrics", _metrics, DaemonConfig.metrics),
        control=t.take("control", _choice(CONTROLS), "static"),
        batch=t.take("batch", _int(1, BATCH_MAX), 64),
        log_level=t.take("log_level", _choice(LOG_LEVELS, fold=True), "info"),
        fdb_sweep=t.take("fdb_sweep", _seconds, 5.0),
        offload=t.take("offload", _bool, True),
        poll=t.take("poll", _choice(POLL_MODES), DaemonConfig.poll),
        poll_spin_us=t.take("poll_spin_us", _int(1, POLL_SPIN_MAX_US), DaemonConfig.poll_spin_us),
        queues=t.take("queues", _queues, DaemonConfig.queues),
    )


def _queues(v: Any) -> int:
    """[daemon] queues: 1..QUEUES_MAX, or "auto": one per CPU this process may run on, at
    most QUEUES_AUTO_MAX (a queue is a pump thread: more threads than CPUs only take turns)."""
    if v == "auto":
        return max(1, min(len(os.sched_getaffinity(0)), QUEUES_AUTO_MAX))
    if isinstance(v, str):
        raise ValueError(f"{_show(v)} is neither \"auto\" nor a number of queues 1..{QUEUES_MAX}")
    return _int(1, QUEUES_MAX)(v)


def _etcd(raw: Any) -> EtcdConfig:
    t = _Table(raw, "etcd", ("endpoints", "prefix", "lease_ttl", "ca", "cert", "key",
                             "username", "password", "local", "tap", "bridge"))
    endpoints = _unique(t.field("endpoints"), t.take("endpoints", _array), _etcd_endpoint)
    if not endpoints:
        raise ConfigError(t.field("endpoints"), "needs at least one endpoint")
    for a, b in (("cert", "key"), ("key", "cert"), ("username", "password"), ("password", "username")):
        if t.has(a) and not t.has(b):
            raise ConfigError(t.field(b), f"required when {a} is set")
    return EtcdConfig(
        endpoints=endpoints,
        prefix=t.take("prefix", _etcd_prefix, "/vxlan-dp"),
        lease_ttl=t.take("lease_ttl", _int(1, 3600), 10),
        ca=t.take("ca", _nonempty, None),
        cert=t.take("cert", _nonempty, None),
        key=t.take("key", _nonempty, None),
        username=t.take("username", _nonempty, None),
        password=t.take("password", _str, None),
        local=_opt_compressed(t.take("local", _unicast, None)),
        tap=t.take("tap", _ifname_pattern, "vxdp-{name}"),
        bridge=t.take("bridge", _bridge_pattern, "br-{name}"),
    )


def _docker(raw: Any, etcd: EtcdConfig | None) -> DockerConfig:
    t = _Table(raw, "docker", ("socket", "state", "local", "peers", "slice", "api"))
    local: Address | None = t.take("local", _unicast, None)
    if local is None and etcd is not None and etcd.local is not None:
        local = ipaddress.ip_address(etcd.local)
    peers: tuple[str, ...] = ()
    if local is not None:
        # The same list on every host: this host's own address in it is skipped, not an error.
        items = [p for p in t.take("peers", _array, []) if p != local.compressed and p != str(local)]
        peers = _unique(t.field("peers"), items, _peer(local))
    elif t.has("peers") and "local" not in t.bad:
        raise ConfigError(t.field("peers"), "needs docker.local (or etcd.local): whose peers are these?")
    return DockerConfig(
        socket=t.take("socket", _abs_path, DockerConfig.socket),
        state=t.take("state", _abs_path, DockerConfig.state),
        local=_opt_compressed(local), peers=peers,
        slice=t.take("slice", _slice, (1, 1)),
        api=t.take("api", _docker_api, None))


def _docker_api(v: Any) -> str:
    s = _str(v)
    if not re.fullmatch(r"(unix:///\S+|tcp://\S+|https?://\S+)", s):
        raise ValueError(f'{_show(s)} is not a Docker API address (want "unix:///var/run/docker.sock" '
                         'or "tcp://host:port")')
    return s


def _abs_path(v: Any) -> str:
    s = _str(v)
    if not s.startswith("/"):
        raise ValueError(f"{_show(s)} is not an absolute path")
    return s


def _slice(v: Any) -> tuple[int, int]:
    """"i/n": the i-th (1-based) of n equal parts of every subnet."""
    m = re.fullmatch(r"([0-9]+)/([0-9]+)", _str(v))
    if not m:
        raise ValueError(f'{_show(v)} is not a slice (want "i/n": the i-th of n equal parts, as "2/4")')
    i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= n <= 4096 or not 1 <= i <= n:
        raise ValueError(f"{_show(v)}: want 1 <= i <= n <= 4096")
    return i, n


def _option_value(key: str, value: Any) -> Any:
    """A -o value (always a string) as the TOML value it reads as (integer, number, boolean,
    or for source_ports "low-high" and peers "a,b" an array); otherwise the string itself,
    which the [[network]] checks then reject by name."""
    if not isinstance(value, str):
        return value
    v = value.strip()
    if key == "source_ports":
        return [_option_value("", p) for p in re.split(r"[-,:]", v)]
    if key == "peers":
        return [p.strip() for p in v.split(",") if p.strip()]
    if re.fullmatch(r"-?[0-9]+", v):
        return int(v)
    if v in ("true", "false"):
        return v == "true"
    if re.fullmatch(r"-?[0-9]*\.[0-9]+", v):
        return float(v)
    return value


DOCKER_REKEY = 12 * 3600.0     # Docker's overlay rotates its keys every 12 hours


def docker_key_file(key_dir: str, vni: int) -> str:
    """Where a Docker network's key file lives with static control (the same path on every host)."""
    return os.path.join(key_dir, f"docker-{vni}.key")


def docker_network(options: Mapping[str, Any], docker: DockerConfig, local: str | None = None,
                   key_dir: str | None = None) -> NetworkConfig:
    """The network `docker network create -d vxlan-dp -o vni=42 -o port=4790 ...` asks for.

    The options go through the [[network]] checks; a ConfigError names the option as typed
    (`-o vni: 16777216 is out of range 0..16777215`). The VNI names the network on every host
    (`docker-42`, TAP `vxdp-42`, bridge `vxbr-42`): the same command on each host makes the
    same network. Peers: `-o peers=a,b`, else [docker] peers (static control).

    `-o encrypted` (Docker's overlay option; "", "true" or "false") is `encrypt`. An encrypted
    network's keys: with `key_dir` (static control) the key file docker_key_file(key_dir, vni),
    which the plugin makes if missing; without (etcd) the store, rotated every 12 hours unless
    `-o rekey_interval` says otherwise.
    """
    local = local or docker.local
    raw = {str(k): _option_value(str(k), v) for k, v in options.items()}
    try:
        if local is None:
            raise ConfigError("docker.local", "this host's underlay address is not known (set docker.local)")
        if "encrypted" in raw:
            enc = raw.pop("encrypted")
            if "encrypt" in raw:
                raise ConfigError("-o encrypted", "give -o encrypted or -o encrypt, not both")
            if enc not in ("", True, False):
                raise ConfigError("-o encrypted", f"expected true or false, got {_show(enc)}")
            raw["encrypt"] = enc is not False
        t = _Table(raw, "-o", DOCKER_OPTION_KEYS)
        vni = t.take("vni", _int(0, VNI_MAX))
        if raw.get("encrypt") is True:
            if key_dir is not None:
                raw["key_file"] = docker_key_file(key_dir, vni)
            else:
                raw.setdefault("rekey_interval", DOCKER_REKEY)
        raw |= {"name": f"docker-{vni}", "local": local, "tap": f"vxdp-{vni}", "bridge": f"vxbr-{vni}"}
        if "peers" not in raw:
            mine = ipaddress.ip_address(local)
            raw["peers"] = [p for p in docker.peers if ipaddress.ip_address(p) != mine]
        return _network(raw, "-o")
    except ConfigError as e:
        field = f"-o {e.field[3:]}" if e.field.startswith("-o.") else e.field
        raise ConfigError(field, e.reason) from None


def _opt_compressed(addr: Address | None) -> str | None:
    return None if addr is None else addr.compressed


def _ifname_pattern(v: Any) -> str:
    """An interface name with "{name}" standing for the network name ("vxdp-{name}")."""
    s = _str(v)
    if "{name}" not in s:
        raise ValueError(f'{_show(s)} has no "{{name}}": every store network needs its own device')
    if any(c in "{}" for c in s.replace("{name}", "")):
        raise ValueError(f'{_show(s)}: "{{name}}" is the only placeholder')
    _ifname(s.replace("{name}", "x"))  # the shortest name must be a valid Linux name already
    return s


def _bridge_pattern(v: Any) -> str | None:
    return None if v is False or v == "" else _ifname_pattern(v)


_NETWORK_KEYS = ("name", "vni", "encap", "port", "local", "tap", "bridge", "mtu", "learning",
                 "peers", "fdb", "ageing", "source_ports", "allow_unknown_sources", "strict",
                 "nvgre", "max_fdb_entries", "neigh", "suppress_arp", "neigh_snoop", "encrypt", "key_file",
                 "cipher", "rekey_delay", "rekey_interval")
CIPHERS = ("aes-256-gcm", "chacha20-poly1305")


def _network(raw: Any, path: str) -> NetworkConfig:
    t = _Table(raw, path, _NETWORK_KEYS)
    name = t.need("name", _network_name)
    vni = t.need("vni", _int(0, VNI_MAX))
    encap = t.take("encap", _choice(ENCAPS), "vxlan")
    if encap == "gre":
        for key in ("port", "source_ports"):
            if t.has(key):
                raise ConfigError(t.field(key), 'encap "gre" is IP protocol 47 and has no UDP header; '
                                                f'remove {key} or use encap = "gre-udp"')
    port = t.take("port", _int(1, 65535), DEFAULT_PORTS[encap])
    local = t.need("local", _unicast)
    tap = t.need("tap", _ifname)
    bridge = t.take("bridge", _ifname, None)
    if bridge == tap:
        raise ConfigError(t.field("bridge"), f"{_show(bridge)} is this network's own tap")
    nvgre = t.take("nvgre", _bool, False)
    if nvgre and encap == "vxlan" and "encap" not in t.bad:
        raise ConfigError(t.field("nvgre"), 'NVGRE applies to encap "gre" and "gre-udp", not "vxlan"')
    encrypt, key_file, cipher, rekey_delay, rekey_interval = _encryption(t, encap)
    mtu = t.take("mtu", _int(MTU_MIN, MTU_MAX), None)
    learning = t.take("learning", _bool, True)
    if local is _BAD:   # peers and FDB remotes are judged against local: not without it
        peers: tuple[str, ...] = ()
        fdb: tuple[FdbTable, tuple[NeighStatic, ...], dict[str, str]] = (FdbBuilder().table(), (), {})
    else:
        peers = _unique(t.field("peers"), t.take("peers", _array, []), _peer(local))
        fdb = _fdb(t.field("fdb"), t.take("fdb", _array, []), local)
    neigh = _neigh(t.field("neigh"), t.take("neigh", _array, []), fdb[2])
    suppress_arp = t.take("suppress_arp", _bool, None)
    neigh_snoop = t.take("neigh_snoop", _bool, False)
    ageing = t.take("ageing", _seconds, 300.0)
    source_ports = _source_ports(t)
    allow_unknown_sources = t.take("allow_unknown_sources", _bool, False)
    strict = t.take("strict", _bool, False)
    max_fdb_entries = t.take("max_fdb_entries", _int(1, FDB_ENTRIES_MAX), 65536)
    if t.bad:           # recorded already; a network with a bad field takes no part in the rest
        raise _Skip
    return NetworkConfig(
        name=name, vni=vni, encap=encap, port=port, local=local.compressed, tap=tap, bridge=bridge,
        mtu=mtu, learning=learning, peers=peers, fdb=fdb[0], fdb_ips=fdb[1], neigh=neigh,
        suppress_arp=suppress_arp, neigh_snoop=neigh_snoop, ageing=ageing, source_ports=source_ports,
        allow_unknown_sources=allow_unknown_sources, strict=strict, nvgre=nvgre,
        max_fdb_entries=max_fdb_entries, encrypt=encrypt, key_file=key_file, cipher=cipher,
        rekey_delay=rekey_delay, rekey_interval=rekey_interval,
    )


def _encryption(t: _Table, encap: str) -> tuple[bool, str | None, str, float, float | None]:
    """`encrypt`, `key_file`, `cipher`, `rekey_delay`, `rekey_interval`. The key file is read
    here (owner, mode, syntax) so `check` finds what `run` would; its keys are zeroed right
    away, and no error message ever holds key material (vxlan_dp/core/keys.py). Without a key
    file the keys come from the etcd store (whether the control plane is etcd is a whole-file
    rule: _config)."""
    from .core.keys import KeyFileError, load_key_file

    encrypt = t.take("encrypt", _bool, False)
    if not encrypt:
        for key in ("key_file", "cipher", "rekey_delay", "rekey_interval"):
            if t.has(key):
                raise ConfigError(t.field(key), "applies to encrypted networks only: add encrypt = true")
        return False, None, "aes-256-gcm", 10.0, None
    if encap == "gre":
        raise ConfigError(t.field("encrypt"), 'ESP is carried in UDP: use encap = "vxlan" or "gre-udp"')
    cipher = t.take("cipher", _choice(CIPHERS, fold=True), "aes-256-gcm")
    if not t.has("key_file"):
        return True, None, cipher, t.take("rekey_delay", _seconds, 10.0), t.take("rekey_interval", _duration, None)
    if t.has("rekey_interval"):
        raise ConfigError(t.field("rekey_interval"), 'automatic rotation needs the keys in the etcd store '
                          '(control = "etcd", no key_file): several hosts never rewrite one file in step; '
                          'rotate a key file with `vxlan-dp keys rotate` from a timer')
    key_file = t.take("key_file", _nonempty)
    try:
        keys = load_key_file(key_file, key_file)
    except KeyFileError as e:
        raise ConfigError(t.field("key_file"), str(e)) from None
    for k in keys.values():
        k[:] = bytes(len(k))
    return True, os.path.abspath(key_file), cipher, t.take("rekey_delay", _seconds, 10.0), None


def _source_ports(t: _Table) -> tuple[int, int]:
    """`source_ports = [low, high]`: the UDP source range the flow hash maps into (RFC 7348 sec. 5)."""
    path = t.field("source_ports")
    items = t.take("source_ports", _array, [49152, 65535])
    if len(items) != 2:
        raise ConfigError(path, f"expected [low, high], got {len(items)} element(s)")
    lo, hi = (_convert(f"{path}[{i}]", _int(1, 65535), v) for i, v in enumerate(items))
    if lo > hi:
        raise ConfigError(path, f"low {lo} is above high {hi}")
    return lo, hi


_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]*")
_EVEN = bytes(range(0, 256, 2))         # deleted by translate: what is left has the group bit


def _fdb_whole(raw: list[Any], local: Address) -> FdbTable | None:
    """The usual array (every entry exactly {mac, remote}, all valid, no MAC twice) checked a
    whole column at a time, for the same table `_fdb`'s loop builds; None: something in it is
    not usual, and the loop judges it entry by entry, naming what is wrong."""
    n = len(raw)
    if set(map(type, raw)) - {dict} or set(map(len, raw)) - {2}:
        return None
    try:
        macs = [item["mac"] for item in raw]
        remotes = [item["remote"] for item in raw]
    except KeyError:
        return None
    if set(map(type, macs)) - {str} or set(map(type, remotes)) - {str} or set(map(len, macs)) - {17}:
        return None
    text = "".join(macs)                # n MACs of 17 characters: aa:bb:cc:dd:ee:ff
    if any(text[k::17] != ":" * n for k in (2, 5, 8, 11, 14)):
        return None
    digits = text.replace(":", "")
    if not _HEX_RE.fullmatch(digits):
        return None
    packed = bytes.fromhex(digits)
    if packed[::6].translate(None, _EVEN) or len({packed[i:i + 6] for i in range(0, 6 * n, 6)}) != n:
        return None                     # a group address (first octet odd), or a MAC twice
    peer = _peer(local)
    ids: dict[str, int] = {}            # validated remote -> its index, in order of first use
    rid: dict[str, int] = {}            # remote as written -> the same index
    for r in dict.fromkeys(remotes):
        try:
            rid[r] = ids.setdefault(peer(r), len(ids))
        except ValueError:
            return None
    return FdbTable(packed, array("I", map(rid.__getitem__, remotes)), tuple(ids))


def _fdb(path: str, raw: list[Any], local: Address) -> tuple[FdbTable, tuple[NeighStatic, ...], dict[str, str]]:
    """`fdb = [{ mac, remote, ip? }]` -> the packed table and the neighbour entries of its `ip`s.

    Written for 100,000 entries: the common entry ({mac, remote}, a plain unicast MAC, a remote
    seen before) is checked without building anything per entry but its packed bytes; any
    other entry goes through the general checks, which name the field and the reason.
    """
    fast = _fdb_whole(raw, local)
    if fast is not None:
        return fast, (), {}
    out = FdbBuilder()
    seen: dict[bytes, int] = {}
    remotes: dict[str, str] = {}        # raw remote text -> validated compressed text
    ips: list[NeighStatic] = []
    by_ip: dict[str, str] = {}
    peer = _peer(local)
    for i, item in enumerate(raw):
        mac_raw = item.get("mac") if type(item) is dict and len(item) == 2 else None
        raw_r = item.get("remote") if mac_raw is not None else None
        remote = remotes.get(raw_r) if type(raw_r) is str else None
        if remote is not None and type(mac_raw) is str and _MAC_RE.fullmatch(mac_raw) \
                and not int(mac_raw[1], 16) & 1:
            mac = bytes.fromhex(mac_raw.replace(":", ""))
        else:                           # the general path: every check, field named
            t = _Table(item, f"{path}[{i}]", ("mac", "remote", "ip"))
            mac_text = t.take("mac", _unicast_mac)
            mac = bytes.fromhex(mac_text.replace(":", ""))
            if mac in seen:
                raise ConfigError(t.field("mac"), f"{mac_text} is a duplicate of fdb[{seen[mac]}]")
            raw_remote = t.take("remote", lambda v: v)
            remote = _convert(t.field("remote"), peer, raw_remote)
            if isinstance(raw_remote, str):
                remotes[raw_remote] = remote
            raw_ip = t.take("ip", _str_or_array, None)
            if isinstance(raw_ip, str):     # ip = "192.168.0.4", or ip = ["192.168.0.4", "fd00::4"]
                entry_ips: tuple[str, ...] = (_convert(t.field("ip"), _overlay_ip, raw_ip),)
            else:
                entry_ips = _unique(t.field("ip"), raw_ip or [], _overlay_ip)
            for ip in entry_ips:
                if ip in by_ip:
                    raise ConfigError(t.field("ip"), f"{ip} is already the address of {by_ip[ip]}")
                by_ip[ip] = f"fdb[{i}]"
                ips.append(NeighStatic(ip, mac_text))
        if mac in seen:
            raise ConfigError(f"{path}[{i}].mac", f"{mac.hex(':')} is a duplicate of fdb[{seen[mac]}]")
        seen[mac] = i
        out.add(mac, remote)
    return out.table(), tuple(ips), by_ip


def _neigh(path: str, raw: list[Any], fdb_ips: dict[str, str]) -> tuple[NeighStatic, ...]:
    """`neigh = [{ ip = "192.168.0.4", mac = "02:42:c0:a8:00:04" }]`: one MAC per address,
    across `neigh` and the `ip` of `fdb` entries (`fdb_ips`: ip -> "fdb[i]")."""
    owner = {ip: f"{where}.ip" for ip, where in fdb_ips.items()}
    entries: list[NeighStatic] = []
    for i, item in enumerate(raw):
        t = _Table(item, f"{path}[{i}]", ("ip", "mac"))
        ip = t.take("ip", _overlay_ip)
        if ip in owner:
            raise ConfigError(t.field("ip"), f"{ip} is a duplicate of {owner[ip]}")
        owner[ip] = f"neigh[{i}]"
        entries.append(NeighStatic(ip, t.take("mac", _unicast_mac)))
    return tuple(entries)


def _overlay_ip(v: Any) -> str:
    """An address inside the overlay (a container's): unicast, either family."""
    addr = _address(v)
    if addr.is_unspecified or addr.is_multicast:
        kind = "the unspecified" if addr.is_unspecified else "a multicast"
        raise ValueError(f"{addr} is {kind} address; a neighbour entry is one host's unicast address")
    return addr.compressed


def _str_or_array(v: Any) -> str | list[Any]:
    return v if isinstance(v, str) else _array(v)


# Keys a network definition in the etcd store may carry; the rest (local, tap, bridge) is the
# host's business and comes from its [etcd] table, peers and fdb entries are the store's own.
STORE_NETWORK_KEYS = ("vni", "encap", "port", "mtu", "learning", "ageing", "source_ports",
                      "allow_unknown_sources", "strict", "nvgre", "max_fdb_entries", "suppress_arp",
                      "neigh_snoop", "encrypt", "cipher", "rekey_interval")
# `docker network create -o KEY=VALUE`: what the store may say of a network (the host's own
# local, tap and bridge come from [docker]; the VNI names it), and its static peers.
DOCKER_OPTION_KEYS = (*STORE_NETWORK_KEYS, "peers")
_NOT_IN_STORE = {
    "name": "is the last part of the key",
    "local": "is set per host ([etcd] local)",
    "tap": "is set per host ([etcd] tap)",
    "bridge": "is set per host ([etcd] bridge)",
    "peers": "come from the members/ keys of the store",
    "fdb": "comes from the fdb/ keys of the store",
    "neigh": "comes from the neigh/ keys of the store",
    "key_file": "an encrypted store network's keys are the store's keys/<name>/<id>",
}


def store_network(name: str, value: Any, *, local: str, etcd: EtcdConfig, path: str) -> NetworkConfig:
    """A network declared in the store (`value`: its decoded JSON object) as this host runs it.

    `path` names the store key in errors (`/vxlan-dp/networks/blue.vni: ...`). Raises ConfigError.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a JSON object, got {_show(value)}")
    for key, why in _NOT_IN_STORE.items():
        if key in value:
            raise ConfigError(_Table._join(path, key), why)
    _Table(value, path, STORE_NETWORK_KEYS)  # unknown keys first
    name = _convert(path, _network_name, name)
    tap = _convert(f"{path} (etcd.tap)", _ifname, etcd.tap_for(name))
    bridge = etcd.bridge_for(name)
    if bridge is not None:
        bridge = _convert(f"{path} (etcd.bridge)", _ifname, bridge)
    raw = dict(value) | {"name": name, "local": local, "tap": tap}
    if bridge is not None:
        raw["bridge"] = bridge
    return _network(raw, path)


def check_networks(nets: list[NetworkConfig]) -> None:
    """The rules that span networks (unique VNI, TAP, bridge, ...), for a list built at run time."""
    _check_across(nets)


def _networks(raw: Any) -> tuple[NetworkConfig, ...]:
    if isinstance(raw, Mapping):
        raise ConfigError("network", "expected an array of tables, got a single table: "
                                     "write [[network]], not [network]")
    nets = [_unit(_network, item, f"network[{i}]") for i, item in enumerate(_convert("network", _array, raw))]
    _check_across(nets)
    return tuple(n for n in nets if n is not None)


def _check_across(nets: Sequence[NetworkConfig | None]) -> None:
    """Rules spanning networks; the error names the later network's field. A network that
    did not read (None) takes no part."""
    def owner(index: dict[Any, int], key: Any) -> str:
        j = index[key]
        return f"network[{j}] ({_name_of(nets[j])})"

    names: dict[str, int] = {}
    vnis: dict[int, int] = {}
    taps: dict[str, int] = {}
    bridges: dict[str, int] = {}
    udp: dict[tuple[str, int], int] = {}
    for i, n in enumerate(nets):
        if n is None:
            continue
        p = f"network[{i}]"
        if n.name in names:
            _record(ConfigError(f"{p}.name", f"duplicate of network[{names[n.name]}]"))
        if n.vni in vnis:
            _record(ConfigError(f"{p}.vni", f"{n.vni} is already the VNI of {owner(vnis, n.vni)}"))
        if n.tap in taps:
            _record(ConfigError(f"{p}.tap", f"{_show(n.tap)} is already the tap of {owner(taps, n.tap)}"))
        if n.tap in bridges:
            _record(ConfigError(f"{p}.tap", f"{_show(n.tap)} is the bridge of {owner(bridges, n.tap)}"))
        if n.bridge is not None:
            if n.bridge in taps:
                _record(ConfigError(f"{p}.bridge", f"{_show(n.bridge)} is the tap of {owner(taps, n.bridge)}"))
            if n.bridge in bridges:
                _record(ConfigError(f"{p}.bridge", f"{_show(n.bridge)} is already the bridge of "
                                    f"{owner(bridges, n.bridge)}; a shared bridge would carry frames "
                                    "across VNIs"))
        if n.encap != "gre" and (n.local, n.port) in udp:
            other = nets[udp[(n.local, n.port)]]
            assert other is not None
            if n.encrypt or other.encrypt:
                _record(ConfigError(f"{p}.port", f"{n.local} port {n.port} is already used by "
                                    f"{owner(udp, (n.local, n.port))}; an encrypted network needs a port "
                                    "of its own (the SPI does not name the network)"))
            elif other.encap != n.encap:
                _record(ConfigError(f"{p}.port", f"{n.local} port {n.port} already carries {other.encap} for "
                                    f"{owner(udp, (n.local, n.port))}; one UDP port carries one encapsulation"))
        _check_gre_keys(nets, i)
        names.setdefault(n.name, i)
        vnis.setdefault(n.vni, i)
        taps.setdefault(n.tap, i)
        if n.bridge is not None:
            bridges.setdefault(n.bridge, i)
        udp.setdefault((n.local, n.port), i)


def _name_of(n: NetworkConfig | None) -> str:
    return n.name if n is not None else "?"


def _check_gre_keys(nets: Sequence[NetworkConfig | None], i: int) -> None:
    """On one GRE endpoint a plain network's key is its VNI, an NVGRE network's keys are
    VSID << 8 | FlowID (RFC 7637 sec. 3.2); the receiver tries plain first, so the two
    ranges must not overlap or NVGRE traffic lands in the plain network."""
    n = nets[i]
    if n is None or n.encap == "vxlan":
        return
    for j, m in enumerate(nets[:i]):
        if m is None or (m.encap, m.local, m.port) != (n.encap, n.local, n.port) or m.nvgre == n.nvgre:
            continue
        vsid, key = (m.vni, n.vni) if m.nvgre else (n.vni, m.vni)
        if key >> 8 == vsid:
            _record(ConfigError(f"network[{i}].vni", f"plain GRE key {key} lies inside NVGRE VSID {vsid} "
                                f"(keys {vsid << 8}..{vsid << 8 | 0xFF}) of the same endpoint; it clashes "
                                f"with network[{j}] ({m.name})"))
            return


# --- converters: raw TOML value -> checked value, or ValueError(reason) ---------------------

def _show(v: Any) -> str:
    """A value as the user wrote it in TOML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Mapping):
        return "a table"
    if isinstance(v, (list, tuple)):
        return "an array"
    return f"a {type(v).__name__}"


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {_show(v)}")
    return v


def _nonempty(v: Any) -> str:
    if not _str(v):
        raise ValueError("must not be empty")
    return str(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {_show(v)}")
    return v


def _array(v: Any) -> list[Any]:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"expected an array, got {_show(v)}")
    return list(v)


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {_show(v)}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v
    return convert


def _seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number of seconds, got {_show(v)}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{v} is not a positive number of seconds")
    return float(v)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(v: Any) -> float:
    """Seconds, or a string of a number and a unit: "90s", "30m", "12h", "1d"; at least 1 s."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*", v)
        if not m:
            raise ValueError(f'{_show(v)} is not a duration (a number of seconds, or as "90s", "30m", "12h", "1d")')
        v = float(m.group(1)) * _UNITS[m.group(2)]
    secs = _seconds(v)
    if secs < 1:
        raise ValueError(f"{secs:g} s is too short: at least 1 second")
    return secs


def _choice(options: tuple[str, ...], fold: bool = False) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        s = _str(v).lower() if fold else _str(v)
        if s not in options:
            raise ValueError(f"{_show(v)} is not one of {', '.join(options)}")
        return s
    return convert


def _network_name(v: Any) -> str:
    if not _NAME_RE.fullmatch(_str(v)):
        raise ValueError(f"{_show(v)} is not a valid network name (1..64 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit)")
    return str(v)


def _ifname(v: Any) -> str:
    """Linux dev_valid_name() (net/core/dev.c): 1..15 bytes, not "." or "..", no '/', ':' or space."""
    s = _str(v)
    size = len(s.encode())
    if not 1 <= size <= IFNAME_MAX:
        raise ValueError(f"{_show(s)} is {size} bytes long; Linux interface names are 1..{IFNAME_MAX}")
    if s in (".", ".."):
        raise ValueError(f"{_show(s)} is not a valid Linux interface name")
    if any(c in "/:\0" or c.isspace() for c in s):
        raise ValueError(f"{_show(s)} is not a valid Linux interface name (no '/', ':' or whitespace)")
    return s


def _address(v: Any) -> Address:
    s = _str(v)
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        raise ValueError(f"{_show(s)} is not an IPv4 or IPv6 address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        raise ValueError(f"{_show(s)}: scoped IPv6 addresses (%zone) are not supported")
    return addr


def _unicast(v: Any) -> Address:
    addr = _address(v)
    if addr.is_unspecified or addr.is_multicast:
        kind = "the unspecified" if addr.is_unspecified else "a multicast"
        raise ValueError(f"{addr} is {kind} address; a unicast underlay address is needed")
    return addr


def _peer(local: Address) -> Callable[[Any], str]:
    """An underlay address of another host: unicast, of local's family, not local itself."""
    def convert(v: Any) -> str:
        addr = _unicast(v)
        if addr.version != local.version:
            raise ValueError(f"{addr} is IPv{addr.version} but local {local} is IPv{local.version}")
        if addr == local:
            raise ValueError(f"{addr} is this host's local address")
        return addr.compressed
    return convert


def _unique(path: str, items: list[Any], convert: Callable[[Any], str]) -> tuple[str, ...]:
    out: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            value = _convert(f"{path}[{i}]", convert, item)
        except ConfigError as e:
            _record(e)      # and go on with the other items
            continue
        if value in out:
            _record(ConfigError(f"{path}[{i}]", f"{value} is a duplicate of "
                                f"{path.rsplit('.', 1)[-1]}[{out[value]}]"))
            continue
        out[value] = i
    return tuple(out)


def _unicast_mac(v: Any) -> str:
    s = _str(v)
    try:
        raw = mac_to_bytes(s)
    except ValueError:
        raise ValueError(f"{_show(s)} is not a MAC address (want aa:bb:cc:dd:ee:ff)") from None
    mac = s.lower()
    if is_multicast(raw):
        raise ValueError(f"{mac} is a group (multicast or broadcast) address; static entries are unicast")
    return mac


def _host_port(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); host is an IP literal or a DNS name."""
    want = 'want "host:port" or "[ipv6]:port"'
    m = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", text)
    if m:
        host, port = m.groups()
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(f"{_show(text)}: {_show(host)} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{_show(text)} has no port; {want}")
        if ":" in host:
            raise ValueError(f'{_show(text)}: put an IPv6 address in brackets, as in "[::1]:9469"')
        if re.fullmatch(r"[0-9.]+", host):
            try:
                host = ipaddress.IPv4Address(host).compressed
            except ValueError:
                raise ValueError(f"{_show(text)}: {_show(host)} is not an IPv4 address") from None
        elif not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{_show(text)}: {_show(host)} is not a host name or address")
    if not re.fullmatch(r"[0-9]+", port):
        raise ValueError(f"{_show(text)}: port {_show(port)} is not a number")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{_show(text)}: port {int(port)} is out of range 1..65535")
    return host, int(port)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _metrics(v: Any) -> str | None:
    if v is False or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError(f'expected "host:port", "" or false, got {_show(v)}')
    return _join_host_port(*_host_port(v))


def _etcd_endpoint(v: Any) -> str:
    s = _str(v)
    if "://" not in s:
        return _join_host_port(*_host_port(s))
    url = urlsplit(s)
    if url.scheme not in ("http", "https") or url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"{_show(s)} is not an etcd endpoint (want host:port or http(s)://host:port)")
    return f"{url.scheme}://{_join_host_port(*_host_port(url.netloc))}"


def _etcd_prefix(v: Any) -> str:
    s = _str(v).rstrip("/")
    if not _str(v).startswith("/") or not s:
        raise ValueError(f'{_show(v)} is not a key prefix (want an absolute path such as "/vxlan-dp")')
    return s
