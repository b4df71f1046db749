"""The data plane outlives the control plane (issue 8, item 1): ``mizzen demo``'s control plane is SIGKILLed
under steady traffic through the gateway. Every request still succeeds (Envoys and apps are not its
children and keep their last config), the supervisor restarts it and reports it in one console line, it is
back with every proxy SYNCED within 2 s, a change applied right after reaches every proxy within 1 s of its
return, and no Envoy or app was restarted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_helpers import Demo, alive, descendants, run_demo

FAILED_MARKERS = ("Error fetching", "currently unavailable")
PROXIES = 8          # 6 Bookinfo sidecars + the ingress and egress gateways
# a DestinationRule on ratings: a new cluster config in every proxy's CDS (no Sidecar scoping in the demo)
CHANGE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings-after-restart
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 77
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with run_demo(tmp_path_factory.mktemp("demo-cp-kill-state")) as d:
        yield d


class Traffic:
    """GET /productpage through the gateway back to back in a thread; bounded in count and time."""

    def __init__(self, url: str, max_requests: int = 3000, max_s: float = 60.0) -> None:
        self.url, self.max_requests, self.max_s = url, max_requests, max_s
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not self._stop.is_set() and self.ok + len(self.failures) < self.max_requests \
                    and time.monotonic() < deadline:
                try:
                    r = client.get(self.url)
                    bad = r.status_code != 200 or any(m in r.text for m in FAILED_MARKERS)
                    if bad:
                        self.failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    else:
                        self.ok += 1
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def control_plane(demo: Demo) -> tuple[str, int, int]:
    """(pod name, pid, restarts) of the control plane, from ``mizzen get pods -o json`` (v1 Pods)."""
    items = json.loads(demo.mizzen("get", "pods", "-n", "istio-system", "-o", "json").stdout)["items"]
    (cp,) = [p for p in items if p["metadata"]["labels"].get("app") == "istiod"]
    (status,) = cp["status"]["containerStatuses"]
    return cp["metadata"]["name"], int(status["containerID"].removeprefix("local://")), status["restartCount"]


def all_synced(api: httpx.Client, demo: Demo) -> list[dict[str, Any]] | None:
    """The syncz entries once the control plane serves xDS and every proxy ACKed its current config."""
    try:
        if api.get(f"{demo.api}/ready").status_code != 200:
            return None
        if api.get(f"{demo.api}/debug/push_status").json()["pending"]:
            return None
        syncz: list[dict[str, Any]] = api.get(f"{demo.api}/debug/syncz").json()
    except (httpx.HTTPError, ValueError):
        return None
    if len(syncz) == PROXIES and all(p["synced"] for p in syncz):
        return syncz
    return None


def warm_spare(demo: Demo) -> int | None:
    """The pid of the control plane's warm spare once it is ready to take over: a ``--standby`` process of
    the demo blocked reading its stdin, which it does only after its imports and schema compilation."""
    for pid in descendants(demo.proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            blocked_on = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            continue
        if b"mizzen.controlplane" in argv and b"--standby" in argv and "pipe" in blocked_on:
            return pid
    return None


def wait(what: str, check: Any, timeout: float) -> tuple[Any, float]:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got, time.monotonic()
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


@pytest.mark.e2e
def test_sigkill_of_the_control_plane_under_traffic(demo: Demo) -> None:
    name, pid, restarts = control_plane(demo)
    assert restarts == 0
    # the 2 s are the steady state's: a warm spare takes over. The supervisor starts it 3 s after the control
    # plane is up (runner.istiod.SPARE_DELAY_S), about when the demo says "Bookinfo is up", and a kill before
    # it is warm pays a Python start-up. Without this wait the verdict hung on how soon after "Bookinfo is up"
    # the test killed (a faster `mizzen get pods` above made it 2.4-3.3 s in 3 runs of 6)
    wait("the control plane's warm spare ready", lambda: warm_spare(demo), 30)
    data_plane = descendants(demo.proc.pid) - descendants(pid) - {pid}
    assert len(data_plane) >= 14, data_plane             # 6 apps + 6 sidecars + 2 gateways + the spare
    with httpx.Client(trust_env=False, timeout=2,
                      headers={"Authorization": f"Bearer {demo.token}"}) as api:
        before, _ = wait("synced before the kill", lambda: all_synced(api, demo), 10)
        cds_before = {p["proxy"]: p["types"]["CDS"]["acked"] for p in before}
        with Traffic(f"{demo.url}/productpage") as traffic:
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            _, back_at = wait("control plane back, every proxy SYNCED",
                              lambda: not alive(pid) and all_synced(api, demo), 10)
            # what `mizzen apply -f` sends (the CLI's own Python start-up is not the mesh's latency)
            applied = api.post(f"{demo.api}/apis/apply", json={
                "documents": [{"file": "dr.yaml", "text": CHANGE}], "namespace": "bookinfo"})
            assert applied.json()["results"][0]["action"] == "created", applied.text

            def changed_everywhere() -> list[dict[str, Any]] | None:
                syncz = all_synced(api, demo)
                if syncz and all(p["types"]["CDS"]["acked"] != cds_before[p["proxy"]] for p in syncz):
                    return syncz
                return None

            after, reached_at = wait("the change on every proxy", changed_everywhere, 10)
            time.sleep(1.0)          # traffic on the new config too
        assert traffic.ok > 20 and not traffic.failures, (traffic.ok, traffic.failures[:3])
    back_s, change_s = back_at - killed_at, reached_at - back_at
    print(f"control plane back and {PROXIES} proxies SYNCED {back_s:.2f} s after SIGKILL; change on every "
          f"proxy {change_s:.2f} s after that; {traffic.ok} requests, 0 failed")
    assert back_s < 2.0, f"back and synced {back_s:.2f} s after the kill"
    assert change_s < 1.0, f"the change reached every proxy {change_s:.2f} s after the return"
    assert {p["proxy"] for p in after} == set(cds_before)
    # nothing of the data plane was restarted; the supervisor said what happened, once, like for a pod
    assert all(alive(p) for p in data_plane), [p for p in data_plane if not alive(p)]
    _, pid_after, restarts_after = control_plane(demo)
    assert restarts_after == 1 and pid_after != pid
    out = demo.output()
    assert f"pod istio-system/{name}: container discovery killed by SIGKILL" in out, out
    # the 6 Bookinfo pods and the egress gateway (a registered workload too)
    assert "control plane back, 7 workloads re-registered" in out, out
    assert "Traceback" not in out, out

