"""The Docker network plugin: `docker network create -d vxlan-dp --ipam-driver vxlan-dp ...`.

A front-end of the daemon (present when the config has a [docker] table): it serves
libnetwork's remote NetworkDriver and IpamDriver protocol on a unix socket that Docker
discovers in /run/docker/plugins, and steers the daemon only through `NetworkSteer`
(add and remove networks at run time).

    server.py   HTTP (aiohttp) on the daemon's loop: path -> handler, errors -> {"Err": ...}
    driver.py   the calls: networks, endpoints, joins; the state file for restarts
    ipam.py     pools and addresses, unique across hosts (static slices, or etcd claims)
    links.py    the bridge and the containers' veth pairs (pyroute2)
"""

from .driver import IMPLEMENTS, NetworkSteer, Plugin, PluginError
from .frontend import DockerFrontEnd
from .ipam import Ipam, IpamError, LocalBook, Pool

__all__ = ["DockerFrontEnd", "IMPLEMENTS", "Ipam", "IpamError", "LocalBook", "NetworkSteer", "Plugin",
           "PluginError", "Pool"]
