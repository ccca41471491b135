"""Key management from the command line: `vxlan-dp keys new | rotate`.

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

import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .core.keys import KEY_ID_MAX, KeyFileError, format_keys, load_key_file

__all__ = ["write_key_file", "new_key_file", "next_key_id", "rotate"]


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


def next_key_id(ids: Sequence[int]) -> int:
    """The id after the newest (last) one, wrapping 255 -> 1, skipping ids still installed."""
    kid = ids[-1] if ids else 0
    for _ in range(KEY_ID_MAX):
        kid = kid % KEY_ID_MAX + 1
        if kid not in ids:
            return kid
    raise KeyFileError("all 255 key ids are installed; retire some first")


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
