"""ESP (RFC 4303) in UDP (RFC 3948) with an AEAD (RFC 4106 AES-GCM, RFC 7634 ChaCha20-Poly1305).

What an encrypted network sends, after the outer IP header:

    UDP  sport = the flow's source port, dport = the network's port (RFC 3948 sec. 2.1)
    ESP  SPI (4) | sequence number, low 32 bits (4)              -- RFC 4303 sec. 2
         IV (8) = the 64-bit extended sequence number, big-endian -- RFC 4106 sec. 3.1
         AEAD ciphertext of: the UDP header + VXLAN / GRE-in-UDP payload the unencrypted
                             network would have sent | padding 1, 2, 3.. | pad length |
                             next header = 17 (UDP)               -- RFC 4303 sec. 2.4-2.6
         ICV (16)                                                -- RFC 4106 sec. 6
    nonce (12) = salt (4, from the key derivation) | IV (8)      -- RFC 4106 sec. 4, RFC 7634 sec. 2
    AAD   (12) = SPI | sequence number high 32 | low 32          -- RFC 4106 sec. 5 (ESN)

Padding aligns the pad length and next header fields to 4 bytes (RFC 4303 sec. 2.4); the AEADs
are stream-like, so no more is needed. This is ESP transport mode applied to the UDP datagram
an unencrypted network would have sent, then UDP-encapsulated: Scapy's SecurityAssociation
(transport mode, nat_t_header, esn_en) builds and reads the same bytes.

`ReplayWindow` is RFC 4303 sec. 3.4.3 with extended sequence numbers (Appendix A2): the
high 32 bits are inferred from the window, a packet is checked before decryption and the
window moves only after the ICV verified. Its width, REPLAY_WINDOW, is in the README.

No I/O, no clock. Decoders raise `WireError` whose reason is the endpoint drop counter
(`esp_too_short`, `esp_auth`, `esp_replay`, `malformed`).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .errors import WireError
from .ip import IPV4_HLEN, IPV6_HLEN, UDP_HLEN, encode_udp, internet_checksum, udp6_checksum

__all__ = [
    "CIPHERS", "ESP_HLEN", "ESP_IV_LEN", "ESP_ICV_LEN", "ESP_MIN_LEN", "ESP_MAX_OVERHEAD",
    "KEYMAT_LEN", "REPLAY_WINDOW", "ESP_EXTRA", "NEXT_HEADER_UDP",
    "aead_seal", "aead_open", "esp_pad_len", "encode_esp", "decode_esp", "esp_aad",
    "ReplayWindow", "seal_packet", "esp_seq",
]

# cipher name -> id (the id is an HKDF input, vxlan_dp/core/keys.py, and the C enum)
CIPHERS = {"aes-256-gcm": 1, "chacha20-poly1305": 2}

ESP_HLEN = 8            # SPI + sequence number (RFC 4303 sec. 2)
ESP_IV_LEN = 8          # explicit IV (RFC 4106 sec. 3.1, RFC 7634 sec. 2)
ESP_ICV_LEN = 16        # full-length tag (RFC 4106 sec. 6; RFC 7634 sec. 2 has no other)
ESP_MIN_LEN = ESP_HLEN + ESP_IV_LEN + 2 + ESP_ICV_LEN   # an empty payload with its trailer
ESP_MAX_OVERHEAD = ESP_HLEN + ESP_IV_LEN + 3 + 2 + ESP_ICV_LEN  # worst-case padding 3
ESP_EXTRA = UDP_HLEN + ESP_MAX_OVERHEAD    # what encryption adds to a packet, at most
KEYMAT_LEN = 36         # AEAD key 32 + salt 4 (RFC 4106 sec. 8.1, RFC 7634 sec. 4)
NEXT_HEADER_UDP = 17
# Anti-replay window in packets; why this width: README, "Encrypted networks"
REPLAY_WINDOW = 4096


def _aead(cipher: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if cipher == "aes-256-gcm":
        return AESGCM(key)
    if cipher == "chacha20-poly1305":
        return ChaCha20Poly1305(key)
    raise ValueError(f"cipher {cipher!r} is not one of {sorted(CIPHERS)}")


def _check_keymat(keymat: bytes | bytearray, iv: bytes) -> None:
    if len(keymat) != KEYMAT_LEN:
        raise ValueError(f"key material must be {KEYMAT_LEN} bytes (key + salt)")
    if len(iv) != ESP_IV_LEN:
        raise ValueError(f"the IV must be {ESP_IV_LEN} bytes")


def aead_seal(cipher: str, keymat: bytes | bytearray, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """Ciphertext followed by the 16-byte ICV; nonce = keymat[32:36] (salt) + iv."""
    _check_keymat(keymat, iv)
    return _aead(cipher, bytes(keymat[:32])).encrypt(bytes(keymat[32:]) + iv, plaintext, aad)


def aead_open(cipher: str, keymat: bytes | bytearray, iv: bytes, aad: bytes, sealed: bytes) -> bytes | None:
    """The plaintext, or None when the ICV does not verify (or `sealed` is shorter than one)."""
    _check_keymat(keymat, iv)
    if len(sealed) < ESP_ICV_LEN:
        return None
    try:
        return _aead(cipher, bytes(keymat[:32])).decrypt(bytes(keymat[32:]) + iv, sealed, aad)
    except InvalidTag:
        return None


def esp_aad(spi: int, seq: int) -> bytes:
    """RFC 4106 sec. 5, extended sequence numbers: SPI, then the 64-bit number high half first."""
    return struct.pack("!IQ", spi, seq)


def esp_pad_len(payload_len: int) -> int:
    """Padding bytes so that payload + padding + 2 is a multiple of 4 (RFC 4303 sec. 2.4)."""
    return -(payload_len + 2) % 4


def encode_esp(cipher: str, keymat: bytes | bytearray, spi: int, seq: int, payload: bytes, *,
               next_header: int = NEXT_HEADER_UDP, iv: bytes | None = None) -> bytes:
    """The ESP packet (header to ICV) carrying `payload`; the IV is `seq` unless given (KATs)."""
    if not 0 < spi <= 0xFFFFFFFF or not 0 < seq < 1 << 64:
        raise ValueError("spi and seq must be non-zero and fit 32 / 64 bits")
    if iv is None:
        iv = struct.pack("!Q", seq)
    pad = esp_pad_len(len(payload))
    plain = payload + bytes(range(1, pad + 1)) + bytes((pad, next_header))
    return (struct.pack("!II", spi, seq & 0xFFFFFFFF) + iv
            + aead_seal(cipher, keymat, iv, esp_aad(spi, seq), plain))


def decode_esp(cipher: str, keymat: bytes | bytearray, data: bytes, seq: int) -> tuple[bytes, int]:
    """(payload, next header) of an ESP packet whose full 64-bit sequence number is `seq`
    (the caller inferred the high half: `ReplayWindow.infer`). WireError on failure."""
    if len(data) < ESP_MIN_LEN:
        raise WireError("esp_too_short", f"{len(data)} bytes")
    spi, seq_lo = struct.unpack_from("!II", data)
    if seq & 0xFFFFFFFF != seq_lo:
        raise ValueError("seq does not end in the packet's sequence number")
    iv = data[ESP_HLEN:ESP_HLEN + ESP_IV_LEN]
    plain = aead_open(cipher, keymat, iv, esp_aad(spi, seq), data[ESP_HLEN + ESP_IV_LEN:])
    if plain is None:
        raise WireError("esp_auth", "ICV does not verify")
    pad, nh = plain[-2], plain[-1]
    if pad + 2 > len(plain):
        raise WireError("malformed", "pad length beyond the payload")
    return plain[:len(plain) - 2 - pad], nh


def esp_seq(data: bytes, window: ReplayWindow) -> int:
    """The full 64-bit sequence number of ESP packet `data` (at least ESP_HLEN + ESP_IV_LEN
    long): the IV itself when its low half is the packet's sequence number (our senders'
    IV is the sequence number, so a receiver that restarted after the sender passed 2**32
    packets still finds it); otherwise inferred from the window (RFC 4303 Appendix A2).
    A wrong guess costs nothing: the high half is in the AAD, so the ICV fails."""
    seq_lo = struct.unpack_from("!I", data, 4)[0]
    iv: int = struct.unpack_from("!Q", data, ESP_HLEN)[0]
    if iv & 0xFFFFFFFF == seq_lo and iv:
        return iv
    return window.infer(seq_lo)


class ReplayWindow:
    """RFC 4303 sec. 3.4.3 / Appendix A2 anti-replay with 64-bit extended sequence numbers.

    `top` is the highest sequence number accepted so far (0: none yet); bit i of `bits` says
    whether top - i was accepted. Sequence number 0 is never valid (a sender starts at 1).
    """

    __slots__ = ("width", "top", "bits")

    def __init__(self, width: int = REPLAY_WINDOW) -> None:
        self.width = width
        self.top = 0
        self.bits = 0

    def infer(self, seq_lo: int) -> int:
        """The full sequence number of a packet carrying `seq_lo` (RFC 4303 Appendix A2.2)."""
        w = self.width
        th, tl = self.top >> 32, self.top & 0xFFFFFFFF
        if tl >= w - 1:                         # case A: the window sits inside one subspace
            sh = th + 1 if seq_lo < tl - w + 1 else th
        else:                                   # case B: the window spans two subspaces
            sh = th - 1 if seq_lo >= (tl - w + 1) & 0xFFFFFFFF else th
        if sh < 0 or sh > 0xFFFFFFFF:           # before the first or after the last number
            return -1
        return sh << 32 | seq_lo

    def check(self, seq: int) -> bool:
        """May `seq` be accepted (not yet seen, not left of the window)? Before decryption."""
        if seq <= 0:
            return False
        if seq > self.top:
            return True
        d = self.top - seq
        return d < self.width and not (self.bits >> d) & 1

    def update(self, seq: int) -> None:
        """Records `seq` as accepted: only after its ICV verified (RFC 4303 sec. 3.4.3)."""
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << self.width) - 1) if shift < self.width else 1
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)


def seal_packet(packet: bytes, cipher: str, keymat: bytes | bytearray, spi: int, seq: int) -> bytes:
    """The encrypted form of an outer packet an unencrypted vxlan / gre-udp network built
    (IPv4 without options or IPv6, then UDP): same IP header (lengths and IPv4 checksum
    redone), a new UDP header with the same ports, the old UDP datagram inside ESP. The new
    UDP checksum is 0 over IPv4 (RFC 3948 sec. 2.1) and computed over IPv6 (RFC 8200 sec. 8.1).
    """
    v6 = packet[0] >> 4 == 6
    iphl = IPV6_HLEN if v6 else IPV4_HLEN
    sport, dport = struct.unpack_from("!HH", packet, iphl)
    esp = encode_esp(cipher, keymat, spi, seq, packet[iphl:])
    udp = encode_udp(sport, dport, len(esp))
    ip = bytearray(packet[:iphl])
    if v6:
        struct.pack_into("!H", ip, 4, UDP_HLEN + len(esp))
        udp = udp[:6] + struct.pack("!H", udp6_checksum(bytes(ip[8:24]), bytes(ip[24:40]), udp, esp))
    else:
        struct.pack_into("!HH", ip, 2, IPV4_HLEN + UDP_HLEN + len(esp), struct.unpack_from("!H", ip, 4)[0])
        struct.pack_into("!H", ip, 10, 0)
        struct.pack_into("!H", ip, 10, internet_checksum(bytes(ip)))
    return bytes(ip) + udp + esp
