"""Lab commands on a machine that lacks the tools they run: the tools are named with the apt
line that brings them, the exit status is 2 (usage), and nothing is created.

"Nothing is created" is checked by making every way the lab creates something fail loudly:
the Lab class and namespace creation raise if they are reached.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from vxlan_dp import cli
from vxlan_dp.lab import lab as lab_mod
from vxlan_dp.lab import netns


def _path_with(tmp_path: pathlib.Path, *tools: str) -> str:
    """A PATH directory holding only `tools` (executables that do nothing)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for t in tools:
        exe = d / t
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return str(d)


@pytest.fixture
def nothing_created(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **kw: object) -> None:
        raise AssertionError("the command went on to build a lab")
    monkeypatch.setattr(lab_mod.Lab, "__init__", refuse)
    monkeypatch.setattr(netns, "create", refuse)


@pytest.mark.parametrize("euid", [0, 1000])
def test_demo_without_ping_names_it_and_the_package(tmp_path, monkeypatch, capsys, nothing_created, euid):
    monkeypatch.setenv("PATH", _path_with(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err == "vxlan-dp demo: missing tool: ping; install with: apt-get install iputils-ping\n"


def test_demo_with_etcd_names_every_missing_tool_in_one_apt_line(tmp_path, monkeypatch, capsys, nothing_created):
    monkeypatch.setenv("PATH", _path_with(tmp_path, "ping"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.main(["demo", "--control", "etcd"]) == 2
    err = capsys.readouterr().err
    assert err == ("vxlan-dp demo: missing tools: etcd, etcdctl; "
                   "install with: apt-get install etcd-server etcd-client\n")


def test_demo_docker_names_the_docker_tools(tmp_path, monkeypatch, capsys, nothing_created):
    monkeypatch.setenv("PATH", _path_with(tmp_path, "ping", "nsenter", "unshare"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.main(["demo", "--docker"]) == 2
    assert capsys.readouterr().err == ("vxlan-dp demo: missing tools: dockerd, docker; "
                                       "install with: apt-get install docker.io\n")


def test_bench_e2e_without_iperf3_and_socat(tmp_path, monkeypatch, capsys, nothing_created):
    monkeypatch.setenv("PATH", _path_with(tmp_path, "ping"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.main(["bench", "e2e", "--variants", "kernel,socat"]) == 2
    assert capsys.readouterr().err == ("vxlan-dp bench e2e: missing tools: iperf3, socat; "
                                       "install with: apt-get install iperf3 socat\n")


def test_demo_as_a_user_runs_it_without_ping(tmp_path):
    """The real command, in a process of its own, with a PATH that has no ping: the message,
    exit status 2, and no Python errno."""
    env = dict(os.environ, PATH=_path_with(tmp_path))
    r = subprocess.run([sys.executable, "-m", "vxlan_dp", "demo"], check=False, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert "vxlan-dp demo: missing tool: ping; install with: apt-get install iputils-ping" in r.stderr
    assert "Errno" not in r.stderr and "Traceback" not in r.stderr


def test_bench_etcd_without_etcd_and_with_a_bad_size(tmp_path, monkeypatch, capsys, nothing_created):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "etcdctl"))
    assert cli.main(["bench", "etcd"]) == 2
    assert capsys.readouterr().err == ("vxlan-dp bench etcd: missing tool: etcd; "
                                       "install with: apt-get install etcd-server\n")
    monkeypatch.setenv("PATH", _path_with(tmp_path, "etcd", "etcdctl"))
    assert cli.main(["bench", "etcd", "--members", "50"]) == 2
    assert capsys.readouterr().err == "vxlan-dp bench etcd: members must be more than the 50 that leave\n"
    assert cli.main(["bench", "etcd", "--per-member", "300"]) == 2
    assert "per-member must be 1..256" in capsys.readouterr().err
