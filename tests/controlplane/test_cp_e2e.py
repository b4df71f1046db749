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
