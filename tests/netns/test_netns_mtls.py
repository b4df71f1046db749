"""PeerAuthentication STRICT with Istio's iptables interception (REDIRECT), as root: pod-like network
namespaces with istio-init's rules, real Envoys as uid 1337, each with its workload certificate over SDS
from an identity agent (a real CA). From outside the mesh (the host) 1,000 of 1,000 plaintext attempts to
the pod address are refused; from a meshed pod the same port works over mTLS and the app sees the caller's
SPIFFE ID; a TCP service works under STRICT too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns_lib import NetnsAgent, Pod, PodNet, netns_unavailable_reason

from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import AgentOptions
from mizzen.agent.iptables import PROXY_UID, CaptureConfig, render_restore
from mizzen.config.errors import ConfigError
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import Meta, ProxyType
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL, Workload
from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CAOptions, CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.agent import IdentityAgent
from mizzen.security.nodeagent.cache import SecretManagerOptions
from mizzen.security.pki import KeyAlgorithm
from mizzen.security.sdsconfig import sds_cluster

_REASON = netns_unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

NS = "mzt"
HTTP_PORT = 9080
TCP_PORT = 9000

HTTP_APP = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""
TCP_APP = """
import socketserver, sys
class H(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request.recv(1024)
        self.request.sendall(b"echo:" + data)
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
S(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""
TCP_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"ping")
print(s.recv(1024).decode())
"""


def mesh_yaml(http_vip: str, tcp_vip: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  clusterIP: {http_vip}
  selector: {{app: echo}}
  ports: [{{name: http, port: {HTTP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: tcp-echo}}
spec:
  clusterIP: {tcp_vip}
  selector: {{app: tcp-echo}}
  ports: [{{name: tcp, port: {TCP_PORT}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default}}
spec:
  mtls: {{mode: STRICT}}
"""


@dataclass
class World:
    net: PodNet
    cp: ControlPlane
    pods: dict[str, Pod]
    http_vip: str
    tcp_vip: str

    async def apply(self, text: str) -> None:
        result = self.cp.api.loader(text, "netns.yaml", NS)
        if result.errors:
            raise ConfigError(list(result.errors))
        self.cp.store.apply(result.configs)
        await self.cp.wait_synced(timeout=10)

    async def run(self, pod: str, argv: list[str]) -> tuple[int, str]:
        return await self.net.run(self.pods[pod], argv, timeout=15)


def plaintext_refused(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
    except OSError:
        return True
    return not data.startswith(b"HTTP/") and not data.startswith(b"echo:")


async def _eventually(check: object, timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()   # type: ignore[operator]
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    work = Path(tempfile.mkdtemp(prefix="mzt-mtls-"))
    work.chmod(0o755)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        net = stack.enter_context(PodNet(work))
        stack.push_async_callback(net.stop_processes)
        ca = CertificateAuthority.self_signed(work / "ca", CAOptions(
            default_ttl=dt.timedelta(hours=1), root_key_algorithm=KeyAlgorithm.ECDSA))
        creds = LocalCredentials()
        service = CAService(ca, [LocalCredentialAuthenticator(creds)])
        target = f"unix:{work / 'ca.sock'}"
        await service.serve(target)
        stack.push_async_callback(service.stop)
        cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_host=net.host_ip, xds_port=0,
                                              http_port=None, debounce_quiet_s=0.05, debounce_max_s=0.5,
                                              restore_workloads=False))
        await cp.start()
        stack.push_async_callback(cp.stop)
        apps = {"a": ("sleep", None), "b": ("echo", HTTP_APP), "c": ("tcp-echo", TCP_APP)}
        ports = {"b": HTTP_PORT, "c": TCP_PORT}
        pods = {name: net.add_pod(name) for name in apps}
        for name, pod in pods.items():
            net.apply_iptables(pod, render_restore(CaptureConfig.for_sidecar(AGENT_ADMIN_PORT)))
            app, code = apps[name]
            if code is not None:
                await net.start(pod, [sys.executable, "-c", code, str(ports[name])], work / f"{name}.app.log")
            labels = {"app": app, TLS_MODE_LABEL: ISTIO_TLS_MODE}
            cp.register_workload(Workload(name=name, namespace=NS, address=pod.ip, labels=labels,
                                          service_account=app))
            sds_dir = work / f"sds-{name}"
            ident = IdentityAgent(Identity(NS, app), target, creds.issue(NS, name, app), sds_dir / "socket",
                                  SecretManagerOptions(key_algorithm=KeyAlgorithm.ECDSA, backoff_start_s=0.1))
            await ident.start()
            stack.push_async_callback(ident.stop)
            for path in (sds_dir, sds_dir / "socket"):      # the pod's agent and its Envoy share a user
                os.chown(path, PROXY_UID, PROXY_UID)
            pod_dir = work / name
            pod_dir.mkdir()
            os.chown(pod_dir, PROXY_UID, PROXY_UID)
            spec = ProxySpec(type=ProxyType.SIDECAR, ip=pod.ip, namespace=NS, name=name,
                             admin_port=AGENT_ADMIN_PORT, xds_host=net.host_ip, xds_port=cp.xds_port,
                             labels=labels, service_account=app, interception_mode="REDIRECT",
                             http_proxy_port=0)
            overlay = json.dumps({"node": {"metadata": {Meta.SDS: "true"}},
                                  "static_resources": {"clusters": [sds_cluster(sds_dir / "socket")]}})
            agent = NetnsAgent(spec, pod, AgentOptions(work_dir=pod_dir, concurrency=1,
                                                       extra_args=("--config-yaml", overlay)))
            await agent.start(ready_timeout=20)
            stack.push_async_callback(agent.stop)
        w = World(net, cp, pods, http_vip=f"{net.subnet}.250", tcp_vip=f"{net.subnet}.251")
        await w.apply(mesh_yaml(w.http_vip, w.tcp_vip))
        yield w


async def test_netns_strict_refuses_plaintext_from_outside_and_serves_mtls_inside(world: World) -> None:
    w = world
    b, c = w.pods["b"], w.pods["c"]

    async def meshed_http() -> dict[str, str]:
        rc, out = await w.run("a", ["curl", "-s", "--max-time", "5", f"http://{w.http_vip}:{HTTP_PORT}/"])
        assert rc == 0 and out.startswith("{"), out
        return dict(json.loads(out)["headers"])

    headers = await _eventually(meshed_http)
    assert isinstance(headers, dict)
    assert f"URI=spiffe://cluster.local/ns/{NS}/sa/sleep" in headers.get("x-forwarded-client-cert", "")

    async def meshed_tcp() -> None:
        rc, out = await w.run("a", [sys.executable, "-c", TCP_CLIENT, w.tcp_vip, str(TCP_PORT)])
        assert rc == 0 and out.strip() == "echo:ping", out
    await _eventually(meshed_tcp)

    def attempts(ip: str, port: int, n: int) -> int:
        return sum(plaintext_refused(ip, port) for _ in range(n))

    assert await asyncio.wait_for(asyncio.to_thread(attempts, b.ip, HTTP_PORT, 1000), 180) == 1000
    assert await asyncio.wait_for(asyncio.to_thread(attempts, c.ip, TCP_PORT, 100), 60) == 100

    # PERMISSIVE for the namespace: the same plaintext from outside is served, the meshed call stays mTLS
    await w.apply("""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: PERMISSIVE}
""")

    async def plain_served() -> None:
        assert not await asyncio.to_thread(plaintext_refused, b.ip, HTTP_PORT)
        assert not await asyncio.to_thread(plaintext_refused, c.ip, TCP_PORT)
    await _eventually(plain_served)
    headers = await _eventually(meshed_http)
    assert isinstance(headers, dict) and "URI=" in headers.get("x-forwarded-client-cert", "")
    await _eventually(meshed_tcp)
