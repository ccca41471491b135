"""A network whose start fails after it is in the Dataplane leaves nothing behind
(vxlan_dp/networks.py `start`): not the Dataplane's network or endpoint, not the TAP, not an
fd; the error names what failed; the same network then starts. Both backends, two queues, a
real TAP: tests/scripts/networks_start_undo.py in a private namespace (`unshare -n`) makes
`set_tap_queue`, then the peers' `set_peers`, refuse, then starts it encrypted with no key.
Recovery has the same rule: a TAP made again that the fast path refuses is closed and tried
again a second later (TAP_RETRY), never left half taken with the network no longer pumped.
"""

from __future__ import annotations

from helpers import in_private_netns


def test_a_start_failing_after_add_network_is_undone(backend):
    got = in_private_netns("networks_start_undo.py", backend)
    assert got["set_tap_queue"]["raised"] == \
        "OSError: [Errno 9] TAP vxdpundo0 queue 1: the fast path refused its fd (Bad file descriptor)", got
    assert got["set_peers"]["raised"] == "OSError: [Errno 9] Bad file descriptor", got
    assert got["keys"]["raised"].startswith("KeyFileError: network blue: no key in the store yet"), got
    for where in ("set_tap_queue", "set_peers", "keys"):
        left = got[where]
        assert left == {**left, "dp_knows_network": False, "dp_knows_endpoint": False, "running": False,
                        "endpoints": 0, "tap_link": False, "tun_fds": 0, "sockets": 0}, (where, left)
    assert got["again"] == {"raised": None, "running": True, "peers": ["127.0.0.2"]}, got
    rec = got["recovery"]       # the TAP deleted; the first one made again refused, the next taken
    assert (rec["refusals"], rec["back"], rec["tun_fds"]) == (1, True, 2), rec
    assert rec["said"] == ["ERROR network blue: TAP vxdpundo0 is back but the fast path refused it "
                           "([Errno 9] Bad file descriptor); trying again"], rec
    assert rec["pumped"] >= 1, rec
    assert got["left_open"] == [], got
    assert got["undo_errors"] == [], got
