"""Injected pods really run: ``mizzen kube-inject`` output applied with kubectl, pods started by the node
agent (``istio-init`` applying istio-iptables' REDIRECT rules as root in the pod's namespace, ``istio-proxy``
running ``mizzen agent proxy sidecar`` as uid 1337 from the pod's env), a control plane on the host reading
the cluster. The client app calls the Service by name (its ClusterIP, no proxy env, no kube-proxy in the
pod): its sidecar captures the call, routes it by a VirtualService applied with kubectl, and the server's
sidecar captures it inbound. Probes go through the agent (``:15021/healthz/ready``, the app's rewritten
``/app-health/...``), ``holdApplicationUntilProxyStarts`` puts the proxy first with a ``postStart`` wait, and
a pod labelled ``sidecar.istio.io/inject: "false"`` runs without a sidecar."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kube_harness import ROOT, UNAVAILABLE, nodeagent, wait_for

from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

NS = "kinject"
SYSTEM_NS = "kinject-system"
MIZZEN = str(Path(sys.executable).with_name("mizzen"))
SERVER = textwrap.dedent("""
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = json.dumps({"pod": os.environ.get("POD_NAME", ""), "peer": self.client_address[0],
                               "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
""")
SLEEP = "import time\nwhile True: time.sleep(3600)"


def manifests() -> str:
    py = sys.executable

    def deploy(name: str, code: str, labels: dict[str, str], annotations: dict[str, str] | None = None,
               probe: bool = False) -> dict[str, Any]:
        pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        c: dict[str, Any] = {"name": name, "image": f"example/{name}", "command": [py, "-c", code],
                             "env": [pod_name]}
        if probe:
            c["ports"] = [{"containerPort": 8080, "name": "http"}]
            c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}
        meta: dict[str, Any] = {"labels": labels}
        if annotations:
            meta["annotations"] = annotations
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": labels["app"]}},
                         "template": {"metadata": meta, "spec": {"terminationGracePeriodSeconds": 5,
                                                                  "containers": [c]}}}}

    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": NS},
         "spec": {"selector": {"app": "echo"},
                  "ports": [{"name": "http", "port": 8000, "targetPort": 8080}]}},
        deploy("echo", SERVER, {"app": "echo", "version": "v1"}, probe=True),
        deploy("sleep", SLEEP, {"app": "sleep"},
               {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"}),
        deploy("plain", SLEEP, {"app": "plain", "sidecar.istio.io/inject": "false"}),
    ]
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


VS = textwrap.dedent(f"""\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: echo, namespace: {NS}}}
    spec:
      hosts: [echo]
      http:
      - route: [{{destination: {{host: echo}}}}]
        headers: {{response: {{add: {{x-mizzen-route: via-vs}}}}}}
    """)


@pytest.fixture
def node(kube_cluster: Any) -> Iterator[Any]:
    agent = nodeagent.NodeAgent(kube_cluster, "mizzen-node-0", lease_renew_s=1.0)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
async def controlplane(kube_cluster: Any, node: Any, monkeypatch: pytest.MonkeyPatch
                       ) -> AsyncIterator[ControlPlane]:
    """On the node's address, where the pods' agents reach it: xDS and the CA over TLS (15012's semantics),
    the pods authenticated by their istio-token (TokenReview); its CA Secret and Leases in a namespace of
    this test, from where it publishes istio-ca-root-cert to every namespace."""
    await asyncio.to_thread(kube_cluster.kubectl, "create", "namespace", SYSTEM_NS)
    monkeypatch.setenv("POD_NAMESPACE", SYSTEM_NS)
    try:
        with tempfile.TemporaryDirectory(prefix="mzt-kinject-") as tmp:
            cp = ControlPlane(ControlPlaneOptions(
                state_dir=Path(tmp) / "state", xds_host=node.host_ip, xds_port=0, http_port=None,
                debounce_quiet_s=0.05, debounce_max_s=0.5, kubeconfig=Path(kube_cluster.kubeconfig),
                xds_tls_port=0))
            await cp.start()
            try:
                yield cp
            finally:
                await cp.stop()
    finally:
        await asyncio.to_thread(kube_cluster.kubectl, "delete", "namespace", SYSTEM_NS, "--wait=false")


def _pod(cluster: Any, app: str) -> dict[str, Any]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-l", f"app={app}", "-o", "json"))["items"]
    return pods[0] if pods else {}


async def _until_ready(cluster: Any, app: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = await asyncio.to_thread(_pod, cluster, app)
        if pod and _ready(pod):
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"{app} pod not Ready in {timeout} s: {pod.get('status')}")
        await asyncio.sleep(0.3)


def _ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


async def _curl(node: Any, pod: dict[str, Any], url: str, *extra: str) -> tuple[int, dict[str, str], str]:
    """curl in the pod's network namespace as root (like ``kubectl exec`` into the app container)."""
    run = node.pods[pod["metadata"]["uid"]]
    p = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", run.netns, "curl", "-s", "-i", "--max-time", "5", *extra, url,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 15)
    text = out.decode(errors="replace")
    if p.returncode != 0:
        return 0, {}, text
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    fields = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines if ":" in x)}
    return int(status_line.split()[1]), fields, body


