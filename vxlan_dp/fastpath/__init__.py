"""The only package that touches the compiled fast path; `_pure` is the same API in Python.

`BACKEND` says which one is active: "c" when vxlan_dp._fastpath imports and matches this
package's version, "python" when VXLAN_DP_PUREPYTHON=1 forces it or the C module is missing
(one warning says why). `Dataplane` is the active backend's class.
"""

from __future__ import annotations

import os
import warnings

from .api import FdbRow, NetworkParams
from ._pure import Dataplane as PureDataplane

__all__ = ["BACKEND", "BACKEND_REASON", "Dataplane", "PureDataplane", "NetworkParams", "FdbRow",
           "backends"]


def _choose() -> tuple[str, type, str]:
    if os.environ.get("VXLAN_DP_PUREPYTHON", "") not in ("", "0"):
        return "python", PureDataplane, "VXLAN_DP_PUREPYTHON is set"
    try:
        from ._c import Dataplane as CDataplane
    except ImportError as e:
        warnings.warn(f"vxlan-dp: C fast path unavailable ({e}); using the pure-Python backend",
                      RuntimeWarning, stacklevel=3)
        return "python", PureDataplane, f"C fast path unavailable: {e}"
    return "c", CDataplane, "compiled fast path"


BACKEND, Dataplane, BACKEND_REASON = _choose()


def backends() -> dict[str, type]:
    """Every backend importable here, by name (the test fixture runs each)."""
    found: dict[str, type] = {"python": PureDataplane}
    try:
        from ._c import Dataplane as CDataplane
        found["c"] = CDataplane
    except ImportError:
        pass
    return found
