"""Counter names shared by both fastpath backends, the metrics collector and `vxlan-dp status`.

The C backend keeps the same fields, in this order, in `struct vxdp_net_counters` and
`struct vxdp_ep_counters` (csrc/fastpath.h); tests check the two lists agree.

Per network ("net"): frames read from the TAP (egress in), outer packets sent, outer packets
accepted from the underlay (ingress in), frames written to the TAP, flooding, learning, and a
drop counter per reason. Per receive endpoint ("ep", one underlay socket shared by networks):
what arrived before a network was known, and the drops that cannot be pinned on a network.
"""

__all__ = ["NET_COUNTERS", "EP_COUNTERS", "NET_DROP_REASONS", "EP_DROP_REASONS", "DROP_REASONS"]

NET_DROP_REASONS = (
    "malformed",        # inner frame shorter than an Ethernet header, or a group source MAC
    "too_big",          # inner frame larger than the network MTU allows (never fragmented)
    "no_peers",         # nowhere to send: unknown destination and an empty flood list
    "unknown_source",   # outer source is not a peer of the network (allow_unknown_sources off)
    "tap_write_error",  # the TAP refused the frame (queue full, device gone)
    "socket_error",     # the underlay send failed (buffer full, no route, EMSGSIZE)
)
EP_DROP_REASONS = (
    "malformed",        # shorter than its headers, bad IP header on the raw GRE socket
    "bad_flags",        # VXLAN without I; GRE without K or with R; strict reserved bits
    "bad_version",      # GRE version != 0
    "bad_protocol",     # GRE protocol != 0x6558
    "bad_checksum",     # GRE C bit set and the checksum does not verify
    "unknown_vni",      # no network on this endpoint has the VNI / key
    "socket_error",     # the receive itself failed
    # encrypted networks (ESP in UDP, vxlan_dp/wire/esp.py); never delivered to a TAP
    "esp_too_short",    # shorter than an ESP header, IV, trailer and ICV
    "esp_plaintext",    # key id 0 in the SPI: a plaintext VXLAN / GRE header (no downgrade)
    "esp_unknown_key",  # the SPI's key id is not installed
    "esp_replay",       # sequence number already seen or left of the anti-replay window
    "esp_auth",         # the ICV does not verify: forged, corrupted or under another key
)
DROP_REASONS = tuple(dict.fromkeys(NET_DROP_REASONS + EP_DROP_REASONS))

NET_COUNTERS = (
    "tap_rx_frames", "tap_rx_bytes", "tap_rx_batches",
    "tx_packets", "tx_bytes",
    "flood_frames", "flood_copies",
    "rx_packets", "rx_bytes",
    "tap_tx_frames", "tap_tx_bytes",
    "fdb_learned", "fdb_moved", "fdb_aged", "fdb_full",
    "csum_completed",   # inner TCP/UDP checksums a peer left partial, completed (wire/csum.py)
) + tuple("drop_" + r for r in NET_DROP_REASONS)

EP_COUNTERS = (
    "rx_datagrams", "rx_bytes", "rx_batches",
) + tuple("drop_" + r for r in EP_DROP_REASONS)
