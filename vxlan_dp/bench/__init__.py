"""`vxlan-dp bench`: encapsulation micro-benchmark and end-to-end throughput against the kernel.

Figures are measured in the same run as their reference (the kernel's vxlan device, or the
other backends) and reported as ratios, because timing on a shared machine is noisy. Every run
writes bench/results/<date>-<name>.json and .md (machine, commit, command, figures) and a PNG.
"""

__all__: list[str] = []
