"""Auto mTLS and PeerAuthentication with real Envoys and real certificates (local mode: inbound listeners on
the pod address). Each sidecar gets its workload certificate over SDS from its own identity agent, signed by
a real CA (see mtls_kit); the control plane's translation decides who speaks TLS to whom.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from mtls_kit import MtlsMesh, mtls_mesh, plaintext_refused, spiffe

from harness import Backend, Mesh, alloc_ip, eventually

pytestmark = pytest.mark.e2e

NS = "bookinfo"
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
"""


def pa(name: str, mode: str, selector: dict[str, str] | None = None, ports: dict[int, str] | None = None,
       namespace: str = NS) -> str:
    lines = ["apiVersion: security.istio.io/v1", "kind: PeerAuthentication",
             f"metadata: {{name: {name}, namespace: {namespace}}}", "spec:"]
    if selector:
        lines.append(f"  selector: {{matchLabels: {selector}}}")
    lines.append(f"  mtls: {{mode: {mode}}}")
    if ports:
        lines.append("  portLevelMtls:")
        lines.extend(f"    \"{p}\": {{mode: {m}}}" for p, m in ports.items())
    return "\n".join(lines) + "\n"


@pytest.fixture
async def world() -> AsyncIterator[tuple[MtlsMesh, Backend, httpx.AsyncClient]]:
    """A control plane, a CA, reviews (with an identity sidecar) and a productpage sidecar that calls it."""
    async with Mesh() as mesh, mtls_mesh(mesh) as m:
        await mesh.apply_yaml(SERVICES)
        reviews = await m.backend("reviews")
        client = await m.identity_sidecar(NS, "productpage-v1-abc", {"app": "productpage", "version": "v1"},
                                          "bookinfo-productpage")
        await mesh.wait_synced()
        async with mesh.client_via(client) as http:
            yield m, reviews, http


async def _get(http: httpx.AsyncClient) -> dict[str, str]:
    async def ok() -> dict[str, str]:
        r = await http.get("http://reviews:9080/reviews/0")
        assert r.status_code == 200, r.text
        return {k.lower(): v for k, v in r.json()["headers"].items()}
    return await eventually(ok, timeout=15)


def _direct(b: Backend) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://{b.address}:{b.port}", timeout=5, trust_env=False)


