"""Istio's TCP metrics in REDIRECT mode, as root: a client pod connects to a TCP Service's cluster IP; its
sidecar (reporter=source) and the server pod's sidecar (reporter=destination) count exactly the connections
opened and closed and the bytes each way, with the destination's labels from endpoint metadata and the
service from cluster metadata. Both pods hold workload certificates (a real CA, SDS), so the hop is auto
mTLS: the server's agent fills the source labels from the peer's address (the control plane's
address-to-workload map) because the address's workload has the peer certificate's identity; a plaintext
client from outside the mesh (the host, PERMISSIVE) is ``unknown``. Scraped from each proxy's ``:15090``
inside its pod."""

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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from netns_lib import NetnsAgent, Pod, PodNet, netns_unavailable_reason

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))
from telemetry_kit import parse, series, total

from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, STATS_PORT, ProxySpec
from mizzen.agent.envoy import AgentOptions
from mizzen.agent.iptables import PROXY_UID, CaptureConfig, render_restore
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
PORT = 9000
ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    data = c.recv(1024)
    c.sendall(data.upper() + b"!")
    c.close()
"""
CALL = """
import socket, sys
for i in range(int(sys.argv[3])):
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    c.sendall(b"ping")
    got = b""
    while len(got) < 5:
        chunk = c.recv(64)
        if not chunk:
            break
        got += chunk
    assert got == b"PING!", got
    c.close()
print("ok")
"""
SCRAPE = """
import sys, urllib.request
url = f"http://{sys.argv[1]}:{sys.argv[2]}/stats/prometheus"
print(urllib.request.urlopen(url, timeout=5).read().decode())
"""


def mesh_yaml(vip: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: tcp-echo, namespace: {NS}}}
spec:
  clusterIP: {vip}
  selector: {{app: tcp-echo}}
  ports: [{{name: tcp, port: {PORT}, targetPort: {PORT}}}]
"""


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[tuple[PodNet, ControlPlane, Pod, Pod, str, NetnsAgent]]:
    work = Path(tempfile.mkdtemp(prefix="mzt-tcp-"))
    work.chmod(0o755)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        net = stack.enter_context(PodNet(work))
        stack.push_async_callback(net.stop_processes)
        client, server = net.add_pod("a"), net.add_pod("b")
        for pod in (client, server):
            net.apply_iptables(pod, render_restore(CaptureConfig.for_sidecar(AGENT_ADMIN_PORT)))
        await net.start(server, [sys.executable, "-c", ECHO, str(PORT)], work / "echo.log")
        # workload certificates from a real CA over SDS: the sidecars talk auto mTLS
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
        pods = {"sleep-v1-5d8f7c6b9d-q2w3e": (client, "sleep"),
                "tcp-echo-v1-7c9b8d6f5c-r4t5y": (server, "tcp-echo")}
        agents: list[NetnsAgent] = []
        for name, (pod, app) in pods.items():
            labels = {"app": app, "version": "v1", TLS_MODE_LABEL: ISTIO_TLS_MODE}
            cp.register_workload(Workload(name=name, namespace=NS, address=pod.ip, labels=labels,
                                          service_account=app))
            sds_dir = work / f"sds-{pod.name}"
            ident = IdentityAgent(Identity(NS, app), target, creds.issue(NS, name, app), sds_dir / "socket",
                                  SecretManagerOptions(key_algorithm=KeyAlgorithm.ECDSA, backoff_start_s=0.1))
            await ident.start()
            stack.push_async_callback(ident.stop)
            for path in (sds_dir, sds_dir / "socket"):      # the pod's agent and its Envoy share a user
                os.chown(path, PROXY_UID, PROXY_UID)
            pod_dir = work / pod.name
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
            agents.append(agent)
            stack.push_async_callback(agent.stop)
        await asyncio.gather(*(a.start(ready_timeout=20) for a in agents))
        vip = f"{net.subnet}.250"
        result = cp.api.loader(mesh_yaml(vip), "tcp.yaml", NS)
        assert not result.errors, result.errors
        cp.store.apply(result.configs)
        await cp.wait_synced(timeout=10)
        yield net, cp, client, server, vip, agents[1]


PLAIN = b"ping\r\n"       # >= 5 bytes: Envoy's TLS inspector waits for a TLS record header's worth


def plaintext_call(ip: str, n: int) -> None:
    """``n`` connections from the host: outside the mesh, no certificate (PERMISSIVE takes them)."""
    for _ in range(n):
        with socket.create_connection((ip, PORT), timeout=5) as c:
            c.sendall(PLAIN)
            got = b""
            while len(got) < len(PLAIN) + 1 and (chunk := c.recv(64)):
                got += chunk
            assert got == PLAIN.upper() + b"!", got


