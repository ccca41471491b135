"""The one exception the decoders raise: the peer sent junk (h11's RemoteProtocolError).

`reason` is a drop-reason name from `vxlan_dp.core.counters.DROP_REASONS`, so the data path
can count the drop without string parsing.
"""

__all__ = ["WireError"]


class WireError(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
