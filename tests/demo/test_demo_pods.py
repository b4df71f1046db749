"""The local mesh's day-to-day UX with ``mizzen demo`` as a real process: ``mizzen get pods`` and ``mizzen
logs`` over the control plane's API, a killed app or Envoy restarted and reported as one console line (traffic
recovers), config changes narrated, and a plain control plane answering the pod commands with a clear error.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from demo_helpers import MIZZEN, ROOT, Demo, alive, free_port, listening_of, run_demo

from mizzen.agent.envoy import AgentEvent
from mizzen.runner.api import lines_since, tail_lines
from mizzen.runner.pod import ContainerStatus, PodStatus
from mizzen.runner.watch import PodWatcher, agent_event_line, exit_text

NET = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with run_demo(tmp_path_factory.mktemp("demo-pods-state")) as d:
        yield d


def pods(demo: Demo, namespace: str = "bookinfo") -> dict[str, dict[str, Any]]:
    """deployment -> pod (a ``v1 Pod``), from ``mizzen get pods -o json``."""
    items = json.loads(demo.mizzen("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert all(p["apiVersion"] == "v1" and p["kind"] == "Pod" for p in items), items
    return {p["metadata"]["ownerReferences"][0]["name"].rsplit("-", 1)[0]: p for p in items}


def container(pod: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A container's status (the app's, the first, by default; ``istio-proxy`` for the sidecar)."""
    statuses = pod["status"]["containerStatuses"]
    return next(c for c in statuses if c["name"] == name) if name else statuses[0]


def pid(pod: dict[str, Any], name: str | None = None) -> int | None:
    """The process of a container (``containerID: local://<pid>``)."""
    cid = container(pod, name).get("containerID", "")
    return int(cid.removeprefix("local://")) if cid else None


def restarts(pod: dict[str, Any]) -> int:
    return sum(c["restartCount"] for c in pod["status"]["containerStatuses"])


def ready(pod: dict[str, Any]) -> str:
    statuses = pod["status"]["containerStatuses"]
    return f"{sum(c['ready'] for c in statuses)}/{len(statuses)}"


