"""Key management from the command line: `vxlan-dp keys new | rotate`.

Two homes for a network's keys: its key file (below), or with `control = "etcd"` and no
key_file the store (`rotate_store`, at the end; schema in control/etcd_keys.py).

A front-end of the running daemons in the sense of frontend.py: it edits the key file a
network's config names and asks daemons to re-read it through their status socket (the
daemon's pid from `status`, then SIGHUP, exactly what `systemctl reload` does); it never
reaches into a daemon. Rotation (`rotate`):
  1. a new random key gets the next free id and goes on a new last line (the newest);
  2. every daemon given by `--socket` reloads: receivers accept it at once, senders move to it
     `rekey_delay` seconds later (daemon side, networks.py), so no packet is lost while the
     file reaches every host;
  3. once every daemon reports sending with the new key, or after `--grace` seconds, the older
     keys are removed from the file and the daemons reload again (their keys are zeroed).
With `control = "static"` the file is per host: the same new file must reach every host (the
command prints where it is); `--socket` may be given once per local daemon.

Invariants: the key file is always replaced whole (written beside it, fsync'd, renamed), owned
by root, mode 0600; no key is ever printed or logged, only ids.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import Config
from .control.etcd_keys import RETIRE_AFTER, encode_key, ordered
from .control.etcd_state import Keys, StoreView
from .core.keys import KEY_ID_MAX, KeyFileError, format_keys, load_key_file, next_key_id

__all__ = ["write_key_file", "new_key_file", "next_key_id", "rotate", "rotate_store"]


def write_key_file(path: str, keys: Mapping[int, bytes | bytearray]) -> None:
    """Replaces `path` whole: a reader sees the old file or the new one, never half."""
    tmp = f"{path}.{os.getpid()}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, format_keys(keys).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def new_key_file(path: str, key_id: int = 1) -> None:
    if not 1 <= key_id <= KEY_ID_MAX:
        raise KeyFileError(f"key id {key_id} is out of range 1..{KEY_ID_MAX}")
    if os.path.exists(path):
        raise KeyFileError(f"{path}: exists; `vxlan-dp keys rotate` adds keys to a file in use")
    write_key_file(path, {key_id: secrets.token_bytes(32)})


def _reload(sockets: Sequence[str], say: Callable[[str], None]) -> list[str]:
    """SIGHUP each daemon answering on `sockets`; the sockets that answered."""
    from .rpc import request
    done = []
    for s in sockets:
        try:
            pid = int(request(s, {"cmd": "status"})["pid"])
            os.kill(pid, signal.SIGHUP)
            done.append(s)
        except (OSError, KeyError, ValueError) as e:
            say(f"{s}: no daemon reloaded ({e})")
    return done


def _send_keys(sockets: Sequence[str], network: str) -> list[int | None]:
    from .rpc import request
    out: list[int | None] = []
    for s in sockets:
        try:
            enc = request(s, {"cmd": "status"})["networks"][network].get("encryption") or {}
            out.append(enc.get("send_key"))
        except (OSError, KeyError, ValueError):
            out.append(None)
    return out


def rotate(key_file: str, network: str, sockets: Sequence[str], *, grace: float,
           say: Callable[[str], None] = print, owner: int = 0) -> dict[str, Any]:
    """Adds a new key, reloads, waits for the daemons to send with it (at most `grace` s),
    retires the older keys and reloads again. Returns what happened (ids only)."""
    keys = load_key_file(key_file, key_file, owner=owner)
    try:
        old = list(keys)
        new = next_key_id(old)
        keys[new] = bytearray(secrets.token_bytes(32))
        write_key_file(key_file, keys)
        say(f"network {network}: key {new} added to {key_file} (installed: {' '.join(map(str, keys))})")
        reloaded = _reload(sockets, say)
        deadline = time.monotonic() + grace
        while reloaded and time.monotonic() < deadline:
            if all(k == new for k in _send_keys(reloaded, network)):
                break
            time.sleep(0.2)
        using = _send_keys(reloaded, network)
        if not reloaded:
            say(f"network {network}: no daemon reloaded; older keys kept until every host has key {new}")
            return {"new": new, "retired": [], "sending": using}
        if not all(k == new for k in using):
            say(f"network {network}: not every daemon sends with key {new} after {grace:g}s "
                f"({using}); older keys kept")
            return {"new": new, "retired": [], "sending": using}
        for kid in old:
            keys[kid][:] = bytes(32)
            del keys[kid]
        write_key_file(key_file, keys)
        _reload(reloaded, say)
        say(f"network {network}: keys {' '.join(map(str, old))} retired; {key_file} holds key {new}")
        return {"new": new, "retired": old, "sending": using}
    finally:
        for k in keys.values():
            k[:] = bytes(len(k))


# --- keys in the etcd store (control = "etcd", a network without key_file) -----------------

def rotate_store(config: Config, network: str, *, grace: float,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """`keys rotate NET` for a network keyed by the store: put a new key under
    P/keys/NET/<id>; every daemon installs it from its watch and acknowledges it in its member
    value; daemons send with it once every member has it (control/etcd_keys.py); once every
    member sends with it (at most `grace` s) the older keys are deleted from the store.
    With no key in the store yet, this puts the first one."""
    return asyncio.run(_rotate_store(config, network, grace, say))


async def _rotate_store(config: Config, network: str, grace: float, say: Callable[[str], None]) -> dict[str, Any]:
    from .control.etcd import authenticate, close_client, describe, new_client, parse_endpoint
    assert config.etcd is not None
    etcd = config.etcd
    tls = etcd.ca is not None or etcd.cert is not None
    problems = []
    for text in etcd.endpoints:
        ep = parse_endpoint(text, tls)
        client = new_client(etcd, ep)
        try:
            await client.connect()
            if etcd.username:
                await authenticate(etcd, client)
            await client.kv.get(b"/", timeout=5.0)      # reachable at all: else try the next one
        except Exception as e:  # noqa: BLE001 - the next endpoint may answer
            problems.append(f"{ep}: {describe(e)}")
            await close_client(client)
            continue
        try:
            if not ep.tls:
                say(f"warning: etcd {ep} is reached without TLS: the new key crosses that connection in "
                    "the clear")
            return await _rotate_with(client, Keys(etcd.prefix), config, network, grace, say)
        finally:
            await close_client(client)
    raise KeyFileError("no etcd endpoint answered: " + "; ".join(problems))


async def _read(client: Any, prefix: bytes, keys: Keys) -> StoreView:
    from etcd3aio import prefix_range_end
    r = await client.kv.get(prefix, range_end=prefix_range_end(prefix), timeout=5.0)
    view = StoreView(keys)
    view.load([(kv.key, kv.value) for kv in r.kvs])
    return view


async def _rotate_with(client: Any, keys: Keys, config: Config, network: str, grace: float,
                       say: Callable[[str], None]) -> dict[str, Any]:
    from etcd3aio.kv import KVService

    view = await _read(client, keys.root, keys)
    file_net = next((n for n in config.networks if n.name == network), None)
    store_net = view.networks.get(network)
    if not ((file_net is not None and file_net.encrypt and file_net.key_file is None)
            or (file_net is None and isinstance(store_net, dict) and store_net.get("encrypt") is True)):
        raise KeyFileError(f"network {network}: not an encrypted network keyed by the store "
                           f"(neither {config.source} nor {keys.network(network).decode()} says so)")
    have = view.netkeys.get(network, {})
    old = ordered(have)
    new = next_key_id(old)
    serial = max((k.serial for k in have.values()), default=0) + 1
    material = bytearray(secrets.token_bytes(32))
    where = keys.key(network, new)
    try:
        r = await client.kv.txn([KVService.txn_compare_create_revision(where, 0)],
                                [KVService.txn_op_put(where, encode_key(material, serial, time.time()))],
                                timeout=5.0)
    finally:
        material[:] = bytes(32)
    if not r.succeeded:
        raise KeyFileError(f"network {network}: {where.decode()} appeared meanwhile (another rotation?); "
                           "nothing changed")
    say(f"network {network}: key {new} put in the store at {where.decode()} "
        f"(installed: {' '.join(map(str, [*old, new]))})")
    if not old:
        return {"new": new, "retired": [], "sending": {}}
    deadline = time.monotonic() + grace
    while True:
        view = await _read(client, keys.members(network), keys)
        acks = {a: ack for a, ack in view.acks.get(network, {}).items() if ack.keys is not None}
        sending = {a: ack.send for a, ack in acks.items()}
        if all(s == new for s in sending.values()) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.2)
    if not all(s == new for s in sending.values()):
        say(f"network {network}: not every member sends with key {new} after {grace:g}s ({sending}); "
            "older keys kept")
        return {"new": new, "retired": [], "sending": sending}
    await asyncio.sleep(RETIRE_AFTER)   # packets sealed just before the last switch are still in flight
    await client.kv.txn([], [KVService.txn_op_delete(keys.key(network, k)) for k in old], timeout=5.0)
    say(f"network {network}: {len(sending)} members send with key {new}; keys {' '.join(map(str, old))} "
        "retired from the store")
    return {"new": new, "retired": old, "sending": sending}