async def test_sidecar_to_sidecar_is_mtls_and_the_server_sees_the_callers_spiffe_id(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    _m, reviews, http = world
    headers = await _get(http)
    xfcc = headers.get("x-forwarded-client-cert", "")
    assert f"By={spiffe(NS, 'bookinfo-reviews')}" in xfcc, headers
    assert f"URI={spiffe(NS, 'bookinfo-productpage')}" in xfcc, headers
    assert reviews.sidecar is not None
    stats = await reviews.sidecar.admin_get("/stats?filter=^listener\\..*ssl\\.handshake$")
    handshakes = [int(line.rpartition(" ")[2]) for line in stats.splitlines() if line.strip()]
    assert handshakes and sum(handshakes) >= 1, stats


async def test_permissive_by_default_accepts_plaintext_from_outside_too(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    _m, reviews, http = world
    await _get(http)
    async with _direct(reviews) as direct:
        r = await direct.get("/plain")
        assert r.status_code == 200
        assert "x-forwarded-client-cert" not in {k.lower() for k in r.json()["headers"]}


async def test_strict_refuses_1000_of_1000_plaintext_attempts_and_mtls_still_works(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    m, reviews, http = world
    mesh = m.mesh
    await mesh.apply_yaml(pa("default", "STRICT"))
    await mesh.wait_synced()
    await eventually(lambda: asyncio.to_thread(plaintext_refused, reviews.address, reviews.port), timeout=10)

    def attempts() -> int:
        return sum(plaintext_refused(reviews.address, reviews.port) for _ in range(1000))

    assert await asyncio.wait_for(asyncio.to_thread(attempts), 120) == 1000
    assert reviews.paths.count("/plain") == 0
    headers = await _get(http)
    assert f"URI={spiffe(NS, 'bookinfo-productpage')}" in headers.get("x-forwarded-client-cert", "")


async def _inbound_connections(b: Backend) -> int:
    """Downstream connections ever accepted by the backend sidecar's inbound listeners."""
    assert b.sidecar is not None
    stats = await b.sidecar.admin_get("/stats?filter=^listener\\.[0-9].*\\.downstream_cx_total$")
    return sum(int(line.rpartition(" ")[2]) for line in stats.splitlines() if line.strip())


async def test_permissive_to_strict_keeps_the_open_mtls_connections(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    """Going STRICT only removes the plaintext chain: the caller's pooled mTLS connection to reviews carries
    on (no new inbound connection, no failed request), while plaintext from outside is refused."""
    m, reviews, http = world
    mesh = m.mesh
    await _get(http)
    before = await _inbound_connections(reviews)
    assert before >= 1
    failures = 0

    async def traffic(n: int) -> None:
        nonlocal failures
        for _ in range(n):
            r = await http.get("http://reviews:9080/reviews/0")
            failures += r.status_code != 200
            await asyncio.sleep(0.02)

    running = asyncio.create_task(traffic(150))
    await mesh.apply_yaml(pa("default", "STRICT"))
    await mesh.wait_synced()
    await eventually(lambda: asyncio.to_thread(plaintext_refused, reviews.address, reviews.port), timeout=10)
    await running
    await traffic(20)
    assert failures == 0
    assert await _inbound_connections(reviews) == before


async def test_workload_and_port_level_policies_override_the_namespace(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    m, reviews, http = world
    mesh = m.mesh
    ratings = await m.backend("ratings", port=9081)
    await mesh.apply_yaml("""
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9081}]
""")
    await mesh.apply_yaml(pa("default", "STRICT"))
    # the workload policy of reviews: PERMISSIVE; ratings: STRICT but DISABLE on its port 9081
    await mesh.apply_yaml(pa("reviews", "PERMISSIVE", {"app": "reviews"}))
    await mesh.apply_yaml(pa("ratings", "STRICT", {"app": "ratings"}, {9081: "DISABLE"}))
    await mesh.wait_synced()

    async def plain_ok(b: Backend) -> None:
        async with _direct(b) as direct:
            assert (await direct.get("/plain")).status_code == 200

    await eventually(lambda: plain_ok(reviews), timeout=10)
    await eventually(lambda: plain_ok(ratings), timeout=10)
    # the namespace says STRICT, the workload policy without port overrides: a plain workload in it refuses
    await mesh.delete_yaml(pa("reviews", "PERMISSIVE", {"app": "reviews"}))
    await mesh.wait_synced()
    await eventually(lambda: asyncio.to_thread(plaintext_refused, reviews.address, reviews.port), timeout=10)
    headers = await _get(http)
    assert f"URI={spiffe(NS, 'bookinfo-productpage')}" in headers.get("x-forwarded-client-cert", "")


async def test_mesh_wide_strict_in_the_root_namespace_and_namespace_disable_wins(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    m, reviews, http = world
    mesh = m.mesh
    await mesh.apply_yaml(pa("default", "STRICT", namespace="istio-system"))
    await mesh.wait_synced()
    await eventually(lambda: asyncio.to_thread(plaintext_refused, reviews.address, reviews.port), timeout=10)
    await mesh.apply_yaml(pa("default", "DISABLE"))
    await mesh.wait_synced()
    # DISABLE in the namespace: the server is plaintext and clients' auto mTLS sends plaintext (Istio infers
    # the namespace's mode), so in-mesh traffic keeps working, without a client certificate
    headers = await _get(http)
    assert "x-forwarded-client-cert" not in headers
    async with _direct(reviews) as direct:
        assert (await direct.get("/plain")).status_code == 200


async def test_workload_without_sidecar_gets_plaintext_from_auto_mtls(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    """Auto mTLS looks at each endpoint's tlsMode label: a pod without a sidecar is called in plaintext."""
    m, _reviews, _http = world
    mesh = m.mesh
    await mesh.apply_yaml(SERVICES.replace("reviews", "details"))
    plain = Backend(service="details", version="v1", namespace=NS, pod="details-v1-plain",
                    ip=alloc_ip(), port=9080, labels={"app": "details"})
    await plain.start()
    m.stack.push_async_callback(plain.stop)
    mesh.cp.register_workload(plain.workload())
    m.stack.callback(mesh.cp.remove_workload, NS, plain.pod)
    client = await m.identity_sidecar(NS, "productpage-v1-two", {"app": "productpage"},
                                      "bookinfo-productpage")
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def ok() -> None:
            r = await http.get("http://details:9080/details/0")
            assert r.status_code == 200, r.text
        await eventually(ok, timeout=15)


async def test_ingress_gateway_reaches_a_strict_namespace_over_mtls(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    m, reviews, _http = world
    mesh = m.mesh
    gw = await m.identity_gateway()
    await mesh.apply_yaml(pa("default", "STRICT"))
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: reviews, port: {number: 9080}}}]}]
""", namespace=NS)
    await mesh.wait_synced()
    await eventually(lambda: asyncio.to_thread(plaintext_refused, reviews.address, reviews.port), timeout=10)
    async with mesh.gateway_client(gw) as client:
        async def ok() -> str:
            r = await client.get("/reviews/0")
            assert r.status_code == 200, r.text
            return str({k.lower(): v for k, v in r.json()["headers"].items()}.get("x-forwarded-client-cert"))
        xfcc = await eventually(ok, timeout=15)
    assert f"URI={spiffe('istio-system', 'istio-ingressgateway-service-account')}" in xfcc


async def test_a_new_service_account_behind_a_service_reaches_connected_clients(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    """Istio pushes clusters (not only endpoints) when the service accounts behind a service change: a
    client connected before the new pod would otherwise check the server against stale SPIFFE IDs."""
    m, reviews, http = world
    mesh = m.mesh
    await _get(http)                       # the client's reviews cluster accepts bookinfo-reviews only
    other = await m.backend("reviews", "v2", service_account="reviews-v2-sa")
    mesh.cp.remove_workload(reviews.namespace, reviews.pod)
    await mesh.wait_synced()
    headers = await _get(http)
    assert f"By={spiffe(NS, 'reviews-v2-sa')}" in headers.get("x-forwarded-client-cert", "")
    assert other.requests >= 1


async def test_authorization_principals_see_the_mtls_peer_identity(
        world: tuple[MtlsMesh, Backend, httpx.AsyncClient]) -> None:
    """AuthorizationPolicy ``principals`` match the SPIFFE ID the peer proved in the mTLS handshake."""
    m, _reviews, http = world
    mesh = m.mesh
    await mesh.apply_yaml(pa("default", "STRICT"))
    await mesh.apply_yaml("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/bookinfo/sa/bookinfo-productpage"]}}]}]
""", namespace=NS)
    sleep = await m.identity_sidecar(NS, "sleep-abc", {"app": "sleep"}, "sleep")
    await mesh.wait_synced()
    await _get(http)                                           # productpage: allowed
    async with mesh.client_via(sleep) as other:
        async def denied() -> None:
            r = await other.get("http://reviews:9080/reviews/0")
            assert r.status_code == 403, r.text
        await eventually(denied, timeout=15)
