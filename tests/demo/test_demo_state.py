"""``mizzen demo`` with damaged state (issue 8, items 5 and 7): a corrupted stored object is said loudly on
the console and in ``/debug/configz``, moved to ``<state>/quarantine/`` and never served (Bookinfo's default
takes its place, visibly); and every Envoy the demo runs (the gateway too) works under the state dir, so a
killed demo leaves nothing in /tmp."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from demo_helpers import descendants, run_demo

pytestmark = pytest.mark.e2e


def envoy_bootstraps(pid: int) -> list[str]:
    out = []
    for child in descendants(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"envoy") and b"-c" in argv:
            out.append(argv[argv.index(b"-c") + 1].decode())
    return out


def test_corrupted_default_is_reported_and_envoys_work_under_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    broken = state / "objects" / "Gateway" / "bookinfo" / "bookinfo-gateway.json"
    broken.parent.mkdir(parents=True)
    truncated = '{"apiVersion": "networking.istio.io/v1", "kind": "Gatew'
    broken.write_text(truncated)
    with run_demo(state) as demo:
        out = demo.output()
        assert "1 stored object(s) could not be restored and are not served" in out, out
        assert f"{broken}: JSONDecodeError" in out.replace("\n", "")
        (moved,) = (state / "quarantine").iterdir()
        assert moved.read_text() == truncated
        assert json.loads(broken.read_text())["kind"] == "Gateway"    # Bookinfo's default, applied again
        token = (state / "token").read_text().strip()
        problems = httpx.get(f"{demo.api}/debug/configz", trust_env=False,
                             headers={"Authorization": f"Bearer {token}"}).json()["load_problems"]
        assert [p["quarantine"] for p in problems] == [str(moved)]
        paths = envoy_bootstraps(demo.proc.pid)
        assert len(paths) >= 7, paths               # the gateway and Bookinfo's six sidecars
        assert all(Path(p).is_relative_to(state) for p in paths), paths
