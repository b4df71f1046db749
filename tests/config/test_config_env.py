"""Istio's environment settings (``mizzen.config.env``): unset gives the default, a readable value is taken,
an unreadable or too small one gives the default with a one-line warning naming the variable."""

from __future__ import annotations

import logging

import pytest

from mizzen.config.env import env_bool, env_duration, env_float, env_int

NAME = "MIZZEN_TEST_SETTING"


@pytest.mark.parametrize(("raw", "want"), [("true", True), ("1", True), (" Yes ", True), ("on", True),
                                           ("false", False), ("0", False), ("", False), ("nope", False)])
def test_bool(monkeypatch: pytest.MonkeyPatch, raw: str, want: bool) -> None:
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME) is want


def test_unset_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    assert not env_bool(NAME)
    assert env_float(NAME, 2.5) == 2.5 and env_int(NAME, 7) == 7 and env_duration(NAME, 0.5) == 0.5


@pytest.mark.parametrize(("raw", "minimum", "want"), [
    ("30s", 0.0, 30.0), ("500ms", 0.0, 0.5), ("1m30s", 0.0, 90.0), ("2", 0.0, 2.0), ("3000000µs", 0.0, 3.0),
    ("100ms", 1.0, 10.0), ("-1s", 0.0, 10.0), ("soon", 0.0, 10.0), ("10ms", 0.01, 0.01)])
def test_duration(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str, minimum: float,
                  want: float) -> None:
    monkeypatch.setenv(NAME, raw)
    with caplog.at_level(logging.WARNING, logger="mizzen.config.env"):
        assert env_duration(NAME, 10.0, minimum=minimum) == want
    warned = [r.getMessage() for r in caplog.records]
    if want == 10.0:
        assert warned == [f"${NAME}={raw!r} is not a duration of at least {minimum:g}s; using 10s"]
    else:
        assert warned == []


@pytest.mark.parametrize(("raw", "minimum", "want"), [
    ("100", 0.0, 100.0), ("0.5", 0.01, 0.5), ("0", 0.01, 1.0), ("-3", 0.0, 1.0), ("nope", 0.0, 1.0)])
def test_number(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str, minimum: float,
                want: float) -> None:
    monkeypatch.setenv(NAME, raw)
    with caplog.at_level(logging.WARNING, logger="mizzen.config.env"):
        assert env_float(NAME, 1.0, minimum=minimum) == want
    assert bool(caplog.records) == (want == 1.0)
    monkeypatch.setenv(NAME, "12.9")
    assert env_int(NAME, 3) == 12
