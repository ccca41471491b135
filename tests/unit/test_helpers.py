"""tests/helpers.py has logic of its own (the CI rule): it gets tests of its own."""

from __future__ import annotations

import pytest

import helpers


@pytest.mark.parametrize("ci", [True, False])
def test_require_passes_when_nothing_is_missing(monkeypatch: pytest.MonkeyPatch, ci: bool) -> None:
    monkeypatch.setattr(helpers, "CI", ci)
    helpers.require(None)
    helpers.require("")


def test_require_fails_under_ci_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "CI", True)
    for elsewhere in ("skip", "run"):
        with pytest.raises(pytest.fail.Exception, match="CI=true and frobnicator is missing"):
            helpers.require("frobnicator is missing", elsewhere=elsewhere)


def test_require_skips_elsewhere_or_lets_the_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "CI", False)
    with pytest.raises(pytest.skip.Exception, match="frobnicator is missing"):
        helpers.require("frobnicator is missing")
    helpers.require("frobnicator is missing", elsewhere="run")     # returns: the test goes on


def test_need_tool_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "CI", True)
    assert helpers.need_tool("sh", "dash").endswith("/sh")
    with pytest.raises(pytest.fail.Exception, match=r"no-such-tool-x is missing \(apt-get install pkg-x\)"):
        helpers.need_tool("no-such-tool-x", "pkg-x")


def test_ci_is_read_case_blind(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    for value, want in (("true", True), ("TRUE", True), ("True", True), ("1", False), ("", False)):
        monkeypatch.setenv("CI", value)
        assert importlib.reload(helpers).CI is want
    monkeypatch.undo()
    importlib.reload(helpers)


def test_until_and_wait_for() -> None:
    answers = iter([0, "", None, "here"])
    assert helpers.wait_for("the answer", lambda: next(answers), timeout=5, step=0.001) == "here"
    assert helpers.until(lambda: True, timeout=0)               # asked even with no time at all
    assert not helpers.until(lambda: False, timeout=0.05, step=0.01)
    with pytest.raises(AssertionError, match=r"the flag: not within 0.05s \(last: 0\)"):
        helpers.wait_for("the flag", lambda: 0, timeout=0.05, step=0.01)


def test_eth_frame_is_exactly_the_size_asked() -> None:
    f = helpers.eth_frame("02:00:00:00:00:0b", "02:00:00:00:00:0a", 64, tag=7)
    assert len(f) == 64 and f[:12] == bytes.fromhex("02000000000b02000000000a") and f[12:16] == b"\x08\x00\x00\x07"
    assert helpers.eth_frame(b"\xff" * 6, b"\x02" * 6, 68, vlan=True)[12:16] == b"\x81\x00\x00\x07"
    assert len(helpers.eth_frame("02:00:00:00:00:0b", "02:00:00:00:00:0a", 13)) == 13   # truncated
    assert helpers.vxlan_payload(42, b"x") == bytes.fromhex("0800000000002a00") + b"x"


def test_tshark_capture_fails_under_ci_without_tshark(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(helpers, "CI", True)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"tshark is missing \(apt-get install tshark\)"):
        with helpers.tshark_capture("no-such-ns", "ul0", "udp", str(tmp_path / "x.pcapng")):
            raise AssertionError("the block must not run without tshark")