async def _scrape(net: PodNet, pod: Pod) -> list[tuple[str, dict[str, str], float]]:
    rc, out = await net.run(pod, [sys.executable, "-c", SCRAPE, pod.ip, str(STATS_PORT)])
    assert rc == 0, out
    return parse(out)


async def test_tcp_metrics_source_and_destination() -> None:
    async with world() as (net, _cp, client, server, vip, server_agent):
        mtls, plain = {"connection_security_policy": "mutual_tls"}, {"connection_security_policy": "none"}
        for _ in range(50):       # the first connections after the push may race the listeners and secrets
            rc, out = await net.run(client, [sys.executable, "-c", CALL, vip, str(PORT), "1"])
            if rc == 0 and total(await _scrape(net, server), "istio_tcp_connections_opened_total", **mtls):
                break
            await asyncio.sleep(0.2)
        assert rc == 0, out
        s0, d0 = await _scrape(net, client), await _scrape(net, server)
        n, m = 4, 3
        rc, out = await net.run(client, [sys.executable, "-c", CALL, vip, str(PORT), str(n)])
        assert rc == 0 and "ok" in out, out
        await asyncio.to_thread(plaintext_call, server.ip, m)

        async def closed() -> tuple[list[tuple[str, dict[str, str], float]], ...]:
            for _ in range(50):
                s, d = await _scrape(net, client), await _scrape(net, server)
                name = "istio_tcp_connections_closed_total"
                if total(s, name) - total(s0, name) >= n and total(d, name) - total(d0, name) >= n + m:
                    return s, d
                await asyncio.sleep(0.2)
            return s, d
        s, d = await closed()
        raw = parse(await server_agent.admin_get("/stats/prometheus"))      # Envoy's own, before the agent
    # sent: the response ("PING!"), received: the request ("ping"), as Istio counts them
    for name, want in (("istio_tcp_connections_opened_total", n), ("istio_tcp_connections_closed_total", n),
                       ("istio_tcp_sent_bytes_total", 5 * n), ("istio_tcp_received_bytes_total", 4 * n)):
        assert total(s, name, reporter="source") - total(s0, name, reporter="source") == want, name
        assert total(d, name, reporter="destination", **mtls) - \
            total(d0, name, reporter="destination", **mtls) == want, name
    for name, want in (("istio_tcp_connections_opened_total", m), ("istio_tcp_connections_closed_total", m),
                       ("istio_tcp_sent_bytes_total", (len(PLAIN) + 1) * m),
                       ("istio_tcp_received_bytes_total", len(PLAIN) * m)):
        assert total(d, name, reporter="destination", **plain) - \
            total(d0, name, reporter="destination", **plain) == want, name
    [src] = series(s, "istio_tcp_connections_opened_total", reporter="source")
    want = {"source_workload": "sleep-v1", "source_app": "sleep", "source_workload_namespace": NS,
            "destination_workload": "tcp-echo-v1", "destination_app": "tcp-echo", "destination_version": "v1",
            "destination_workload_namespace": NS, "destination_canonical_service": "tcp-echo",
            "destination_service": f"tcp-echo.{NS}.svc.cluster.local", "destination_service_name": "tcp-echo",
            "destination_service_namespace": NS, "request_protocol": "tcp", "response_flags": "-"}
    assert {k: src.get(k) for k in want} == want
    dest = {k: v for k, v in want.items() if k.startswith("destination_")}
    # the server's view of the meshed client: its labels from the address map, trusted by its certificate
    client_labels = {"source_workload": "sleep-v1", "source_app": "sleep", "source_version": "v1",
                     "source_workload_namespace": NS, "source_principal": Identity(NS, "sleep").uri,
                     "source_canonical_service": "sleep", "source_canonical_revision": "v1",
                     "source_cluster": "Kubernetes"}
    unknown = {k: "unknown" for k in client_labels}
    for name in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                 "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"):
        [meshed] = series(d, name, reporter="destination", **mtls)
        assert {k: meshed.get(k) for k in (client_labels | dest)} == client_labels | dest, name
        [outside] = series(d, name, reporter="destination", **plain)
        assert {k: outside.get(k) for k in (unknown | dest)} == unknown | dest, name
        # Prometheus sees Istio's labels only: the peer address tag was expanded and dropped
        assert all("mizzen_peer_address" not in labels for _, labels, _ in d)
    # in Envoy only mTLS connections carry the peer's address (one stat per calling pod, not per outside
    # client); the plaintext ones have none
    opened = [labels for name, labels, _ in raw if name.endswith("istio_tcp_connections_opened_total")
              and labels.get("reporter") == "destination"]
    got = {(labels["connection_security_policy"], labels.get("mizzen_peer_address")) for labels in opened}
    assert got == {("mutual_tls", client.ip), ("none", None)}
