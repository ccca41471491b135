"""Encryption keys in the etcd store, without I/O: values, key sets, acknowledgements, rotation.

Keys, under the prefix P (etcd_state.py has the rest of the schema):

    P/keys/<net>/<id>            {"key": "<64 hex>", "serial": 3, "created": 1767225600.0}
                                 a network key (id 1..255); no lease. `serial` orders the keys
                                 (the highest is the newest: ids wrap round 255, serials do
                                 not; absent = 0), `created` is the wall-clock second it was
                                 made (automatic rotation measures its age; absent = unknown)
    P/members/<net>/<address>    {"version": ..., "keys": [7, 8], "send": 7}
                                 a member's value acknowledges the key ids its data plane has
                                 installed (receives with) and the one it sends with

Invariants:
- Key material is held only in `StoreKey.material` and `KeySet`; their `repr` shows ids, and
  no error raised here quotes a value (a malformed key value is reported by its etcd key name).
- `choose_send` is the rule "senders use the newest key once every peer has it": the newest
  key that every *other* member of the network acknowledges as installed. A member whose
  value carries no `keys` (a daemon of a version before acknowledgements) is not waited for.
  When no key is acknowledged by all, the oldest key (the one everybody has had longest).
- `rotation_step` is what the one host driving a network's automatic rotation does next: the
  lowest member address drives (every host computes the same from the same view), and the
  put of a new key is made conditional on its id not existing (etcd.py), so a fleet never
  rotates more than once per interval even while membership changes.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..core.keys import KEY_ID_MAX, next_key_id

__all__ = ["StoreKey", "MemberAck", "KeySet", "encode_key", "decode_key", "encode_member",
           "decode_member", "key_id", "ordered", "choose_send", "key_set", "Rotate", "Retire",
           "rotation_step", "all_send", "RETIRE_AFTER"]

_HEX = re.compile(r"[0-9A-Fa-f]{64}")
RETIRE_AFTER = 2.0      # seconds every member must have sent with the newest key before the
                        # older ones go: packets sealed just before the switch are still in flight


@dataclass(eq=False)
class StoreKey:
    material: bytearray
    serial: int = 0
    created: float | None = None

    def __repr__(self) -> str:
        return f"StoreKey(serial={self.serial}, created={self.created})"

    def same(self, other: StoreKey) -> bool:
        return (self.material == other.material and self.serial == other.serial
                and self.created == other.created)


@dataclass(frozen=True)
class MemberAck:
    keys: tuple[int, ...] | None = None     # None: this member does not acknowledge keys
    send: int | None = None


class KeySet:
    """A network's keys from the store, oldest first, and the id senders should use.

    Equal when ids, order, material and send id are equal (the daemon's diff in `apply`)."""

    __slots__ = ("_keys", "send")

    def __init__(self, keys: Iterable[tuple[int, bytes | bytearray]], send: int) -> None:
        self._keys = tuple((kid, bytes(k)) for kid, k in keys)
        self.send = send

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(kid for kid, _ in self._keys)

    def material(self) -> dict[int, bytearray]:
        """{id: key} oldest first, as fresh bytearrays the caller zeroes."""
        return {kid: bytearray(k) for kid, k in self._keys}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeySet) and self._keys == other._keys and self.send == other.send

    def __hash__(self) -> int:
        return hash((self.ids, self.send))

    def __repr__(self) -> str:
        return f"KeySet(ids={list(self.ids)}, send={self.send})"


def key_id(item: str) -> int:
    """The id in P/keys/<net>/<id>; ValueError(reason) if it is not 1..255 in decimal."""
    if not re.fullmatch(r"[1-9][0-9]{0,2}", item) or not 1 <= int(item) <= KEY_ID_MAX:
        raise ValueError(f"key id {item!r} is not 1..{KEY_ID_MAX}")
    return int(item)


def encode_key(material: bytes | bytearray, serial: int, created: float) -> bytes:
    return json.dumps({"key": bytes(material).hex(), "serial": serial, "created": round(created, 3)}).encode()


