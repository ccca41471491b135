"""vxlan-dp: a userspace overlay data plane joining TAP devices over VXLAN, GRE or GRE-in-UDP."""

__version__ = "0.1.0"
__all__ = ["__version__"]
