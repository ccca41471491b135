"""Run by tests/netns/test_hostile.py: sends the isolation test's packets (UDP, raw GRE, forged IPv4)
from one lab host, as the JSON spec on stdin lists them."""

import json, socket, sys
spec = json.load(sys.stdin)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((spec["src"], 0))
gre = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for chan, port, hexp in spec["packets"]:
    p = bytes.fromhex(hexp)
    if chan == "gre":
        gre.sendto(p, (spec["dst"], 0))
    elif chan == "forged":
        raw.sendto(p, (spec["dst"], 0))
    else:
        udp.sendto(p, (spec["dst"], port))
