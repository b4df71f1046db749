"""Terminal behaviour: the spinner appears only on a TTY; kubectl's AGE rendering; table layout."""

from __future__ import annotations

import os
import pty
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cli_helpers import MIZZEN, FakeApi

from mizzen.cli.common import format_table, human_age, human_duration


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:   # EIO once the child side is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def test_spinner_only_on_a_terminal(fake_api: FakeApi) -> None:
    fake_api.delay_s = 0.8
    env = {**os.environ, "MIZZEN_SERVER": fake_api.url, "TERM": "xterm"}
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([MIZZEN, "proxy-status"], stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        out, _ = proc.communicate(timeout=30)
        tty_err = _read_all(master).decode(errors="replace")
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert out == b""                       # no proxies: the message goes to stderr
    assert "Fetching proxy status..." in tty_err
    assert "No proxies connected." in tty_err
    piped = subprocess.run([MIZZEN, "proxy-status"], capture_output=True, env=env, timeout=30, check=False)
    assert piped.stderr == b"No proxies connected.\n"


@pytest.mark.parametrize(("seconds", "want"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (185, "3m5s"),
    (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (5 * 3600 + 60, "5h1m"), (8 * 3600, "8h"),
    (47 * 3600, "47h"), (48 * 3600, "2d"), (50 * 3600, "2d2h"), (8 * 86400, "8d"), (700 * 86400, "700d"),
    (3 * 365 * 86400, "3y"), (3 * 365 * 86400 + 86400, "3y1d"), (9 * 365 * 86400 + 86400, "9y"),
])
def test_ages_like_kubectl(seconds: int, want: str) -> None:
    assert human_duration(seconds) == want


def test_age_from_timestamps() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert human_age("2026-01-02T02:59:05Z", now) == "5m"
    assert human_age((now - timedelta(hours=5, minutes=13)).isoformat(), now) == "5h13m"
    assert human_age(now.timestamp() - 7, now) == "7s"
    assert human_age(None, now) == "<unknown>"
    assert human_age("not a time", now) == "<unknown>"


def test_table_layout() -> None:
    assert format_table(["NAME", "HOSTS", "AGE"], [["a", '["x"]', "1s"], ["long-name", "", "2m"]]) == (
        "NAME        HOSTS   AGE\n"
        'a           ["x"]   1s\n'
        "long-name           2m"
    )
