"""End to end with Istio's own reviews YAML: Service + DestinationRule + VirtualService applied to the control
plane, backends v1/v2 registered as workloads, a client going through a real sidecar Envoy. Routing follows
the VirtualService, a live change reaches Envoy within a second, and /debug/syncz reports SYNCED."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from harness import Mesh, mesh  # noqa: F401  (mesh is a fixture)

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "samples" / "bookinfo"
NETWORKING = FIXTURES / "networking"

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews, service: reviews}
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: reviews
"""


def vs_to(subset: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: {subset}
"""


async def versions(http: httpx.AsyncClient, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = await http.get("http://reviews:9080/reviews/0", headers=headers)
        assert r.status_code == 200, r.text
        seen[r.json()["version"]] += 1
    return seen


async def test_reviews_routing_follows_virtual_service(mesh: Mesh) -> None:  # noqa: F811
    v1 = await mesh.backend("reviews", "v1", namespace="bookinfo", port=9080)
    v2 = await mesh.backend("reviews", "v2", namespace="bookinfo", port=9080)
    client = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"})
    dr = (NETWORKING / "destination-rule-reviews.yaml").read_text()
    text = SERVICE + "---\n" + dr + "---\n" + vs_to("v1")
    await mesh.apply_yaml(text, namespace="bookinfo", file="reviews.yaml")
    await mesh.wait_synced()

    async with mesh.client_via(client) as http:
        assert await versions(http, 10) == Counter({"v1": 10})
        r = await http.get("http://reviews:9080/reviews/7?x=1")
        assert r.json()["path"] == "/reviews/7?x=1" and r.json()["method"] == "GET"
        assert v1.requests == 11 and v2.requests == 0

        # a live change: v2 within a second of the apply
        start = time.monotonic()
        await mesh.apply_yaml(vs_to("v2"), namespace="bookinfo")
        while True:
            if (await http.get("http://reviews:9080/reviews/0")).json()["version"] == "v2":
                break
            assert time.monotonic() - start < 1.0, "VirtualService change did not reach Envoy within 1 s"
        elapsed = time.monotonic() - start
        assert elapsed < 1.0
        assert await versions(http, 10) == Counter({"v2": 10})

        # Istio's header-match sample: jason -> v2, everyone else -> v1
        await mesh.apply_yaml((NETWORKING / "virtual-service-reviews-test-v2.yaml").read_text(),
                              namespace="bookinfo")
        await mesh.wait_synced()
        assert await versions(http, 5, {"end-user": "jason"}) == Counter({"v2": 5})
        assert await versions(http, 5, {"end-user": "mary"}) == Counter({"v1": 5})

    async with mesh.api_client() as api:
        (entry,) = (await api.get("/debug/syncz")).json()
        assert entry["proxy"] == client.node_id
        statuses = {t: s["status"] for t, s in entry["types"].items()}
        assert statuses["CDS"] == statuses["LDS"] == statuses["RDS"] == statuses["EDS"] == "SYNCED", statuses


PRODUCTPAGE = """\
apiVersion: v1
kind: Service
metadata:
  name: productpage
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: productpage
"""


async def test_bookinfo_gateway_routes_to_productpage(mesh: Mesh) -> None:  # noqa: F811
    page = await mesh.backend("productpage", "v1", namespace="bookinfo", port=9080)
    gw = await mesh.gateway()
    await mesh.apply_yaml(PRODUCTPAGE + "---\n" + (NETWORKING / "bookinfo-gateway.yaml").read_text(),
                          namespace="bookinfo")
    await mesh.wait_synced()
    async with mesh.gateway_client(gw, 8080) as http:
        r = await http.get("/productpage", headers={"Host": "bookinfo.example.com"})
        assert r.status_code == 200, r.text
        assert r.json()["service"] == "productpage" and r.json()["path"] == "/productpage"
        assert (await http.get("/api/v1/products/1")).json()["path"] == "/api/v1/products/1"
        assert (await http.get("/admin")).status_code == 404          # no route matches
    assert page.requests == 2


async def test_backend_failure_injection_is_visible_through_the_mesh(mesh: Mesh) -> None:  # noqa: F811
    v1 = await mesh.backend("reviews", "v1", namespace="bookinfo", port=9080)
    client = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage"})
    await mesh.apply_yaml(SERVICE, namespace="bookinfo")
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        # Istio's default retry policy retries a 503 twice (retriable-status-codes), like istiod's routes
        v1.fail(503, times=1)
        assert (await http.get("http://reviews:9080/")).status_code == 200
        assert v1.requests == 2
        v1.reset_counts()
        v1.fail(503)
        assert (await http.get("http://reviews:9080/")).status_code == 503
        assert v1.requests == 3
        v1.heal()
        v1.reset_counts()
        v1.delay_s = 0.3
        t = time.monotonic()
        assert (await http.get("http://reviews:9080/")).status_code == 200
        assert time.monotonic() - t >= 0.3 and v1.requests == 1


def dr_with_lb(policy: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: {policy}
"""


async def test_destination_rule_change_on_existing_cluster_syncs_quickly(mesh: Mesh) -> None:  # noqa: F811
    """A changed cluster needs its endpoints re-sent, or Envoy warms it until initial_fetch_timeout."""
    await mesh.backend("reviews", "v1", namespace="bookinfo", port=9080)
    client = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage"})
    await mesh.apply_yaml(SERVICE + "---\n" + dr_with_lb("RANDOM"), namespace="bookinfo")
    await mesh.wait_synced()
    await mesh.apply_yaml(dr_with_lb("LEAST_REQUEST"), namespace="bookinfo")
    await mesh.wait_synced(timeout=2)
    dump = await client.admin_get("/config_dump?resource=dynamic_active_clusters")
    assert "LEAST_REQUEST" in dump


async def test_backend_with_its_own_sidecar(mesh: Mesh) -> None:  # noqa: F811
    v1 = await mesh.backend("reviews", "v1", namespace="bookinfo", port=9080, sidecar=True)
    assert v1.sidecar is not None and v1.address == v1.sidecar.spec.ip != v1.ip
    client = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage"})
    await mesh.apply_yaml(SERVICE, namespace="bookinfo")
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        r = await http.get("http://reviews:9080/reviews/1")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v1" and v1.requests == 1
    # the request went client sidecar -> server sidecar (inbound) -> app
    inbound = await v1.sidecar.admin_get("/stats?filter=inbound.*upstream_rq_total")
    assert any(line.rstrip().endswith(": 1") for line in inbound.splitlines()), inbound
