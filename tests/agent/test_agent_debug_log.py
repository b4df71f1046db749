"""The debug channel's log reader (``mizzen logs -c istio-proxy`` on a cluster): tail, follow by offset, a
partial last line held back until complete, a rotated (shorter) file read from its start."""

from __future__ import annotations

from pathlib import Path

from mizzen.agent.debug_channel import read_log


def test_read_log_tail_follow_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    assert read_log(log, 5, None) == {"lines": [], "offsets": [0]}          # not written yet
    log.write_text("one\ntwo\nthree\nfour\nhalf")
    got = read_log(log, 2, None)
    assert got["lines"] == ["three", "four"]                                 # the partial line waits
    offset = got["offsets"][0]
    assert offset == len("one\ntwo\nthree\nfour\n")
    assert read_log(log, None, offset) == {"lines": [], "offsets": [offset]}
    with log.open("a") as f:
        f.write(" done\nfive\n")
    got = read_log(log, None, offset)
    assert got["lines"] == ["half done", "five"] and got["offsets"] == [log.stat().st_size]
    log.write_text("new\n")                                                  # rotated: shorter than offset
    assert read_log(log, None, got["offsets"][0])["lines"] == ["new"]
    assert read_log(log, 0, None)["lines"] == []
