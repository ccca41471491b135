"""Linux ABI numbers that Python's socket, fcntl and os modules do not export (3.11).

One home for them, as wireguard-go keeps device/constants.go: every module that sets a socket
option, issues an ioctl or enters a namespace imports the number from here. A leaf module (no
imports), so every room may use it. Each value is the kernel's, from the uapi header named;
these are ABI, stable across kernel versions. The C fast path takes the same ones from the
system headers (csrc/), not from here.
"""

from __future__ import annotations

__all__ = [
    "SOL_UDP", "UDP_SEGMENT", "UDP_GRO", "UDP_NO_CHECK6_RX", "UDP_MAX_SEGMENTS",
    "IP_FREEBIND", "IPV6_FREEBIND", "IP_MTU_DISCOVER", "IP_PMTUDISC_DONT",
    "SO_SNDBUFFORCE", "SO_RCVBUFFORCE", "SO_ATTACH_FILTER", "IPPROTO_GRE", "ETH_P_ALL",
    "TUNSETIFF", "TUNSETPERSIST", "TUNGETFEATURES", "TUNSETOFFLOAD", "TUNSETVNETHDRSZ",
    "IFF_UP",
    "IFF_TAP", "IFF_NO_PI", "IFF_MULTI_QUEUE", "IFF_VNET_HDR",
    "TUN_F_CSUM", "TUN_F_TSO4", "TUN_F_TSO6", "TUN_F_TSO_ECN", "TUN_F_USO4", "TUN_F_USO6",
    "CLONE_NEWNET", "SIOCETHTOOL", "ETHTOOL_STXCSUM", "IFA_F_NODAD", "IFNAMSIZ", "UIO_MAXIOV",
]

# include/uapi/linux/udp.h (SOL_UDP is IPPROTO_UDP, include/linux/socket.h); udp(7)
SOL_UDP = 17
UDP_SEGMENT = 103           # send: the cmsg / option holds the segment size (Linux 4.18)
UDP_GRO = 104               # receive: the cmsg holds the segment size (Linux 5.0)
UDP_NO_CHECK6_RX = 102      # receive: accept a zero UDP checksum over IPv6 (Linux 3.16)
UDP_MAX_SEGMENTS = 64       # include/linux/udp.h: segments one UDP_SEGMENT send takes at most

# include/uapi/linux/in.h, include/uapi/linux/in6.h
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IP_FREEBIND = 15            # bind an address that is not (yet) on any interface
IPV6_FREEBIND = 78
IPPROTO_GRE = 47

# include/uapi/asm-generic/socket.h
SO_ATTACH_FILTER = 26
SO_SNDBUFFORCE = 32         # CAP_NET_ADMIN: past net.core.wmem_max
SO_RCVBUFFORCE = 33

# include/uapi/linux/if_ether.h
ETH_P_ALL = 0x0003

# include/uapi/linux/if_tun.h: ioctl numbers (_IOW('T', n, int) and _IOR) and flags
TUNSETIFF = 0x400454CA          # _IOW('T', 202, int)
TUNSETPERSIST = 0x400454CB      # _IOW('T', 203, int)
TUNGETFEATURES = 0x800454CF     # _IOR('T', 207, unsigned int)
TUNSETOFFLOAD = 0x400454D0      # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8    # _IOW('T', 216, int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20           # Linux 6.2; the kernel takes USO4 and USO6 only together
TUN_F_USO6 = 0x40

# include/uapi/linux/sched.h: setns(2) / unshare(2)
CLONE_NEWNET = 0x40000000

# include/uapi/linux/sockios.h, include/uapi/linux/ethtool.h
SIOCETHTOOL = 0x8946

# include/uapi/linux/if.h (net/if.h): interface flags
IFF_UP = 0x1
ETHTOOL_STXCSUM = 0x17

# include/uapi/linux/if_addr.h
IFA_F_NODAD = 0x02

# include/uapi/linux/if.h: an interface name holds IFNAMSIZ - 1 characters
IFNAMSIZ = 16

# include/uapi/linux/uio.h: the most iovecs (and sendmmsg / recvmmsg messages) one call takes
UIO_MAXIOV = 1024
