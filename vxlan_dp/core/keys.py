"""Network keys for encrypted overlays: the key file, the SPI layout and the per-sender keys.

Key file (one per network): one key per line, `<id> <64 hex digits>`, id 1..255, `#` starts a
comment, blank lines are ignored. The file must be owned by root and give no permission to
group or others (mode 0600 or 0400), or the config is rejected.

SPI (32 bits, big-endian on the wire): byte 0 = boot id bits 23..16, byte 1 = key id,
bytes 2..3 = boot id bits 15..0. The key id sits in byte 1 because that byte is zero in every
plaintext VXLAN (reserved, RFC 7348 sec. 5) and GRE (flags and version, RFC 2784 sec. 2)
header: a plaintext packet arriving on an encrypted port is recognised by key id 0 and
counted as `esp_plaintext`, never decrypted or delivered. The boot id is 24 random bits
drawn at every daemon start.

Per-sender, per-start key (RFC 5869 HKDF with SHA-256):
    key material (36 bytes) = HKDF(IKM = the network key with that id,
                                   salt = b"vxlan-dp esp v1",
                                   info = cipher id (1 byte: 1 AES-256-GCM, 2 ChaCha20-Poly1305)
                                          | SPI (4 bytes) | sender's underlay address (4 or 16))
    AEAD key = material[0:32], salt = material[32:36]; the IV is the 64-bit sequence number.
The receiver derives the same material from the SPI and the packet's source address.

Key material lives in `bytearray`s so that removing a key can zero it; nothing here formats
a key into a string (`KeyRing.__repr__` shows ids only).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["KeyFileError", "KEY_ID_MAX", "HKDF_SALT", "parse_keys", "load_key_file",
           "check_key_file_mode", "make_spi", "split_spi", "new_boot_id", "derive_keymat",
           "KeyRing", "format_keys", "next_key_id"]

KEY_ID_MAX = 255
KEY_LEN = 32
HKDF_SALT = b"vxlan-dp esp v1"
_CIPHER_IDS = {"aes-256-gcm": 1, "chacha20-poly1305": 2}
_LINE = re.compile(r"^(\d{1,3})\s+([0-9A-Fa-f]{64})$")


class KeyFileError(ValueError):
    """A key file that cannot be used; the message never contains key material."""


def parse_keys(text: str, where: str = "key file") -> dict[int, bytearray]:
    """{key id: 32-byte key} from key-file text; the error names the line, not its content."""
    keys: dict[int, bytearray] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m is None:
            raise KeyFileError(f"{where}: line {n} is not '<id> <64 hex digits>'")
        kid = int(m.group(1))
        if not 1 <= kid <= KEY_ID_MAX:
            raise KeyFileError(f"{where}: line {n}: key id {kid} is out of range 1..{KEY_ID_MAX}")
        if kid in keys:
            raise KeyFileError(f"{where}: line {n}: key id {kid} appears twice")
        keys[kid] = bytearray.fromhex(m.group(2))
    if not keys:
        raise KeyFileError(f"{where}: holds no key")
    return keys


def check_key_file_mode(st: os.stat_result, where: str, *, owner: int = 0) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{where}: is not a regular file")
    if st.st_uid != owner:
        raise KeyFileError(f"{where}: must be owned by root (uid {owner}), is uid {st.st_uid}")
    if st.st_mode & 0o077:
        raise KeyFileError(f"{where}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others "
                           "read it; it must be 0600")


def load_key_file(path: str, where: str = "key_file", *, owner: int = 0) -> dict[int, bytearray]:
    """Opens without following a symlink at the last step, checks owner and mode on the open
    file (no race between check and read), then parses."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError(f"{where}: cannot open {path}: {e.strerror}") from None
    try:
        check_key_file_mode(os.fstat(fd), f"{where} ({path})", owner=owner)
        data = bytearray()
        while chunk := os.read(fd, 65536):
            data += chunk
    finally:
        os.close(fd)
    try:
        return parse_keys(data.decode("ascii"), f"{where} ({path})")
    except UnicodeDecodeError:
        raise KeyFileError(f"{where} ({path}): is not ASCII text") from None
    finally:
        data[:] = bytes(len(data))


def format_keys(keys: Mapping[int, bytes | bytearray]) -> str:
    """Key-file text for `keys` (what `vxlan-dp keys` writes)."""
    return "".join(f"{kid} {bytes(k).hex()}\n" for kid, k in sorted(keys.items()))


def next_key_id(ids: Sequence[int]) -> int:
    """The id after the newest (last) one, wrapping 255 -> 1, skipping ids still installed."""
    kid = ids[-1] if ids else 0
    for _ in range(KEY_ID_MAX):
        kid = kid % KEY_ID_MAX + 1
        if kid not in ids:
            return kid
    raise KeyFileError("all 255 key ids are installed; retire some first")


def make_spi(key_id: int, boot_id: int) -> int:
    if not 1 <= key_id <= KEY_ID_MAX or not 0 <= boot_id <= 0xFFFFFF:
        raise ValueError("key id must be 1..255 and boot id 24 bits")
    return (boot_id >> 16) << 24 | key_id << 16 | (boot_id & 0xFFFF)


def split_spi(spi: int) -> tuple[int, int]:
    """(key id, boot id) of an SPI."""
    return (spi >> 16) & 0xFF, (spi >> 24) << 16 | (spi & 0xFFFF)


def new_boot_id() -> int:
    return secrets.randbits(24)


def derive_keymat(cipher: str, key: bytes | bytearray, spi: int, sender: bytes) -> bytearray:
    """The 36 bytes of per-sender, per-start key material (module docstring)."""
    if cipher not in _CIPHER_IDS:
        raise ValueError(f"cipher {cipher!r} is not one of {sorted(_CIPHER_IDS)}")
    if len(key) != KEY_LEN or len(sender) not in (4, 16):
        raise ValueError("a network key is 32 bytes and a sender address 4 or 16")
    info = bytes((_CIPHER_IDS[cipher],)) + spi.to_bytes(4, "big") + bytes(sender)
    hk = HKDF(algorithm=hashes.SHA256(), length=36, salt=HKDF_SALT, info=info)
    return bytearray(hk.derive(bytes(key)))


@dataclass
class KeyRing:
    """The keys of one network. Receivers accept every installed id; senders use `send_id`."""

    keys: dict[int, bytearray] = field(default_factory=dict)
    send_id: int = 0

    def __repr__(self) -> str:
        return f"KeyRing(ids={sorted(self.keys)}, send_id={self.send_id})"

    def install(self, keys: dict[int, bytearray]) -> None:
        """Replaces the installed set; removed keys are zeroed. Keeps send_id if still there,
        else takes the newest (highest) id."""
        for kid in list(self.keys):
            if kid not in keys or keys[kid] != self.keys[kid]:
                self.remove(kid)
        order = dict(keys)
        for kid in order:       # file order is age order: re-insert to keep it
            self.keys.pop(kid, None)
        self.keys.update(order)
        if self.send_id not in self.keys:
            self.send_id = self.newest()

    def remove(self, kid: int) -> None:
        k = self.keys.pop(kid, None)
        if k is not None:
            k[:] = bytes(len(k))

    def newest(self) -> int:
        """The key on the file's last line (ids may wrap round 255, so not the highest id)."""
        return next(reversed(self.keys)) if self.keys else 0
