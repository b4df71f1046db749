"""CDS/EDS behaviour in real Envoy through the whole mesh: the seed's ratings circuit breaker (section 4.7:
overflow 503s under concurrency, none without), outlier ejection of a failing endpoint, and endpoint updates
when workloads come and go."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from harness import Mesh, eventually, mesh  # noqa: F401  (mesh is a fixture)

pytestmark = pytest.mark.e2e

RATINGS_SVC = """
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
"""

SEED_RATINGS_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 3}
      http: {http1MaxPendingRequests: 1}
    outlierDetection: {consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 3m, maxEjectionPercent: 100}
  subsets:
  - labels: {version: v1}
    name: v1
"""

URL = "http://ratings.bookinfo.svc.cluster.local:9080/ratings/0"


async def _burst(client: httpx.AsyncClient, concurrency: int, total: int) -> list[httpx.Response]:
    """``total`` requests with at most ``concurrency`` in flight (like ``fortio load -c C -n N``)."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> httpx.Response:
        async with sem:
            return await client.get(URL)

    return list(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(total))), timeout=30))


async def test_seed_ratings_circuit_breaker(mesh: Mesh) -> None:  # noqa: F811
    ratings = await mesh.backend("ratings", "v1", namespace="bookinfo")
    ratings.delay_s = 0.3
    client = await mesh.sidecar("bookinfo", "fortio-a", {"app": "fortio"})
    await mesh.apply_yaml(RATINGS_SVC + "---" + SEED_RATINGS_DR)
    await mesh.wait_synced()
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    async with mesh.client_via(client, timeout=20, limits=limits) as http:
        async def reachable() -> None:
            assert (await http.get(URL)).status_code == 200
        await eventually(reachable, timeout=10)
        calm = await _burst(http, 2, 10)
        assert [r.status_code for r in calm] == [200] * 10
        ratings.reset_counts()
        storm = await _burst(http, 20, 20)
    codes = [r.status_code for r in storm]
    overflow = [r for r in storm if r.status_code == 503]
    assert overflow, codes
    assert 200 in codes
    # Envoy's overflow answer, not the backend's: the backend only saw the admitted requests
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflow)
    assert ratings.requests == codes.count(200)


async def test_outlier_detection_ejects_failing_endpoint(mesh: Mesh) -> None:  # noqa: F811
    good = await mesh.backend("ratings", "v1", namespace="bookinfo")
    bad = await mesh.backend("ratings", "v1", namespace="bookinfo")
    bad.fail(500)
    client = await mesh.sidecar("bookinfo", "fortio-b", {"app": "fortio"})
    await mesh.apply_yaml(RATINGS_SVC + "---" + SEED_RATINGS_DR)
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def both_endpoints_known() -> None:
            r = await http.get(URL)
            assert r.status_code in (200, 500)
            assert good.requests > 0 and bad.requests > 0
        await eventually(both_endpoints_known, timeout=10)
        before = bad.requests
        codes = [(await http.get(URL)).status_code for _ in range(20)]
    # ejected after its first 5xx (consecutive5xxErrors: 1) for baseEjectionTime 3m: no more traffic
    assert bad.requests - before <= 1, (before, bad.requests)
    assert codes.count(200) >= 19


async def test_endpoints_follow_workloads(mesh: Mesh) -> None:  # noqa: F811
    first = await mesh.backend("ratings", "v1", namespace="bookinfo")
    client = await mesh.sidecar("bookinfo", "fortio-c", {"app": "fortio"})
    await mesh.apply_yaml(RATINGS_SVC)
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def served_by(ip: str) -> None:
            r = await http.get(URL)
            assert r.status_code == 200 and r.json()["ip"] == ip

        await eventually(lambda: served_by(first.ip), timeout=10)
        second = await mesh.backend("ratings", "v2", namespace="bookinfo")
        mesh.cp.remove_workload(first.namespace, first.pod)
        await mesh.wait_synced()
        await eventually(lambda: served_by(second.ip), timeout=10)


async def test_allow_any_passthrough_in_local_mode(mesh: Mesh) -> None:  # noqa: F811
    """ALLOW_ANY: a request through the HTTP proxy to an unregistered ``ip:port`` reaches it (the local-mode
    PassthroughCluster takes the destination from the authority); an unknown host name gets a 503."""
    outside = await mesh.backend("outside", "v1", namespace="elsewhere", register=False)
    client = await mesh.sidecar("bookinfo", "fortio-d", {"app": "fortio"})
    await mesh.apply_yaml(RATINGS_SVC)
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def passes() -> None:
            r = await http.get(f"{outside.url}/anything")
            assert r.status_code == 200 and r.json()["path"] == "/anything"
        await eventually(passes, timeout=10)
        assert (await http.get("http://unknown.invalid:8080/")).status_code == 503


async def test_passthrough_load_balancer_keeps_serving_in_local_mode(mesh: Mesh) -> None:  # noqa: F811
    """Seed 4.6 ``simple: PASSTHROUGH``: in Kubernetes the original destination is the Service VIP and
    kube-proxy picks a pod; in local mode the cluster keeps its endpoints and picks one at random."""
    a = await mesh.backend("ratings", "v1", namespace="bookinfo")
    b = await mesh.backend("ratings", "v2", namespace="bookinfo")
    client = await mesh.sidecar("bookinfo", "fortio-e", {"app": "fortio"})
    await mesh.apply_yaml(RATINGS_SVC + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
""")
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def serving() -> None:
            assert (await http.get(URL)).status_code == 200
        await eventually(serving, timeout=10)
        codes = [(await http.get(URL)).status_code for _ in range(40)]
    assert codes == [200] * 40
    assert a.requests > 0 and b.requests > 0


async def test_unhealthy_endpoints_get_no_traffic(mesh: Mesh) -> None:  # noqa: F811
    """An unready workload is sent as UNHEALTHY and the panic threshold is off, so Envoy does not fall back
    to it even when it is the only endpoint (Istio never routes to unready pods)."""
    only = await mesh.backend("ratings", "v1", namespace="bookinfo", register=False)
    mesh.cp.register_workload(dataclasses.replace(only.workload(), healthy=False))
    client = await mesh.sidecar("bookinfo", "fortio-f", {"app": "fortio"})
    await mesh.apply_yaml(RATINGS_SVC)
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def refused() -> None:
            r = await http.get(URL)
            assert r.status_code == 503 and "no healthy upstream" in r.text
        await eventually(refused, timeout=10)
        assert only.requests == 0
        mesh.cp.register_workload(only.workload())   # ready again
        await mesh.wait_synced()

        async def served() -> None:
            assert (await http.get(URL)).status_code == 200
        await eventually(served, timeout=10)
    mesh.cp.remove_workload(only.namespace, only.pod)