def eventually(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def page_ok(demo: Demo, *missing: str) -> bool:
    """The product page answers 200 through the gateway and shows none of ``missing``."""
    try:
        r = httpx.get(f"{demo.url}/productpage", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and not any(m in r.text for m in missing)


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


@pytest.mark.e2e
def test_get_pods_lists_bookinfo_like_kubectl(demo: Demo) -> None:
    rows = table(demo.mizzen("get", "pods", "-n", "bookinfo").stdout)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], rows
    assert len(rows) == 7, rows
    deployments = sorted(re.sub(r"-[a-z0-9]{10}-[a-z0-9]{5}$", "", r[0]) for r in rows[1:])
    assert deployments == ["details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2",
                           "reviews-v3"], rows
    assert all(r[1:4] == ["2/2", "Running", "0"] for r in rows[1:]), rows

    wide = table(demo.mizzen("get", "po", "-A", "-o", "wide").stdout)
    assert wide[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "APP-HOST",
                       "MTLS"], wide
    system = sorted(r[1].rsplit("-", 2)[0] for r in wide if r[0] == "istio-system")
    # like Istio's demo profile; the control plane is a pod too
    assert system == ["istio-egressgateway", "istio-ingressgateway", "istiod"], wide
    assert all(r[2:4] == ["1/1", "Running"] for r in wide if r[0] == "istio-system"), wide
    api = pods(demo)
    for r in wide[1:]:
        if r[0] == "bookinfo":
            p = next(p for p in api.values() if p["metadata"]["name"] == r[1])
            app_host = p["metadata"]["annotations"]["mizzen.io/app-host"]
            assert r[6:8] == [p["status"]["podIP"], app_host] and r[6].startswith("127.20."), (r, p)
    gw = pods(demo, "istio-system")
    egress = gw["istio-egressgateway"]
    labels = egress["metadata"]["labels"]
    assert (labels["istio"], labels["app"]) == ("egressgateway", "istio-egressgateway"), labels
    assert all(p["metadata"]["creationTimestamp"] and pid(p, "istio-proxy") for d, p in gw.items()
               if d != "istiod"), gw
    assert pid(gw["istiod"], "discovery"), gw["istiod"]
    # Pod objects, as kubectl prints them: spec, container states, conditions
    pp = api["productpage-v1"]
    assert [c["name"] for c in pp["spec"]["containers"]] == ["productpage", "istio-proxy"], pp
    assert "running" in container(pp)["state"] and pid(pp) and container(pp, "istio-proxy")["ready"]
    assert {c["type"]: c["status"] for c in pp["status"]["conditions"]}["Ready"] == "True", pp
    one = yaml.safe_load(demo.mizzen("get", "pods", pp["metadata"]["name"], "-n", "bookinfo", "-o",
                                     "yaml").stdout)
    assert (one["kind"], one["metadata"]["name"]) == ("Pod", pp["metadata"]["name"]), one
    none = demo.mizzen("get", "pods", "nope", "-n", "bookinfo", check=False)
    assert none.returncode == 1 and 'pods "nope" not found' in none.stderr, none.stderr


@pytest.mark.e2e
def test_config_changes_are_narrated(demo: Demo) -> None:
    demo.mizzen("apply", "-f", str(NET / "virtual-service-all-v1.yaml"), "-n", "bookinfo")
    eventually("config line", lambda: "config: VirtualService bookinfo/reviews created" in demo.output())
    demo.mizzen("delete", "-f", str(NET / "virtual-service-all-v1.yaml"), "-n", "bookinfo")
    eventually("delete line", lambda: "config: VirtualService bookinfo/reviews deleted" in demo.output())


@pytest.mark.e2e
def test_killed_app_is_restarted_reported_and_traffic_recovers(demo: Demo) -> None:
    before = pods(demo)["productpage-v1"]
    name, app_pid, was = before["metadata"]["name"], pid(before), restarts(before)
    assert app_pid
    os.kill(app_pid, signal.SIGKILL)
    line = f"pod bookinfo/{name}: container productpage killed by SIGKILL, restarting in "
    eventually("crash reported", lambda: line in demo.output())

    def restarted() -> bool:
        p = pods(demo)["productpage-v1"]
        return restarts(p) == was + 1 and ready(p) == "2/2" and pid(p) not in (None, app_pid)

    eventually("app restarted", restarted)
    eventually("traffic recovered", lambda: page_ok(demo))
    # the console watcher polls every 0.2 s: its "ready" line may trail the API by a poll
    eventually("ready reported", lambda: f"pod bookinfo/{name}: ready (2/2)" in demo.output())
    out = demo.output()
    assert f"pod bookinfo/{name}: not ready (1/2 CrashLoopBackOff)" in out, out
    assert "Traceback" not in out and "exited with code -9" not in out, out   # no raw log warning either
    row = next(r for r in table(demo.mizzen("get", "pods", "-n", "bookinfo").stdout) if r[0] == name)
    assert row[1:4] == ["2/2", "Running", str(was + 1)], row
    assert not alive(app_pid)
    killed = container(pods(demo)["productpage-v1"])["lastState"]["terminated"]
    assert killed == {"exitCode": 137, "reason": "Error (SIGKILL)"}, killed
    events = demo.mizzen("describe", "pod", name, "-n", "bookinfo").stdout
    assert "container productpage killed by SIGKILL, restarting in" in events, events


@pytest.mark.e2e
def test_killed_envoy_is_restarted_reported_and_traffic_recovers(demo: Demo) -> None:
    before = pods(demo)["details-v1"]
    name, envoy_pid, was = before["metadata"]["name"], pid(before, "istio-proxy"), restarts(before)
    assert envoy_pid
    os.kill(envoy_pid, signal.SIGKILL)
    line = f"pod bookinfo/{name}: istio-proxy (Envoy) killed by SIGKILL, restarting (restart {was + 1})"
    eventually("Envoy restart reported", lambda: line in demo.output())

    def restarted() -> bool:
        p = pods(demo)["details-v1"]
        return (restarts(p) == was + 1 and container(p, "istio-proxy")["restartCount"] == was + 1
                and pid(p, "istio-proxy") not in (None, envoy_pid) and ready(p) == "2/2")

    eventually("Envoy restarted", restarted)
    # details answers through its new sidecar again
    eventually("traffic recovered", lambda: page_ok(demo, "Error fetching product details",
                                                    "product details are currently unavailable"))
    out = demo.output()
    assert "Traceback" not in out and "exited unexpectedly" not in out, out
    row = next(r for r in table(demo.mizzen("get", "pods", "-n", "bookinfo").stdout) if r[0] == name)
    assert row[1:4] == ["2/2", "Running", str(was + 1)], row


@pytest.mark.e2e
def test_logs_show_app_and_envoy_lines(demo: Demo) -> None:
    assert page_ok(demo)
    full = demo.mizzen("logs", "productpage").stdout.splitlines()
    assert any("listening on http://127.21." in line for line in full), full
    assert any('"GET /productpage HTTP/1.1" 200' in line for line in full), full
    last = demo.mizzen("logs", "productpage", "-n", "bookinfo", "--tail", "2").stdout.splitlines()
    assert last == full[-2:], (last, full[-3:])
    details = pods(demo)["details-v1"]
    proxy = demo.mizzen("logs", details["metadata"]["name"], "-c", "istio-proxy").stdout
    # Envoy's own log (warning level): one startup line per start of the sidecar
    assert proxy.count("[main]") >= 1 + container(details, "istio-proxy")["restartCount"], proxy
    # -f: a new request shows up while following; Ctrl-C ends it cleanly
    follow = subprocess.Popen([MIZZEN, "--server", demo.api, "logs", "productpage", "-f", "--tail", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=demo.env)
    lines: queue.Queue[str] = queue.Queue()
    def pump() -> None:
        for x in follow.stdout or []:
            lines.put(x)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert lines.get(timeout=10).strip() == full[-1]
        httpx.get(f"{demo.url}/productpage?from=follow", trust_env=False, timeout=10)
        assert "GET /productpage?from=follow" in lines.get(timeout=10)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=10) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    ambiguous = demo.mizzen("logs", "reviews", check=False)
    assert ambiguous.returncode == 1 and "ambiguous" in ambiguous.stderr, ambiguous.stderr
    bad = demo.mizzen("logs", "ratings", "-c", "nope", check=False)
    assert bad.returncode == 1 and 'container "nope" not found in pod "ratings-v1-' in bad.stderr, bad.stderr
    assert "; choose one of: [ratings istio-proxy]" in bad.stderr, bad.stderr


@pytest.mark.e2e
def test_describe_and_x_describe(demo: Demo) -> None:
    files = [str(NET / "destination-rule-all.yaml"), str(NET / "virtual-service-reviews-80-20.yaml")]
    demo.mizzen("apply", "-n", "bookinfo", *(a for f in files for a in ("-f", f)))
    try:
        v1 = pods(demo)["reviews-v1"]["metadata"]["name"]

        def described() -> bool:           # pushed to the proxies: describe reads what Envoy was sent
            out = demo.mizzen("x", "describe", "pod", v1, "-n", "bookinfo").stdout
            return "   Weight 80%" in out
        eventually("x describe shows the 80/20 split", described)
        out = demo.mizzen("x", "describe", "pod", "reviews-v1", "-n", "bookinfo").stdout    # a prefix works
        assert out.splitlines()[:2] == [f"Pod: {v1}", "   Pod Ports: 9080 (reviews)"], out
        assert 'DestinationRule: reviews.bookinfo for "reviews"\n   Matching subsets: v1' in out, out
        assert "      Route to non-matching subset v2 for (everything)" in out, out
        pp = demo.mizzen("x", "describe", "pod", "productpage", "-n", "bookinfo").stdout
        assert f"Exposed on Ingress Gateway {demo.url}" in pp, pp
        assert pp.splitlines()[-1] == "   /productpage, /static*, /login, /logout, /api/v1/products*", pp
        svc = demo.mizzen("x", "describe", "svc", "reviews", "-n", "bookinfo").stdout
        assert 'subset "v1" with weight 80%' in svc and 'subset "v2" with weight 20%' in svc, svc

        kube = demo.mizzen("describe", "pod", v1, "-n", "bookinfo").stdout
        assert f"Name:             {v1}" in kube and "Controlled By:    ReplicaSet/" in kube, kube
        assert "  reviews:\n    Container ID:       local://" in kube and "Events:" in kube, kube
        ips = {p["status"]["podIP"] for d, p in pods(demo).items() if d.startswith("reviews-")}
        svc_text = demo.mizzen("describe", "svc", "reviews", "-n", "bookinfo").stdout
        line = next(x for x in svc_text.splitlines() if x.startswith("Endpoints:"))
        assert {e.split(":")[0] for e in line.split()[1].split(",")} == ips, svc_text
        vs = demo.mizzen("describe", "vs", "reviews", "-n", "bookinfo").stdout
        assert "References:\n  DestinationRule bookinfo/reviews\n  Service bookinfo/reviews" in vs, vs
        missing = demo.mizzen("describe", "pod", "nope", "-n", "bookinfo", check=False)
        assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr, missing.stderr
        assert "Traceback" not in missing.stderr
    finally:
        demo.mizzen("delete", "-n", "bookinfo", *(a for f in files for a in ("-f", f)))


BROKEN = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx}
spec:
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.25", ports: [{containerPort: 80}]}
"""


@pytest.mark.e2e
def test_pod_that_cannot_start_shows_the_reason(demo: Demo, tmp_path: Path) -> None:
    f = tmp_path / "nginx.yaml"
    f.write_text(BROKEN)
    demo.mizzen("apply", "-f", str(f), "-n", "edge")
    try:
        eventually("pod created", lambda: len(table(demo.mizzen("get", "pods", "-n", "edge").stdout)) == 2)
        row = table(demo.mizzen("get", "pods", "-n", "edge").stdout)[1]
        assert row[1:3] == ["0/1", "ErrNoCommand"], row                 # like kubectl's ErrImagePull
        name = row[0]
        why = demo.mizzen("logs", name, "-n", "edge", check=False)
        assert why.returncode == 1, why
        assert f'container "nginx" in pod "{name}" is waiting to start: ErrNoCommand: ' in why.stderr, why
        text = demo.mizzen("describe", "pod", name, "-n", "edge").stdout
        assert "    State:              Waiting\n      Reason:           ErrNoCommand" in text, text
        assert "Warning   Failed" in text, text
        eventually("console line", lambda: f"pod edge/{name}: failed: ErrNoCommand: " in demo.output())
        assert "ERROR mizzen.runner" not in demo.output()           # one line, not a log record too
    finally:
        demo.mizzen("delete", "-f", str(f), "-n", "edge")


class _Standin(BaseHTTPRequestHandler):
    """The external site's stand-in: answers 200 with the path it got."""

    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(f"{self.headers.get('Host')}{self.path}")
        body = b"stand-in for edition.cnn.com"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.e2e
