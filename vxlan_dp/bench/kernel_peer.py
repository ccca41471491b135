"""TCP between a kernel vxlan peer and vxlan-dp, on the links users have (issue 11).

    vxlan-dp bench kernel-peer [--seconds S] [--out bench/results]

Per row, a fresh 2-host lab: h2 runs the kernel's vxlan device, h1 runs vxlan-dp (C or Python
backend), or the kernel's vxlan too (the reference, measured in the same run: this machine is
shared and noisy, so compare ratios). Underlay veths with the kernel's default offloads (the
kernel leaves inner checksums partial and sends whole TSO segments) and with `tx off` (the
lab's labelled option). iperf3 TCP, one stream, both directions; what vxlan-dp completed
(csum_completed) and segmented (rx_super_frames / rx_super_segments) is recorded beside it.
Without issue 11's fix, TCP from the kernel side on default offloads did not connect at all.
"""

from __future__ import annotations

from typing import Any

from ..lab import Lab
from .report import machine_info, write_results


def row(side: str, tx_csum_off: bool, seconds: float) -> dict[str, Any]:
    res: dict[str, Any] = {"h1": side, "underlay": "tx off" if tx_csum_off else "default offloads"}
    with Lab(2, tx_csum_off=tx_csum_off) as lab:
        h1, h2 = lab.hosts
        for h in lab.hosts:
            lab.add_container(h)
        lab.add_kernel_vxlan(h2)
        if side == "kernel":
            lab.add_kernel_vxlan(h1)
        lab.settle()
        if side != "kernel":
            lab.start_daemon(h1, lab.network_toml(h1), backend=side)
        a, b = h1.containers[0], h2.containers[0]
        if not lab.ping(a, b.ip).ok:
            return {**res, "error": "no ping across"}
        for name, reverse in (("to_kernel_bps", False), ("from_kernel_bps", True)):
            r = lab.iperf3(a, b, seconds=seconds, reverse=reverse)
            res[name] = r.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)
            if "error" in r:
                res[name + "_error"] = r["error"]
        if side != "kernel":
            st = lab.status(h1)
            res["csum_completed"] = st["networks"]["blue"]["counters"]["csum_completed"]
            res["rx_super_frames"] = st["offload"]["stats"]["rx_super_frames"]
            res["rx_super_segments"] = st["offload"]["stats"]["rx_super_segments"]
    return res


def _markdown(rows: list[dict[str, Any]]) -> str:
    ref = {r["underlay"]: r for r in rows if r["h1"] == "kernel"}
    out = ["| h1 | underlay | TCP h1->kernel | TCP kernel->h1 | vs kernel<->kernel (->, <-) | "
           "checksums completed | super-frames (segments) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        k = ref.get(r["underlay"], {})

        def ratio(key: str, r: dict[str, Any] = r, k: dict[str, Any] = k) -> str:
            return f"{r.get(key, 0) / k[key]:.2f}" if k.get(key) else "-"
        out.append(f"| {r['h1']} | {r['underlay']} | {r.get('to_kernel_bps', 0) / 1e9:.2f} Gbit/s | "
                   f"{r.get('from_kernel_bps', 0) / 1e9:.2f} Gbit/s | {ratio('to_kernel_bps')}, "
                   f"{ratio('from_kernel_bps')} | {r.get('csum_completed', '-')} | "
                   f"{r.get('rx_super_frames', '-')} ({r.get('rx_super_segments', '-')}) |")
    return "\n".join(out)


def run_kernel_peer(seconds: float, out_dir: str) -> bool:
    """Every row, written to out_dir; True when no row failed."""
    rows = [row(side, off, seconds) for off in (False, True) for side in ("kernel", "c", "python")]
    md = _markdown(rows)
    paths = write_results(out_dir, "kernel-peer", {"machine": machine_info(), "seconds": seconds, "rows": rows}, md)
    print(md)
    print("\nwrote " + ", ".join(paths))
    return all("error" not in r for r in rows)
