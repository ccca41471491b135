"""Writing bench results: JSON + Markdown (+ PNG chart) with the machine, commit and command."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from typing import Any

__all__ = ["machine_info", "write_results", "Progress"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, capture_output=True,
                               text=True, cwd=os.path.dirname(__file__), timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "commit": commit + ("-dirty" if dirty else ""),
            "command": " ".join(["vxlan-dp", "bench"] + sys.argv[2:]) if sys.argv[1:2] == ["bench"]
            else " ".join(sys.argv)}


def write_results(out_dir: str, name: str, data: dict[str, Any], markdown: str,
                  chart: Any | None = None) -> list[str]:
    """Write <date>-<name>.json/.md (and .png when `chart(path)` is given); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{_dt.datetime.now():%Y-%m-%d-%H%M}-{name}")
    paths = [stem + ".json", stem + ".md"]
    with open(paths[0], "w") as f:
        json.dump(data, f, indent=2)
    m = data["machine"]
    with open(paths[1], "w") as f:
        f.write(f"# vxlan-dp bench {name}\n\n`{m['command']}` at commit {m['commit']}, "
                f"{_dt.datetime.now():%Y-%m-%d %H:%M}\n\nMachine: {m['cpu']}, {m['cores']} cores, "
                f"Linux {m['kernel']}, Python {m['python']}\n\n{markdown}\n")
    if chart is not None:
        try:
            chart(stem + ".png")
            paths.append(stem + ".png")
        except ImportError as e:
            print(f"bench: no chart ({e}); pip install matplotlib", file=sys.stderr)
    return paths


class Progress:
    """One status line on stderr, rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {what}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
