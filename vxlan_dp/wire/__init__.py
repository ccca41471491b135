"""Pure encode/decode of the wire formats: Ethernet, outer IP/UDP, VXLAN, GRE, GRE-in-UDP.

No I/O and no clock: every function maps bytes and fields to bytes or fields, and decoders
raise `WireError` whose `reason` is the drop counter to bump.
"""

from .errors import WireError
from .ethernet import (BROADCAST, ETH_HLEN, EthernetHeader, decode_ethernet, is_multicast,
                       mac_to_bytes, mac_to_str, max_frame_len)
from .flowhash import SPORT_MAX, SPORT_MIN, flow_hash, source_port
from .gre import GRE_UDP_PORT, GreHeader, decode_gre, encode_gre, nvgre_key
from .ip import decode_ipv4, encode_ipv4, encode_ipv6, encode_udp, internet_checksum, udp6_checksum
from .packet import ENCAPS, Decapsulated, decapsulate, encap_overhead, encapsulate
from .vxlan import VNI_MAX, VXLAN_PORT, VxlanHeader, decode_vxlan, encode_vxlan

__all__ = [
    "WireError", "BROADCAST", "ETH_HLEN", "EthernetHeader", "decode_ethernet", "is_multicast",
    "mac_to_bytes", "mac_to_str", "max_frame_len", "SPORT_MAX", "SPORT_MIN", "flow_hash",
    "source_port", "GRE_UDP_PORT", "GreHeader", "decode_gre", "encode_gre", "nvgre_key",
    "decode_ipv4", "encode_ipv4", "encode_ipv6", "encode_udp", "internet_checksum",
    "udp6_checksum", "ENCAPS", "Decapsulated", "decapsulate", "encap_overhead", "encapsulate",
    "VNI_MAX", "VXLAN_PORT", "VxlanHeader", "decode_vxlan", "encode_vxlan",
]
