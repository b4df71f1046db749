"""The demo's edges a newcomer meets: a second demo on busy ports reports every conflict in one error (before
starting anything), and a restarted demo says what it restored from its state dir and how to start fresh."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from demo_helpers import MIZZEN, ROOT, free_port, run_demo

NET = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"


def test_every_busy_port_is_reported_at_once(tmp_path: Path) -> None:
    busy = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy.append(s)
    try:
        xds, api = (s.getsockname()[1] for s in busy)
        port = free_port()
        r = subprocess.run([MIZZEN, "demo", "--state-dir", str(tmp_path / "state"), "--port", str(port),
                            "--tls-port", str(port), "--xds-port", str(xds), "--api-port", str(api)],
                           capture_output=True, text=True, timeout=60)
    finally:
        for s in busy:
            s.close()
    assert r.returncode == 1, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()          # one error naming all three problems
    assert line.startswith("error: "), line
    assert f"gateway TLS port 127.0.0.1:{port} (--tls-port) is also the gateway port" in line, line
    assert f"xDS port 127.0.0.1:{xds} (--xds-port) is in use" in line, line
    assert f"API port 127.0.0.1:{api} (--api-port) is in use" in line, line
    assert "Traceback" not in r.stderr + r.stdout and "Bookinfo is up" not in r.stdout


@pytest.mark.e2e
def test_restarted_demo_says_what_it_restored_and_fresh_forgets_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with run_demo(state) as demo:
        assert "restored" not in demo.output()                    # a first run has nothing to restore
        demo.mizzen("apply", "-f", str(NET / "virtual-service-ratings-test-abort.yaml"), "-n", "bookinfo")
    with run_demo(state) as demo:
        out = demo.output()
        line = next((x for x in out.splitlines() if "restored" in x), out)
        assert line.endswith(f"restored 1 object from {state}: VirtualService bookinfo/ratings "
                             "(mizzen demo --fresh starts from the defaults)"), line
        assert "ratings" in demo.mizzen("get", "vs", "-n", "bookinfo").stdout
    with run_demo(state, "--fresh") as demo:
        assert "restored" not in demo.output()
        rows = demo.mizzen("get", "vs", "-n", "bookinfo").stdout.splitlines()[1:]
        assert [r.split()[0] for r in rows] == ["bookinfo"], rows          # only the demo's own again
