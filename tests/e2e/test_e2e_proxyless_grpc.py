"""Proxyless gRPC, as Istio supports it: a grpcio client dialing
``xds:///reviews.bookinfo.svc.cluster.local:9080`` with a bootstrap from Mizzen whose ``server_uri`` is the
agent's xDS proxy socket gets listeners (api_listener), routes, clusters and endpoints from the control plane
and follows VirtualService weights and header matches, calling real grpcio servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from e2e_world import NS, sample

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.grpc_bootstrap import GRPC_XDS_BOOTSTRAP_ENV, grpc_bootstrap, write_grpc_bootstrap
from mizzen.agent.xds_proxy import XdsProxy
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.e2e

TARGET = "reviews.bookinfo.svc.cluster.local:9080"
CLIENT = Path(__file__).with_name("proxyless_client.py")
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: grpc, port: 9080}]
"""


async def who_server(ip: str, name: str) -> grpc.aio.Server:
    """A real gRPC server on ip:9080 answering /mizzen.test.Who/Name with its pod name."""
    async def who(_req: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        return name.encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "mizzen.test.Who", {"Name": grpc.unary_unary_rpc_method_handler(who)}),))
    assert server.add_insecure_port(f"{ip}:9080")
    await server.start()
    return server


class Client:
    """The proxyless client process (its own GRPC_XDS_BOOTSTRAP), fed one batch of calls at a time."""

    def __init__(self, bootstrap: Path) -> None:
        env = {**os.environ, GRPC_XDS_BOOTSTRAP_ENV: str(bootstrap), "GRPC_VERBOSITY": "ERROR"}
        env.pop("http_proxy", None)
        env.pop("HTTP_PROXY", None)
        self.proc = subprocess.Popen([sys.executable, str(CLIENT), TARGET], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)

    async def calls(self, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"n": n, "headers": headers or {}}) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        assert line, f"client exited with {self.proc.poll()}"
        return Counter(json.loads(line))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
async def reviews(mesh: Mesh) -> AsyncIterator[dict[str, str]]:
    """reviews v1, v2, v3 as gRPC servers registered as workloads; version -> pod name."""
    servers, pods = [], {}
    for version in ("v1", "v2", "v3"):
        ip = alloc_ip()
        pod = f"reviews-{version}-grpc"
        servers.append(await who_server(ip, pod))
        mesh.cp.register_workload(Workload(name=pod, namespace=NS, address=ip,
                                           labels={"app": "reviews", "version": version}))
        pods[version] = pod
    try:
        yield pods
    finally:
        for v in ("v1", "v2", "v3"):
            mesh.cp.remove_workload(NS, pods[v])
        for s in servers:
            await s.stop(0)


def client_spec() -> ProxySpec:
    return ProxySpec(type=ProxyType.SIDECAR, ip=alloc_ip(), namespace=NS, name="grpc-client-1",
                     admin_port=0, labels={"app": "grpc-client"})


def test_grpc_bootstrap_points_at_the_agent_socket() -> None:
    doc = grpc_bootstrap(client_spec(), "unix:///run/mizzen/XDS")
    assert doc["xds_servers"] == [{"server_uri": "unix:///run/mizzen/XDS",
                                   "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}]
    assert doc["node"]["id"].startswith("sidecar~") and doc["node"]["metadata"]["GENERATOR"] == "grpc"
    assert doc["node"]["metadata"]["NAMESPACE"] == NS


async def test_proxyless_grpc_follows_weights_and_header_matches(mesh: Mesh, reviews: dict[str, str]) -> None:
    await mesh.apply_yaml(SERVICE, namespace=NS)
    await mesh.apply_yaml(sample("destination-rule-all.yaml"), namespace=NS)
    await mesh.apply_yaml(sample("virtual-service-reviews-jason-v2-v3.yaml"), namespace=NS)
    with tempfile.TemporaryDirectory(prefix="mizzen-grpc-") as tmp:
        spec = client_spec()
        proxy = XdsProxy(Path(tmp) / "XDS", f"127.0.0.1:{mesh.cp.xds_port}")
        await proxy.start()
        bootstrap = write_grpc_bootstrap(Path(tmp) / "grpc-bootstrap.json", spec, proxy.server_uri)
        client = Client(bootstrap)
        try:
            # header match: jason -> v2, everyone else -> v3
            assert await client.calls(10, {"end-user": "jason"}) == Counter({reviews["v2"]: 10})
            assert await client.calls(10) == Counter({reviews["v3"]: 10})
            assert proxy.streams >= 1   # the client reached the control plane through the agent's socket

            # the control plane served the proxyless form: api_listener LDS, host:port RDS, EDS clusters
            await mesh.wait_synced()
            snap = mesh.cp.cache.get(spec.node_id)
            assert snap is not None
            assert TARGET in snap.of(LISTENER).resources and TARGET in snap.of(ROUTE).resources
            assert "outbound|9080|v2|reviews.bookinfo.svc.cluster.local" in snap.of(CLUSTER).resources
            assert "outbound|9080|v2|reviews.bookinfo.svc.cluster.local" in snap.of(ENDPOINT).resources
            status = mesh.cp.ads.status.to_dict()
            mine = next(p for p in status if p["proxy"] == spec.node_id)
            assert {t: v["status"] for t, v in mine["types"].items()} == {
                "CDS": "SYNCED", "EDS": "SYNCED", "LDS": "SYNCED", "RDS": "SYNCED"}, mine

            # weights: Istio's 80/20 sample (v1/v2), pushed to the running client
            await mesh.apply_yaml(sample("virtual-service-reviews-80-20.yaml"), namespace=NS)

            async def weighted() -> Counter[str]:
                seen = await client.calls(200)
                assert set(seen) == {reviews["v1"], reviews["v2"]}, seen
                return seen
            seen = await eventually(weighted, timeout=15)
            assert 130 <= seen[reviews["v1"]] <= 190, seen   # 80% of 200 = 160, generous for 200 draws
        finally:
            client.stop()
            await proxy.stop()
