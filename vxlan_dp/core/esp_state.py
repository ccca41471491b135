"""One encrypted network's ESP state, I/O-free: the reference for csrc/esp.c.

- Sender: the send key id's per-start key material, and the 64-bit sequence number, which
  starts at 1 and only goes up for the life of the network (a key change keeps counting).
- Receivers: up to ESP_SAS security associations keyed by (source address, SPI), each the
  derived key material and a ReplayWindow. An SA is created only when a packet under it
  authenticated; a full table evicts the least recently used one (an SA is "used" when a
  packet under it authenticates).
- `install` replaces the key set: SAs of removed or changed keys go, and their material is
  zeroed; the sender re-derives when its key id or that key changed.

`open` returns (reason, None) for a drop, reason being an endpoint counter suffix, or
(None, payload) with the VXLAN / GRE-in-UDP payload after the inner UDP header. The source
check between `precheck` and `open` is the caller's (it counts on the network).
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from ..wire.esp import (ESP_HLEN, ESP_IV_LEN, ESP_MIN_LEN, ReplayWindow, aead_open,
                        esp_aad, esp_seq, seal_packet)
from .keys import derive_keymat, make_spi

__all__ = ["EspState", "ESP_SAS", "precheck"]

ESP_SAS = 64        # csrc/internal.h VXDP_ESP_SAS


def precheck(data: bytes) -> str | None:
    """Before the source check: too short for an SPI, key id 0 (plaintext), too short."""
    if len(data) < 8:
        return "esp_too_short"
    if data[1] == 0:
        return "esp_plaintext"
    if len(data) < ESP_MIN_LEN:
        return "esp_too_short"
    return None


class _Sa:
    __slots__ = ("key_id", "keymat", "window")

    def __init__(self, key_id: int, keymat: bytearray) -> None:
        self.key_id = key_id
        self.keymat = keymat
        self.window = ReplayWindow()


class EspState:
    def __init__(self, cipher: str, local: bytes, boot_id: int) -> None:
        self.cipher = cipher
        self.local = local
        self.boot_id = boot_id
        self.keys: dict[int, bytearray] = {}
        self.send_id = 0
        self.seq = 1
        self._tx = bytearray()
        self._sas: OrderedDict[tuple[bytes, int], _Sa] = OrderedDict()

    def __repr__(self) -> str:
        return f"EspState({self.cipher}, ids={sorted(self.keys)}, send_id={self.send_id})"

    def install(self, keys: dict[int, bytes], send_id: int) -> None:
        if send_id not in keys:
            raise ValueError("send_id must be one of the installed keys")
        tx_changed = not self._tx or send_id != self.send_id
        if send_id in self.keys and bytes(self.keys[send_id]) != bytes(keys[send_id]):
            tx_changed = True
        for kid in list(self.keys):
            if kid in keys and bytes(keys[kid]) == bytes(self.keys[kid]):
                continue
            for where in [w for w, sa in self._sas.items() if sa.key_id == kid]:
                gone = self._sas.pop(where)
                gone.keymat[:] = bytes(len(gone.keymat))
            old = self.keys.pop(kid)
            old[:] = bytes(len(old))
        for kid, material in keys.items():
            self.keys[kid] = bytearray(material)
        if tx_changed:
            self._tx[:] = bytes(len(self._tx))
            self._tx = derive_keymat(self.cipher, self.keys[send_id],
                                     make_spi(send_id, self.boot_id), self.local)
        self.send_id = send_id

    def zero(self) -> None:
        """Forgets every key, zeroing the material (network removed)."""
        for sa in self._sas.values():
            sa.keymat[:] = bytes(len(sa.keymat))
        self._sas.clear()
        for k in self.keys.values():
            k[:] = bytes(len(k))
        self.keys.clear()
        self._tx[:] = bytes(len(self._tx))

    def seal(self, packet: bytes) -> bytes:
        seq = self.seq
        self.seq += 1
        return seal_packet(packet, self.cipher, self._tx, make_spi(self.send_id, self.boot_id), seq)

    def open(self, src: bytes, data: bytes) -> tuple[str | None, bytes | None]:
        spi = struct.unpack_from("!I", data)[0]
        kid = data[1]
        if kid not in self.keys:
            return "esp_unknown_key", None
        sa = self._sas.get((src, spi))
        seq = esp_seq(data, sa.window if sa else ReplayWindow())
        if seq <= 0 or not (sa.window if sa else ReplayWindow()).check(seq):
            return "esp_replay", None
        keymat = sa.keymat if sa else derive_keymat(self.cipher, self.keys[kid], spi, src)
        iv = data[ESP_HLEN:ESP_HLEN + ESP_IV_LEN]
        plain = aead_open(self.cipher, keymat, iv, esp_aad(spi, seq), data[ESP_HLEN + ESP_IV_LEN:])
        if plain is None:
            if sa is None:
                keymat[:] = bytes(len(keymat))
            return "esp_auth", None
        if sa is None:
            if len(self._sas) >= ESP_SAS:
                _, old = self._sas.popitem(last=False)
                old.keymat[:] = bytes(len(old.keymat))
            sa = self._sas[(src, spi)] = _Sa(kid, keymat)
        else:
            self._sas.move_to_end((src, spi))
        sa.window.update(seq)
        pad, nh = plain[-2], plain[-1]
        if pad + 2 > len(plain) or nh != 17:
            return "malformed", None
        dgram = plain[:len(plain) - 2 - pad]
        if len(dgram) < 8 or struct.unpack_from("!H", dgram, 4)[0] != len(dgram):
            return "malformed", None
        return None, dgram[8:]

    def sas(self) -> list[tuple[bytes, int]]:
        """(source, SPI) of the receive SAs, least recently used first (tests, status)."""
        return list(self._sas)