async def _stat(node: Any, pod: dict[str, Any], name: str) -> int:
    """A counter from the pod's Envoy admin socket (in its istio-envoy volume; through a directory fd, as
    the path is longer than a socket address may be)."""
    envoy_dir = node.pods[pod["metadata"]["uid"]].dir / "volumes" / "istio-envoy"
    fd = os.open(envoy_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        connector = aiohttp.UnixConnector(path=f"/proc/self/fd/{fd}/admin.sock")
        async with aiohttp.ClientSession(connector=connector) as s, \
                s.get("http://localhost/stats", params={"filter": f"^{name.replace('.', '[.]')}$"}) as r:
            text = await r.text()
    finally:
        os.close(fd)
    for line in text.splitlines():
        k, _, v = line.partition(": ")
        if k == name:
            return int(v)
    return 0


async def test_kube_injected_pods_talk_through_sidecars_with_transparent_capture(
        kube_cluster: Any, node: Any, controlplane: ControlPlane, tmp_path: Path) -> None:
    c, cp = kube_cluster, controlplane
    c.kubectl("create", "namespace", NS)
    try:
        # the control plane (the leader) publishes the mesh root the pods' istiod-ca-cert volume mounts
        assert cp.identity is not None
        root = cp.identity.ca.trust_bundle.pem

        def published() -> bool:
            r = subprocess.run([str(c.bin / "kubectl"), "--kubeconfig", str(c.kubeconfig), "get", "configmap",
                                "istio-ca-root-cert", "-n", NS, "-o", "jsonpath={.data.root-cert\\.pem}"],
                               capture_output=True, text=True, timeout=30)
            return r.returncode == 0 and r.stdout.strip() == root.strip()

        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(published):
            assert time.monotonic() < deadline, "istio-ca-root-cert not published"
            await asyncio.sleep(0.5)
        # Istio's default controlPlaneAuthPolicy (MUTUAL_TLS): the agents use the TLS port and their token
        mesh = tmp_path / "mesh.yaml"
        mesh.write_text(yaml.safe_dump({"defaultConfig": {
            "discoveryAddress": cp.xds_tls_address, "terminationDrainDuration": "2s"}}))
        values = tmp_path / "values.yaml"
        values.write_text(yaml.safe_dump({"global": {"proxy": {"readinessPeriodSeconds": 1},
                                                     "caAddress": cp.xds_tls_address}}))
        src = tmp_path / "app.yaml"
        src.write_text(manifests())
        argv = [MIZZEN, "kube-inject", "-f", str(src), "--meshConfigFile", str(mesh),
                "--valuesFile", str(values)]
        r = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60,
                                    cwd=ROOT)
        assert r.returncode == 0, r.stderr
        injected = {d["metadata"]["name"]: d for d in yaml.safe_load_all(r.stdout) if d}
        sleep_spec = injected["sleep"]["spec"]["template"]["spec"]
        assert [x["name"] for x in sleep_spec["containers"]] == ["istio-proxy", "sleep"]   # held: proxy first
        assert [x["name"] for x in injected["plain"]["spec"]["template"]["spec"]["containers"]] == ["plain"]
        await asyncio.to_thread(c.kubectl, "apply", "-f", "-", stdin=r.stdout)
        await asyncio.to_thread(c.kubectl, "apply", "-f", "-", stdin=VS)

        t0 = time.monotonic()
        # the control plane runs on this event loop: wait without blocking it
        pods = {app: await _until_ready(c, app) for app in ("echo", "sleep", "plain")}
        ready_s = time.monotonic() - t0
        echo, sleep, plain = pods["echo"], pods["sleep"], pods["plain"]
        names = [x["name"] for x in echo["status"]["containerStatuses"]]
        assert sorted(names) == ["echo", "istio-proxy"] and all(
            x["ready"] for x in echo["status"]["containerStatuses"])
        assert echo["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        run = node.pods[echo["metadata"]["uid"]]
        rules = subprocess.run(["ip", "netns", "exec", run.netns, "iptables-save", "-t", "nat"],
                               capture_output=True, text=True, timeout=10).stdout
        assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
        assert "--dports 15090,15021,15020 -j RETURN" in rules
        assert "KUBE-SERVICES" not in rules            # no kube-proxy: only the sidecar can reach a ClusterIP
        # the proxy user reads the pod's istio-token (a kubelet's 0644 when the pod's users differ)
        token = run.dir / "volumes" / "istio-token" / "istio-token"
        as_proxy = subprocess.run(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "cat",
                                   str(token)], capture_output=True, text=True, timeout=10)
        assert as_proxy.returncode == 0 and as_proxy.stdout.count(".") == 2, as_proxy.stderr
        envoy_user = subprocess.run(["ps", "-o", "uid=", "-C", "envoy"], capture_output=True, text=True)
        assert "1337" in envoy_user.stdout.split()

        # the client app calls the Service by name: captured, routed by the VirtualService, captured inbound
        url = "http://echo:8000/hello"
        deadline = time.monotonic() + 30
        while True:
            status, headers, body = await _curl(node, sleep, url)
            if (status == 200 and headers.get("x-mizzen-route") == "via-vs") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if status != 200:
            for pod in (sleep, echo):
                d = node.pods[pod["metadata"]["uid"]].dir
                for f in sorted(d.rglob("*.log")):
                    print("=====", f, "\n", f.read_text(errors="replace")[-3000:])
            st, _, b = await _curl(node, sleep, url, "-v")
            print("CURL", st, b)
        assert (status, headers.get("x-mizzen-route")) == (200, "via-vs"), (status, headers, body)
        assert "x-envoy-upstream-service-time" in headers
        seen = json.loads(body)
        assert seen["pod"] == echo["metadata"]["name"]
        assert seen["peer"] == "127.0.0.1"                         # handed over by echo's sidecar
        assert seen["headers"].get("x-request-id")
        # the sidecars' certificates came from the CA through the pods' tokens: auto mTLS between them
        xfcc = {k.lower(): v for k, v in seen["headers"].items()}.get("x-forwarded-client-cert", "")
        assert f"URI=spiffe://cluster.local/ns/{NS}/sa/default" in xfcc, seen["headers"]
        outbound = f"cluster.outbound|8000||echo.{NS}.svc.cluster.local.upstream_rq_200"
        assert await _stat(node, sleep, outbound) >= 1
        assert await _stat(node, echo, "listener.0.0.0.0_15006.downstream_cx_total") >= 1
        assert await _stat(node, echo, "cluster.inbound|8080||.upstream_rq_200") >= 1

        # the app's readiness probe was rewritten to the agent, which probes the app (the pod became Ready)
        probe = next(x for x in echo["spec"]["containers"] if x["name"] == "echo")["readinessProbe"]
        assert probe["httpGet"] == {"path": "/app-health/echo/readyz", "port": 15020, "scheme": "HTTP"}
        async with aiohttp.ClientSession() as s:
            base = f"http://{echo['status']['podIP']}:15020/app-health"
            async with s.get(f"{base}/echo/readyz") as r200, s.get(f"{base}/other/readyz") as r404:
                assert (r200.status, r404.status) == (200, 404)

        # the pod without a sidecar: no outbound capture (no VirtualService); the server captures inbound
        status, headers, body = await _curl(node, plain, f"http://{echo['status']['podIP']}:8080/direct")
        assert status == 200 and "x-mizzen-route" not in headers, (status, headers, body)
        assert json.loads(body)["peer"] == "127.0.0.1"
        print(f"\nthree injected/plain pods Ready in {ready_s:.1f} s")
    finally:
        c.kubectl("delete", "namespace", NS, "--wait=false")
        wait_for(lambda: not any(p.namespace == NS for p in list(node.pods.values())), timeout=60,
                 what="pods stopped")
