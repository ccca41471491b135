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