def test_egress_gateway_task_through_the_demo(demo: Demo, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Standin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    task = tmp_path / "egress.yaml"
    task.write_text((ROOT / "tests" / "fixtures" / "egress" / "egress-gateway-http.yaml").read_text()
                    .replace("127.0.0.77", "127.0.0.1")
                    .replace("http-port: 18077", f"http-port: {server.server_address[1]}"))
    egress = pods(demo, "istio-system")["istio-egressgateway"]
    try:
        svc = demo.mizzen("describe", "svc", "istio-egressgateway", "-n", "istio-system").stdout
        assert f"{'Endpoints:':<19}{egress['status']['podIP']}:8080" in svc, svc
        demo.mizzen("apply", "-f", str(task), "-n", "bookinfo")
        proxy = f"http://{pods(demo)['productpage-v1']['status']['podIP']}:15080"

        def through() -> bool:
            try:
                r = httpx.get("http://edition.cnn.com/politics", proxy=proxy, trust_env=False, timeout=5)
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.text == "stand-in for edition.cnn.com"
        eventually("request reached the stand-in", through)
        assert "edition.cnn.com/politics" in _Standin.paths
        stats = httpx.get(f"http://{egress['status']['podIP']}:15004/stats", trust_env=False,
                          headers={"Authorization": f"Bearer {demo.token}"}).text
        assert re.search(r"cluster\.outbound\|80\|\|edition\.cnn\.com\.upstream_rq_200: [1-9]", stats), stats
    finally:
        demo.mizzen("delete", "-f", str(task), "-n", "bookinfo")
        server.shutdown()
        server.server_close()


@pytest.mark.e2e
def test_demo_is_locked_and_proxies_answer_through_their_agents(demo: Demo, tmp_path: Path) -> None:
    token_file = demo.state / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert f"API token         {token_file}" in demo.output()
    # without the token: one clear line, nothing else
    lost = {**demo.env, "MIZZEN_STATE_DIR": str(tmp_path)}
    r = subprocess.run([MIZZEN, "--server", demo.api, "get", "vs", "-n", "bookinfo"], capture_output=True,
                       text=True, timeout=30, env=lost)
    assert r.returncode == 1 and "needs an API token and none was found" in r.stderr, r.stderr
    assert str(tmp_path / "token") in r.stderr and "Traceback" not in r.stderr and demo.token not in r.stderr
    # ... except on the demo's 0600 API socket, where the file permissions are the credential
    sock = demo.state / "api.sock"
    assert sock.stat().st_mode & 0o777 == 0o600 and f"unix://{sock}" in demo.output()
    r = subprocess.run([MIZZEN, "--server", f"unix://{sock}", "get", "vs", "-n", "bookinfo"],
                       capture_output=True, text=True, timeout=30, env=lost)
    assert r.returncode == 0 and "bookinfo" in r.stdout, r.stderr
    # with the token, a registration must name an address this demo's runner allocated
    auth = {"Authorization": f"Bearer {demo.token}"}
    resp = httpx.post(f"{demo.api}/apis/workloads", trust_env=False, headers=auth, json={
        "name": "thief", "namespace": "bookinfo", "address": "127.0.0.1", "labels": {"app": "reviews"}})
    assert resp.status_code == 403 and "not allocated" in resp.json()["error"], resp.text
    # Envoy's admin is nowhere on TCP; the pod IP serves only /stats/prometheus
    raw = httpx.get(f"{demo.api}/apis/pods", params={"namespace": "bookinfo"}, headers=auth,
                    trust_env=False).json()["items"]
    pp = next(p for p in raw if p["deployment"] == "productpage-v1")
    ip = pp["pod_ip"]
    assert listening_of({pp["sidecar"]["pid"]}) == {(ip, 9080), (ip, 15080), (ip, 15090)}
    assert httpx.post(f"http://{ip}:15090/quitquitquit", trust_env=False, timeout=5).status_code == 404
    assert "envoy_server_live" in httpx.get(f"http://{ip}:15090/stats/prometheus", trust_env=False).text
    assert pp["admin"] == f"http://{ip}:15004"
    assert httpx.get(f"{pp['admin']}/config_dump", trust_env=False).status_code == 401
    # proxy-config through the agents, found from the pods (sidecar and gateway)
    live = demo.mizzen("proxy-config", "endpoints", "productpage", "--cluster", "details").stdout
    rows = [line.split() for line in live.splitlines()]
    assert rows[0] == ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"], live
    assert any(r[1:3] == ["HEALTHY", "OK"] and "details.bookinfo" in r[3] for r in rows[1:]), live
    gw = demo.mizzen("proxy-config", "endpoints", "istio-ingressgateway", "--cluster", "productpage").stdout
    assert "HEALTHY   OK" in gw, gw
    levels = demo.mizzen("proxy-config", "log", "productpage", "--level", "http:debug").stdout
    assert "  http: debug" in levels and "  router: warning" in levels, levels
    levels = demo.mizzen("proxy-config", "log", "productpage", "--level", "warning").stdout
    assert "  http: warning" in levels, levels
    boot = json.loads(demo.mizzen("proxy-config", "bootstrap", "productpage").stdout)
    assert boot["bootstrap"]["node"]["id"].startswith(f"sidecar~{ip}~productpage-v1-"), boot
    assert boot["bootstrap"]["admin"]["address"]["pipe"]["path"].endswith("admin.sock")
    everything = demo.mizzen("proxy-config", "all", "productpage").stdout
    for header in ("SERVICE FQDN", "ADDRESS", "VHOST NAME", "OUTLIER CHECK"):
        assert header in everything, everything
    assert "prometheus_stats" in everything


@pytest.mark.e2e
def test_plain_control_plane_says_pods_need_the_demo(tmp_path: Path) -> None:
    xds, api = free_port(), free_port()
    out = (tmp_path / "cp.out").open("w")
    # its token goes to $MIZZEN_STATE_DIR/token (no --state-dir), where the commands find it too
    env = {**{k: v for k, v in os.environ.items() if k != "MIZZEN_TOKEN"}, "MIZZEN_STATE_DIR": str(tmp_path)}
    cp = subprocess.Popen([MIZZEN, "controlplane", "--xds-port", str(xds), "--http-port", str(api)],
                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        eventually("control plane up", lambda: "mizzen control plane:" in (tmp_path / "cp.out").read_text())
        for args in (["get", "pods"], ["logs", "ratings"]):
            r = subprocess.run([MIZZEN, "--server", f"http://127.0.0.1:{api}", *args], capture_output=True,
                               text=True, timeout=30, env=env)
            assert r.returncode == 1 and "runs no pods" in r.stderr and "mizzen demo" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
        token = (tmp_path / "token").read_text().strip()
        resp = httpx.get(f"http://127.0.0.1:{api}/apis/pods", trust_env=False,
                         headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 404 and "runs no pods" in resp.json()["error"]
    finally:
        os.killpg(cp.pid, signal.SIGKILL)
        cp.wait()
        out.close()


# --- the report lines and log tails, without processes -------------------------------------------------

class FakePods:
    """A PodSource whose status the test sets."""

    def __init__(self) -> None:
        self.pods: list[PodStatus] = []

    def status(self) -> list[PodStatus]:
        return list(self.pods)


def pod(state: str = "Running", restarts: int = 0, ready: bool = True, last_exit: int | None = None,
        message: str = "", phase: str = "Running", name: str = "ratings-v1-abc") -> PodStatus:
    c = ContainerStatus("ratings", state, restarts, 42, (9080,), last_exit, message, "/x/ratings.log")
    return PodStatus(name=name, namespace="bookinfo", deployment="ratings-v1", pod_ip="127.20.0.4",
                     app_host="127.21.0.4", phase=phase, ready=ready, registered=ready, restarts=restarts,
                     sidecar="running", sidecar_restarts=0, containers=(c,), message=message)


def test_watcher_reports_each_crash_once_even_when_missed_between_polls() -> None:
    src = FakePods()
    src.pods = [pod()]
    w = PodWatcher(src, lambda _line: None)
    w.prime()
    assert w.poll() == []
    backoff = "exited with code 1; restarting in 0.5s"
    src.pods = [pod("CrashLoopBackOff", 0, False, 1, backoff, "CrashLoopBackOff")]
    assert w.poll() == [
        "pod bookinfo/ratings-v1-abc: container ratings exited with code 1, restarting in 0.5s (restart 1)",
        "pod bookinfo/ratings-v1-abc: not ready (1/2 CrashLoopBackOff)",
    ]
    assert w.poll() == []                                  # still in backoff: nothing new
    src.pods = [pod("Running", 1, True, 1)]
    assert w.poll() == ["pod bookinfo/ratings-v1-abc: ready (2/2)"]
    src.pods = [pod("Running", 2, True, -9)]               # crashed and restarted between two polls
    assert w.poll() == [
        "pod bookinfo/ratings-v1-abc: container ratings killed by SIGKILL, restarted (restart 2)"]
    src.pods = []
    assert w.poll() == ["pod bookinfo/ratings-v1-abc: deleted"]


def test_watcher_startup_mode_reports_only_crashes_and_failures() -> None:
    src = FakePods()
    w = PodWatcher(src, lambda _line: None, lifecycle=False)
    src.pods = [pod(ready=False), pod("Failed", ready=False, message="cannot start 'x': no such file",
                                      phase="Failed", name="bad-1")]
    assert w.poll() == ["pod bookinfo/bad-1: container ratings failed: cannot start 'x': no such file"]
    src.pods = [pod()]
    assert w.poll() == []
    w.lifecycle = True
    src.pods = [pod(), pod(name="new-1", ready=False)]
    assert w.poll() == ["pod bookinfo/new-1: created (127.20.0.4)"]


def test_agent_event_lines_and_exit_texts() -> None:
    node = "sidecar~127.20.0.2~details-v1-x-y.bookinfo~bookinfo.svc.cluster.local"
    assert agent_event_line(AgentEvent("exited", node, -9, 0)) == (
        "pod bookinfo/details-v1-x-y: istio-proxy (Envoy) killed by SIGKILL, restarting (restart 1)")
    assert agent_event_line(AgentEvent("restarted", node, None, 1)) is None
    assert "after 3 restarts: bad flag" in (agent_event_line(AgentEvent("gave_up", node, 1, 3, "x\nbad flag"))
                                             or "")
    assert exit_text(1) == "exited with code 1" and exit_text(-15) == "killed by SIGTERM"


def test_log_tail_reads_the_end_of_big_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(f"line {i}\n" for i in range(500_000)))      # ~6 MB: only the end is read
    b.write_text("last\n")
    assert tail_lines([a, b, tmp_path / "missing"], 3) == ["line 499998", "line 499999", "last"]
    assert tail_lines([b], None) == ["last"] and tail_lines([b], 0) == []
    # follow: only complete lines, then what comes next; a truncated file starts over
    b.write_text("one\ntw")
    assert lines_since(b, 0) == (["one"], 4)
    with b.open("a") as f:
        f.write("o\nthree\n")
    assert lines_since(b, 4) == (["two", "three"], 14)
    b.write_text("new\n")
    assert lines_since(b, 14) == (["new"], 4)
    lines = tail_lines([a], None)
    first = int(lines[0].removeprefix("line "))               # a whole line, not a cut one
    assert lines == [f"line {i}" for i in range(first, 500_000)] and 0 < first < 500_000 - 300_000
