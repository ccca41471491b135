"""Ethernet (IEEE 802.3) header helpers: MAC text <-> bytes, header decode.

Pure functions over bytes; no I/O. A MAC is 6 bytes internally, "aa:bb:cc:dd:ee:ff" at the edges.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from .errors import WireError

__all__ = [
    "ETH_HLEN", "ETH_P_IPV4", "ETH_P_IPV6", "ETH_P_ARP", "ETH_P_8021Q", "ETH_P_TEB",
    "BROADCAST", "EthernetHeader", "decode_ethernet", "mac_to_bytes", "mac_to_str",
    "is_multicast", "max_frame_len",
]

ETH_HLEN = 14
ETH_P_IPV4 = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
ETH_P_TEB = 0x6558  # Transparent Ethernet Bridging: GRE protocol type for gretap (RFC 1701)
BROADCAST = b"\xff" * 6

_HDR = struct.Struct("!6s6sH")
_MAC_TEXT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


class EthernetHeader(NamedTuple):
    dst: bytes
    src: bytes
    ethertype: int


def decode_ethernet(frame: bytes) -> EthernetHeader:
    if len(frame) < ETH_HLEN:
        raise WireError("malformed", f"inner frame of {len(frame)} bytes is shorter than an Ethernet header")
    return EthernetHeader(*_HDR.unpack_from(frame))


def mac_to_bytes(mac: str) -> bytes:
    # two hex digits per octet, exactly: int(" 2", 16) and int("+2", 16) would take a space
    # or a sign, and the text would not name the MAC it stands for
    if not _MAC_TEXT.fullmatch(mac):
        raise ValueError(f"{mac!r} is not a MAC address (want aa:bb:cc:dd:ee:ff)")
    return bytes.fromhex(mac.replace(":", ""))


def mac_to_str(mac: bytes) -> str:
    return bytes(mac).hex(":")  # "aa:bb:cc:dd:ee:ff"; in C, not a generator per octet


def is_multicast(mac: bytes) -> bool:
    """Group bit (I/G) of the first octet: broadcast and multicast are both 'group' addresses."""
    return bool(mac[0] & 1)


def max_frame_len(mtu: int, frame: bytes) -> int:
    """Largest inner frame a network of L3 `mtu` carries; one 802.1Q tag rides on top."""
    if len(frame) >= 16 and frame[12] == 0x81 and frame[13] == 0x00:
        return mtu + ETH_HLEN + 4
    return mtu + ETH_HLEN
