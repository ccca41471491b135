"""The lab: several hosts and containers as network namespaces, for the demo, tests and bench."""

from .lab import Container, Host, Lab, LabError, PingResult, clean

__all__ = ["Container", "Host", "Lab", "LabError", "PingResult", "clean"]