def decode_key(value: bytes) -> StoreKey:
    """A key value; ValueError(reason) that never holds any part of the value."""
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("value is not JSON") from None
    bad = 'value is not {"key": "<64 hex digits>", "serial": <integer>, "created": <seconds>}'
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not _HEX.fullmatch(obj["key"]):
        raise ValueError(bad)
    serial, created = obj.get("serial", 0), obj.get("created")
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0:
        raise ValueError(bad)
    if created is not None and (isinstance(created, bool) or not isinstance(created, (int, float))):
        raise ValueError(bad)
    return StoreKey(bytearray.fromhex(obj["key"]), serial, None if created is None else float(created))


def encode_member(keys: Iterable[int] | None = None, send: int | None = None) -> bytes:
    obj: dict[str, Any] = {"version": __version__}
    if keys is not None:
        obj["keys"] = list(keys)
        obj["send"] = send
    return json.dumps(obj).encode()


def decode_member(value: bytes) -> MemberAck:
    """A member value's acknowledgement; anything unreadable acknowledges nothing (membership
    itself is the key's existence, never refused for its value)."""
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return MemberAck()
    if not isinstance(obj, dict) or not isinstance(obj.get("keys"), list):
        return MemberAck()
    ids = tuple(k for k in obj["keys"] if isinstance(k, int) and not isinstance(k, bool))
    send = obj.get("send")
    return MemberAck(ids, send if isinstance(send, int) and not isinstance(send, bool) else None)


def ordered(keys: Mapping[int, StoreKey]) -> list[int]:
    """Ids oldest first: by serial, then id."""
    return sorted(keys, key=lambda kid: (keys[kid].serial, kid))


def choose_send(ids: list[int], acks: Mapping[str, MemberAck], local: str) -> int:
    """The newest id every other member has installed (module docstring); 0 if `ids` is empty."""
    others = [a for addr, a in acks.items() if addr != local and a.keys is not None]
    for kid in reversed(ids):
        if all(kid in (a.keys or ()) for a in others):
            return kid
    return ids[0] if ids else 0


def key_set(keys: Mapping[int, StoreKey], acks: Mapping[str, MemberAck], local: str) -> KeySet:
    ids = ordered(keys)
    return KeySet([(kid, keys[kid].material) for kid in ids], choose_send(ids, acks, local))


@dataclass(frozen=True)
class Rotate:
    key_id: int
    serial: int


@dataclass(frozen=True)
class Retire:
    key_ids: tuple[int, ...]


def rotation_step(keys: Mapping[int, StoreKey], acks: Mapping[str, MemberAck], local: str, *,
                  interval: float, now: float, all_sending_since: float | None) -> Rotate | Retire | None:
    """The next step of automatic rotation for one network, if this host drives it.

    `acks`: every current member's acknowledgement, this host's included; `now`: wall clock;
    `all_sending_since`: since when every member sends with the newest key (the caller keeps
    it: None while not all do). Older keys are retired RETIRE_AFTER seconds after every member
    sends with the newest; a new key is made once the newest is `interval` old."""
    if not keys or not acks:
        return None
    if min(acks, key=ipaddress.ip_address) != local:
        return None     # the lowest member address drives
    ids = ordered(keys)
    newest = ids[-1]
    if len(ids) > 1:
        if all_sending_since is not None and now - all_sending_since >= RETIRE_AFTER:
            return Retire(tuple(ids[:-1]))
        return None     # a rotation is still going on
    created = keys[newest].created
    if created is not None and now - created < interval:
        return None
    return Rotate(next_key_id(ids), keys[newest].serial + 1)


def all_send(keys: Mapping[int, StoreKey], acks: Mapping[str, MemberAck]) -> bool:
    """Every member that acknowledges keys sends with the newest one (and there is a member)."""
    if not keys:
        return False
    newest = ordered(keys)[-1]
    known = [a for a in acks.values() if a.keys is not None]
    return bool(known) and all(a.send == newest for a in known)

