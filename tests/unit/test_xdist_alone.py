"""tests/xdist_alone.py for real: two xdist workers, and an `alone` test that nothing overlaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

SUITE = '''
import json, os, time
import pytest

def _run(name, seconds):
    t0 = time.monotonic()
    time.sleep(seconds)
    with open(os.environ["SPANS"], "a") as f:
        f.write(json.dumps([name, t0, time.monotonic()]) + "\\n")

@pytest.mark.alone          # first: it starts while the other worker has shared tests queued
def test_alone():
    _run("alone", 0.5)

@pytest.mark.parametrize("i", range(8))
def test_shared(i):
    _run(f"shared{i}", 0.3)
'''


def test_an_alone_test_runs_with_nothing_beside_it_and_the_others_in_parallel(tmp_path):
    (tmp_path / "test_suite.py").write_text(SUITE)
    spans_file = tmp_path / "spans"
    env = dict(os.environ, SPANS=str(spans_file), PYTHONPATH=str(TESTS))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "xdist_alone", "-p", "no:cacheprovider",
                        "-n", "2", "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    spans = {n: (a, b) for n, a, b in map(json.loads, spans_file.read_text().splitlines())}
    assert len(spans) == 9
    a0, a1 = spans.pop("alone")
    beside = [n for n, (s, e) in spans.items() if s < a1 and e > a0]
    assert beside == [], f"{beside} ran beside the alone test"
    # and the shared ones did run two at a time (else this proves nothing about the lock)
    overlapping = [(n, m) for n, (s, e) in spans.items() for m, (s2, e2) in spans.items()
                   if n < m and s < e2 and s2 < e]
    assert overlapping, spans
