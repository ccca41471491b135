"""The links a Docker network is made of: its bridge, and one veth pair per joined container.

    container netns:  eth0 (libnetwork moves our "vxc<ep>" in and renames it)
    host:             vxv<ep> --master--> vxbr-<vni> <--master-- vxdp-<vni> (the daemon's TAP)

The bridge is the plugin's, not the daemon's: it carries the mark below, so the TAP code never
removes it, and a restarted daemon finds the containers' veths still on it. All of it through
pyroute2, in the netlink thread (datapath/netlink.py).
"""

from __future__ import annotations

from pyroute2 import IPRoute

from ..datapath.netlink import netlink_call

__all__ = ["BRIDGE_ALIAS", "veth_names", "ensure_bridge", "delete_link", "make_veth", "attach", "exists",
           "links_named"]

BRIDGE_ALIAS = "vxlan-dp docker network"


def veth_names(endpoint_id: str) -> tuple[str, str]:
    """(host side, container side) for an endpoint: 13 characters, within IFNAMSIZ."""
    return f"vxv{endpoint_id[:10]}", f"vxc{endpoint_id[:10]}"


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


@netlink_call
def ensure_bridge(name: str) -> bool:
    """The bridge `name`, up; True if it was made now."""
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        made = idx is None
        if made:
            ipr.link("add", ifname=name, kind="bridge")
            idx = _index(ipr, name)
            assert idx is not None
            ipr.link("set", index=idx, ifalias=BRIDGE_ALIAS)
        ipr.link("set", index=idx, state="up")
        return made


@netlink_call
def delete_link(name: str) -> bool:
    """Remove link `name` (a veth takes its peer with it); False if it was not there."""
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        ipr.link("del", index=idx)
        return True


@netlink_call
def make_veth(host: str, container: str, mtu: int, mac: str | None, bridge: str) -> None:
    """A veth pair: `host` up on `bridge`, `container` (MTU, MAC set) left for libnetwork to move."""
    with IPRoute() as ipr:
        for stale in (host, container):  # a pair left by a crash under the same endpoint ID
            idx = _index(ipr, stale)
            if idx is not None:
                ipr.link("del", index=idx)
        ipr.link("add", ifname=host, kind="veth", peer=container)
        hidx, cidx, bidx = _index(ipr, host), _index(ipr, container), _index(ipr, bridge)
        if hidx is None or cidx is None:
            raise OSError(f"veth {host}/{container} vanished right after creation")
        if bidx is None:
            ipr.link("del", index=hidx)
            raise OSError(f"bridge {bridge} is gone")
        kw = {"address": mac} if mac else {}
        ipr.link("set", index=cidx, mtu=mtu, **kw)
        ipr.link("set", index=hidx, mtu=mtu, master=bidx, state="up")


@netlink_call
def attach(name: str, bridge: str) -> bool:
    """Put existing link `name` back on `bridge` (after a restart); False if either is missing."""
    with IPRoute() as ipr:
        idx, bidx = _index(ipr, name), _index(ipr, bridge)
        if idx is None or bidx is None:
            return False
        if ipr.get_links(idx)[0].get("IFLA_MASTER") != bidx:
            ipr.link("set", index=idx, master=bidx, state="up")
        return True


@netlink_call
def exists(name: str) -> bool:
    with IPRoute() as ipr:
        return _index(ipr, name) is not None


@netlink_call
def links_named(prefixes: tuple[str, ...]) -> list[str]:
    with IPRoute() as ipr:
        return [str(link.get("IFLA_IFNAME")) for link in ipr.get_links()
                if str(link.get("IFLA_IFNAME")).startswith(prefixes)]
