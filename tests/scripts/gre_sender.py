"""Run by tests/netns/test_gre.py inside a peer's namespace: sends the GRE / GRE-in-UDP payloads of
the JSON spec on stdin through plain sockets (the kernel writes the outer headers)."""

import json, socket, sys
spec = json.load(sys.stdin)
fam = socket.AF_INET6 if ":" in spec["dst"] else socket.AF_INET
if spec["kind"] == "gre":
    s, addr = socket.socket(fam, socket.SOCK_RAW, 47), (spec["dst"], 0)
else:
    s, addr = socket.socket(fam, socket.SOCK_DGRAM), (spec["dst"], spec["port"])
for p in spec["packets"]:
    s.sendto(bytes.fromhex(p), addr)
