"""The seed's Bookinfo walk on the test cluster (tests/kube/test_kube_walk.py): what it runs, how it talks.

* :class:`HostControlPlane`: ``mizzen controlplane --kubeconfig`` as a process on the host, its xDS ports
  bound to the cluster bridge's host address (pods reach it on-link), its HTTP API on loopback. It stands in
  for ``mizzen install``'s in-cluster control plane where that is not available.
* :func:`ingress_gateway_manifest`: an ``istio-ingressgateway`` Deployment + Service in ``istio-system``
  (labels ``istio: ingressgateway``, Service 80->8080 like Istio's) running ``mizzen agent --type router``
  against the host control plane, for when no install put one there.
* :func:`pod_requests`: HTTP requests sent from inside a pod's network namespace (``ip netns exec``) by a
  small client process, as the pod's app would send them: with transparent capture the sidecar sees them,
  with no ``HTTP_PROXY`` anywhere.
* :func:`echo_app_container`: a tiny HTTP app (answers ``{"service", "version", "path"}``) for section 5's
  demo services.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

MIZZEN = str(Path(sys.executable).parent / "mizzen")
SYSTEM_NS = "istio-system"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


LEASE_TTL_S = 6   # $MIZZEN_LEADER_ELECTION_TTL for the walk's replicas (Istio's default is 30 s)


class HostControlPlane:
    """One replica of ``mizzen controlplane --kubeconfig`` on the host, named ``name`` (its Lease holder
    identity, as istiod's POD_NAME); stopped or killed by its PID."""

    def __init__(self, cluster: Any, name: str = "istiod-0") -> None:
        self.cluster = cluster
        self.name = name
        self.host = cluster.net.addr.host_ip          # the bridge's host address: pods reach it on-link
        self.xds_port = free_port(self.host)
        self.tls_port = free_port(self.host)
        self.http_port = free_port("127.0.0.1")
        self.webhook_port = free_port(self.host)
        self.dir = Path(tempfile.mkdtemp(prefix="mizzen-walk-cp-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def xds(self) -> str:
        return f"{self.host}:{self.xds_port}"

    @property
    def webhook_url(self) -> str:
        """The validating webhook (a ``url:`` client config: the API server reaches the host's bridge)."""
        return f"https://{self.host}:{self.webhook_port}/validate"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def token(self) -> str:
        return (self.dir / "state" / "token").read_text().strip()

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.dir / "controlplane.log", "ab")   # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(
            [MIZZEN, "controlplane", "--kubeconfig", str(self.cluster.kubeconfig), "--state-dir",
             str(self.dir / "state"), "--xds-host", self.host, "--xds-port", str(self.xds_port),
             "--xds-tls-port", str(self.tls_port), "--http-port", str(self.http_port),
             "--webhook-port", str(self.webhook_port), "--webhook-host", self.host],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MIZZEN_TOKEN": "", "POD_NAME": self.name, "POD_NAMESPACE": SYSTEM_NS,
                 "MIZZEN_LEADER_ELECTION_TTL": f"{LEASE_TTL_S}s"})
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the control plane exited: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the control plane not ready in {timeout} s: {self.log()[-2000:]}")
            time.sleep(0.3)

    def api_get(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.http_url}{path}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def log(self) -> str:
        p = self.dir / "controlplane.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no lease released, no goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def ingress_gateway_manifest(xds: str) -> str:
    """Istio's ingress gateway shape (Deployment + Service, Service port 80 -> 8080) running our router."""
    args = ["agent", "--type", "router", "--ip", "$(POD_IP)", "--namespace", SYSTEM_NS,
            "--name", "$(POD_NAME)", "--labels", "app=istio-ingressgateway,istio=ingressgateway",
            "--xds", xds,
            "--service-account", "istio-ingressgateway-service-account",
            "--gateway-ports", "80=8080,443=8443"]
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: ServiceAccount
        metadata: {{name: istio-ingressgateway-service-account, namespace: {SYSTEM_NS}}}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: istio-ingressgateway, namespace: {SYSTEM_NS}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: istio-ingressgateway, istio: ingressgateway}}}}
          template:
            metadata: {{labels: {{app: istio-ingressgateway, istio: ingressgateway}}}}
            spec:
              serviceAccountName: istio-ingressgateway-service-account
              terminationGracePeriodSeconds: 5
              containers:
              - name: istio-proxy
                image: mizzen/mizzen:dev
                command: [{json.dumps(MIZZEN)}]
                args: {json.dumps(args)}
                ports: [{{containerPort: 8080, name: http2}}, {{containerPort: 8443, name: https}}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: istio-ingressgateway, namespace: {SYSTEM_NS},
                    labels: {{app: istio-ingressgateway, istio: ingressgateway}}}}
        spec:
          selector: {{app: istio-ingressgateway, istio: ingressgateway}}
          ports:
          - {{name: http2, port: 80, targetPort: 8080}}
          - {{name: https, port: 443, targetPort: 8443}}
        """)


ECHO = ("import json, os, http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        b = json.dumps({'service': os.environ['SVC'], 'version': os.environ['VER'],\n"
        "                        'path': self.path, 'pod': os.environ['POD_NAME']}).encode()\n"
        "        self.send_response(200); self.send_header('content-type', 'application/json')\n"
        "        self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)\n"
        "    def log_message(self, *a): pass\n"
        "http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n")


def echo_app_container(service: str, version: str, port: int) -> dict[str, Any]:
    """A container answering every GET with ``{"service", "version", "path", "pod"}`` as JSON."""
    return {"name": service, "image": "mizzen/echo:dev", "command": [sys.executable, "-c", ECHO],
            "ports": [{"containerPort": port, "name": "http"}],
            "env": [{"name": "SVC", "value": service}, {"name": "VER", "value": version},
                    {"name": "PORT", "value": str(port)}],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}


# Sends the requests one after another; prints one JSON line: [[status, body, headers, seconds], ...].
# Bounded: every request times out after its own limit.
CLIENT = textwrap.dedent("""\
    import json, sys, time, urllib.error, urllib.request
    url, n, headers, timeout = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4])
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k): return None
    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            r = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
            status, body, hdrs = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, body, hdrs = e.code, e.read(), dict(e.headers)
        except OSError as e:
            status, body, hdrs = 0, str(e).encode(), {}
        out.append([status, body.decode(errors="replace")[:4000], hdrs, time.monotonic() - t0])
    print(json.dumps(out))
    """)


def pod_requests(netns: str, url: str, n: int = 1, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> list[tuple[int, str, dict[str, str], float]]:
    """``n`` GETs of ``url`` from inside the pod network namespace ``netns`` (its /etc/hosts resolves
    Service names), as root: with Istio's capture (only uid 1337 excluded) they go through the sidecar."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, url, str(n),
                        json.dumps(headers or {}), str(timeout)],
                       capture_output=True, text=True, env=env, timeout=30 + n * (timeout + 1))
    if r.returncode != 0:
        raise AssertionError(f"the in-pod client failed: {r.stderr[-2000:]}")
    return [(int(s), b, h, float(t)) for s, b, h, t in json.loads(r.stdout)]


# Runs mizzen's fortio-like load generator (no proxy: the requests leave as the app's would) and prints one
# JSON line: {"codes": {...}, "overflow": n, "summary": "..."}.
LOAD = textwrap.dedent("""\
    import asyncio, json, sys
    from mizzen.loadgen import run_load
    r = asyncio.run(run_load(sys.argv[1], concurrency=int(sys.argv[2]), total=int(sys.argv[3]), deadline=30))
    print(json.dumps({"codes": {str(k): v for k, v in r.codes.items()}, "overflow": r.flags["overflow"],
                      "summary": r.summary()}))
    """)


def pod_load(netns: str, url: str, concurrency: int, total: int) -> tuple[dict[int, int], int, str]:
    """(codes, overflow 503s, fortio-like summary) of ``total`` requests at ``concurrency`` from ``netns``."""
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", LOAD, url, str(concurrency),
                        str(total)], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    if r.returncode != 0:
        raise AssertionError(f"the in-pod load failed: {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    return {int(k): v for k, v in out["codes"].items()}, int(out["overflow"]), str(out["summary"])


def until(check: Any, timeout: float = 30.0, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns without an AssertionError (bounded); re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
