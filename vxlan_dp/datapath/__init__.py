"""Glue between the kernel and the fastpath: TAP devices, underlay sockets, netlink calls.

The pipeline (one daemon, one event loop):
  TAP fd readable      -> Dataplane.pump_tap: read a batch of frames (headroom kept for the
                          outer headers), FDB lookup or flood, build outer packets, send them
                          through the family's IP_HDRINCL raw socket, count.
  endpoint readable    -> Dataplane.pump_endpoint: receive a batch, validate, find the network
                          by VNI/key, check the source is a peer, learn, write to its TAP, count.
The daemon owns every fd; the Dataplane borrows them. pyroute2 runs in its own thread
(netlink.py) so link work never blocks on, or fights with, the packet loop.
"""
