"""Istio's TCP metrics in REDIRECT mode, as root: a client pod connects to a TCP Service's cluster IP; its
sidecar (reporter=source) and the server pod's sidecar (reporter=destination) count exactly the connections
opened and closed and the bytes each way, with the destination's labels from endpoint metadata and the
service from cluster metadata; the server side does not know its TCP peer before mTLS (``unknown``). Scraped
from each proxy's ``:15090`` inside its pod."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
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
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload

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
async def world() -> AsyncIterator[tuple[PodNet, ControlPlane, Pod, Pod, str]]:
    work = Path(tempfile.mkdtemp(prefix="mzt-tcp-"))
    work.chmod(0o755)
    agents: list[NetnsAgent] = []
    cp: ControlPlane | None = None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        net = cleanup.enter_context(PodNet(work))
        try:
            client, server = net.add_pod("a"), net.add_pod("b")
            for pod in (client, server):
                net.apply_iptables(pod, render_restore(CaptureConfig.for_sidecar(AGENT_ADMIN_PORT)))
            await net.start(server, [sys.executable, "-c", ECHO, str(PORT)], work / "echo.log")
            cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_host=net.host_ip, xds_port=0,
                                                  http_port=None, debounce_quiet_s=0.05, debounce_max_s=0.5,
                                                  restore_workloads=False))
            await cp.start()
            pods = {"sleep-v1-5d8f7c6b9d-q2w3e": (client, {"app": "sleep", "version": "v1"}),
                    "tcp-echo-v1-7c9b8d6f5c-r4t5y": (server, {"app": "tcp-echo", "version": "v1"})}
            for name, (pod, labels) in pods.items():
                cp.register_workload(Workload(name=name, namespace=NS, address=pod.ip, labels=labels))
                pod_dir = work / pod.name
                pod_dir.mkdir()
                os.chown(pod_dir, PROXY_UID, PROXY_UID)
                spec = ProxySpec(type=ProxyType.SIDECAR, ip=pod.ip, namespace=NS, name=name,
                                 admin_port=AGENT_ADMIN_PORT, xds_host=net.host_ip, xds_port=cp.xds_port,
                                 labels=labels, interception_mode="REDIRECT", http_proxy_port=0)
                agents.append(NetnsAgent(spec, pod, AgentOptions(work_dir=pod_dir, concurrency=1)))
            await asyncio.gather(*(a.start(ready_timeout=20) for a in agents))
            vip = f"{net.subnet}.250"
            result = cp.api.loader(mesh_yaml(vip), "tcp.yaml", NS)
            assert not result.errors, result.errors
            cp.store.apply(result.configs)
            await cp.wait_synced(timeout=10)
            yield net, cp, client, server, vip
        finally:
            await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
            if cp is not None:
                await cp.stop()
            await net.stop_processes()


async def _scrape(net: PodNet, pod: Pod) -> list[tuple[str, dict[str, str], float]]:
    rc, out = await net.run(pod, [sys.executable, "-c", SCRAPE, pod.ip, str(STATS_PORT)])
    assert rc == 0, out
    return parse(out)


async def test_tcp_metrics_source_and_destination() -> None:
    async with world() as (net, _cp, client, server, vip):
        for _ in range(50):       # the first connection after the push may race the listeners
            rc, out = await net.run(client, [sys.executable, "-c", CALL, vip, str(PORT), "1"])
            if rc == 0:
                break
            await asyncio.sleep(0.2)
        assert rc == 0, out
        s0, d0 = await _scrape(net, client), await _scrape(net, server)
        n = 4
        rc, out = await net.run(client, [sys.executable, "-c", CALL, vip, str(PORT), str(n)])
        assert rc == 0 and "ok" in out, out

        async def closed() -> tuple[list[tuple[str, dict[str, str], float]], ...]:
            for _ in range(50):
                s, d = await _scrape(net, client), await _scrape(net, server)
                name = "istio_tcp_connections_closed_total"
                if total(s, name) - total(s0, name) >= n and total(d, name) - total(d0, name) >= n:
                    return s, d
                await asyncio.sleep(0.2)
            return s, d
        s, d = await closed()
    for after, before, rep in ((s, s0, "source"), (d, d0, "destination")):
        # sent: the response ("PING!"), received: the request ("ping"), as Istio counts them
        for name, want in (("istio_tcp_connections_opened_total", n),
                           ("istio_tcp_connections_closed_total", n),
                           ("istio_tcp_sent_bytes_total", 5 * n), ("istio_tcp_received_bytes_total", 4 * n)):
            assert total(after, name, reporter=rep) - total(before, name, reporter=rep) == want, (rep, name)
    [src] = series(s, "istio_tcp_connections_opened_total", reporter="source")
    want = {"source_workload": "sleep-v1", "source_app": "sleep", "source_workload_namespace": NS,
            "destination_workload": "tcp-echo-v1", "destination_app": "tcp-echo", "destination_version": "v1",
            "destination_workload_namespace": NS, "destination_canonical_service": "tcp-echo",
            "destination_service": f"tcp-echo.{NS}.svc.cluster.local", "destination_service_name": "tcp-echo",
            "destination_service_namespace": NS, "request_protocol": "tcp", "response_flags": "-"}
    assert {k: src.get(k) for k in want} == want
    [dst] = series(d, "istio_tcp_connections_opened_total", reporter="destination")
    assert {k: dst.get(k) for k in want if k.startswith("destination_")} == {
        k: v for k, v in want.items() if k.startswith("destination_")}
    assert dst["source_workload"] == "unknown" and dst["connection_security_policy"] == "none"
