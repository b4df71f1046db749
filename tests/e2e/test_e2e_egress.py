"""Istio's "Egress Gateways" task (HTTP) end to end with real Envoys: the runner's ``istio-egressgateway``
(what ``mizzen demo`` runs) behind its Service, a sidecar, and Istio's ServiceEntry + Gateway +
DestinationRule + VirtualService (``tests/fixtures/egress``) sending the sidecar's request for
``edition.cnn.com`` through the egress gateway to a local stand-in for the external host."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness import Mesh, eventually
from mizzen.runner import InProcessRegistrar, LocalRunner
from mizzen.runner.gateway import EGRESS_SERVICE_YAML

pytestmark = pytest.mark.e2e

TASK = Path(__file__).resolve().parents[1] / "fixtures" / "egress" / "egress-gateway-http.yaml"


def stats(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


async def test_mesh_traffic_for_an_external_host_leaves_through_the_egress_gateway(mesh: Mesh) -> None:
    standin = await mesh.backend("edition-cnn-com", register=False)      # the "external" site, not in mesh
    runner = LocalRunner(InProcessRegistrar(mesh.cp))
    try:
        egress = await runner.start_egress_gateway(xds_port=mesh.cp.xds_port, ready_timeout=20)
        (pod,) = runner.pods("istio-system")
        assert pod.registered and pod.labels == {"istio": "egressgateway", "app": "istio-egressgateway"}
        await mesh.apply_yaml(EGRESS_SERVICE_YAML)
        task = TASK.read_text().replace("127.0.0.77", standin.ip).replace("http-port: 18077",
                                                                           f"http-port: {standin.port}")
        await mesh.apply_yaml(task, namespace="default")
        client = await mesh.sidecar("default", "sleep-0", {"app": "sleep"})
        await mesh.wait_synced()

        async def through_egress() -> None:
            async with mesh.client_via(client) as http:
                r = await http.get("http://edition.cnn.com/politics")
            assert r.status_code == 200, r.text
            assert r.json()["path"] == "/politics" and r.json()["headers"]["Host"] == "edition.cnn.com"

        await eventually(through_egress, timeout=10)
        assert standin.requests >= 1
        seen = stats(await egress.admin_get("/stats"))
        # the egress gateway's own listener took the request and sent it to the external host's cluster
        assert seen.get(f"http.outbound_{egress.spec.ip}_8080.downstream_rq_2xx", 0) >= 1, seen
        assert seen.get("cluster.outbound|80||edition.cnn.com.upstream_rq_200", 0) >= 1, seen
        # the sidecar sent it to the egress gateway (subset cnn), not straight to the site
        side = stats(await client.admin_get("/stats"))
        egress_cluster = "cluster.outbound|80|cnn|istio-egressgateway.istio-system.svc.cluster.local"
        assert side.get(f"{egress_cluster}.upstream_rq_200", 0) >= 1, side
        assert side.get("cluster.outbound|80||edition.cnn.com.upstream_rq_total", 0) == 0, side

        # without the VirtualService the sidecar goes to the site directly (the egress gateway sees nothing)
        site = "cluster.outbound|80||edition.cnn.com.upstream_rq_200"
        before = stats(await egress.admin_get("/stats")).get(site)
        vs = task[task.index("kind: VirtualService") - len("apiVersion: networking.istio.io/v1\n"):]
        await mesh.delete_yaml(vs, namespace="default")
        await mesh.wait_synced()
        async with httpx.AsyncClient(proxy=f"http://{client.spec.ip}:15080", trust_env=False) as http:
            assert (await http.get("http://edition.cnn.com/direct")).json()["path"] == "/direct"
        assert stats(await egress.admin_get("/stats")).get(site) == before
    finally:
        await runner.stop()
    assert runner.status() == [] and not mesh.cp.registry.workloads()
