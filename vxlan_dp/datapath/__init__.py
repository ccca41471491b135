"""Glue between the kernel and the fastpath: TAP devices, underlay sockets, netlink calls.

The pipeline (one daemon, one event loop):
  TAP fd readable      -> Dataplane.pump_tap: read a batch of frames (headroom kept for the
                          outer headers; with offloads, 64 KiB super-frames split into wire
                          frames), FDB lookup or flood, build outer packets, send them through
                          the family's IP_HDRINCL raw socket (or UDP_SEGMENT sends), count.
  endpoint readable    -> Dataplane.pump_endpoint: receive a batch, validate, find the network
                          by VNI/key, check the source is a peer, learn, write to its TAP
                          (with offloads, runs of one TCP flow coalesced into one write), count.
offload.py probes which offloads this kernel takes and falls back where it does not.
The daemon owns every fd; the Dataplane borrows them (but for its UDP_SEGMENT send sockets). pyroute2 runs in its own thread
(netlink.py) so link work never blocks on, or fights with, the packet loop.
"""
